"""Merging a multi-field calibration sweep on a slide that is not level.

A sweep over several fields of view reads every field against the focus you set at the start.
On a tilted slide field ``i`` is in focus ``delta_i`` away from there, so its reading curve
is the common curve shifted: ``r_i(d) ~ M(d + delta_i)``. The median over fields at each plane
then mixes readings taken at different defocus: with fields on one side of the start it is
biased by their shifts (a 2 um/mm tilt shifts fields 500 um away by 1 um), and on a grid centred
on the start it falls back to the middle field's reading, one field's bias instead of several
averaged. ``merge_fields`` undoes that:

1. the median curve ``M`` over fields, made non-decreasing;
2. each field's shift: the ``delta`` in ``-SHIFT_SEARCH_UM..+SHIFT_SEARCH_UM`` (steps of
   ``SHIFT_STEP_UM``) that minimises the mean absolute difference between its readings and
   ``M(d + delta)``;
3. a plane ``delta = (tx * dx + ty * dy) / 1000 + c`` (``dx, dy`` the field's offset from the
   start in um; ``c`` only says where ``M`` itself sits) fitted by least squares: tilt is smooth
   across the slide, while a field's own reading bias is not, so the plane keeps the tilt and
   averages the biases out (which is why it needs ``MIN_TILT_FIELDS`` fields that span both
   axes);
4. each field's readings moved to ``d + (tx * dx + ty * dy) / 1000``, the parallel plane through
   the start (whose focus the user set), and interpolated back onto the planes, only between
   readings of neighbouring planes (a plane a field could not read stays unread);
5. twice more: the median curve of the moved readings, then steps 2-4 on the measured readings;
6. the plane is kept only if it explains the shifts better than one common shift does beyond
   what the fields' own scatter would give on a level slide: an F-test of the plane against a
   constant, ``p < TILT_P_VALUE``. Tissue reads compressed below focus, so its fields' shifts
   scatter, and on a level slide nine such fields once gave a plane of (1.65, 1.70) um/mm: read
   with it, the fields' readings were moved by up to 1.2 um for nothing. A slide with no tilt
   beyond the scatter is read as measured (a level slide), and the result says so and gives p.

A field whose focus seems ``SHIFT_SEARCH_UM`` (6 um) or more from the start's is refused
(``UnreliableEstimateError``), not followed: either the slide is tilted more than a sweep can
follow, or that field reads unlike the others.

The tilt is reported as the change of defocus (the project's sign: > 0 is the specimen beyond
the focal plane) per mm of X and of Y travel: with a focus stage whose ``direction`` is -1 it has
the opposite sign of the focal surface's slope in stage Z. With fewer fields, fields on one
line, or a sweep of fewer than ``MIN_TILT_PLANES`` planes, the readings are merged as measured (a
level slide assumed) and ``merge_fields`` says why.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

from drivers.errors import UnreliableEstimateError

__all__ = [
    "MIN_TILT_FIELDS",
    "MIN_TILT_PLANES",
    "SHIFT_SEARCH_UM",
    "TILT_P_VALUE",
    "MergedFields",
    "flat_run_knots",
    "median_curve",
    "merge_fields",
    "non_decreasing",
    "tilt_unfit_reason",
]

MIN_TILT_FIELDS = 5
SHIFT_SEARCH_UM = 6.0
SHIFT_STEP_UM = 0.05
MIN_OVERLAP_PLANES = 5  # planes a field must share with the curve to be aligned at a shift
MIN_TILT_PLANES = 2 * MIN_OVERLAP_PLANES + 1  # a shorter sweep leaves too few shifts to compare
MAX_LAYOUT_CONDITION = 1e4  # fields nearly on one line pin the plane's other slope poorly
TILT_P_VALUE = 0.05  # a plane this unlikely on a level slide, given the fields' scatter, is taken as the tilt


class MergedFields(NamedTuple):
    """What ``merge_fields`` made of a sweep."""

    table: np.ndarray
    """Fields x planes, each field read against its own focus (the sweep as measured when no tilt is applied)."""
    tilt_um_per_mm: tuple[float, float] | None
    """The tilt applied: defocus change per mm of X and of Y travel; None when the slide is read as level."""
    reason: str | None
    """Why no tilt was applied (None when one was)."""
    tilt_p_value: float | None = None
    """The F-test's p for the fitted plane against a level slide; None where no plane could be fitted."""


