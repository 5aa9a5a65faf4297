"""Device interfaces: ``Camera``, ``FocusStage`` and ``XYStage``.

The pattern follows python-microscope and pymmcore-plus: every public method lives on the base
class, where it validates its arguments, logs, and calls a private ``_do_*`` hook that each
driver fills in. Drivers never re-implement the checks, so every driver refuses the same bad
requests with the same errors.

Units are in the names: ``z_um``, ``exposure_ms``, ``timeout_s``.

Sign convention (see ``docs/architecture.md``): a focus stage's ``direction`` is ``+1`` when a
positive Z move brings the objective *towards* the sample (Micro-Manager's
``setFocusDirection(+1)``), ``-1`` otherwise. A signed defocus ``d`` (um, ``d > 0``: the
specimen lies beyond the focal plane, further from the objective) is corrected by the relative
stage move ``direction * d``.

Safety rules that every focus stage obeys (``docs/hardware.md``): a target outside the soft
limits, or a single move larger than ``max_step_um``, is refused with ``LimitError`` and the
stage does not move (never clamped); every move has a timeout derived from its distance and
the stage speed; the position is read back after every move, failed ones too; ``stop()`` never
waits behind a lock held by a move.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from types import TracebackType

import numpy as np

from drivers.errors import DeviceTimeoutError, LimitError, NotConnectedError

__all__ = ["Camera", "Device", "FocusStage", "XYStage"]


class Device(ABC):
    """Something that is opened, used and closed. Also a context manager."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.log = logging.getLogger(f"drivers.{type(self).__name__}.{name}")
        self._is_open = False

    @property
    def is_open(self) -> bool:
        return self._is_open

    def open(self) -> None:
        """Connect to the device. Opening an open device does nothing."""
        if self._is_open:
            return
        self.log.info("opening %s", self.name)
        self._do_open()
        self._is_open = True

    def close(self) -> None:
        """Release the device. Closing a closed device does nothing."""
        if not self._is_open:
            return
        self.log.info("closing %s", self.name)
        try:
            self._do_close()
        finally:
            self._is_open = False

    def __enter__(self) -> Device:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _require_open(self) -> None:
        if not self._is_open:
            raise NotConnectedError(f"{type(self).__name__} {self.name!r} is not open; call open()")

    def _sleep(self, seconds: float) -> None:
        """Every wait goes through here, so the simulator can advance simulated time instead."""
        time.sleep(seconds)

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary for status pages and ``autofocus check``."""
        return {"name": self.name, "driver": type(self).__name__, "open": self._is_open}

    @abstractmethod
    def _do_open(self) -> None: ...

    @abstractmethod
    def _do_close(self) -> None: ...


class Camera(Device):
    """A camera that snaps RGB frames of the specimen.

    ``snap()`` always returns an ``H x W x 3`` array of ``uint8`` or ``uint16`` (mono sensors
    are replicated into three channels here, once, for every driver).
    """

    def __init__(
        self,
        name: str,
        *,
        pixel_size_um: float,
        exposure_range_ms: tuple[float, float] = (0.01, 10_000.0),
    ) -> None:
        super().__init__(name)
        if not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
            raise ValueError(f"pixel_size_um must be a positive number, got {pixel_size_um!r}")
        lo, hi = exposure_range_ms
        if not (0 < lo <= hi):
            raise ValueError(f"exposure_range_ms must be (low, high) with 0 < low <= high, got {exposure_range_ms!r}")
        self.pixel_size_um = float(pixel_size_um)
        self.exposure_range_ms = (float(lo), float(hi))

    def snap(self) -> np.ndarray:
        """Acquire one frame: ``H x W x 3`` ``uint8`` or ``uint16``."""
        self._require_open()
        frame = self._do_snap()
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"{self.name}: driver returned a frame of shape {frame.shape}, expected HxWx3")
        if frame.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{self.name}: driver returned dtype {frame.dtype}, expected uint8 or uint16")
        return frame

    def flush(self) -> None:
        """Drop frames buffered before now (call after a stage move) so the next snap is fresh."""
        self._require_open()
        self._do_flush()

    @property
    def exposure_ms(self) -> float:
        self._require_open()
        return float(self._do_get_exposure_ms())

    @exposure_ms.setter
    def exposure_ms(self, value: float) -> None:
        self._require_open()
        lo, hi = self.exposure_range_ms
        if not (math.isfinite(value) and lo <= value <= hi):
            raise LimitError(f"exposure_ms={value!r} is outside the allowed range {lo}..{hi} ms")
        self.log.debug("exposure_ms <- %s", value)
        self._do_set_exposure_ms(float(value))

    @property
    def sensor_shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels of the frames ``snap()`` returns."""
        self._require_open()
        h, w = self._do_get_sensor_shape()
        return int(h), int(w)

    @property
    def bit_depth(self) -> int:
        """Significant bits per channel (8, 10, 12, 14 or 16)."""
        self._require_open()
        return int(self._do_get_bit_depth())

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info["pixel_size_um"] = self.pixel_size_um
        if self._is_open:
            info.update(
                sensor_shape=list(self.sensor_shape),
                exposure_ms=self.exposure_ms,
                bit_depth=self.bit_depth,
            )
        return info

    @abstractmethod
    def _do_snap(self) -> np.ndarray: ...

    def _do_flush(self) -> None:
        """Drivers with a frame buffer override this; unbuffered cameras need nothing."""

    @abstractmethod
    def _do_get_exposure_ms(self) -> float: ...

    @abstractmethod
    def _do_set_exposure_ms(self, exposure_ms: float) -> None: ...

    @abstractmethod
    def _do_get_sensor_shape(self) -> tuple[int, int]: ...

    @abstractmethod
    def _do_get_bit_depth(self) -> int: ...


