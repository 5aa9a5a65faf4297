"""The simulated camera, focus stage and XY stage: thin drivers over a ``SimulatedMicroscope``.

All waits go through ``Device._sleep``, which advances the microscope's simulated clock (and
also sleeps for real when the microscope is in real-time mode). Moves take
``distance / speed`` of simulated time; the readback during a move is interpolated.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import numpy as np

from drivers.base import Camera, FocusStage, XYStage
from drivers.errors import ConnectionLostError, DeviceTimeoutError

if TYPE_CHECKING:
    from drivers.simulated.microscope import SimulatedMicroscope

__all__ = ["SimulatedCamera", "SimulatedFocusStage", "SimulatedXYStage"]


class SimulatedCamera(Camera):
    """Snaps the microscope's current field at the current focus (``SimulatedMicroscope.snap_frame``)."""

    def __init__(
        self, scope: SimulatedMicroscope, *, exposure_ms: float = 20.0, readout_s: float = 0.05, timeout_s: float = 2.0
    ) -> None:
        # the project's pixel size is the pitch at the sample (sensor pixel / magnification)
        super().__init__("sim-camera", pixel_size_um=scope.objective.pixel_um)
        self._scope = scope
        self._exposure_ms = float(exposure_ms)
        self.readout_s = float(readout_s)
        self.timeout_s = float(timeout_s)

    @property
    def exposure_setting_ms(self) -> float:
        """The exposure the camera is set to (readable while closed, no fault checks)."""
        return self._exposure_ms

    def _sleep(self, seconds: float) -> None:
        self._scope.sleep(seconds)

    def _check_link(self) -> None:
        if self._scope.faults.connection_lost:
            raise ConnectionLostError(f"{self.name}: connection lost (simulated fault)")

    def _do_open(self) -> None:
        self._check_link()

    def _do_close(self) -> None:
        """Nothing to release."""

    def _do_snap(self) -> np.ndarray:
        self._check_link()
        if self._scope.faults.camera_timeout:
            self._sleep(self.timeout_s)
            raise DeviceTimeoutError(f"{self.name}: no frame within {self.timeout_s:.1f} s (simulated fault)")
        # the frame integrates over the exposure starting now; render at its start
        frame = self._scope.snap_frame(self._exposure_ms)
        self._sleep(self._exposure_ms / 1000.0 + self.readout_s)
        return frame

    def _do_get_exposure_ms(self) -> float:
        self._check_link()
        return self._exposure_ms

    def _do_set_exposure_ms(self, exposure_ms: float) -> None:
        self._check_link()
        self._exposure_ms = exposure_ms

    def _do_get_sensor_shape(self) -> tuple[int, int]:
        return self._scope.frame_shape

    def _do_get_bit_depth(self) -> int:
        return self._scope.sensor.bit_depth


class SimulatedFocusStage(FocusStage):
    """A focus drive with speed, settle time, backlash and fault hooks.

    The readback is the commanded (motor) position, as on an open-loop stepper drive; the
    physical position lags it by up to ``backlash_um`` after a reversal (a play of width
    ``backlash_um``: approached from below the objective sits ``backlash_um / 2`` short, from
    above ``backlash_um / 2`` beyond). The microscope's ground truth uses the physical position.
    """

    def __init__(
        self,
        scope: SimulatedMicroscope,
        *,
        start_z_um: float,
        limits_um: tuple[float, float],
        max_step_um: float,
        direction: int,
        speed_um_s: float,
        settle_ms: float,
        backlash_um: float,
    ) -> None:
        super().__init__(
            "sim-focus",
            limits_um=limits_um,
            max_step_um=max_step_um,
            direction=direction,
            speed_um_s=speed_um_s,
            settle_ms=settle_ms,
        )
        if not (math.isfinite(backlash_um) and backlash_um >= 0):
            raise ValueError(f"backlash_um must be >= 0, got {backlash_um!r}")
        self._scope = scope
        self.backlash_um = float(backlash_um)
        self._lock = threading.Lock()
        self._start_z = float(start_z_um)
        self._target_z = float(start_z_um)
        self._phys_at_start = float(start_z_um)
        self._t0 = 0.0
        self._t1 = 0.0
        self._moving = False
        self._stalled = False
        self._stall_timeout_s = 0.0

    def _sleep(self, seconds: float) -> None:
        self._scope.sleep(seconds)

    def _check_link(self) -> None:
        if self._scope.faults.connection_lost:
            raise ConnectionLostError(f"{self.name}: connection lost (simulated fault)")

    # -- state ---------------------------------------------------------------------------------
    def _motor_z(self, now: float) -> float:
        if not self._moving or self._stalled:
            return self._start_z if self._moving else self._target_z
        if now >= self._t1:
            return self._target_z
        frac = (now - self._t0) / (self._t1 - self._t0)
        return self._start_z + (self._target_z - self._start_z) * frac

    def _physical(self, motor_z: float) -> float:
        half = self.backlash_um / 2
        return min(max(self._phys_at_start, motor_z - half), motor_z + half)

    def _settle_if_done(self, now: float) -> None:
        if self._moving and not self._stalled and now >= self._t1:
            self._phys_at_start = self._physical(self._target_z)
            self._start_z = self._target_z
            self._moving = False

    def physical_z_um(self) -> float:
        """Where the objective really is (stage coordinates), backlash included."""
        with self._lock:
            now = self._scope.time_s
            self._settle_if_done(now)
            return self._physical(self._motor_z(now))

    # -- driver hooks ------------------------------------------------------------------------
    def _do_open(self) -> None:
        self._check_link()

    def _do_close(self) -> None:
        with self._lock:
            self._freeze(self._scope.time_s)

    def _do_get_z_um(self) -> float:
        self._check_link()
        with self._lock:
            now = self._scope.time_s
            self._settle_if_done(now)
            return self._motor_z(now)

    def _do_move_to(self, z_um: float) -> None:
        self._check_link()
        with self._lock:
            now = self._scope.time_s
            self._freeze(now)
            distance = abs(z_um - self._start_z)
            self._t0 = now
            self._t1 = now + distance / self.speed_um_s
            self._target_z = z_um
            self._moving = True
            self._stalled = self._scope.faults.stage_stall
            self._stall_timeout_s = self.move_timeout_s(distance)

    def _do_is_busy(self) -> bool:
        self._check_link()
        with self._lock:
            now = self._scope.time_s
            if self._stalled and self._moving and now - self._t0 > self._stall_timeout_s:
                # the controller gives up on a stalled motor: nothing moved
                self._moving = False
                self._stalled = False
                self._target_z = self._start_z
                raise DeviceTimeoutError(
                    f"{self.name}: the motor stalled; no motion within {self._stall_timeout_s:.1f} s "
                    "(simulated fault); the stage was stopped"
                )
            self._settle_if_done(now)
            return self._moving

    def _freeze(self, now: float) -> None:
        """Stop where the motor is now (caller holds the lock)."""
        if self._moving:
            z = self._motor_z(now)
            self._phys_at_start = self._physical(z)
            self._start_z = z
            self._target_z = z
            self._moving = False
            self._stalled = False

    def _do_stop(self) -> None:
        with self._lock:
            self._freeze(self._scope.time_s)

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info["backlash_um"] = self.backlash_um
        return info


