"""How the predictor combines its tile estimates into one defocus (pure numpy, light to import).

``"mean"`` is the paper's; ``"median"`` and ``"trimmed"`` are robust to a few wrong tiles. The
default, ``DEFAULT_AGGREGATE``, is ``"trimmed"``: measured in closed loop, see ``autofocus.predictor``.
The command line and the service settings take their choices and default from here.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

__all__ = ["AGGREGATES", "DEFAULT_AGGREGATE", "Aggregate", "aggregate_estimates"]

AGGREGATES = ("mean", "median", "trimmed")
DEFAULT_AGGREGATE = "trimmed"
Aggregate = Literal["mean", "median", "trimmed"]


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
