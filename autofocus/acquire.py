"""Dataset acquisition: the paper's self-built dataset procedure on any Camera / FocusStage.

At each XY position: find focus, then record planes at defocus -10..+10 um in 0.5 um steps
(configurable, plus optional random off-grid planes), into the z-stack format of
``models.zstack``. Defocus 0 is either

* ``sharpness_peak:variance_of_laplacian``: the peak of a coarse-to-fine variance-of-Laplacian
  scan (real hardware); labels are ``direction * (focus_z - z)`` from the read-back stage z; or
* ``physical_focal_plane``: the simulator's truth (``true_defocus``: a callable such as
  ``SimulatedMicroscope.true_defocus_um``); each plane's label is the truth read at that plane.

Every plane is approached from below in stage coordinates (the planes of a position are taken
in ascending stage z, the first one after an overshoot), so backlash always acts the same way.
The run is resumable: planes already in the dataset (by key) are skipped, and a position's
focus found before the interruption is reused. It is cancellable between planes, and on any
error the stages are stopped and the error re-raised.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from autofocus.measures import variance_of_laplacian
from autofocus.stage_moves import approach_from_below, move_in_legs
from drivers.base import Camera, FocusStage, XYStage
from drivers.errors import CancelledError, LimitError
from models.zstack import StackInfo, ZStackWriter

__all__ = [
    "AcquisitionPlan",
    "AcquisitionResult",
    "FocusScan",
    "acquire_dataset",
    "default_z_offsets",
    "find_focus",
    "grid_positions",
]

FOCUS_MEASURE = "variance_of_laplacian"


class _HasCancelled(Protocol):
    @property
    def cancelled(self) -> bool: ...


CancelLike = threading.Event | _HasCancelled
ProgressCallback = Callable[[dict[str, Any]], None]


def default_z_offsets(lo_um: float = -10.0, hi_um: float = 10.0, step_um: float = 0.5) -> tuple[float, ...]:
    """Defocus offsets ``lo..hi`` inclusive in ``step`` steps (41 for the paper's -10..+10 / 0.5)."""
    if not (math.isfinite(lo_um) and math.isfinite(hi_um) and lo_um <= hi_um):
        raise ValueError(f"z range must be finite with low <= high, got {lo_um}..{hi_um} um")
    if not (math.isfinite(step_um) and step_um > 0):
        raise ValueError(f"z step must be a positive number of um, got {step_um}")
    n = math.floor((hi_um - lo_um) / step_um + 1e-9)
    return tuple(round(lo_um + i * step_um, 6) for i in range(n + 1))


def grid_positions(
    center_um: tuple[float, float], nx: int, ny: int, spacing_um: float
) -> tuple[tuple[float, float], ...]:
    """An ``nx x ny`` raster of XY positions ``spacing_um`` apart, centred on ``center_um`` (row-major)."""
    if nx < 1 or ny < 1:
        raise ValueError(f"grid size must be at least 1 x 1, got {nx} x {ny}")
    if not (math.isfinite(spacing_um) and spacing_um > 0):
        raise ValueError(f"spacing_um must be positive, got {spacing_um}")
    cx, cy = center_um
    return tuple(
        (cx + (i - (nx - 1) / 2) * spacing_um, cy + (j - (ny - 1) / 2) * spacing_um)
        for j in range(ny)
        for i in range(nx)
    )


@dataclass(frozen=True)
class AcquisitionPlan:
    """What to record.

    positions_um: XY positions (needs an XY stage); ``None`` records one stack where the stage is.
    z_offsets_um: the defocus values of the regular planes (default -10..+10 um in 0.5 um steps).
    random_planes: extra planes per position at defocus drawn uniformly over the z_offsets range
        (off-grid, reproducible from ``seed`` and the position index, so a resumed run draws the same).
    z_reference: ``"sharpness_peak"`` (focus scan) or ``"physical_focal_plane"`` (needs ``true_defocus``).
    focus_range_um / focus_coarse_step_um / focus_fine_step_um: the focus scan around the stage z
        where each position starts (the previous position's focus, or the start z for the first).
    overshoot_um: the approach move below the first plane of each position (backlash).
    """

    positions_um: tuple[tuple[float, float], ...] | None = None
    z_offsets_um: tuple[float, ...] = field(default_factory=default_z_offsets)
    random_planes: int = 0
    seed: int = 0
    z_reference: Literal["sharpness_peak", "physical_focal_plane"] = "sharpness_peak"
    focus_range_um: float = 15.0
    focus_coarse_step_um: float = 1.5
    focus_fine_step_um: float = 0.25
    overshoot_um: float = 2.0

    def __post_init__(self) -> None:
        if not self.z_offsets_um and self.random_planes == 0:
            raise ValueError("the plan records nothing: give z_offsets_um or random_planes > 0")
        if not all(math.isfinite(z) for z in self.z_offsets_um):
            raise ValueError(f"z_offsets_um must be finite numbers, got {self.z_offsets_um}")
        if len(set(self.z_offsets_um)) != len(self.z_offsets_um):
            raise ValueError("z_offsets_um holds duplicates; each plane is recorded once")
        if self.random_planes < 0:
            raise ValueError(f"random_planes must be >= 0, got {self.random_planes}")
        if self.random_planes and len(self.z_offsets_um) < 2:
            raise ValueError("random_planes need a z range: give at least two z_offsets_um")
        if self.z_reference not in ("sharpness_peak", "physical_focal_plane"):
            raise ValueError(
                f"z_reference must be 'sharpness_peak' or 'physical_focal_plane', got {self.z_reference!r}"
            )
        if self.positions_um is not None:
            if not self.positions_um:
                raise ValueError("positions_um is empty; give at least one (x, y) or None for the current position")
            for p in self.positions_um:
                if len(p) != 2 or not all(math.isfinite(v) for v in p):
                    raise ValueError(f"positions_um must hold finite (x_um, y_um) pairs, got {p!r}")
        for label in ("focus_range_um", "focus_coarse_step_um", "focus_fine_step_um"):
            value = getattr(self, label)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{label} must be a positive number, got {value!r}")
        if self.focus_fine_step_um > self.focus_coarse_step_um:
            raise ValueError("focus_fine_step_um must not exceed focus_coarse_step_um")
        if not (math.isfinite(self.overshoot_um) and self.overshoot_um >= 0):
            raise ValueError(f"overshoot_um must be >= 0, got {self.overshoot_um}")

    @property
    def z_reference_name(self) -> str:
        """The dataset's ``z_reference`` string (``models.zstack``)."""
        if self.z_reference == "sharpness_peak":
            return f"sharpness_peak:{FOCUS_MEASURE}"
        return "physical_focal_plane"

    def planes_for(self, position_index: int) -> list[tuple[str, float]]:
        """``(key suffix, defocus_um)`` of every plane of one position, in plan order."""
        planes = [(f"z{z:+08.3f}", float(z)) for z in self.z_offsets_um]
        if self.random_planes:
            rng = np.random.default_rng([self.seed, position_index])
            lo, hi = min(self.z_offsets_um), max(self.z_offsets_um)
            planes += [(f"r{k:03d}", round(float(rng.uniform(lo, hi)), 4)) for k in range(self.random_planes)]
        return planes


@dataclass
class FocusScan:
    """Result of ``find_focus``: the best stage z, its score, and every (z, score) measured."""

    z_um: float
    score: float
    samples: list[tuple[float, float]]


@dataclass
class AcquisitionResult:
    path: str
    z_reference: str
    positions: int
    planes_written: int
    planes_skipped: int
    duration_s: float
    focus: dict[str, float] = field(default_factory=dict)  # stack -> focus z (um)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_cancelled(cancel: CancelLike | None) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel.cancelled)


def _check_cancel(cancel: CancelLike | None, step: str) -> None:
    if _is_cancelled(cancel):
        reason = getattr(cancel, "reason", None) or "cancelled"
        raise CancelledError(f"acquisition {reason} before {step}; the planes written so far are kept")


def _snap(camera: Camera) -> np.ndarray:
    camera.flush()
    return camera.snap()


def find_focus(
    camera: Camera,
    stage: FocusStage,
    *,
    center_um: float,
    range_um: float = 15.0,
    coarse_step_um: float = 1.5,
    fine_step_um: float = 0.25,
    overshoot_um: float = 2.0,
    cancel: CancelLike | None = None,
    measure: Callable[[np.ndarray], float] = variance_of_laplacian,
) -> FocusScan:
    """Coarse-to-fine sharpness scan; returns the stage z of the peak (parabola-refined).

    Coarse: ``center +- range`` in ``coarse_step`` steps (within the soft limits); fine:
    ``+- coarse_step`` around the coarse peak in ``fine_step`` steps; the fine peak is refined
    by a parabola through it and its neighbours. Every scan runs upwards (approach from below).
    The stage is left at the peak.
    """
    lo, hi = stage.limits_um
    start, stop = max(center_um - range_um, lo), min(center_um + range_um, hi)
    if stop - start < coarse_step_um:
        raise LimitError(f"{stage.name}: focus scan {center_um:.1f} +- {range_um:.1f} um does not fit the soft limits")
    samples: list[tuple[float, float]] = []

    def scan(z_values: Sequence[float]) -> list[tuple[float, float]]:
        out = []
        for i, z in enumerate(z_values):
            _check_cancel(cancel, "a focus-scan move")
            z_read = approach_from_below(stage, z, overshoot_um) if i == 0 else move_in_legs(stage, z)
            out.append((z_read, float(measure(_snap(camera)))))
        samples.extend(out)
        return out

    coarse = scan(list(np.arange(start, stop + 1e-9, coarse_step_um)))
    z_peak = max(coarse, key=lambda s: s[1])[0]
    fine_lo, fine_hi = max(z_peak - coarse_step_um, lo), min(z_peak + coarse_step_um, hi)
    fine = scan(list(np.arange(fine_lo, fine_hi + 1e-9, fine_step_um)))
    i = int(np.argmax([s for _, s in fine]))
    best_z, best_score = fine[i]
    if 0 < i < len(fine) - 1:
        (z0, s0), (z1, s1), (z2, s2) = fine[i - 1], fine[i], fine[i + 1]
        denom = s0 - 2 * s1 + s2
        if denom < 0:
            offset = 0.5 * (s0 - s2) / denom * ((z2 - z0) / 2)
            best_z = z1 + float(np.clip(offset, -(z1 - z0), z2 - z1))
    approach_from_below(stage, best_z, overshoot_um)
    return FocusScan(z_um=float(best_z), score=float(best_score), samples=samples)


def acquire_dataset(
    out_dir: str | Path,
    camera: Camera,
    focus_stage: FocusStage,
    plan: AcquisitionPlan,
    *,
    objective: str,
    xy_stage: XYStage | None = None,
    true_defocus: Callable[[], float] | None = None,
    clock: Callable[[], float] | None = None,
    source: dict[str, Any] | None = None,
    resume: bool = False,
    cancel: CancelLike | None = None,
    progress: ProgressCallback | None = None,
    show_progress: bool = False,
) -> AcquisitionResult:
    """Record ``plan`` into the z-stack dataset ``out_dir`` (continue it with ``resume=True``).

    ``camera``, ``focus_stage`` (and ``xy_stage`` when the plan has positions) must be open.
    ``true_defocus`` (the simulator's truth) is required for ``physical_focal_plane``;
    ``clock`` (e.g. the simulator's ``time_s``) timestamps planes, default wall seconds since
    the dataset was created. ``progress`` gets a dict per event (``position``, ``plane``, ``done``).
    """
    if plan.z_reference == "physical_focal_plane" and true_defocus is None:
        raise ValueError("z_reference 'physical_focal_plane' needs true_defocus (the simulator's truth)")
    if plan.positions_um is not None and xy_stage is None:
        raise ValueError("the plan has XY positions but no xy_stage was given")
    started = time.monotonic()
    positions: list[tuple[float, float] | None] = list(plan.positions_um) if plan.positions_um else [None]
    description: dict[str, Any] = {
        "acquisition": {
            "z_offsets_um": list(plan.z_offsets_um),
            "random_planes": plan.random_planes,
            "seed": plan.seed,
            "focus_measure": FOCUS_MEASURE if plan.z_reference == "sharpness_peak" else None,
            "overshoot_um": plan.overshoot_um,
            "approach": "below",
        },
        "camera": camera.describe(),
        "focus_stage": focus_stage.describe(),
        **(source or {}),
    }
    writer = ZStackWriter(
        out_dir,
        z_reference=plan.z_reference_name,
        objective=objective,
        pixel_size_um=camera.pixel_size_um,
        bit_depth=camera.bit_depth,
        source=description,
        resume=resume,
    )
    existing = writer.keys
    stacks_done = writer.stacks  # focus positions of an interrupted run are reused
    total = len(positions) * len(plan.planes_for(0))
    written = skipped = 0
    focus_found: dict[str, float] = {}
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"acquiring {Path(out_dir).name}", unit="plane")

    def emit(event: str, **data: Any) -> None:
        if progress is not None:
            progress({"event": event, "planes_total": total, "planes_written": written, **data})

    try:
        for pos_index, xy in enumerate(positions):
            stack = f"p{pos_index:04d}"
            planes = plan.planes_for(pos_index)
            todo = [(f"{stack}/{suffix}", d) for suffix, d in planes if f"{stack}/{suffix}" not in existing]
            skipped += len(planes) - len(todo)
            if bar is not None:
                bar.update(len(planes) - len(todo))
            if not todo:
                continue
            _check_cancel(cancel, f"moving to position {stack}")
            if xy is not None and xy_stage is not None:
                xy_stage.move_to(*xy)
            x_um, y_um = xy if xy is not None else (None, None)
            focus_z, score = _focus_for(stack, stacks_done.get(stack), camera, focus_stage, plan, true_defocus, cancel)
            focus_found[stack] = focus_z
            if stack not in stacks_done:
                writer.set_stack(stack, x_um=x_um, y_um=y_um, focus_z_um=focus_z, focus_score=score)
            emit("position", stack=stack, focus_z_um=focus_z, x_um=x_um, y_um=y_um)
            # defocus d at stage z: d = direction * (focus_z - z)  =>  z = focus_z - direction * d
            targets = sorted(((focus_z - focus_stage.direction * d, key, d) for key, d in todo))
            lo, hi = focus_stage.limits_um
            outside = [t for t, _, _ in targets if not lo <= t <= hi]
            if outside:
                raise LimitError(
                    f"{focus_stage.name}: position {stack} needs z from {targets[0][0]:.2f} to {targets[-1][0]:.2f} um,"
                    f" outside the soft limits [{lo:.2f}, {hi:.2f}] um; nothing was recorded there"
                )
            for i, (target, key, d_planned) in enumerate(targets):
                _check_cancel(cancel, f"plane {key}")
                if i == 0:
                    z_read = approach_from_below(focus_stage, target, plan.overshoot_um)
                else:
                    z_read = move_in_legs(focus_stage, target)
                frame = _snap(camera)
                if true_defocus is not None and plan.z_reference == "physical_focal_plane":
                    defocus = float(true_defocus())
                else:
                    defocus = focus_stage.direction * (focus_z - z_read)
                writer.write_plane(
                    frame,
                    key=key,
                    stack=stack,
                    defocus_um=round(defocus, 4),
                    z_um=z_read,
                    x_um=x_um,
                    y_um=y_um,
                    time_s=None if clock is None else float(clock()),
                    exposure_ms=camera.exposure_ms,
                )
                written += 1
                if bar is not None:
                    bar.update(1)
                emit("plane", key=key, stack=stack, z_um=z_read, defocus_um=defocus, planned_defocus_um=d_planned)
        writer.commit(complete=True)
    except BaseException:
        _stop_all(focus_stage, xy_stage)
        raise
    finally:
        if bar is not None:
            bar.close()
    result = AcquisitionResult(
        path=str(out_dir),
        z_reference=plan.z_reference_name,
        positions=len(positions),
        planes_written=written,
        planes_skipped=skipped,
        duration_s=time.monotonic() - started,
        focus=focus_found,
    )
    emit("done", **result.to_dict())
    return result