class SimulatedXYStage(XYStage):
    """An XY stage with speed and fault hooks; moving it shows another field of the slide."""

    def __init__(
        self,
        scope: SimulatedMicroscope,
        *,
        limits_um: tuple[tuple[float, float], tuple[float, float]],
        speed_um_s: float,
    ) -> None:
        super().__init__("sim-xy", limits_um=limits_um, speed_um_s=speed_um_s)
        self._scope = scope
        self._lock = threading.Lock()
        self._start = (0.0, 0.0)
        self._target = (0.0, 0.0)
        self._t0 = 0.0
        self._t1 = 0.0
        self._moving = False
        self._stalled = False

    def _sleep(self, seconds: float) -> None:
        self._scope.sleep(seconds)

    def _check_link(self) -> None:
        if self._scope.faults.connection_lost:
            raise ConnectionLostError(f"{self.name}: connection lost (simulated fault)")

    def _position(self, now: float) -> tuple[float, float]:
        if not self._moving:
            return self._target
        if self._stalled:
            return self._start
        if now >= self._t1:
            return self._target
        f = (now - self._t0) / (self._t1 - self._t0)
        return (
            self._start[0] + (self._target[0] - self._start[0]) * f,
            self._start[1] + (self._target[1] - self._start[1]) * f,
        )

    def position_um(self) -> tuple[float, float]:
        """Where the stage is now (no fault checks; for the microscope's renderer)."""
        with self._lock:
            return self._position(self._scope.time_s)

    def _do_open(self) -> None:
        self._check_link()

    def _do_close(self) -> None:
        self._do_stop()

    def _do_get_xy_um(self) -> tuple[float, float]:
        self._check_link()
        return self.position_um()

    def _do_move_to(self, x_um: float, y_um: float) -> None:
        self._check_link()
        with self._lock:
            now = self._scope.time_s
            here = self._position(now)
            self._start = here
            self._target = (x_um, y_um)
            self._t0 = now
            self._t1 = now + math.hypot(x_um - here[0], y_um - here[1]) / self.speed_um_s
            self._moving = True
            self._stalled = self._scope.faults.stage_stall
            self._stall_timeout_s = max(3.0, 3.0 * (self._t1 - now))

    def _do_is_busy(self) -> bool:
        self._check_link()
        with self._lock:
            now = self._scope.time_s
            if self._stalled and self._moving and now - self._t0 > self._stall_timeout_s:
                self._moving = False
                self._stalled = False
                self._target = self._start
                raise DeviceTimeoutError(f"{self.name}: the XY motors stalled (simulated fault); stopped")
            if self._stalled and self._moving:
                return True
            if self._moving and now >= self._t1:
                self._moving = False
            return self._moving

    def _do_stop(self) -> None:
        with self._lock:
            if self._moving:
                here = self._position(self._scope.time_s)
                self._start = here
                self._target = here
                self._moving = False
                self._stalled = False
