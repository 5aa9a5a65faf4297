"""Focus-stage moves shared by the routines that sweep Z (dataset acquisition, calibration).

``move_in_legs`` goes to a target in legs of at most the stage's ``max_step_um`` (a sweep's way
back can be longer than one step may be), refusing a target outside the soft limits before the
first leg. ``approach_from_below`` arrives at the target moving up, so that backlash is taken up
the same way at every plane.
"""

from __future__ import annotations

import math

from drivers.base import FocusStage
from drivers.errors import LimitError

__all__ = ["approach_from_below", "move_in_legs"]


def move_in_legs(stage: FocusStage, target_um: float) -> float:
    """Move to ``target_um`` in legs of at most ``max_step_um``; return the read-back position.

    ``LimitError`` (nothing moved) if the target is outside the soft limits.
    """
    lo, hi = stage.limits_um
    if not lo <= target_um <= hi:
        raise LimitError(
            f"{stage.name}: target z_um={target_um:.3f} is outside the soft limits [{lo:.3f}, {hi:.3f}] um"
        )
    z = stage.z_um
    legs = max(1, math.ceil(abs(target_um - z) / stage.max_step_um - 1e-9))
    z_read = z
    for k in range(1, legs + 1):
        z_read = stage.move_to(z + (target_um - z) * k / legs)
    return z_read


def approach_from_below(stage: FocusStage, target_um: float, overshoot_um: float) -> float:
    """Move to ``target_um`` arriving from below (first ``overshoot_um`` under it, unless already coming up)."""
    z = stage.z_um
    if overshoot_um > 0 and target_um - z < overshoot_um:
        move_in_legs(stage, max(target_um - overshoot_um, stage.limits_um[0]))
    return move_in_legs(stage, target_um)
