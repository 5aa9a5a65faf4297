"""The project's one error hierarchy for hardware and control.

Every layer (drivers, autofocus routines, the service) raises these, so that the service maps
each class to one HTTP status in one place (``service/errors.py``). ``models`` cannot import
``drivers``; its input errors are plain ``ValueError`` subclasses (``models.errors``) and the
service maps those to 422 in the same place.

    AutofocusError
    ├── DeviceError            a device failed or answered nonsense            (HTTP 503)
    │   ├── DeviceTimeoutError a device did not answer / a move did not end    (HTTP 503)
    │   ├── ConnectionLostError the link to the device is gone                 (HTTP 503)
    │   └── NotConnectedError  a device was used before open() or after close() (HTTP 503)
    ├── LimitError             a request outside soft limits or max step       (HTTP 422)
    ├── BusyError              another operation holds the device              (HTTP 409)
    ├── CancelledError         an operation was cancelled between steps        (HTTP 409)
    ├── UnreliableEstimateError refused: blank frame or low confidence         (HTTP 422)
    └── ConfigurationError     a setting is wrong (names the setting)          (start-up)
"""

from __future__ import annotations


class AutofocusError(Exception):
    """Base class of every error the project raises on purpose."""


class DeviceError(AutofocusError):
    """A device failed, refused a command, or answered something unexpected."""


class DeviceTimeoutError(DeviceError):
    """A device did not answer, or a move did not finish, within its timeout."""


class ConnectionLostError(DeviceError):
    """The link to a device (serial port, USB camera, Micro-Manager) is gone."""


class NotConnectedError(DeviceError):
    """A device was used while closed."""


class LimitError(AutofocusError):
    """A requested move or setting lies outside what is allowed; nothing was moved."""


class BusyError(AutofocusError):
    """Another operation holds the device; ``job_id`` names it when known."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class CancelledError(AutofocusError):
    """An operation was cancelled between two of its steps; the stage was stopped."""


class UnreliableEstimateError(AutofocusError):
    """A routine refused to move: the frame is blank or the estimate's confidence is too low."""


class ConfigurationError(AutofocusError):
    """A configuration value is wrong; the message names the setting and what is allowed."""