def median_curve(table: np.ndarray) -> np.ndarray:
    """Per-plane median over fields (rows) of ``table``; NaN where fewer than half the fields read."""
    counts = np.sum(~np.isnan(table), axis=0)
    out = np.full(table.shape[1], np.nan)
    enough = (2 * counts >= table.shape[0]) & (counts > 0)
    out[enough] = np.nanmedian(table[:, enough], axis=0)
    return out


def non_decreasing(values: np.ndarray) -> np.ndarray:
    """Least-squares non-decreasing fit (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, n2 = blocks.pop()
            m1, n1 = blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return np.concatenate([np.full(int(n), m) for m, n in blocks])


def flat_run_knots(x: np.ndarray, fitted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The knots of a monotone fit (``fitted``, one value per ``x``) for inverting it: each run of
    equal fitted values collapses to one knot at the middle of its ``x``. Returns (values, x)."""
    starts = np.flatnonzero(np.r_[True, np.diff(fitted) > 1e-9])
    ends = np.r_[starts[1:], fitted.size]
    return fitted[starts], np.array([x[a:b].mean() for a, b in zip(starts, ends, strict=True)])


def _field_shift_um(planes: np.ndarray, row: np.ndarray, curve_z: np.ndarray, curve_r: np.ndarray) -> float | None:
    """The shift that best lays this field's readings on the curve; None if too few planes overlap."""
    ok = ~np.isnan(row)
    z, r = planes[ok], row[ok]
    best: tuple[float, float] | None = None
    for shift in np.arange(-SHIFT_SEARCH_UM, SHIFT_SEARCH_UM + SHIFT_STEP_UM / 2, SHIFT_STEP_UM):
        zs = z + shift
        inside = (zs >= curve_z[0]) & (zs <= curve_z[-1])
        if inside.sum() < MIN_OVERLAP_PLANES:
            continue
        cost = float(np.mean(np.abs(r[inside] - np.interp(zs[inside], curve_z, curve_r))))
        if best is None or cost < best[0] - 1e-12 or (abs(cost - best[0]) <= 1e-12 and abs(shift) < abs(best[1])):
            best = (cost, float(shift))
    return None if best is None else best[1]


