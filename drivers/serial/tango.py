"""Marzhauser Tango focus axis (z).

Protocol (docs/hardware.md): ``\\r`` both ways; the baud rate is not verified (57600 is the
default here; set ``serial_baudrate``). Set-up: ``!autostatus 0`` (no unsolicited status),
``!dim z 1`` (positions in um). ``!moa z <um>`` absolute, ``!mor z <um>`` relative,
``?pos z`` position, ``?statusaxis`` (third character ``M``: z is moving), ``?err``
(0 = no error), ``a z`` abort. ``!`` commands have no reply, so every one is followed by
``?err``.
"""

from __future__ import annotations

import re

from drivers.errors import DeviceError
from drivers.serial.stage import SerialFocusStage

__all__ = ["TangoStage"]

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?\d+(\.\d*)?$")
_STATUS = re.compile(r"^[A-Za-z@\-]{3,9}$")


def parse_int(line: str) -> int | None:
    return int(line) if _INT.match(line) else None


def parse_float(line: str) -> float | None:
    return float(line) if _FLOAT.match(line) else None


def parse_statusaxis(line: str) -> str | None:
    return line if _STATUS.match(line) else None


class TangoStage(SerialFocusStage):
    """The z axis of a Marzhauser Tango controller."""

    DEFAULT_BAUDRATE = 57600
    EOL_OUT = b"\r"
    HALT = b"a z\r"
    HALT_HAS_REPLY = False

    def _command(self, command: str) -> None:
        """Send a ``!`` command, then ask ``?err`` and raise if the controller reports one."""
        self.link.send(command)
        code = self.link.query("?err", parse_int, retries=1)
        if code != 0:
            raise DeviceError(f"Tango controller error {code} after {command!r}")

    def _handshake(self) -> None:
        self._command("!autostatus 0")
        self._command("!dim z 1")

    def _read_z_um(self) -> float:
        return self.link.query("?pos z", parse_float, retries=1)

    def _start_move(self, z_um: float) -> None:
        self._command(f"!moa z {z_um:.4f}")

    def _query_busy(self) -> bool:
        status = self.link.query("?statusaxis", parse_statusaxis, retries=1)
        if status[2] == "E":
            raise DeviceError(f"Tango reports an error state on z: statusaxis {status!r}")
        return status[2] == "M"
