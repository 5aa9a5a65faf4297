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
4. each field's readings moved to ``d + (tx * dx + ty * dy) / 1000``, the tilt plane through the
   start (whose focus the user set), and interpolated back onto the planes; steps 1-4 twice more
   on the result.

The tilt is reported as the change of defocus (the project's sign: > 0 is the specimen beyond
the focal plane) per mm of X and of Y travel. With fewer fields, fields on one line, or a sweep
of fewer than ``MIN_TILT_PLANES`` planes, the readings are merged as measured (a level slide
assumed).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_TILT_FIELDS", "MIN_TILT_PLANES", "median_curve", "merge_fields", "non_decreasing"]

MIN_TILT_FIELDS = 5
SHIFT_SEARCH_UM = 6.0
SHIFT_STEP_UM = 0.05
MIN_OVERLAP_PLANES = 5  # planes a field must share with the curve to be aligned at a shift
MIN_TILT_PLANES = 2 * MIN_OVERLAP_PLANES + 1  # a shorter sweep leaves too few shifts to compare


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
    """Each field's readings moved to ``plane + shift`` and interpolated back onto ``planes``; the
    end readings also stand for planes up to half a step beyond them (else a small shift would
    drop the sweep's end planes)."""
    out = np.full_like(table, np.nan)
    half_step = float(np.min(np.diff(planes))) / 2
    for i, (row, shift) in enumerate(zip(table, shifts, strict=True)):
        ok = ~np.isnan(row)
        if ok.sum() < 2:
            continue
        z = planes[ok] + shift
        inside = (planes >= z[0] - half_step) & (planes <= z[-1] + half_step)
        out[i, inside] = np.interp(planes[inside], z, row[ok])
    return out


def merge_fields(
    planes: np.ndarray, table: np.ndarray, offsets_um: np.ndarray | None
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The readings ``table`` (fields x planes, NaN where unreliable) on each field's own focus.

    ``offsets_um``: each field's (dx, dy) from the start, where the focus was set, or None. Returns the
    table to take medians of and the fitted tilt (um of defocus per mm of X and Y travel), or
    the table as it was and None when the fields cannot pin a plane (see the module docstring).
    """
    if offsets_um is None or table.shape[0] < MIN_TILT_FIELDS or planes.size < MIN_TILT_PLANES:
        return table, None
    offsets = np.asarray(offsets_um, dtype=float) / 1000.0  # mm
    design = np.column_stack([offsets, np.ones(len(offsets))])  # tilt x, tilt y, and where the curve sits
    if np.linalg.matrix_rank(design, tol=1e-6) < 3:
        return table, None
    merged, tilt = table, (0.0, 0.0)
    for _ in range(3):
        curve = median_curve(merged)
        have = ~np.isnan(curve)
        if have.sum() < MIN_OVERLAP_PLANES:
            return table, None
        curve_z, curve_r = planes[have], non_decreasing(curve[have])
        shifts = [_field_shift_um(planes, row, curve_z, curve_r) for row in table]
        usable = np.array([s is not None for s in shifts])
        if usable.sum() < MIN_TILT_FIELDS or np.linalg.matrix_rank(design[usable], tol=1e-6) < 3:
            return table, None
        measured = np.array([s for s in shifts if s is not None])
        coef, *_ = np.linalg.lstsq(design[usable], measured, rcond=None)
        tilt = (float(coef[0]), float(coef[1]))
        merged = _regrid(planes, table, offsets @ coef[:2])  # the plane through the start: its focus is 0
    return merged, tilt