def _regrid(planes: np.ndarray, table: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Each field's readings moved to ``plane + shift`` and interpolated back onto ``planes``.

    A plane gets a value only from two readings of neighbouring sweep planes (a gap where the
    field read nothing stays a gap), and the end readings also stand for planes up to half a step
    beyond them (else a small shift would drop the sweep's end planes).
    """
    out = np.full_like(table, np.nan)
    step = float(np.min(np.diff(planes)))
    for i, (row, shift) in enumerate(zip(table, shifts, strict=True)):
        idx = np.flatnonzero(~np.isnan(row))
        if idx.size == 0:
            continue
        z, r = planes[idx] + shift, row[idx]
        for j, p in enumerate(planes):
            k = int(np.searchsorted(z, p))
            if k < z.size and abs(z[k] - p) < 1e-9:
                out[i, j] = r[k]
            elif 0 < k < z.size and idx[k] - idx[k - 1] == 1:
                t = (p - z[k - 1]) / (z[k] - z[k - 1])
                out[i, j] = r[k - 1] + t * (r[k] - r[k - 1])
            elif (k == 0 and z[0] - p <= step / 2) or (k == z.size and p - z[-1] <= step / 2):
                out[i, j] = r[min(k, z.size - 1)]
    return out


def tilt_unfit_reason(planes: np.ndarray, fields: int, offsets_um: np.ndarray | None) -> str | None:
    """Why this sweep cannot fit a tilt before it is run (None: it can try)."""
    if offsets_um is None or fields < MIN_TILT_FIELDS:
        return f"{fields} field(s); a tilt needs at least {MIN_TILT_FIELDS}"
    if planes.size < MIN_TILT_PLANES:
        return f"{planes.size} planes; a tilt needs at least {MIN_TILT_PLANES}"
    return _layout_problem(np.asarray(offsets_um, dtype=float))


def _design(offsets_um: np.ndarray) -> np.ndarray:
    """The plane fit's columns: X and Y offset in mm, and 1 (where the median curve itself sits)."""
    return np.column_stack([offsets_um / 1000.0, np.ones(len(offsets_um))])


def _layout_problem(offsets_um: np.ndarray) -> str | None:
    """None if the fields span both axes well enough to fit a plane, else what is wrong."""
    design = _design(offsets_um)
    if np.linalg.matrix_rank(design, tol=1e-6) < 3 or np.linalg.cond(design) > MAX_LAYOUT_CONDITION:
        return "the fields lie (nearly) on one line; a tilt needs fields spread in X and in Y"
    return None


def _tilt_p_value(design: np.ndarray, shifts: np.ndarray, coef: np.ndarray) -> float:
    """F-test of the fitted plane ``coef`` (3 coefficients) against one common shift: p of a fit this
    good on a level slide."""
    rss_plane = float(np.sum((shifts - design @ coef) ** 2))
    rss_level = float(np.sum((shifts - shifts.mean()) ** 2))
    dof = len(shifts) - design.shape[1]
    if rss_plane <= 1e-12 * max(rss_level, 1e-12):  # the fields lie on the plane exactly
        return 0.0 if rss_level > 1e-12 else 1.0
    f = ((rss_level - rss_plane) / (design.shape[1] - 1)) / (rss_plane / dof)
    return float(stats.f.sf(f, design.shape[1] - 1, dof))


def merge_fields(planes: np.ndarray, table: np.ndarray, offsets_um: np.ndarray | None) -> MergedFields:
    """The readings ``table`` (fields x planes, NaN where unreliable) on each field's own focus.

    ``offsets_um``: each field's (dx, dy) from the start, where the focus was set, or None.
    Returns the table to take medians of and the tilt applied; or the table as it was, no tilt,
    and why (too few fields or planes, or no tilt beyond the fields' scatter). Raises
    ``UnreliableEstimateError`` when a field's focus lies ``SHIFT_SEARCH_UM`` or more from the
    start's (the search's edge): a tilt that large cannot be followed, so no curve is returned.
    """
    reason = tilt_unfit_reason(planes, table.shape[0], offsets_um)
    if reason is not None or offsets_um is None:
        return MergedFields(table, None, reason)
    xy_um = np.asarray(offsets_um, dtype=float)
    design = _design(xy_um)
    merged, tilt = table, (0.0, 0.0)
    for _ in range(3):
        curve = median_curve(merged)
        have = ~np.isnan(curve)
        if have.sum() < MIN_OVERLAP_PLANES:
            return MergedFields(table, None, f"only {int(have.sum())} planes were read on most fields")
        curve_z, curve_r = planes[have], non_decreasing(curve[have])
        shifts = [_field_shift_um(planes, row, curve_z, curve_r) for row in table]
        for (dx, dy), shift in zip(xy_um, shifts, strict=True):
            if shift is not None and abs(shift) >= SHIFT_SEARCH_UM - 1e-9:
                raise UnreliableEstimateError(
                    f"the field at ({dx:+.0f}, {dy:+.0f}) um from the start reads as if its focus were "
                    f"{SHIFT_SEARCH_UM:g} um or more away: the slide is tilted more than the calibration can "
                    "follow (or that field reads unlike the others); level the slide, space the fields closer, "
                    "or calibrate on one field"
                )
        usable = np.array([s is not None for s in shifts])
        if usable.sum() < MIN_TILT_FIELDS or _layout_problem(xy_um[usable]):
            return MergedFields(table, None, f"only {int(usable.sum())} fields read enough planes to place their focus")
        measured = np.array([s for s in shifts if s is not None])
        coef, *_ = np.linalg.lstsq(design[usable], measured, rcond=None)
        tilt = (float(coef[0]), float(coef[1]))
        merged = _regrid(planes, table, design[:, :2] @ coef[:2])  # the parallel plane through the start
    p_value = _tilt_p_value(design[usable], measured, coef)
    if p_value >= TILT_P_VALUE:
        return MergedFields(
            table,
            None,
            f"no tilt beyond the fields' own scatter: the best plane, ({tilt[0]:+.2f}, {tilt[1]:+.2f}) um/mm, "
            f"has p = {p_value:.2f} on a level slide (a tilt needs p < {TILT_P_VALUE:g})",
            p_value,
        )
    return MergedFields(merged, tilt, None, p_value)