class FocusStage(Device):
    """A motorised Z axis (objective or stage focus drive) with soft limits and a max step.

    ``limits_um`` are soft limits in the stage's own coordinates; ``max_step_um`` caps a single
    move; ``speed_um_s`` sizes move timeouts; ``settle_ms`` is waited after every move.
    """

    def __init__(
        self,
        name: str,
        *,
        limits_um: tuple[float, float],
        max_step_um: float,
        direction: int = 1,
        speed_um_s: float = 100.0,
        settle_ms: float = 0.0,
    ) -> None:
        super().__init__(name)
        lo, hi = limits_um
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"limits_um must be (low, high) with low < high, got {limits_um!r}")
        if not (math.isfinite(max_step_um) and max_step_um > 0):
            raise ValueError(f"max_step_um must be a positive number, got {max_step_um!r}")
        if direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {direction!r}")
        if not (math.isfinite(speed_um_s) and speed_um_s > 0):
            raise ValueError(f"speed_um_s must be a positive number, got {speed_um_s!r}")
        if not (math.isfinite(settle_ms) and settle_ms >= 0):
            raise ValueError(f"settle_ms must be >= 0, got {settle_ms!r}")
        self.limits_um = (float(lo), float(hi))
        self.max_step_um = float(max_step_um)
        self.direction = int(direction)
        self.speed_um_s = float(speed_um_s)
        self.settle_ms = float(settle_ms)

    # -- reading ---------------------------------------------------------------------------
    @property
    def z_um(self) -> float:
        """The current position read from the device, in um."""
        self._require_open()
        return float(self._do_get_z_um())

    def is_busy(self) -> bool:
        self._require_open()
        return bool(self._do_is_busy())

    # -- checks ----------------------------------------------------------------------------
    def check_move_to(self, z_um: float) -> float:
        """Raise ``LimitError`` if a move to ``z_um`` would be refused; return the distance."""
        self._require_open()
        if not isinstance(z_um, int | float) or not math.isfinite(z_um):
            raise LimitError(f"{self.name}: target z_um={z_um!r} is not a finite number")
        lo, hi = self.limits_um
        if not lo <= z_um <= hi:
            raise LimitError(
                f"{self.name}: target z_um={z_um:.3f} is outside the soft limits "
                f"[{lo:.3f}, {hi:.3f}] um; the stage did not move"
            )
        distance = abs(z_um - self.z_um)
        if distance > self.max_step_um:
            raise LimitError(
                f"{self.name}: a move of {distance:.3f} um exceeds max_step_um="
                f"{self.max_step_um:.3f}; split it or raise the setting; the stage did not move"
            )
        return distance

    def move_timeout_s(self, distance_um: float) -> float:
        """Timeout for a move of ``distance_um``: ``max(3 s, 3 * distance / speed)``."""
        return max(3.0, 3.0 * abs(distance_um) / self.speed_um_s)

    # -- moving ----------------------------------------------------------------------------
    def move_to(self, z_um: float, *, wait: bool = True) -> float:
        """Move to absolute ``z_um``; refuse (``LimitError``) rather than clamp.

        With ``wait`` the call returns after the move finished and settled, with the position
        read back from the device.
        """
        distance = self.check_move_to(z_um)
        self.log.info("move_to %.3f um (distance %.3f um)", z_um, distance)
        try:
            self._do_move_to(float(z_um))
            if wait:
                self.wait_until_idle(self.move_timeout_s(distance))
                if self.settle_ms > 0:
                    self._sleep(self.settle_ms / 1000.0)
        finally:
            position = self.z_um
            self.log.debug("read back %.3f um", position)
        return position

    def move_by(self, dz_um: float, *, wait: bool = True) -> float:
        """Relative move by ``dz_um``; the same checks as ``move_to``."""
        if not isinstance(dz_um, int | float) or not math.isfinite(dz_um):
            raise LimitError(f"{self.name}: relative move dz_um={dz_um!r} is not a finite number")
        return self.move_to(self.z_um + float(dz_um), wait=wait)

    def stop(self) -> None:
        """Halt any motion now. Never waits behind a lock held by a move."""
        self._require_open()
        self.log.warning("stop")
        self._do_stop()

    def wait_until_idle(self, timeout_s: float) -> None:
        """Poll until the stage is idle; ``DeviceTimeoutError`` (after a stop) if it is not."""
        deadline = time.monotonic() + timeout_s
        while self.is_busy():
            if time.monotonic() > deadline:
                self._do_stop()
                raise DeviceTimeoutError(
                    f"{self.name}: move did not finish within {timeout_s:.1f} s; the stage was stopped"
                )
            self._sleep(0.005)

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info.update(
            limits_um=list(self.limits_um),
            max_step_um=self.max_step_um,
            direction=self.direction,
            speed_um_s=self.speed_um_s,
            settle_ms=self.settle_ms,
        )
        if self._is_open:
            info["z_um"] = self.z_um
        return info

    @abstractmethod
    def _do_get_z_um(self) -> float: ...

    @abstractmethod
    def _do_move_to(self, z_um: float) -> None:
        """Start (or perform) the move; ``move_to`` waits for idle afterwards."""

    @abstractmethod
    def _do_is_busy(self) -> bool: ...

    @abstractmethod
    def _do_stop(self) -> None: ...