def _focus_for(
    stack: str,
    recorded: StackInfo | None,
    camera: Camera,
    stage: FocusStage,
    plan: AcquisitionPlan,
    true_defocus: Callable[[], float] | None,
    cancel: CancelLike | None,
) -> tuple[float, float | None]:
    """Stage z of defocus 0 at the current position: reused from an interrupted run, else found."""
    if recorded is not None and recorded.focus_z_um is not None:
        return recorded.focus_z_um, recorded.focus_score
    if plan.z_reference == "physical_focal_plane":
        assert true_defocus is not None
        # move_by(direction * truth) brings the truth to 0 (docs/contracts.md)
        return stage.z_um + stage.direction * float(true_defocus()), None
    scan = find_focus(
        camera,
        stage,
        center_um=stage.z_um,
        range_um=plan.focus_range_um,
        coarse_step_um=plan.focus_coarse_step_um,
        fine_step_um=plan.focus_fine_step_um,
        overshoot_um=plan.overshoot_um,
        cancel=cancel,
    )
    return scan.z_um, scan.score


def _stop_all(focus_stage: FocusStage, xy_stage: XYStage | None) -> None:
    """Stop the stages after a failure; a failing stop is logged, never hides the original error."""
    for device in (focus_stage, xy_stage):
        if device is None:
            continue
        try:
            device.stop()
        except Exception:  # the original error is re-raised by the caller; this one is only logged
            device.log.exception("stop after a failed acquisition failed too")
