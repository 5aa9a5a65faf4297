"""Measure the focus offset: what the model reads on a sample that is in focus.

A defocus model trained on one set of optics reads a small constant bias on another: on the
simulator's default 20x/0.75 the bundled model reads +0.2 to +0.7 um at true focus
(``docs/autofocus.md``). A real microscope can be off by more. A microscopist fixes this the way
hardware focus locks do it (a stored "offset"): focus the sample once by eye or with the z-scan,
read what the model says there, and give that reading as ``focus_offset_um`` to the routines and
the focus lock. They then end where the model reads the offset, which is the focus you chose.

``measure_focus_offset`` snaps ``frames`` frames at the current position (no stage move), keeps
the reliable estimates (not blank, confidence at least ``min_confidence``) and returns their
median. It refuses (``UnreliableEstimateError``) when fewer than half of the frames are reliable,
or when the reading lies outside what ``focus_offset_um`` allows. Repeat it on a few fields and
take the median: the bias varies from field to field more than from frame to frame.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from autofocus.routines import MAX_FOCUS_OFFSET_UM, FramePredictor, frame_bit_depth, is_reliable
from drivers.base import Camera
from drivers.errors import UnreliableEstimateError

__all__ = ["FocusOffsetReading", "measure_focus_offset"]


@dataclass
class FocusOffsetReading:
    """The model's reading at the current position. ``to_dict()`` is JSON-friendly."""

    focus_offset_um: float  # median of the reliable estimates
    spread_um: float  # standard deviation of the reliable estimates (0 for one frame)
    frames: int
    reliable_frames: int
    estimates_um: list[float | None] = field(default_factory=list)  # None: blank frame
    confidences: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_focus_offset(
    camera: Camera,
    predictor: FramePredictor,
    *,
    frames: int = 5,
    min_confidence: float = 0.3,
    bit_depth: int | None = None,
) -> FocusOffsetReading:
    """Snap ``frames`` frames where the stage is and return the median reliable estimate.

    ``bit_depth``: significant bits of ``uint16`` frames (None: the camera's), as in the routines.
    """
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be an integer >= 1, got {frames!r}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
    preds: list[Any] = []
    camera.flush()  # frames queued before the call may predate the last stage move
    for _ in range(frames):
        frame = camera.snap()
        preds.append(predictor.predict(frame, bit_depth=frame_bit_depth(frame, camera, bit_depth)))
    estimates: list[float | None] = [p.defocus_um for p in preds]
    confidences = [float(p.confidence) for p in preds]
    reliable = [float(p.defocus_um) for p in preds if is_reliable(p, min_confidence)]
    if 2 * len(reliable) < frames:
        raise UnreliableEstimateError(
            f"only {len(reliable)} of {frames} frames gave a reliable estimate (not blank, confidence >= "
            f"{min_confidence:.2f}); focus on a field with more specimen in view and measure again"
        )
    offset = float(np.median(reliable))
    if not (math.isfinite(offset) and abs(offset) <= MAX_FOCUS_OFFSET_UM):
        raise UnreliableEstimateError(
            f"the model reads {offset:+.3f} um here, outside the allowed focus offset "
            f"-{MAX_FOCUS_OFFSET_UM:g}..+{MAX_FOCUS_OFFSET_UM:g} um: is the sample in focus, and is the model "
            "trained for this objective?"
        )
    return FocusOffsetReading(
        focus_offset_um=offset,
        spread_um=float(np.std(reliable)),
        frames=frames,
        reliable_frames=len(reliable),
        estimates_um=estimates,
        confidences=confidences,
    )
