"""How the predictor combines its tile estimates into one defocus (pure numpy, light to import).

``"mean"`` is the paper's; ``"median"`` and ``"trimmed"`` are robust to a few wrong tiles. The
default, ``DEFAULT_AGGREGATE``, is ``"trimmed"``: measured in closed loop, see ``autofocus.predictor``.
The command line and the service settings take their choices and default from here.

``far_reading``: beyond +-``FAR_READING_UM`` the wide model's tiles saturate unevenly (many flatten
near +-8 um while some still follow the defocus), so there the predictor reports the
``DEFAULT_FAR_QUANTILE`` (75th percentile) of the tile estimates on the reading's side instead
(``autofocus.predictor``, "Far readings").
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

__all__ = [
    "AGGREGATES",
    "DEFAULT_AGGREGATE",
    "DEFAULT_FAR_QUANTILE",
    "FAR_READING_UM",
    "Aggregate",
    "aggregate_estimates",
    "check_far_quantile",
    "far_reading",
]

AGGREGATES = ("mean", "median", "trimmed")
DEFAULT_AGGREGATE = "trimmed"
Aggregate = Literal["mean", "median", "trimmed"]
# A fixed limit on both sides, whatever near model is loaded: beyond it the bundled wide model's
# tiles flatten unevenly (on the positive side it is also where the bundled near window ends).
FAR_READING_UM = 6.0
DEFAULT_FAR_QUANTILE = 0.75


def aggregate_estimates(values: np.ndarray, method: str, trim_fraction: float = 0.2) -> float:
    """Aggregate tile estimates (um) with ``method``; ``values`` must not be empty.

    ``"trimmed"`` drops ``floor(n * trim_fraction)`` values at each end of the sorted list and
    averages the rest.
    """
    if method not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {method!r}")
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction!r}")
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("cannot aggregate an empty set of tile estimates")
    if method == "mean":
        return float(v.mean())
    if method == "median":
        return float(np.median(v))
    k = math.floor(v.size * trim_fraction)
    v = np.sort(v)
    return float(v[k : v.size - k].mean())


def check_far_quantile(quantile: float) -> None:
    """``ValueError`` unless ``quantile`` is a number in [0.5, 1] (0.5: the median, 1: the most extreme tile)."""
    if isinstance(quantile, bool) or not isinstance(quantile, int | float) or not 0.5 <= quantile <= 1.0:
        raise ValueError(f"far_quantile must be a number in [0.5, 1], got {quantile!r}")


def far_reading(values: np.ndarray, reading_um: float, quantile: float) -> float:
    """``reading_um`` unchanged within +-``FAR_READING_UM``; beyond, the ``quantile`` of ``values``
    towards the reading's side (``quantile`` for a positive reading, ``1 - quantile`` for a negative).

    ``quantile`` in [0.5, 1]: 0.5 is the median, 1 the most extreme tile.
    """
    check_far_quantile(quantile)
    if abs(reading_um) <= FAR_READING_UM:
        return reading_um
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("cannot aggregate an empty set of tile estimates")
    return float(np.quantile(v, quantile if reading_um > 0 else 1.0 - quantile))
