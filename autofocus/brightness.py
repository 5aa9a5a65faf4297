"""How bright a frame is, and the part of the reading's field-to-field bias that follows it.

The defocus model's frame-level reading differs from field to field at the same defocus. On the
simulator's unstained cells most of that difference follows how much light the cells in view
take out: at +1.5..+2.5 um (where a one-shot run's verify frame often lands) brighter fields
(fewer cells) read high and darker, crowded ones low; over 20 full frames a field's reading bias
and its mean brightness correlate at 0.87-0.90. A calibration over several fields
(``autofocus.calibration``) therefore fits, at every plane, how the reading changes with the
fields' brightness and takes that out of each reading in use.

``mean_brightness(frame, bit_depth)`` is the frame's mean intensity as a fraction of full scale.
Brightfield conserves the mean intensity through focus (light is redistributed, not lost), so it
is a property of the field, the same at any defocus (measured on the simulator: constant to
0.02 % over -3..+3 um, while fields of cells differ by 0.5 %). A ratio to the background would
not need the illumination to stay put, but no robust background estimate is: bright phase
fringes lift the upper percentiles by several % as cells go through focus. The calibration, like
the model's readings themselves, assumes the exposure and lamp it was measured with: recalibrate
after changing them.

``fit_brightness_slopes`` fits the slope (reading um per unit of brightness) at each plane by
least squares over the fields, pooling each plane with its neighbours (three planes), since nine
fields alone pin a slope loosely, and keeps it only where a t-test says it is beyond the
readings' scatter (p < 0.05): on stained tissue the reading follows brightness only in places,
and an unneeded slope adds its own error to every reading (about the scatter over the square
root of the points pooled). A calibration fits slopes only on the planes of ``FIT_WINDOW_UM``
(-2..+3 um), where verify frames land and the focus lock reads: far from focus, slopes fitted
on the wide model's widely spread readings of tissue moved first moves past the aim.
``FocusCalibration.defocus_um`` holds a frame's brightness to the calibrated fields' range
widened by its own width on each side (a field unlike all of them is corrected as the most
extreme one allowed, not extrapolated without bound), and ``correction_um`` holds a correction
to +-``MAX_CORRECTION_UM`` (0.5 um of reading).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = [
    "FIT_WINDOW_UM",
    "MAX_CORRECTION_UM",
    "MIN_BRIGHTNESS_FIELDS",
    "MIN_BRIGHTNESS_SPREAD",
    "P_VALUE",
    "correction_um",
    "fit_brightness_slopes",
    "mean_brightness",
]

MIN_BRIGHTNESS_FIELDS = 5  # fewer fields cannot pin a slope per plane
MIN_BRIGHTNESS_SPREAD = 1e-3  # fields this alike in brightness (0.1 % of full scale) leave nothing to fit
# Slopes are fitted only on planes in this defocus window, where verify frames land and the focus
# lock reads, and are 0 beyond it. Fitted on every plane of a +-8 um sweep, the far planes' slopes
# on stained tissue (-10..-30 um per unit over a brightness range of 0.13, where the wide model's
# readings spread by 1-1.4 um from field to field) moved 3 of 200 first moves 2 um past the aim;
# at +3.5..+4.5 um unstained cells switch between the wide and the near-focus model, and slopes
# fitted there pushed two verify readings out (closed loop, docs/autofocus.md).
FIT_WINDOW_UM = (-2.0, 3.0)
# The most a reading is moved: the bias this corrects is a few tenths of a um.
MAX_CORRECTION_UM = 0.5
P_VALUE = 0.05  # a slope this unlikely with no relation at all is kept
_SAMPLE_PIXELS = 100_000  # a regular subsample of about this many pixels pins the mean


def mean_brightness(frame: np.ndarray, bit_depth: int | None = None) -> float:
    """The mean intensity of ``frame`` (``H x W`` or ``H x W x C``, channels averaged) in [0, 1] of full scale.

    Full scale: ``2**bit_depth - 1`` for integer frames when ``bit_depth`` is given (a 12-bit
    camera's ``uint16`` frames), else the dtype's maximum; float frames are taken as already in
    [0, 1]. A regular subsample of about 100,000 pixels is averaged (a full frame in ~2 ms).
    """
    frame = np.asarray(frame)
    step = max(1, int(np.sqrt(frame.shape[0] * frame.shape[1] / _SAMPLE_PIXELS)))
    mean = float(frame[::step, ::step].mean(dtype=np.float64))
    if np.issubdtype(frame.dtype, np.integer):
        full = (2**bit_depth - 1) if bit_depth is not None else np.iinfo(frame.dtype).max
        return mean / float(full)
    return mean


def correction_um(slope_um: np.ndarray | float, offset: np.ndarray | float) -> np.ndarray:
    """What to take off a reading: ``slope * (brightness - mean)``, held to +-``MAX_CORRECTION_UM``."""
    return np.clip(np.multiply(slope_um, offset), -MAX_CORRECTION_UM, MAX_CORRECTION_UM)


def fit_brightness_slopes(table: np.ndarray, brightness: np.ndarray) -> np.ndarray | None:
    """Per-plane slope of the readings ``table`` (fields x planes, NaN unread) against ``brightness``
    (one per field), each plane pooled with its two neighbours; a plane no field read gets none.

    A plane's slope is kept only where a t-test finds it beyond the readings' scatter
    (``P_VALUE``), else it is 0. None when the fields are too few or too alike to fit one (fewer
    than ``MIN_BRIGHTNESS_FIELDS`` with a reading, or a brightness spread below
    ``MIN_BRIGHTNESS_SPREAD``), or when no plane kept a slope.
    """
    table = np.asarray(table, dtype=float)
    brightness = np.asarray(brightness, dtype=float)
    if brightness.shape != (table.shape[0],):
        raise ValueError(f"brightness must hold one value per field ({table.shape[0]}), got shape {brightness.shape}")
    if np.sum(np.any(~np.isnan(table), axis=1)) < MIN_BRIGHTNESS_FIELDS or np.ptp(brightness) < MIN_BRIGHTNESS_SPREAD:
        return None
    planes = table.shape[1]
    slopes = np.zeros(planes)
    for j in range(planes):
        if np.all(np.isnan(table[:, j])):  # an unread plane gets no slope from its neighbours
            continue
        xs, ys = [], []
        for k in range(max(0, j - 1), min(planes, j + 2)):
            ok = ~np.isnan(table[:, k])
            if ok.sum() < MIN_BRIGHTNESS_FIELDS:
                continue
            # centred per plane, so the pooled fit shares a slope, not an intercept
            xs.append(brightness[ok] - brightness[ok].mean())
            ys.append(table[ok, k] - table[ok, k].mean())
        if not xs:
            continue
        x, y = np.concatenate(xs), np.concatenate(ys)
        sxx = float(x @ x)
        dof = x.size - len(xs) - 1  # one mean per pooled plane, and the slope
        if sxx <= 0.0 or dof < 1:
            continue
        slope = float(x @ y) / sxx
        resid = y - slope * x
        se = np.sqrt(float(resid @ resid) / dof / sxx)
        if se > 0.0 and 2.0 * stats.t.sf(abs(slope) / se, dof) >= P_VALUE:
            continue
        slopes[j] = slope
    return slopes if np.any(slopes != 0.0) else None