class XYStage(Device):
    """A motorised XY stage, positions in um, with a rectangular soft-limit box."""

    def __init__(
        self,
        name: str,
        *,
        limits_um: tuple[tuple[float, float], tuple[float, float]],
        speed_um_s: float = 5000.0,
    ) -> None:
        super().__init__(name)
        (xlo, xhi), (ylo, yhi) = limits_um
        if not (xlo < xhi and ylo < yhi):
            raise ValueError(f"limits_um must be ((xlo, xhi), (ylo, yhi)) with lo < hi, got {limits_um!r}")
        self.limits_um = ((float(xlo), float(xhi)), (float(ylo), float(yhi)))
        self.speed_um_s = float(speed_um_s)

    @property
    def xy_um(self) -> tuple[float, float]:
        self._require_open()
        x, y = self._do_get_xy_um()
        return float(x), float(y)

    def is_busy(self) -> bool:
        self._require_open()
        return bool(self._do_is_busy())

    def move_to(self, x_um: float, y_um: float, *, wait: bool = True) -> tuple[float, float]:
        """Move to ``(x_um, y_um)``; refused with ``LimitError`` outside the limit box."""
        self._require_open()
        (xlo, xhi), (ylo, yhi) = self.limits_um
        for label, value, lo, hi in (("x_um", x_um, xlo, xhi), ("y_um", y_um, ylo, yhi)):
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise LimitError(f"{self.name}: {label}={value!r} is not a finite number")
            if not lo <= value <= hi:
                raise LimitError(
                    f"{self.name}: {label}={value:.1f} is outside the soft limits [{lo:.1f}, {hi:.1f}] um;"
                    " the stage did not move"
                )
        x0, y0 = self.xy_um
        distance = math.hypot(x_um - x0, y_um - y0)
        self.log.info("move_to (%.1f, %.1f) um", x_um, y_um)
        try:
            self._do_move_to(float(x_um), float(y_um))
            if wait:
                deadline = time.monotonic() + max(3.0, 3.0 * distance / self.speed_um_s)
                while self.is_busy():
                    if time.monotonic() > deadline:
                        self._do_stop()
                        raise DeviceTimeoutError(f"{self.name}: XY move did not finish; stopped")
                    self._sleep(0.005)
        finally:
            position = self.xy_um
        return position

    def move_by(self, dx_um: float, dy_um: float, *, wait: bool = True) -> tuple[float, float]:
        x, y = self.xy_um
        return self.move_to(x + dx_um, y + dy_um, wait=wait)

    def stop(self) -> None:
        self._require_open()
        self._do_stop()

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info["limits_um"] = [list(self.limits_um[0]), list(self.limits_um[1])]
        if self._is_open:
            info["xy_um"] = list(self.xy_um)
        return info

    @abstractmethod
    def _do_get_xy_um(self) -> tuple[float, float]: ...

    @abstractmethod
    def _do_move_to(self, x_um: float, y_um: float) -> None: ...

    @abstractmethod
    def _do_is_busy(self) -> bool: ...

    @abstractmethod
    def _do_stop(self) -> None: ...
