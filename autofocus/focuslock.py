"""Focus lock: keep a specimen in focus over a long time-lapse by correcting drift.

Each step predicts the defocus of one frame (snapped here, or the time-lapse frame the caller
already has: ``step(frame)`` then costs no extra exposure) and corrects it:

* a **focus offset**: the lock holds the estimate at ``focus_offset_um`` (0: the model's focal
  plane), so it corrects ``defocus - focus_offset_um`` (see ``AutofocusOptions.focus_offset_um``);
* or a **calibration** (``autofocus.calibration.FocusCalibration``, given to ``FocusLock``) in
  place of the offset: the error is the reading mapped to defocus through the curve measured on
  this microscope;
* a **dead band**: errors (``defocus - focus_offset_um``, or the calibrated defocus) within
  ``dead_band_um`` cause no move (no dithering on noise);
* a **rate limit**: one step moves at most ``max_correction_um`` (large jumps are more often a
  bad estimate than real drift; a real step change is caught up over a few steps);
* ``gain`` scales the correction (1 = full correction). The default 0.5 halves the effect of a
  noisy single-frame estimate at the cost of a lag of about one step: over 8 simulated hours of
  1 um/min drift (``benchmarks/bench_focus_lock.py``) the bundled wide model alone held RMS 0.69 um
  with gain 0.5 against 1.86 um with full correction, which over-corrects and hunts (0.44 um with
  gain 0.5 and the default near-focus model);
* ``integral_gain`` (default 0: off) learns the drift per step: each reliable estimate adds
  ``integral_gain x`` its error from the aim (below) to it, and every running step with a reliable
  estimate moves by it on top of ``gain x`` that error (inside the dead band too: it is the
  drift, not noise). A steady
  drift then leaves no lag; without it a proportional lock trails a drift of ``d`` um per step
  by about ``d / gain``. The learned drift stays within +-``max_correction_um`` (a faster
  drift cannot be followed anyway, and an unbounded sum would wind up while corrections are
  rate-limited), survives a pause and starts at 0 on ``start()``. The lock aims half a learned
  step ahead (it holds the reading at ``drift_per_step_um / 2``), so a steady drift carries the
  sample from half a step below focus to half a step beyond it between frames instead of from a
  whole step below up to focus: over 6 cells fields (2 simulated hours each, a curve measured
  here) RMS 0.19-0.21 um against 0.30-0.34 um without the lead.
  Use it with a calibration measured on the lock's field (``calibrate_here``): it holds the
  reading at the wanted focus, and the bundled models' own zero lies up to 1.2 um from focus on
  cells. Over 8 simulated hours on one field with a +-4 um curve measured at the start on the
  lock's field, ``integral_gain=0.2`` held RMS 0.20 um against 0.80 um without it; without a
  calibration 1.15 um, and with a calibration from 9 other fields 0.81 um (``docs/autofocus.md``);
* **holding the focus you are at** (what a hardware focus lock does): ``calibrate_here(4.0)``
  before ``start()``/``run()`` sweeps +-4 um around the current position on the current field
  and locks through that curve, so the lock holds this Z's focus rather than the model's zero
  (the reading it had here: where focus lies in a run of planes the fit reads alike, the curve
  maps that reading to the run's middle, ``curve_zero_um``, and errors count from there).
  With ``integral_gain=0.2`` this is the lock that held best: RMS 0.21 um (cells) and 0.20 um
  (tissue) at the median of 20 simulated fields each, against 0.68 and 0.32 um for the default
  lock. A field whose curve reads alike around focus is refused (``MAX_FLAT_AT_FOCUS_UM``). The sweep
  costs 17 frames once (one per plane at ``DEFAULT_STEP_UM``; the stage then returns to
  where it was, from below). Where the model reads more than ``OUT_OF_FOCUS_READING_UM`` from 0
  at the start the sample is probably not in focus: the lock holds that plane anyway (a plane
  beside focus may be wanted), logs a warning and keeps it in ``warning`` (``held_focus_warning``);
* **reliability**: an estimate is unreliable when the frame is blank or its confidence is below
  ``min_confidence``. After ``pause_after`` unreliable estimates in a row the lock pauses
  (``state == "paused_unreliable"``, ``reason`` says why) and moves nothing; it keeps
  predicting and resumes after ``resume_after`` reliable estimates in a row;
* a correction the stage would refuse (soft limits, max step) is not made: the lock stops
  (``state == "stopped"``) with the ``LimitError`` message as its reason;
* any error stops the stage, then the lock (reason: the error), and is re-raised.

Time goes through the injected ``clock`` and ``sleep``: with the simulator pass
``clock=lambda: scope.time_s, sleep=scope.advance`` and an 8-hour lock runs in minutes.
Corrections go straight to the target (no backlash approach): they are small and frequent, and
what backlash leaves is measured and corrected by the next step.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from autofocus.calibration import FocusCalibration, measure_calibration
from autofocus.calibration_settings import DEFAULT_STEP_UM, LOCK_CURVE_RANGE_UM, MAX_RANGE_UM
from autofocus.cancel import CancelToken
from autofocus.routines import (
    FramePredictor,
    check_calibration_choice,
    check_focus_offset,
    frame_bit_depth,
    is_reliable,
)
from drivers.base import Camera, FocusStage
from drivers.errors import LimitError, UnreliableEstimateError

__all__ = [
    "LOCK_STATES",
    "MAX_FLAT_AT_FOCUS_UM",
    "OUT_OF_FOCUS_READING_UM",
    "FocusLock",
    "FocusLockOptions",
    "held_focus_warning",
]

log = logging.getLogger(__name__)

LockState = Literal["running", "paused_unreliable", "stopped"]
LOCK_STATES: tuple[str, ...] = ("running", "paused_unreliable", "stopped")
# calibrate_here refuses a curve that reads alike over more than this around focus (FocusCalibration.
# flat_at_focus_um). 10 cells fields, +-4 um in 0.5 um planes, 2 simulated hours each (bench_focus_lock.py
# --fields 10): 8 read alike over at most 0.5 um and held RMS 0.19-0.21 um; 2 over 1.5 um, where the curve
# put the focus 1.8-2.0 um off, and held 0.60 and 0.83 um. On 10 other fields it refused 1 (0.55 um if
# locked anyway); the other 9 held 0.20-0.22 um.
MAX_FLAT_AT_FOCUS_UM = 0.75
# calibrate_here warns when the model reads further than this from 0 where it starts: the bundled
# models read within about +-1.2 um of 0 at focus (docs/autofocus.md), so the sample is probably not
# in focus, and the lock will hold that plane.
OUT_OF_FOCUS_READING_UM = 2.0


def held_focus_warning(calibration: FocusCalibration) -> str | None:
    """What to tell the operator when the Z a lock is to hold does not look focused, else None."""
    reading = calibration.reading_at_focus_um
    if abs(reading) <= OUT_OF_FOCUS_READING_UM:
        return None
    return (
        f"the model reads {reading:+.2f} um of defocus where the lock started (at focus it reads within "
        f"+-{OUT_OF_FOCUS_READING_UM:g} um): the sample may not be in focus, and the lock holds this plane. "
        "Focus first (autofocus), then start the lock"
    )


@dataclass
class FocusLockOptions:
    """Settings of a focus lock (see the module docstring for what each does)."""

    interval_s: float = 60.0
    focus_offset_um: float = 0.0
    dead_band_um: float = 0.2
    max_correction_um: float = 2.0
    gain: float = 0.5
    integral_gain: float = 0.0
    min_confidence: float = 0.3
    pause_after: int = 2
    resume_after: int = 2
    bit_depth: int | None = None
    history_length: int = 10_000

    def __post_init__(self) -> None:
        for name in ("interval_s", "max_correction_um"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        check_focus_offset(self.focus_offset_um)
        if not (math.isfinite(self.dead_band_um) and self.dead_band_um >= 0):
            raise ValueError(f"dead_band_um must be >= 0, got {self.dead_band_um!r}")
        if not (math.isfinite(self.gain) and 0 < self.gain <= 1.5):
            raise ValueError(f"gain must be in (0, 1.5], got {self.gain!r}")
        if not (math.isfinite(self.integral_gain) and 0 <= self.integral_gain <= 1):
            raise ValueError(f"integral_gain must be in [0, 1] (0: off), got {self.integral_gain!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence!r}")
        for name in ("pause_after", "resume_after", "history_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


class FocusLock:
    """Drift correction loop. Call ``start()`` then ``step()`` per frame, or ``run()`` for a timed loop."""

    def __init__(
        self,
        camera: Camera,
        stage: FocusStage,
        predictor: FramePredictor,
        options: FocusLockOptions | None = None,
        *,
        calibration: FocusCalibration | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.camera = camera
        self.stage = stage
        self.predictor = predictor
        self.options = options or FocusLockOptions()
        check_calibration_choice(calibration, self.options.focus_offset_um)
        self.calibration = calibration
        self._clock = clock
        self._sleep = sleep
        self.state: LockState = "stopped"
        self.reason = "not started"
        self.frames_snapped = 0
        self.steps = 0
        self.corrections = 0
        self.history: deque[dict[str, Any]] = deque(maxlen=self.options.history_length)
        self._unreliable_run = 0
        self._reliable_run = 0
        self._needs_flush = True
        self.drift_per_step_um = 0.0  # the integral term: drift learned per step (integral_gain)
        # calibrate_here: what its curve makes of the reading at the start (0 unless focus lies in
        # a run of planes the fit reads alike, whose middle it maps to); errors are counted from it
        self.curve_zero_um = 0.0
        self.warning: str | None = None  # calibrate_here: why the Z it holds may not be focused

    # -- calibration on the locked field ---------------------------------------------------------
    def calibrate_here(
        self,
        range_um: float = LOCK_CURVE_RANGE_UM,
        *,
        step_um: float = DEFAULT_STEP_UM,
        cancel: CancelToken | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> FocusCalibration:
        """Measure a curve over ``-range_um..+range_um`` on this field, around this (focused) Z, and lock through it.

        The lock then holds the focus the sample is at now. The sweep is
        ``autofocus.calibration.measure_calibration`` on the current field with the lock's
        ``min_confidence`` and ``bit_depth``; the stage ends where it started. ``ValueError`` if
        the lock already has a calibration or a ``focus_offset_um`` (each says where focus is)
        or runs; sweep errors (limits, an unreliable field, a cancel) propagate with the stage
        stopped and the lock unchanged.
        """
        if self.state != "stopped":
            raise RuntimeError(f"calibrate before starting the lock (it is {self.state})")
        if self.calibration is not None:
            raise ValueError("this lock already reads through a calibration; give it one or the other")
        if self.options.focus_offset_um != 0.0:
            raise ValueError(
                f"focus_offset_um={self.options.focus_offset_um:+.3f} and a curve measured here both say where "
                "focus is: set focus_offset_um 0 to hold the focus the sample is at now"
            )
        if not (math.isfinite(range_um) and 0 < range_um <= MAX_RANGE_UM):
            raise ValueError(f"range_um must be in (0, {MAX_RANGE_UM:g}] um, got {range_um!r}")
        cal = measure_calibration(
            self.camera,
            self.stage,
            self.predictor,
            range_um=range_um,
            step_um=step_um,
            min_confidence=self.options.min_confidence,
            bit_depth=self.options.bit_depth,
            source=str(getattr(self.predictor, "description", "")),
            cancel=cancel,
            progress=progress,
        )
        if cal.flat_at_focus_um > MAX_FLAT_AT_FOCUS_UM:
            raise UnreliableEstimateError(
                f"on this field the model reads about {cal.reading_at_focus_um:+.2f} um over "
                f"{cal.flat_at_focus_um:.2f} um of defocus around focus (at most {MAX_FLAT_AT_FOCUS_UM} um is "
                "allowed): a lock through this curve cannot see where focus is. Lock without it (the model's "
                "own zero, or a focus offset), or on a field with more structure"
            )
        self.warning = held_focus_warning(cal)
        if self.warning is not None:
            log.warning("focus lock: %s", self.warning)
        self.calibration = cal
        self.curve_zero_um = cal.defocus_um(cal.reading_at_focus_um)
        self._needs_flush = True
        return cal

    # -- state --------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin (or restart after a stop) locking; counters of reliability start afresh."""
        self.state = "running"
        self.reason = "started"
        self._unreliable_run = 0
        self._reliable_run = 0
        self.drift_per_step_um = 0.0

    def stop(self, reason: str = "stopped on request") -> None:
        self.state = "stopped"
        self.reason = reason

    def status(self) -> dict[str, Any]:
        """JSON-friendly summary: state, reason, counters and the last update."""
        return {
            "state": self.state,
            "reason": self.reason,
            "steps": self.steps,
            "frames_snapped": self.frames_snapped,
            "corrections": self.corrections,
            "drift_per_step_um": self.drift_per_step_um,
            "last": self.history[-1] if self.history else None,
        }

    # -- one step -----------------------------------------------------------------------------
    def step(self, frame: np.ndarray | None = None) -> dict[str, Any]:
        """Predict on ``frame`` (``None``: snap one) and correct; return the update record."""
        if self.state == "stopped":
            raise RuntimeError(f"focus lock is stopped ({self.reason}); call start() first")
        try:
            return self._step(frame)
        except BaseException as exc:
            try:
                self.stage.stop()
            except Exception as stop_exc:
                exc.add_note(f"stopping the stage after the error failed too: {stop_exc!r}")
            self.stop(f"error: {type(exc).__name__}: {exc}")
            raise

    def _step(self, frame: np.ndarray | None) -> dict[str, Any]:
        o = self.options
        source = "given"
        if frame is None:
            if self._needs_flush:
                self.camera.flush()
                self._needs_flush = False
            frame = self.camera.snap()
            self.frames_snapped += 1
            source = "snapped"
        self.steps += 1
        pred = self.predictor.predict(frame, bit_depth=frame_bit_depth(frame, self.camera, o.bit_depth))
        z_before = self.stage.z_um
        reliable = is_reliable(pred, o.min_confidence)
        moved_um = 0.0
        rate_limited = False
        error_um: float | None = None  # defocus from the wanted focus (offset or calibration applied)
        if not reliable:
            self._unreliable_run += 1
            self._reliable_run = 0
            why = (
                "blank frame"
                if pred.tiles_used == 0
                else f"confidence {pred.confidence:.2f} < min_confidence {o.min_confidence:.2f}"
            )
            if self.state == "running" and self._unreliable_run >= o.pause_after:
                self.state = "paused_unreliable"
                self.reason = f"{self._unreliable_run} unreliable estimates in a row (last: {why})"
        else:
            self._reliable_run += 1
            self._unreliable_run = 0
            if self.state == "paused_unreliable" and self._reliable_run >= o.resume_after:
                self.state = "running"
                self.reason = f"resumed after {self._reliable_run} reliable estimates"
            if self.calibration is not None:
                error_um = self.calibration.defocus_um(pred.defocus_um, pred.brightness) - self.curve_zero_um
            else:
                error_um = pred.defocus_um - o.focus_offset_um
            # aim half a step's drift ahead, so that focus is crossed halfway to the next frame
            aim_error_um = error_um - 0.5 * self.drift_per_step_um
            if self.state == "running":
                learned = self.drift_per_step_um + o.integral_gain * aim_error_um
                self.drift_per_step_um = max(-o.max_correction_um, min(o.max_correction_um, learned))
            proportional = o.gain * aim_error_um if abs(aim_error_um) > o.dead_band_um else 0.0
            correction = proportional + self.drift_per_step_um
            if self.state == "running" and correction != 0.0:
                if abs(correction) > o.max_correction_um:
                    correction = math.copysign(o.max_correction_um, correction)
                    rate_limited = True
                dz = self.stage.direction * correction
                try:
                    self.stage.check_move_to(z_before + dz)
                except LimitError as exc:
                    self.stop(f"correction refused: {exc}")
                else:
                    self.stage.move_by(dz)
                    self._needs_flush = True
                    self.corrections += 1
                    moved_um = correction
        update = {
            "time_s": self._clock(),
            "z_um": z_before,
            "defocus_um": pred.defocus_um,
            "focus_error_um": error_um,
            "confidence": float(pred.confidence),
            "tiles_used": int(pred.tiles_used),
            "reliable": bool(reliable),
            "correction_um": moved_um,
            "rate_limited": rate_limited,
            "frame": source,
            "state": self.state,
            "reason": self.reason,
        }
        self.history.append(update)
        return update

    # -- timed loop ---------------------------------------------------------------------------
    def run(
        self,
        cancel: CancelToken | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        *,
        duration_s: float | None = None,
        poll_s: float = 0.5,
    ) -> dict[str, Any]:
        """Step every ``interval_s`` until cancelled, stopped, or ``duration_s`` has passed.

        Waits go through the injected ``sleep`` in slices of at most ``poll_s`` so a cancel is
        seen within ``poll_s``. Returns ``status()`` at the end; the lock is then stopped.
        """
        cancel = cancel or CancelToken()
        self.start()
        t_start = self._clock()
        next_t = t_start
        while True:
            while not cancel.cancelled:
                remaining = next_t - self._clock()
                if remaining <= 0:
                    break
                self._sleep(min(remaining, poll_s))
            if cancel.cancelled:
                self.stop(f"cancelled: {cancel.reason}")
                break
            if duration_s is not None and self._clock() - t_start > duration_s:
                self.stop("duration reached")
                break
            update = self.step()
            if on_update is not None:
                on_update(update)
            if self.state == "stopped":
                break
            next_t += self.options.interval_s
        return self.status()
