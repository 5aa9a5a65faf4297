"""Procedural specimens: unstained cultured cells, H&E-like tissue and sparse fields.

A specimen is a thin object described by two maps on the camera's pixel lattice at the sample:

- ``od`` (3, H, W): optical density per colour channel (R, G, B) from stains and absorption;
  the amplitude transmittance is ``10^(-od/2)``;
- ``opd_um`` (H, W): optical path difference against the mounting medium (um), the phase part.

The slide is unbounded and keyed by slide coordinates: objects are generated per square chunk
of the slide from ``(seed, kind, chunk)`` and textures are procedural noise of the slide
position, so the same XY always shows the same field (``procedural.py``).
"""

from __future__ import annotations

import numpy as np

from drivers.simulated.cells import render_cells, render_sparse
from drivers.simulated.shapes import Grid, SpecimenMaps
from drivers.simulated.tissue import render_tissue

__all__ = ["SPECIMEN_KINDS", "SpecimenMaps", "lattice_coords", "render_specimen"]

SPECIMEN_KINDS: tuple[str, ...] = ("cells", "tissue", "sparse")

_RENDERERS = {"cells": render_cells, "tissue": render_tissue, "sparse": render_sparse}


def lattice_coords(center_um: float, n: int, pixel_um: float) -> np.ndarray:
    """Slide coordinates (um) of ``n`` pixel centres on the global lattice ``k * pixel_um``
    around ``center_um`` (the window snaps to the lattice, so overlapping windows agree)."""
    k0 = round(center_um / pixel_um) - n // 2
    return (np.arange(n) + k0) * pixel_um


def render_specimen(
    kind: str,
    seed: int,
    x_um: np.ndarray,
    y_um: np.ndarray,
    *,
    phase_scale: float = 1.0,
    stain_scale: float = 1.0,
) -> SpecimenMaps:
    """The specimen maps on the grid of pixel centres ``x_um`` (W,) by ``y_um`` (H,).

    ``phase_scale`` multiplies the optical path (0: a pure amplitude specimen, the physics
    control); ``stain_scale`` multiplies the optical density.
    """
    if kind not in _RENDERERS:
        raise ValueError(f"unknown specimen kind {kind!r}; allowed: {', '.join(SPECIMEN_KINDS)}")
    if phase_scale < 0 or stain_scale < 0:
        raise ValueError(f"phase_scale and stain_scale must be >= 0, got {phase_scale}, {stain_scale}")
    maps = _RENDERERS[kind](Grid(x_um, y_um), int(seed))
    if phase_scale != 1.0:
        maps.opd_um *= np.float32(phase_scale)
    if stain_scale != 1.0:
        maps.od *= np.float32(stain_scale)
    return maps
