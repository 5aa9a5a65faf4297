"""Autofocus routines against the ``Camera`` / ``FocusStage`` interfaces.

* ``oneshot`` (the paper's method): snap, predict, move by ``stage.direction * defocus``;
  with ``verify`` snap once more and correct once more. With a ``focus_offset_um`` the move is
  by ``defocus - focus_offset_um``: the routine ends where the model reads the offset. Given a
  ``calibration`` (``autofocus.calibration``, an argument like the predictor, since it is measured
  for one model on one microscope) the reading is instead mapped to defocus through that curve.
  With ``aim_um`` the first correction aims at that defocus instead of focus, where the model
  reads better, and the verify frame makes the last move.
* ``zscan``: Micro-Manager OughtaFocus style: bounded Brent maximisation of a sharpness
  measure over ``[z0 - range/2, z0 + range/2]``, optionally after a coarse grid scan.
* ``hybrid``: one-shot; only when its estimate is not confident, a short local z-scan.

Every run returns an ``AutofocusRecord``. A refusal (blank frame, low confidence, a move the
stage's soft limits or max step forbid) is a *result*, not an exception: the record's outcome
is ``"refused"`` and its message says why; ``record.raise_for_outcome()`` turns that into
``UnreliableEstimateError`` / ``LimitError`` for callers who prefer exceptions. Anything that
goes wrong (a device error, a cancel request) stops the stage where it is, reports an
``{"event": "error"}`` progress message with the partial record, and re-raises.

Moves are never clamped: a one-shot correction the stage would refuse is not made. Z-scan
moves longer than ``max_step_um`` are split into legs of at most ``max_step_um`` (the scan's
range is an explicit request, checked against the soft limits before the first move).
After every move ``camera.flush()`` runs before the next snap. The final move approaches the
target from the same side (``approach``): ``"below"`` ends with a move of at least
``overshoot_um`` towards larger stage Z, ``"above"`` towards smaller, ``"none"`` goes direct.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from autofocus.cancel import CancelToken
from autofocus.measures import MEASURES, measure_by_name
from drivers.base import Camera, FocusStage
from drivers.errors import CancelledError, LimitError, UnreliableEstimateError

if TYPE_CHECKING:  # autofocus.calibration imports this module
    from autofocus.calibration import FocusCalibration

__all__ = [
    "OUTCOMES",
    "ROUTINES",
    "AutofocusOptions",
    "AutofocusRecord",
    "CancelToken",
    "FramePredictor",
    "run_autofocus",
]

ROUTINES = ("oneshot", "hybrid", "zscan")
# converged: the routine reached its criterion; moved: one-shot without verify moved by its
# estimate (unverified); not_converged: it ended without meeting its criterion (z-scan peak at
# the range edge, verify frame unreliable); refused: it did not move (see message). Records of
# runs that raised (only seen in the "error" progress event) carry "cancelled" or "failed".
OUTCOMES = ("converged", "moved", "not_converged", "refused", "cancelled", "failed")
Approach = Literal["below", "above", "none"]
Progress = Callable[[dict[str, Any]], None]


class FramePredictor(Protocol):
    """What the routines need from a predictor (``autofocus.predictor.Predictor`` is one)."""

    def predict(self, frame: np.ndarray, bit_depth: int | None = None) -> Any: ...


def frame_bit_depth(frame: np.ndarray, camera: Camera, option: int | None) -> int | None:
    """Significant bits of ``frame`` for the predictor: the option if set, else the camera's for
    ``uint16`` frames (a 12-bit camera's frames are scaled by 4095), None for ``uint8``."""
    if option is not None:
        return option
    return camera.bit_depth if frame.dtype == np.uint16 else None


def is_reliable(pred: Any, min_confidence: float) -> bool:
    """An estimate the routines may act on: not blank, and at least ``min_confidence`` confident."""
    return pred.tiles_used > 0 and pred.defocus_um is not None and pred.confidence >= min_confidence


MAX_FOCUS_OFFSET_UM = 5.0
MAX_AIM_UM = 5.0


def check_focus_offset(focus_offset_um: float) -> None:
    """``ValueError`` unless the offset is finite and within +-``MAX_FOCUS_OFFSET_UM``.

    The bound keeps the target well inside the +-10 um the bundled model was trained on.
    """
    if not (isinstance(focus_offset_um, int | float) and math.isfinite(focus_offset_um)):
        raise ValueError(f"focus_offset_um must be a finite number, got {focus_offset_um!r}")
    if abs(focus_offset_um) > MAX_FOCUS_OFFSET_UM:
        raise ValueError(
            f"focus_offset_um={focus_offset_um:+.3f} is outside the allowed "
            f"-{MAX_FOCUS_OFFSET_UM:g}..+{MAX_FOCUS_OFFSET_UM:g} um"
        )


def check_calibration_choice(calibration: FocusCalibration | None, focus_offset_um: float) -> None:
    """``ValueError`` if both are set: the calibration already says where the model reads focus."""
    if calibration is not None and focus_offset_um != 0.0:
        raise ValueError(
            f"give a calibration or focus_offset_um, not both (got focus_offset_um={focus_offset_um:+.3f}): "
            f"the calibration already holds the reading at focus ({calibration.reading_at_focus_um:+.3f} um)"
        )


@dataclass
class AutofocusOptions:
    """Settings of all routines; each routine reads the ones that concern it.

    One-shot / hybrid: ``min_confidence`` (refuse below), ``verify`` (second frame + one more
    correction), ``min_move_um`` (corrections smaller than this cause no move),
    ``focus_offset_um`` (the defocus to end at, as the model reads it, same sign convention;
    0: the model's focal plane). Set it to what the model reads where you want focus (the
    median of ``autofocus offset`` on a focused sample): that takes out the model's bias on your
    microscope. Or set it to a deliberate offset; unstained cells show more contrast a little
    off focus. The hybrid's local scan and the z-scan seek the sharpest plane and ignore it.
    A calibration given to ``run_autofocus`` replaces ``focus_offset_um`` (giving both is an
    error). ``aim_um`` (needs ``verify``): the first correction aims at this
    defocus instead of focus and the verify correction goes the rest of the way. The bundled
    models read the positive side of focus more reliably than the region just below it (unstained
    cells invert contrast there): with a calibration and the near-focus model, +1.25 um measured best
    for cells and tissue together (``autofocus.calibration_settings.CALIBRATED_AIM_UM``,
    ``docs/autofocus.md``); 0 (default) aims straight at focus.
    Z-scan: ``measure`` (a name in ``autofocus.measures.MEASURES``), ``search_range_um``
    (centred on the start), ``tolerance_um`` (Brent's x tolerance), ``coarse_step_um`` (None:
    Brent only; else a grid at this step first, then Brent within +-1 step of the best),
    ``max_frames``, ``roi`` (x, y, width, height for the measure).
    Hybrid: ``hybrid_range_um`` and ``hybrid_tolerance_um`` of the local scan.
    All: ``approach`` and ``overshoot_um`` (backlash), ``bit_depth`` (significant bits of
    ``uint16`` frames for the predictor; None: the camera's ``bit_depth``).
    """

    min_confidence: float = 0.3
    verify: bool = True
    min_move_um: float = 0.05
    focus_offset_um: float = 0.0
    aim_um: float = 0.0
    measure: str = "tenengrad"
    search_range_um: float = 20.0
    tolerance_um: float = 0.3
    coarse_step_um: float | None = None
    max_frames: int = 40
    roi: tuple[int, int, int, int] | None = None
    hybrid_range_um: float = 6.0
    hybrid_tolerance_um: float = 0.3
    approach: Approach = "below"
    overshoot_um: float = 2.0
    bit_depth: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence!r}")
        check_focus_offset(self.focus_offset_um)
        if not (isinstance(self.aim_um, int | float) and math.isfinite(self.aim_um) and abs(self.aim_um) <= MAX_AIM_UM):
            raise ValueError(f"aim_um must be a number within -{MAX_AIM_UM:g}..+{MAX_AIM_UM:g} um, got {self.aim_um!r}")
        if self.aim_um != 0.0 and not self.verify:
            raise ValueError(
                f"aim_um={self.aim_um:+g} needs verify=True: the verify frame makes the move from the aim to focus"
            )
        if self.measure not in MEASURES:
            raise ValueError(f"measure must be one of {sorted(MEASURES)}, got {self.measure!r}")
        for name in ("search_range_um", "tolerance_um", "hybrid_range_um", "hybrid_tolerance_um"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("min_move_um", "overshoot_um"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.coarse_step_um is not None and not (math.isfinite(self.coarse_step_um) and self.coarse_step_um > 0):
            raise ValueError(f"coarse_step_um must be None or a positive number, got {self.coarse_step_um!r}")
        if not isinstance(self.max_frames, int) or self.max_frames < 3:
            raise ValueError(f"max_frames must be an integer >= 3, got {self.max_frames!r}")
        if self.approach not in ("below", "above", "none"):
            raise ValueError(f"approach must be 'below', 'above' or 'none', got {self.approach!r}")
        if self.approach != "none" and self.overshoot_um <= 0:
            raise ValueError(f"approach={self.approach!r} needs overshoot_um > 0")
        if self.roi is not None:
            if len(self.roi) != 4 or any(not isinstance(v, int) for v in self.roi):
                raise ValueError(f"roi must be (x, y, width, height) integers, got {self.roi!r}")
            self.roi = tuple(self.roi)  # type: ignore[assignment]


@dataclass
class AutofocusRecord:
    """What one run did. ``to_dict()`` is JSON-friendly."""

    routine: str
    started_at: str
    start_z_um: float
    focus_offset_um: float = 0.0  # the model reading one-shot and hybrid end at (0 with a calibration)
    aim_um: float = 0.0  # the defocus the first correction aimed at (the verify one aims at focus)
    calibration: dict[str, Any] | None = None  # FocusCalibration.summary() when one was used
    final_z_um: float | None = None
    frames_used: int = 0
    moves: list[dict[str, Any]] = field(default_factory=list)
    estimates: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, float]] = field(default_factory=list)
    estimate_um: float | None = None
    confidence: float | None = None
    duration_s: float = 0.0
    sim_time_s: float | None = None
    outcome: str = "not_converged"
    message: str = ""
    refusal: str | None = None  # "blank" | "low_confidence" | "limits" when outcome == "refused"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def raise_for_outcome(self) -> None:
        """For callers that want exceptions: raise if the run was refused, else do nothing.

        ``refusal == "limits"`` raises ``LimitError``; a blank frame or low confidence raises
        ``UnreliableEstimateError``.
        """
        if self.outcome != "refused":
            return
        if self.refusal == "limits":
            raise LimitError(self.message)
        raise UnreliableEstimateError(self.message)


