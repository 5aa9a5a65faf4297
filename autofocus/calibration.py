"""Focus calibration: what the model reads at each defocus, measured on your microscope.

A defocus model is not a ruler. On the simulator's 20x/0.75 the bundled model reads about
+0.2 to +0.7 um at true focus, 1.4-1.7 um per um of defocus on the positive side and less on
the negative side, and on unstained cells it reads -1 um as about +1.6 um (their contrast inverts
through focus; ``docs/autofocus.md`` has the table). A single ``focus_offset_um`` takes out
the first of these; a calibration curve takes out all three where the reading is monotonic.
This is how hardware focus systems are set up: sweep Z through a focus you chose, record the
sensor's signal, and invert that curve in use.

``measure_calibration`` does the sweep: with the sample focused the way you want it, it steps
the stage through ``-range_um..+range_um`` of defocus in ``step_um`` steps (every plane
approached from below, so backlash is the same for all), on one or more fields of view, and
records the median reading per plane. The stage returns to where it started. The default range,
+-10 um (the bundled model's training range), and the first-move aim to use with a calibration
(+1.25 um) are in ``autofocus.calibration_settings`` with the figures that chose them.

``FocusCalibration.defocus_um(reading)`` maps a reading back to defocus relative to that focus:
an isotonic (non-decreasing) fit of the per-plane medians, inverted by linear interpolation.
Planes whose fitted readings are equal (the model cannot tell them apart) map to the middle of
their run; readings beyond the measured ends extend with slope 1 (the model's nominal scale).
The routines and the focus lock use it in place of ``focus_offset_um`` (never both at once).

With ``MIN_BRIGHTNESS_FIELDS`` (5) or more fields the sweep also fits how each plane's reading
changes with a field's mean brightness (how much light the specimen in view takes out,
``autofocus.brightness``): the curve is then the median of the readings corrected to the fields'
mean brightness, and ``defocus_um(reading, brightness)`` corrects a reading the same way before
inverting it.
On the simulator's unstained cells this takes out most of the field-to-field bias where a verify
frame lands (+1.5..+2.5 um; ``docs/autofocus.md``).

Files are JSON (``save`` writes atomically; ``load`` checks the format and every field).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from autofocus.acquire import default_z_offsets, grid_positions
from autofocus.brightness import FIT_WINDOW_UM, correction_um, fit_brightness_slopes
from autofocus.calibration_fields import flat_run_knots, median_curve, merge_fields, non_decreasing
from autofocus.calibration_settings import DEFAULT_RANGE_UM, DEFAULT_STEP_UM, MAX_RANGE_UM
from autofocus.cancel import CancelToken
from autofocus.routines import FramePredictor, frame_bit_depth, is_reliable
from autofocus.stage_moves import approach_from_below, move_in_legs
from drivers.base import Camera, FocusStage, XYStage
from drivers.errors import LimitError, UnreliableEstimateError
from models.zstack import atomic_write_bytes

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FocusCalibration",
    "calibration_from_table",
    "measure_calibration",
    "nearest_fields",
]

FORMAT = "ldse-focus-calibration"
FORMAT_VERSION = 3  # 2 added tilt_um_per_mm, 3 the brightness correction; older files still load
READABLE_VERSIONS = (1, 2, 3)
BRIGHTNESS_KEYS = ("brightness_slope_um", "brightness_mean", "brightness_range")
MIN_SPAN_UM = 0.5  # a curve whose fitted readings span less than this cannot be inverted usefully

Progress = Callable[[dict[str, Any]], None]
log = logging.getLogger(__name__)


@dataclass
class FocusCalibration:
    """Median model reading per defocus plane; ``defocus_um`` inverts it. ``to_dict()`` is JSON-friendly."""

    z_um: list[float]  # defocus of each plane relative to the focus set when measuring, increasing
    reading_um: list[float]  # median reading of the reliable frames at that plane
    spread_um: list[float]  # standard deviation of those readings, brightness-corrected where fitted (0 with one field)
    fields: int  # fields of view the sweep visited
    source: str = ""  # the model that was read (a checkpoint path or name)
    created_at: str = ""
    # defocus change per mm of X and Y travel fitted over the fields (autofocus.calibration_fields;
    # defocus sign, so opposite to the focal surface's slope in stage Z where direction is -1);
    # None: one field, or fields that could not pin a plane (read as measured, a level slide assumed)
    tilt_um_per_mm: tuple[float, float] | None = None
    # reading change (um) per unit of brightness at each plane, the fields' mean brightness and
    # its range (autofocus.brightness); all None: no correction (fewer than 5 fields, or an older file)
    brightness_slope_um: list[float] | None = None
    brightness_mean: float | None = None
    brightness_range: tuple[float, float] | None = None
    _fitted: np.ndarray = field(init=False, repr=False, compare=False)
    _knot_reading: np.ndarray = field(init=False, repr=False, compare=False)
    _knot_z: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        z = np.asarray(self.z_um, dtype=float)
        r = np.asarray(self.reading_um, dtype=float)
        s = np.asarray(self.spread_um, dtype=float)
        if not (z.ndim == 1 and z.shape == r.shape == s.shape):
            raise ValueError(
                f"z_um, reading_um and spread_um must be lists of one length, got {z.shape}, {r.shape}, {s.shape}"
            )
        if z.size < 3:
            raise ValueError(f"a calibration needs at least 3 planes, got {z.size}")
        if not (np.all(np.isfinite(z)) and np.all(np.isfinite(r)) and np.all(np.isfinite(s)) and np.all(s >= 0)):
            raise ValueError("z_um, reading_um and spread_um must be finite numbers (spread >= 0)")
        if np.any(np.diff(z) <= 0):
            raise ValueError("z_um must be strictly increasing")
        if not (z[0] <= 0.0 <= z[-1]):
            raise ValueError(f"the planes must include focus: z_um spans {z[0]:+.3f}..{z[-1]:+.3f} um")
        if isinstance(self.fields, bool) or not isinstance(self.fields, int) or self.fields < 1:
            raise ValueError(f"fields must be an integer >= 1, got {self.fields!r}")
        if self.tilt_um_per_mm is not None:
            tilt = self.tilt_um_per_mm
            if not (
                isinstance(tilt, tuple | list)
                and len(tilt) == 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in tilt)
            ):
                raise ValueError(f"tilt_um_per_mm must be two finite numbers or null, got {tilt!r}")
            self.tilt_um_per_mm = (float(tilt[0]), float(tilt[1]))
        self._check_brightness(z.size)
        fitted = non_decreasing(r)
        if fitted[-1] - fitted[0] < MIN_SPAN_UM:
            raise ValueError(
                f"the model's reading changes by only {fitted[-1] - fitted[0]:.3f} um over "
                f"{z[0]:+.2f}..{z[-1]:+.2f} um of defocus (at least {MIN_SPAN_UM} um is needed): sweep a wider "
                "range; was the sample in focus and in view, and is the model trained for this objective?"
            )
        self._fitted = fitted  # the isotonic fit, plane by plane (flat_at_focus_um)
        self._knot_reading, self._knot_z = flat_run_knots(z, fitted)
        self.z_um, self.reading_um, self.spread_um = z.tolist(), r.tolist(), s.tolist()

    def _check_brightness(self, planes: int) -> None:
        """The three brightness-correction fields: all None, or a slope per plane, a mean and a range."""
        values = (self.brightness_slope_um, self.brightness_mean, self.brightness_range)
        if all(v is None for v in values):
            return
        if any(v is None for v in values):
            raise ValueError(f"{', '.join(BRIGHTNESS_KEYS)} must be given together (or all be null)")
        slope = np.asarray(self.brightness_slope_um, dtype=float)
        lo_hi = np.asarray(self.brightness_range, dtype=float)
        mean = self.brightness_mean
        if slope.shape != (planes,) or not np.all(np.isfinite(slope)):
            raise ValueError(f"brightness_slope_um must be {planes} finite numbers, one per plane, got {slope.shape}")
        if not (
            lo_hi.shape == (2,)
            and isinstance(mean, int | float)
            and not isinstance(mean, bool)
            and 0.0 <= lo_hi[0] <= float(mean) <= lo_hi[1] <= 1.0
        ):
            raise ValueError(
                "brightness_range must be [lo, hi] and brightness_mean a number with "
                f"0 <= lo <= mean <= hi <= 1, got {self.brightness_range!r} and {mean!r}"
            )
        self.brightness_slope_um = slope.tolist()
        self.brightness_mean = float(mean)
        self.brightness_range = (float(lo_hi[0]), float(lo_hi[1]))

    def _invert(self, reading_um: float) -> float:
        kr, kz = self._knot_reading, self._knot_z
        if reading_um <= kr[0]:
            return float(kz[0] + (reading_um - kr[0]))
        if reading_um >= kr[-1]:
            return float(kz[-1] + (reading_um - kr[-1]))
        return float(np.interp(reading_um, kr, kz))

    def defocus_um(self, reading_um: float, brightness: float | None = None) -> float:
        """The defocus (relative to the calibrated focus) at which the model gives ``reading_um``.

        With a ``brightness`` (``Prediction.brightness``) and a calibration that fitted the
        correction, the reading is first moved to what a field of the calibrated fields' mean
        brightness would read, at the plane the reading points to (found in two passes). The
        brightness is held to the calibrated range widened by its own width on each side, and the
        correction to +-0.5 um (``autofocus.brightness.MAX_CORRECTION_UM``).
        """
        z = self._invert(reading_um)
        if brightness is None or self.brightness_slope_um is None:
            return z
        assert self.brightness_mean is not None and self.brightness_range is not None
        lo, hi = self.brightness_range
        offset = float(np.clip(brightness, 2 * lo - hi, 2 * hi - lo)) - self.brightness_mean
        for _ in range(2):
            slope = np.interp(z, self.z_um, self.brightness_slope_um)
            z = self._invert(reading_um - float(correction_um(slope, offset)))
        return z

    @property
    def reading_at_focus_um(self) -> float:
        """The median reading at the calibrated focus (interpolated if 0 was not a plane): what
        ``autofocus offset`` would measure there. Where the model cannot tell focus from its
        neighbours the fitted curve maps this reading to the middle of their run, not to 0."""
        return float(np.interp(0.0, self.z_um, self.reading_um))

    @property
    def flat_at_focus_um(self) -> float:
        """Span (um) of the planes around focus that the fitted curve reads alike (0: focus has a
        reading of its own). Within it a reading cannot say where focus is."""
        z, fitted = np.asarray(self.z_um), self._fitted
        alike = z[np.abs(fitted - fitted[int(np.argmin(np.abs(z)))]) <= 1e-9]  # contiguous: fitted is monotonic
        return float(alike[-1] - alike[0])

    def summary(self) -> dict[str, Any]:
        """A short description for records and status pages."""
        return {
            "z_range_um": [self.z_um[0], self.z_um[-1]],
            "planes": len(self.z_um),
            "fields": self.fields,
            "reading_at_focus_um": round(self.reading_at_focus_um, 3),
            "tilt_um_per_mm": None if self.tilt_um_per_mm is None else [round(v, 3) for v in self.tilt_um_per_mm],
            "brightness_correction": self.brightness_slope_um is not None,
            "source": self.source,
            "created_at": self.created_at,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "z_um": self.z_um,
            "reading_um": self.reading_um,
            "spread_um": self.spread_um,
            "fields": self.fields,
            "tilt_um_per_mm": None if self.tilt_um_per_mm is None else list(self.tilt_um_per_mm),
            "brightness_slope_um": self.brightness_slope_um,
            "brightness_mean": self.brightness_mean,
            "brightness_range": None if self.brightness_range is None else list(self.brightness_range),
            "source": self.source,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "calibration") -> FocusCalibration:
        """Rebuild from ``to_dict()`` output; ``ValueError`` naming ``where`` and the field if anything is off."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{where}: not a focus calibration (expected an object with format {FORMAT!r})")
        if data.get("format_version") not in READABLE_VERSIONS:
            raise ValueError(
                f"{where}: format_version {data.get('format_version')!r} is not supported (this version reads "
                f"{', '.join(map(str, READABLE_VERSIONS))})"
            )
        missing = [k for k in ("z_um", "reading_um", "spread_um", "fields") if k not in data]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        unknown = sorted(
            set(data)
            - {
                "format",
                "format_version",
                "z_um",
                "reading_um",
                "spread_um",
                "fields",
                "tilt_um_per_mm",
                *BRIGHTNESS_KEYS,
                "source",
                "created_at",
            }
        )
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
        tilt = data.get("tilt_um_per_mm")
        if tilt is not None and data["format_version"] < 2:
            raise ValueError(f"{where}: tilt_um_per_mm needs format_version 2 (the file says 1)")
        given = [k for k in BRIGHTNESS_KEYS if data.get(k) is not None]
        if given and data["format_version"] < 3:
            raise ValueError(
                f"{where}: {', '.join(given)} need(s) format_version 3 (the file says {data['format_version']})"
            )
        not_lists = [k for k in ("z_um", "reading_um", "spread_um") if not isinstance(data[k], list)]
        for key in ("tilt_um_per_mm", "brightness_slope_um", "brightness_range"):
            if data.get(key) is not None and not isinstance(data[key], list):
                not_lists.append(key)
        if not_lists:
            raise ValueError(f"{where}: {', '.join(not_lists)} must be lists of numbers")
        try:
            return cls(
                z_um=[float(v) for v in data["z_um"]],
                reading_um=[float(v) for v in data["reading_um"]],
                spread_um=[float(v) for v in data["spread_um"]],
                fields=data["fields"],
                tilt_um_per_mm=tilt,  # checked in __post_init__
                brightness_slope_um=data.get("brightness_slope_um"),
                brightness_mean=data.get("brightness_mean"),
                brightness_range=data.get("brightness_range"),
                source=str(data.get("source", "")),
                created_at=str(data.get("created_at", "")),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write JSON atomically (a crash leaves the old file or the new one, never half of one)."""
        target = Path(path)
        atomic_write_bytes(target, (json.dumps(self.to_dict(), indent=1) + "\n").encode())
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FocusCalibration:
        source = Path(path)
        try:
            data = json.loads(source.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not JSON ({exc})") from None
        return cls.from_dict(data, where=str(source))


def _planes(range_um: float, step_um: float) -> np.ndarray:
    if not (math.isfinite(step_um) and step_um > 0):
        raise ValueError(f"step_um must be a positive number, got {step_um!r}")
    if not (math.isfinite(range_um) and step_um <= range_um <= MAX_RANGE_UM):
        raise ValueError(f"range_um must be in [step_um, {MAX_RANGE_UM:g}] um, got {range_um!r}")
    k = math.floor(range_um / step_um + 1e-9)
    return np.asarray(default_z_offsets(-k * step_um, k * step_um, step_um))


def nearest_fields(center: tuple[float, float], count: int, spacing_um: float) -> list[tuple[float, float]]:
    """``count`` fields of a square grid (``autofocus.acquire.grid_positions``) around ``center``,
    nearest first: the centre, then its neighbours."""
    if count < 1:
        raise ValueError(f"the number of fields must be >= 1, got {count}")
    side = 2 * math.ceil(math.sqrt(count)) + 1  # odd: the centre is a grid point
    raster = grid_positions(center, side, side, spacing_um)

    def offset(p: tuple[float, float]) -> tuple[int, int]:
        return round((p[0] - center[0]) / spacing_um), round((p[1] - center[1]) / spacing_um)

    return sorted(raster, key=lambda p: (offset(p)[0] ** 2 + offset(p)[1] ** 2, offset(p)))[:count]


def measure_calibration(
    camera: Camera,
    stage: FocusStage,
    predictor: FramePredictor,
    *,
    range_um: float = DEFAULT_RANGE_UM,
    step_um: float = DEFAULT_STEP_UM,
    xy_stage: XYStage | None = None,
    positions: Sequence[tuple[float, float]] | None = None,
    min_confidence: float = 0.3,
    bit_depth: int | None = None,
    brightness_correction: bool = True,
    source: str = "",
    cancel: CancelToken | None = None,
    progress: Progress | None = None,
) -> FocusCalibration:
    """Sweep defocus ``-range_um..+range_um`` around the current (focused) position and return the curve.

    ``positions`` (needs ``xy_stage``): fields of view to sweep, one after the other; None sweeps
    the current field only. Every field is read against the focus set at the start. With
    ``MIN_TILT_FIELDS`` (5) or more fields spanning both axes, a plane through the start (the
    slide's tilt) is fitted to where each field's curve says its focus is, and each field is read
    against its own focus on that plane (``autofocus.calibration_fields``; the result's
    ``tilt_um_per_mm``) when the plane explains the fields' focus beyond their scatter (else the
    slide is read as level, ``tilt_um_per_mm`` None); fewer fields, or a sweep of fewer than 11
    planes, must lie in one focal plane (a level slide). With ``MIN_BRIGHTNESS_FIELDS`` (5) or more
    fields the brightness correction is fitted too (``calibration_from_table``), unless
    ``brightness_correction`` is False.

    The sweep's Z range and every position are checked against the soft limits before the first
    move (``LimitError``: nothing moved); Z moves longer than ``max_step_um`` are split into legs.
    Planes where fewer than half of the fields gave a reliable reading (not blank, confidence >=
    ``min_confidence``) are left out. After a complete sweep the stage (and the XY stage) return
    to the start; on any error or cancel the focus stage stops where it is and the error says
    after how many planes.
    """
    planes = _planes(range_um, step_um)
    if positions is not None and xy_stage is None:
        raise ValueError("positions need an xy_stage")
    fields = list(positions) if positions is not None else [None]
    if not fields:
        raise ValueError("positions must name at least one field of view (or be None for the current one)")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
    cancel = cancel or CancelToken()
    z0 = stage.z_um
    xy0 = xy_stage.xy_um if xy_stage is not None else None
    targets = sorted(z0 - stage.direction * planes)  # stage z of every plane, increasing: approach from below
    z_of = {float(t): float(d) for t, d in zip(z0 - stage.direction * planes, planes, strict=True)}
    pre = targets[0] - step_um  # every sweep starts below its first plane
    lo, hi = stage.limits_um
    for point in (pre, targets[-1]):
        if not lo <= point <= hi:
            raise LimitError(
                f"{stage.name}: the sweep needs z_um={point:.3f}, outside the soft limits [{lo:.3f}, {hi:.3f}] um; "
                "nothing moved (reduce range_um or re-centre the stage)"
            )
    if xy_stage is not None and positions is not None:
        (xlo, xhi), (ylo, yhi) = xy_stage.limits_um
        for x, y in positions:
            if not (xlo <= x <= xhi and ylo <= y <= yhi):
                raise LimitError(
                    f"{xy_stage.name}: field ({x:.1f}, {y:.1f}) um is outside the soft limits x [{xlo:.1f}, "
                    f"{xhi:.1f}], y [{ylo:.1f}, {yhi:.1f}] um; nothing moved"
                )

    def move_to(target: float) -> None:
        cancel.raise_if_cancelled("move")
        move_in_legs(stage, target)

    table = np.full((len(fields), planes.size), np.nan)  # field x plane, NaN where unreliable
    seen: list[list[float]] = [[] for _ in fields]  # each field's frame brightness
    column = {float(d): j for j, d in enumerate(planes)}
    done = 0
    try:
        for i, position in enumerate(fields):
            if position is not None and xy_stage is not None:
                cancel.raise_if_cancelled("move")
                xy_stage.move_to(float(position[0]), float(position[1]))
            move_to(pre)
            for target in targets:
                move_to(float(target))
                camera.flush()  # frames queued before the move show the old plane
                cancel.raise_if_cancelled("snap")
                frame = camera.snap()
                pred = predictor.predict(frame, bit_depth=frame_bit_depth(frame, camera, bit_depth))
                d = z_of[float(target)]
                if pred.brightness is not None:
                    seen[i].append(float(pred.brightness))
                ok = is_reliable(pred, min_confidence)
                if ok:
                    table[i, column[d]] = float(pred.defocus_um)
                done += 1
                if progress is not None:
                    progress(
                        {
                            "event": "plane",
                            "field": i,
                            "defocus_um": d,
                            "reading_um": pred.defocus_um,
                            "reliable": ok,
                            "planes_done": done,
                            "planes_total": len(fields) * len(targets),
                        }
                    )
        cancel.raise_if_cancelled("move")
        approach_from_below(stage, z0, step_um)  # back to the start from below, like every plane
        if xy_stage is not None and xy0 is not None and positions is not None:
            xy_stage.move_to(*xy0)
    except BaseException as exc:
        try:
            stage.stop()
        except Exception as stop_exc:  # reported with the original error, never hidden
            exc.add_note(f"stopping the stage after the error failed too: {stop_exc!r}")
        exc.add_note(f"calibration sweep stopped after {done} of {len(fields) * len(targets)} planes")
        raise
    offsets = None  # each field's XY offset from the start, where the focus was set
    if positions is not None and xy0 is not None and len(fields) > 1:
        offsets = np.array([(x - xy0[0], y - xy0[1]) for x, y in positions])
    merged, tilt, unfit, p_value = merge_fields(planes, table, offsets)
    if unfit is not None and p_value is not None:  # a plane was fitted, and found no better than a level slide
        log.info("slide read as level (%s)", unfit)
    elif unfit is not None and len(fields) > 1:
        log.warning("slide tilt not fitted (%s): the %d fields are read as on a level slide", unfit, len(fields))
    brightness = np.array([np.mean(b) for b in seen]) if brightness_correction and all(seen) else None
    return calibration_from_table(planes, merged, brightness, tilt_um_per_mm=tilt, source=source)


def calibration_from_table(
    planes: np.ndarray,
    table: np.ndarray,
    brightness: np.ndarray | None = None,
    *,
    tilt_um_per_mm: tuple[float, float] | None = None,
    source: str = "",
) -> FocusCalibration:
    """The calibration of a sweep's readings ``table`` (fields x ``planes``, NaN where unreliable;
    each field already on its own focus, ``merge_fields``).

    Keeps the planes that at least half of the fields read. ``brightness`` (one per field)
    fits the brightness correction where there are enough fields, on the planes of
    ``FIT_WINDOW_UM`` (``autofocus.brightness``); the curve is then the per-plane median of the
    readings corrected to the fields' mean brightness.
    ``UnreliableEstimateError`` when fewer than 3 planes, or none on one side of focus, are kept.
    """
    planes = np.asarray(planes, dtype=float)
    kept = np.flatnonzero(~np.isnan(median_curve(table)))
    if kept.size < 3 or not (planes[kept[0]] <= 0.0 <= planes[kept[-1]]):
        raise UnreliableEstimateError(
            f"only {kept.size} of {planes.size} planes gave reliable readings on at least half of the fields "
            "(at least 3, on both sides of focus, are needed): calibrate on fields with more specimen in view"
        )
    planes, table = planes[kept], table[:, kept]
    window = (planes >= FIT_WINDOW_UM[0]) & (planes <= FIT_WINDOW_UM[1])
    slopes = None if brightness is None else fit_brightness_slopes(np.where(window, table, np.nan), brightness)
    correction: dict[str, Any] = {}
    if slopes is not None and brightness is not None:
        mean = float(np.mean(brightness))
        table = table - correction_um(slopes[None, :], np.asarray(brightness, dtype=float)[:, None] - mean)
        correction = {
            "brightness_slope_um": slopes.tolist(),
            "brightness_mean": mean,
            "brightness_range": (float(np.min(brightness)), float(np.max(brightness))),
        }
    return FocusCalibration(
        z_um=planes.tolist(),
        reading_um=median_curve(table).tolist(),
        spread_um=np.nanstd(table, axis=0).tolist(),
        fields=int(table.shape[0]),
        tilt_um_per_mm=tilt_um_per_mm,
        source=source,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        **correction,
    )
