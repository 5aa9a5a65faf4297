"""Whether the bundled model meets the accuracy target its closed-loop tests assume.

The targets are issue #3's (held-out synthetic, 20x/0.75): median per-patch |error| <= 0.3 um and
the sign right for >= 99 % of patches with |z| >= 1 um. The figures are the model's own held-out
metrics (``meta["heldout"]``, written by ``autofocus evaluate --write-checkpoint``). Tests whose
assertions need a model that meets them run anyway and are marked xfail below the target, so
they report XPASS once a retrained model reaches it.
"""

from __future__ import annotations

import pytest

from models.checkpoint import load_checkpoint

TARGET_MEDIAN_ABS_ERROR_UM = 0.3
TARGET_SIGN_ACCURACY = 0.99


def bundled_below_target_reason() -> str | None:
    """A reason string when the bundled model is untrained or below the target, else None."""
    meta = load_checkpoint().meta
    status = str(meta.get("status") or "")
    if "untrained" in status:
        return f"bundled checkpoint is a placeholder: {status}"
    heldout = meta.get("heldout") or {}
    median = heldout.get("median_abs_error_um")
    sign = heldout.get("sign_accuracy")
    if median is None or sign is None:
        return "bundled checkpoint carries no held-out metrics"
    if median > TARGET_MEDIAN_ABS_ERROR_UM or sign < TARGET_SIGN_ACCURACY:
        return (
            f"bundled model below its accuracy target (held-out median |error| {median:.2f} um, "
            f"sign {sign:.1%}; target <= {TARGET_MEDIAN_ABS_ERROR_UM} um, >= {TARGET_SIGN_ACCURACY:.0%}): "
            "see models/weights/README.md"
        )
    return None


def expect_failure_below_target(request: pytest.FixtureRequest) -> None:
    """Mark the calling test xfail (not strict) while the bundled model is below the target."""
    reason = bundled_below_target_reason()
    if reason:
        request.node.add_marker(pytest.mark.xfail(reason=reason, strict=False))
