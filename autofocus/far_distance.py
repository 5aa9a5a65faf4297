"""How far from focus a far frame is, read from its spectrum through a calibration.

Beyond about +-7 um the wide model's reading flattens (a regression network pulls readings near
the ends of its +-10 um training range inwards): on unstained cells a reading of -9.3 um stands
for anything from -8 to -10 um, and a one-shot run's first move from there lands 1-2 um from its
aim on some fields, where the verify frame cannot always bring it within 0.3 um
(``docs/autofocus.md``, "The far ends"). The frame's radial-spectrum centroid
(``autofocus.measures.spectral_centroid``) keeps falling out there, because defocus blur cuts the
spectrum off at a frequency that falls as 1/|z|, and it hardly depends on the field.

So the predictor measures the centroid of every frame the wide model reads beyond
``FAR_READING_UM`` (``Prediction.spectral_centroid_percent``), a calibration sweep keeps the
per-plane median of those centroids (``centroid_curve``), and a far frame's distance from focus
is read off that curve on the side of focus the model's reading gives (``far_defocus_um``). The
model still gives the side, which the centroid cannot (it is the same on both sides); the
centroid gives the distance. Without a calibration, or on a side the sweep has too few far planes
for, the model's reading is used as before.

The centroid does not read every specimen better. On unstained cells (12 fields at 7-10 um,
``benchmarks/bench_far_reading.py``) it recovered the defocus with an RMSE of 0.56 um below focus
and 1.25 um above, against 0.94 and 1.98 um for the model's far reading; on stained tissue it
missed by 3 um (the reading: 0.80 and 0.47 um). So a calibration keeps the centroid curve on a
side of focus only on the outermost planes where, left out one field at a time, its own fields
are recovered better from the centroid than from the reading (``centroid_planes``; on cells at
+5..+6 um the reading is still the better of the two), and needs ``MIN_CENTROID_FIELDS`` fields to
judge. A frame is read by its centroid only where its reading places it among those planes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from autofocus.calibration_fields import non_decreasing

__all__ = [
    "MIN_CENTROID_FIELDS",
    "MIN_FAR_PLANES",
    "READING_MARGIN_UM",
    "centroid_curve",
    "centroid_planes",
    "check_centroid_curve",
    "far_defocus_um",
]

MIN_FAR_PLANES = 3  # planes with a centroid on one side of focus needed to read distances there
MIN_CENTROID_FIELDS = 5  # fields a sweep needs before it compares the centroid with the reading
# how far inside the centroid's planes the reading may place a frame that is still read by its
# centroid: where the centroid is needed the flat reading is itself 1-2 um out
READING_MARGIN_UM = 1.0


def centroid_curve(table: np.ndarray) -> list[float | None]:
    """Per-plane median of a sweep's centroids (fields x planes, NaN where the frame was not far or
    not reliable); None where fewer than half of the fields had one."""
    table = np.asarray(table, dtype=float)
    have = np.sum(~np.isnan(table), axis=0)
    out: list[float | None] = []
    for j in range(table.shape[1]):
        column = table[:, j]
        out.append(float(np.nanmedian(column)) if 2 * have[j] >= table.shape[0] and have[j] else None)
    return out


def check_centroid_curve(curve: Sequence[float | None], planes: int) -> list[float | None]:
    """``curve`` as a list of positive finite numbers or None, one per plane; ``ValueError`` if not."""
    if not isinstance(curve, list | tuple) or len(curve) != planes:
        raise ValueError(f"centroid_percent must be a list of {planes} numbers or nulls, one per plane")
    out: list[float | None] = []
    for v in curve:
        if v is None:
            out.append(None)
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
            out.append(float(v))
        else:
            raise ValueError(f"centroid_percent values must be positive numbers or null, got {v!r}")
    return out


def far_defocus_um(
    z_um: Sequence[float],
    curve: Sequence[float | None],
    centroid_percent: float,
    side: float,
    reading_defocus_um: float | None = None,
) -> float | None:
    """The defocus on ``side`` of focus (the sign of the model's reading) whose frames have the
    centroid ``centroid_percent``, or None when the curve has fewer than ``MIN_FAR_PLANES`` planes
    on that side, or when ``reading_defocus_um`` (the reading's own defocus through the reading
    curve) lies nearer focus than the curve's planes by more than ``READING_MARGIN_UM``: there the
    calibration found the reading the better guide.

    The centroid falls with distance from focus; the curve's planes on that side get a
    non-increasing fit in |z| (runs it cannot tell apart map to the middle of their planes, as the
    reading curve's do), and a centroid beyond the measured ones extends with the fit's mean slope.
    """
    sign = 1.0 if side > 0 else -1.0
    pairs = [(abs(z), c) for z, c in zip(z_um, curve, strict=True) if c is not None and z * sign > 0]
    if len(pairs) < MIN_FAR_PLANES:
        return None
    pairs.sort()
    if reading_defocus_um is not None and abs(reading_defocus_um) < pairs[0][0] - READING_MARGIN_UM:
        return None
    # -centroid rises with the distance from focus
    d = _monotone_inverse(np.array([p[0] for p in pairs]), -np.array([p[1] for p in pairs]), -float(centroid_percent))
    return sign * max(d, 0.0)


def _monotone_inverse(x: np.ndarray, values: np.ndarray, value: float) -> float:
    """The ``x`` (increasing) at which a non-decreasing fit of ``values`` gives ``value``: runs of equal
    fitted values map to the middle of their ``x``; beyond the ends the fit's mean slope carries on."""
    fitted = non_decreasing(values)
    starts = np.flatnonzero(np.r_[True, np.diff(fitted) > 1e-12])
    ends = np.r_[starts[1:], fitted.size]
    knot_value = fitted[starts]
    knot_x = np.array([x[a:b].mean() for a, b in zip(starts, ends, strict=True)])
    if knot_value.size == 1:
        return float(knot_x[0])
    slope = (knot_x[-1] - knot_x[0]) / (knot_value[-1] - knot_value[0])
    if value < knot_value[0]:
        return float(knot_x[0] + (value - knot_value[0]) * slope)
    if value > knot_value[-1]:
        return float(knot_x[-1] + (value - knot_value[-1]) * slope)
    return float(np.interp(value, knot_value, knot_x))


def centroid_planes(planes: np.ndarray, table: np.ndarray, centroids: np.ndarray, side: float) -> np.ndarray:
    """The planes on ``side`` of focus where the sweep's fields recover their defocus better from the
    centroid than from the reading (each field left out of the curves it is read through): the
    outermost run of far planes where the centroid's RMS error is the smaller (a mask over ``planes``).

    ``table`` and ``centroids`` are fields x ``planes`` (NaN where unreliable, or not far). The far
    planes are those of the centroid curve; the reading is inverted through a monotone fit of the
    other fields' per-plane medians over the same planes. No planes with fewer than
    ``MIN_CENTROID_FIELDS`` fields, or where the run is shorter than ``MIN_FAR_PLANES``.
    """
    planes, table, centroids = (np.asarray(a, dtype=float) for a in (planes, table, centroids))
    chosen = np.zeros(planes.size, dtype=bool)
    if table.shape[0] < MIN_CENTROID_FIELDS:
        return chosen
    sign = 1.0 if side > 0 else -1.0
    far = np.array([c is not None for c in centroid_curve(centroids)]) & (planes * sign > 0)
    if far.sum() < MIN_FAR_PLANES:
        return chosen
    z = planes[far]
    squared = {"centroid": np.zeros(z.size), "reading": np.zeros(z.size)}
    for f in range(table.shape[0]):
        others = np.delete(np.arange(table.shape[0]), f)
        c_curve = centroid_curve(centroids[others][:, far])
        rest = table[others][:, far]
        if np.any(np.all(np.isnan(rest), axis=0)):
            continue
        r_curve = np.nanmedian(rest, axis=0)
        for j in np.flatnonzero(~np.isnan(centroids[f, far]) & ~np.isnan(table[f, far])):
            by_centroid = far_defocus_um(z, c_curve, float(centroids[f, far][j]), sign)
            if by_centroid is None:
                continue
            squared["centroid"][j] += (by_centroid - z[j]) ** 2
            squared["reading"][j] += (_monotone_inverse(z, r_curve, float(table[f, far][j])) - z[j]) ** 2
    better = squared["centroid"] < squared["reading"]
    outward = np.argsort(-np.abs(z))  # from the far end towards focus
    run = 0
    while run < z.size and better[outward[run]]:
        run += 1
    if run < MIN_FAR_PLANES:
        return chosen
    chosen[np.flatnonzero(far)[outward[:run]]] = True
    return chosen
