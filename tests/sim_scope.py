"""A simulated microscope with its camera and focus stage open: the starting point of the routine,
focus-lock and focus-offset tests (each test file binds its own defaults with ``functools.partial``)."""

from __future__ import annotations

from typing import Any

from drivers.simulated import SimulatedMicroscope


def open_scope(**kwargs: Any) -> SimulatedMicroscope:
    """``SimulatedMicroscope(**kwargs)`` (448 x 448 frames unless given) with camera and focus stage open."""
    scope = SimulatedMicroscope(**{"frame_shape": (448, 448), **kwargs})
    scope.camera.open()
    scope.focus_stage.open()
    return scope
