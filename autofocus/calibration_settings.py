"""The numbers a focus calibration starts from, importable without torch (the CLI builds its help from them).

``docs/autofocus.md`` ("Where the first move should aim") has the measurements behind them.
"""

from __future__ import annotations

__all__ = [
    "CALIBRATED_AIM_UM",
    "DEFAULT_FIELDS",
    "DEFAULT_FIELD_SPACING_UM",
    "DEFAULT_RANGE_UM",
    "DEFAULT_STEP_UM",
    "LOCK_CURVE_RANGE_UM",
    "LOCK_INTEGRAL_GAIN",
    "MAX_RANGE_UM",
    "default_fields",
]

MAX_RANGE_UM = 10.0  # the bundled model's training range
# The whole training range: a start beyond the sweep is read through the curve's slope-1
# extension, and the wide model flattens beyond +-8.5 um (on cells beyond -8.5 um too), so first
# moves from +-9..+-10 um fell 1-3 um short of the aim with a +-8 um sweep; swept to +-10 um, a
# flat run maps to its middle. One-shot + verify within 0.3 um: 200 ROI trials 92.0 % (+-4), 94.5 %
# (+-8), 95.5 % (+-10); 40 full-frame starts at 8.5..10 um 36 (+-8) against 37 (+-10).
DEFAULT_RANGE_UM = MAX_RANGE_UM
DEFAULT_STEP_UM = 0.5  # plane spacing of the sweep
# The first move's aim with a calibration: the verify frame then lands where the near-focus model
# spreads least from field to field. 200 ROI trials (before the brightness correction): +0.75 um
# 92 %, +1 um 94.5 %, +1.5 um 89 %, +2 um 80 %. With full frames and the brightness correction the
# verify frame of cells misses 1 in 4 times where the first move lands at 0..+0.5 um and never
# at +0.5..+3.5 um (tissue: never at 0..+2.5 um; 474 runs), so +1.25 um keeps more first moves that
# fall short or long in that band. 500 full-frame trials with +1.25 um and +-10 um: 98.8 % within
# 0.3 um on the pool these were chosen on, 98.0 % on an independent one (docs/autofocus.md, "Where
# the first move should aim"); with the predictor's far readings since, 99.6 % and 97.8 %.
CALIBRATED_AIM_UM = 1.25
# Fields of view a calibration sweeps by default where there is an XY stage (a 3 x 3 grid around
# the focused one; a tilted slide is fitted, autofocus.calibration_fields). Fields differ, and a
# curve from one field carries that field's bias into every later run: verify readings within
# 0.3 um (bench_calibration_fields.py, cells / tissue) 77.7 / 71.6 % with 1 field (the worst of 20
# draws 40 / 35 %), 84.9 / 85.5 % with 9 (worst 81 / 82 %), 84.3 / 85.1 % with 20. Closed loop on
# 100 full frames (one-shot + verify within 0.3 um): 88 % calibrated on the start field alone,
# 98 % on 9 fields, 97 % on 9 fields of a slide tilted (2, -1) um/mm.
DEFAULT_FIELDS = 9
DEFAULT_FIELD_SPACING_UM = 500.0  # grid spacing of those fields
# A focus lock that holds the focus the sample is at (FocusLock.calibrate_here): a curve swept
# +-4 um on the locked field, read with the integral term. 1 um/min drift and a 1 um oscillation,
# one 448x448 frame every 30 s (bench_focus_lock.py): 20 fields x 2 simulated hours per specimen,
# RMS median 0.21 um (cells) and 0.20 um (tissue) with gain 0.2, against 0.68 / 0.32 um for the
# default proportional lock; on one field for 8 h (before the half-step lead) 0.21 / 0.21 / 0.22
# um with integral gains 0.1 / 0.2 / 0.3.
LOCK_CURVE_RANGE_UM = 4.0
LOCK_INTEGRAL_GAIN = 0.2


def default_fields(has_xy_stage: bool) -> int:
    """``DEFAULT_FIELDS`` with an XY stage to move between fields, else 1 (the current field)."""
    return DEFAULT_FIELDS if has_xy_stage else 1