class _RefusedError(Exception):
    """Internal: ends a routine with outcome 'refused'."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _Run:
    """State shared by the steps of one run: devices, options, record, cancel, progress."""

    def __init__(
        self,
        routine: str,
        camera: Camera,
        stage: FocusStage,
        predictor: FramePredictor | None,
        options: AutofocusOptions,
        calibration: FocusCalibration | None,
        cancel: CancelToken,
        progress: Progress | None,
        sim_clock: Callable[[], float] | None,
    ) -> None:
        self.camera = camera
        self.stage = stage
        self.predictor = predictor
        self.options = options
        self.calibration = calibration
        self.cancel = cancel
        self.progress = progress
        self.sim_clock = sim_clock
        self.t0 = time.monotonic()
        self.sim_t0 = sim_clock() if sim_clock is not None else None
        self.record = AutofocusRecord(
            routine=routine,
            started_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            start_z_um=stage.z_um,
            focus_offset_um=options.focus_offset_um,
            aim_um=options.aim_um,
            calibration=calibration.summary() if calibration is not None else None,
        )
        self.needs_flush = True  # the camera may hold frames from before this run

    # -- bookkeeping ------------------------------------------------------------------------
    def emit(self, event: str, **data: Any) -> None:
        if self.progress is not None:
            self.progress({"event": event, "routine": self.record.routine, **data})

    def finish_times(self) -> None:
        self.record.duration_s = time.monotonic() - self.t0
        if self.sim_clock is not None and self.sim_t0 is not None:
            self.record.sim_time_s = self.sim_clock() - self.sim_t0

    # -- device steps -----------------------------------------------------------------------
    def snap(self) -> np.ndarray:
        self.cancel.raise_if_cancelled("snap")
        if self.needs_flush:
            self.camera.flush()
            self.needs_flush = False
        frame = self.camera.snap()
        self.record.frames_used += 1
        return frame

    def predict(self) -> Any:
        if self.predictor is None:
            raise ValueError(f"routine {self.record.routine!r} needs a predictor, got None")
        frame = self.snap()
        self.cancel.raise_if_cancelled("predict")
        z = self.stage.z_um
        pred = self.predictor.predict(frame, bit_depth=frame_bit_depth(frame, self.camera, self.options.bit_depth))
        entry = {
            "z_um": z,
            "defocus_um": pred.defocus_um,  # the model's reading
            "focus_error_um": self.focus_error(pred) if pred.defocus_um is not None else None,
            "confidence": float(pred.confidence),
            "tiles_used": int(pred.tiles_used),
            "tiles_total": int(pred.tiles_total),
            "model": pred.model,  # "near" / "far" when the near-focus / far-defocus model read the frame
            "brightness": pred.brightness,  # what a calibration's brightness correction reads
        }
        self.record.estimates.append(entry)
        self.record.estimate_um = pred.defocus_um
        self.record.confidence = float(pred.confidence)
        self.emit("estimate", **entry)
        return pred

    def _leg(self, target_um: float, reason: str) -> None:
        """One checked move; ``flush`` before the next snap."""
        self.cancel.raise_if_cancelled("move")
        before = self.stage.z_um
        after = self.stage.move_to(target_um)
        self.needs_flush = True
        move = {"from_z_um": before, "to_z_um": target_um, "read_back_z_um": after, "reason": reason}
        self.record.moves.append(move)
        self.emit("move", **move)

    def approach_path(self, target_um: float) -> list[float]:
        """Waypoints to ``target_um`` honouring the approach side (the last one is the target)."""
        o = self.options
        z = self.stage.z_um
        if o.approach == "below" and target_um - z < o.overshoot_um:
            return [target_um - o.overshoot_um, target_um]
        if o.approach == "above" and z - target_um < o.overshoot_um:
            return [target_um + o.overshoot_um, target_um]
        return [target_um]

    def check_path(self, path: list[float]) -> None:
        """``LimitError`` if any leg leaves the soft limits or exceeds ``max_step_um``."""
        lo, hi = self.stage.limits_um
        z = self.stage.z_um
        for point in path:
            if not lo <= point <= hi:
                raise LimitError(
                    f"{self.stage.name}: waypoint z_um={point:.3f} is outside the soft limits "
                    f"[{lo:.3f}, {hi:.3f}] um; the stage did not move"
                )
            if abs(point - z) > self.stage.max_step_um:
                raise LimitError(
                    f"{self.stage.name}: a move of {abs(point - z):.3f} um exceeds max_step_um="
                    f"{self.stage.max_step_um:.3f}; the stage did not move"
                )
            z = point

    def correct(self, defocus_um: float, reason: str) -> None:
        """Move by ``direction * defocus`` with the approach rule; refuse what the stage forbids."""
        target = self.stage.z_um + self.stage.direction * defocus_um
        path = self.approach_path(target)
        try:
            self.check_path(path)
        except LimitError as exc:
            raise _RefusedError("limits", f"correction of {defocus_um:+.3f} um refused: {exc}") from exc
        for i, point in enumerate(path):
            self._leg(point, reason if i == len(path) - 1 else f"{reason} (approach overshoot)")

    def focus_error(self, pred: Any) -> float:
        """Defocus from the wanted focus of a prediction with a reading: through the calibration (with
        the frame's brightness), else ``reading - focus_offset_um``."""
        if self.calibration is not None:
            return self.calibration.defocus_um(pred.defocus_um, pred.brightness)
        return float(pred.defocus_um) - self.options.focus_offset_um

    def correct_estimate(self, pred: Any, reason: str, aim_um: float = 0.0) -> None:
        """Move to where the defocus would be ``aim_um`` (0: focus); no move below ``min_move_um``."""
        error_um = self.focus_error(pred) - aim_um
        if abs(error_um) >= self.options.min_move_um:
            self.correct(error_um, reason)

    def move_split(self, target_um: float, reason: str) -> None:
        """Scan move: soft limits checked, split into legs of at most ``max_step_um``."""
        lo, hi = self.stage.limits_um
        if not lo <= target_um <= hi:
            raise _RefusedError(
                "limits", f"scan point z_um={target_um:.3f} is outside the soft limits [{lo:.3f}, {hi:.3f}] um"
            )
        z = self.stage.z_um
        n = max(1, math.ceil(abs(target_um - z) / self.stage.max_step_um - 1e-9))
        for k in range(1, n + 1):
            self._leg(z + (target_um - z) * k / n, reason)

    def check_reliable(self, pred: Any) -> None:
        if pred.tiles_used == 0 or pred.defocus_um is None:
            raise _RefusedError(
                "blank", f"blank frame: all {pred.tiles_total} tiles were blank; the stage did not move"
            )
        if pred.confidence < self.options.min_confidence:
            raise _RefusedError(
                "low_confidence",
                f"confidence {pred.confidence:.2f} is below min_confidence {self.options.min_confidence:.2f} "
                f"(estimate {pred.defocus_um:+.2f} um from {pred.tiles_used}/{pred.tiles_total} tiles); "
                "the stage did not move",
            )


# --------------------------------------------------------------------------------------------
# routines
# --------------------------------------------------------------------------------------------
def _keep_first_estimate(run: _Run, exc: _RefusedError) -> None:
    """The verify frame cannot be used: end where the first estimate put focus (from the aim, if any)."""
    run.record.outcome = "not_converged"
    why = exc.message.removesuffix("; the stage did not move")
    run.record.message = f"verify frame unreliable ({why}); kept the first estimate"
    if run.options.aim_um != 0.0:
        try:
            run.correct(run.options.aim_um, "aim to focus (verify frame unreliable)")
        except _RefusedError as refused:
            run.record.message += f"; the move from the aim to focus was refused: {refused.message}"


def _oneshot(run: _Run) -> None:
    o = run.options
    pred = run.predict()
    run.check_reliable(pred)
    run.correct_estimate(pred, "one-shot correction", o.aim_um)
    if not o.verify:
        run.record.outcome = "moved"
        run.record.message = f"moved by the estimate {pred.defocus_um:+.3f} um (not verified)"
        return
    check = run.predict()
    try:
        run.check_reliable(check)
    except _RefusedError as exc:
        _keep_first_estimate(run, exc)
        return
    run.correct_estimate(check, "verify correction")
    run.record.outcome = "converged"
    run.record.message = (
        f"first estimate {pred.defocus_um:+.3f} um, verify estimate {check.defocus_um:+.3f} um (corrected)"
    )


def _zscan(run: _Run, range_um: float, tolerance_um: float) -> bool:
    """Bounded Brent maximisation of the measure over ``z0 +- range/2`` (OughtaFocus).

    Returns True when the sharpest point lies at an edge of the range (focus may lie beyond it).
    """
    from scipy.optimize import minimize_scalar

    o = run.options
    measure = measure_by_name(o.measure)
    z0 = run.stage.z_um
    lo, hi = z0 - range_um / 2.0, z0 + range_um / 2.0
    slo, shi = run.stage.limits_um
    if lo < slo or hi > shi:
        raise _RefusedError(
            "limits",
            f"search range [{lo:.3f}, {hi:.3f}] um leaves the soft limits [{slo:.3f}, {shi:.3f}] um; "
            "the stage did not move",
        )
    cache: dict[float, float] = {}

    def score_at(z: float) -> float:
        key = round(float(z), 6)
        if key in cache:
            return cache[key]
        if len(cache) >= o.max_frames:
            raise _RefusedError("frames", f"z-scan used its max_frames={o.max_frames} frames")
        run.move_split(float(z), "z-scan")
        score = measure(run.snap(), o.roi)
        cache[key] = score
        run.record.scores.append({"z_um": float(z), "score": float(score)})
        run.emit("score", z_um=float(z), score=float(score))
        return score

    a, b = lo, hi
    if o.coarse_step_um is not None:
        n = max(2, math.floor(range_um / o.coarse_step_um) + 1)
        grid = np.linspace(lo, hi, n)
        scores = [score_at(float(z)) for z in grid]
        best = int(np.argmax(scores))
        step = float(grid[1] - grid[0])
        a, b = max(lo, float(grid[best]) - step), min(hi, float(grid[best]) + step)
    try:
        minimize_scalar(
            lambda z: -score_at(z),
            bounds=(a, b),
            method="bounded",
            options={"xatol": tolerance_um, "maxiter": o.max_frames},
        )
        budget_note = ""
    except _RefusedError as exc:
        if exc.kind != "frames":
            raise
        budget_note = f" ({exc.message})"
    best_z, best_score = max(cache.items(), key=lambda kv: kv[1])
    path = run.approach_path(best_z)
    try:
        run.check_path(path)
    except LimitError:
        # A scan point was reachable; the approach overshoot may not be: go directly.
        path = [best_z]
    for i, point in enumerate(path):
        if i < len(path) - 1:
            run.move_split(point, "z-scan (approach overshoot)")
        else:
            run.move_split(point, "z-scan best focus")
    run.record.estimate_um = None
    at_edge = best_z - lo <= tolerance_um or hi - best_z <= tolerance_um
    if at_edge:
        run.record.outcome = "not_converged"
        run.record.message = (
            f"sharpness peak at the edge of the search range [{lo:.2f}, {hi:.2f}] um (z={best_z:.3f}); "
            f"focus may lie outside it{budget_note}"
        )
    else:
        run.record.outcome = "converged" if not budget_note else "not_converged"
        run.record.message = f"best {o.measure} {best_score:.4g} at z={best_z:.3f} um{budget_note}"
    return at_edge


def _local_scan(run: _Run) -> None:
    """The hybrid's short scan (``hybrid_range_um``) around the current position.

    A peak at an edge of the range re-centres the scan there and scans again, until the scans have
    covered ``search_range_um`` around the start: a wrong-but-confident-looking first move, or a
    refused one, still ends in focus.
    """
    o = run.options
    z_start = run.stage.z_um
    at_edge = _zscan(run, o.hybrid_range_um, o.hybrid_tolerance_um)
    while at_edge and abs(run.stage.z_um - z_start) + o.hybrid_range_um / 2.0 <= o.search_range_um / 2.0:
        run.cancel.raise_if_cancelled()
        at_edge = _zscan(run, o.hybrid_range_um, o.hybrid_tolerance_um)


def _reliable_or_local_scan(run: _Run, pred: Any, label: str) -> bool:
    """True if ``pred`` can be trusted; else run the local scan instead (its record says why), False."""
    try:
        run.check_reliable(pred)
    except _RefusedError as exc:
        if exc.kind != "low_confidence":
            raise
        _local_scan(run)
        run.record.message = f"{label} not confident ({exc.message}); local scan: {run.record.message}"
        return False
    return True


def _hybrid(run: _Run) -> None:
    """One-shot; a local z-scan only when the estimate is not confident (blank frames: refused)."""
    o = run.options
    pred = run.predict()
    if not _reliable_or_local_scan(run, pred, "one-shot"):
        return
    run.correct_estimate(pred, "one-shot correction", o.aim_um)
    if not o.verify:
        run.record.outcome = "moved"
        run.record.message = f"moved by the estimate {pred.defocus_um:+.3f} um (not verified)"
        return
    check = run.predict()
    try:
        if not _reliable_or_local_scan(run, check, "verify"):
            return
    except _RefusedError as exc:  # a blank verify frame: no scan can help either
        _keep_first_estimate(run, exc)
        return
    run.correct_estimate(check, "verify correction")
    run.record.outcome = "converged"
    run.record.message = f"first estimate {pred.defocus_um:+.3f} um, verify estimate {check.defocus_um:+.3f} um"


def run_autofocus(
    routine: str,
    camera: Camera,
    stage: FocusStage,
    predictor: FramePredictor | None,
    options: AutofocusOptions | None = None,
    cancel: CancelToken | None = None,
    progress: Progress | None = None,
    *,
    calibration: FocusCalibration | None = None,
    sim_clock: Callable[[], float] | None = None,
) -> AutofocusRecord:
    """Run ``routine`` ("oneshot" | "hybrid" | "zscan") and return its record.

    ``predictor`` may be ``None`` for "zscan". ``calibration``: the predictor's reading curve on
    this microscope (``autofocus.calibration``), used by one-shot and hybrid in place of
    ``options.focus_offset_um``. ``sim_clock`` (e.g. ``lambda: scope.time_s``)
    adds the simulated duration to the record. ``progress`` gets a dict per step
    (``event``: "start", "estimate", "move", "score", "done", "error").
    """
    if routine not in ROUTINES:
        raise ValueError(f"routine must be one of {ROUTINES}, got {routine!r}")
    if routine != "zscan" and predictor is None:
        raise ValueError(f"routine {routine!r} needs a predictor")
    options = options or AutofocusOptions()
    check_calibration_choice(calibration, options.focus_offset_um)
    cancel = cancel or CancelToken()
    run = _Run(routine, camera, stage, predictor, options, calibration, cancel, progress, sim_clock)
    run.emit("start", start_z_um=run.record.start_z_um)
    try:
        try:
            if routine == "oneshot":
                _oneshot(run)
            elif routine == "zscan":
                _zscan(run, options.search_range_um, options.tolerance_um)
            else:
                _hybrid(run)
        except _RefusedError as exc:
            run.record.outcome = "refused"
            run.record.refusal = exc.kind
            run.record.message = exc.message
        run.record.final_z_um = stage.z_um
    except BaseException as exc:
        stop_error: BaseException | None = None
        try:
            stage.stop()
        except Exception as stop_exc:  # reported with the original error, never hidden
            stop_error = stop_exc
            exc.add_note(f"stopping the stage after the error failed too: {stop_exc!r}")
        try:
            run.record.final_z_um = stage.z_um
        except Exception as read_exc:
            exc.add_note(f"reading the stage position after the error failed: {read_exc!r}")
        exc.add_note(
            f"autofocus {routine!r} stopped after {run.record.frames_used} frame(s) and {len(run.record.moves)} "
            f"move(s); stage stop {'FAILED' if stop_error else 'done'}, last read position z={run.record.final_z_um} um"
        )
        run.record.outcome = "cancelled" if isinstance(exc, CancelledError) else "failed"
        run.record.message = f"{type(exc).__name__}: {exc}" + (" (stop failed)" if stop_error else "")
        run.finish_times()
        run.emit("error", error=run.record.message, record=run.record.to_dict())
        raise
    run.finish_times()
    run.emit("done", record=run.record.to_dict())
    return run.record
