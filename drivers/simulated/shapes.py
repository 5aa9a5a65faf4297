"""Shared pieces of the procedural specimens: stain optical densities, the window grid, smooth
blob outlines and position-keyed density noise (``specimen.py`` describes the model)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drivers.simulated.procedural import noise_at

__all__ = [
    "EOSIN_OD",
    "HAEMATOXYLIN_OD",
    "HAEMOGLOBIN_OD",
    "KIND_KEYS",
    "UNSTAINED_OD",
    "Grid",
    "SpecimenMaps",
    "blob",
    "boundary_harmonics",
    "slide_noise_at",
]

# Ruifrok & Johnston stain optical densities per (R, G, B) channel.
HAEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29], dtype=np.float32)
EOSIN_OD = np.array([0.07, 0.99, 0.11], dtype=np.float32)
# Weak, slightly blue-weighted absorption of unstained cells and debris.
UNSTAINED_OD = np.array([0.8, 0.9, 1.15], dtype=np.float32)
# Haemoglobin in red blood cells (on top of their eosin): absorbs green and blue, so they look red.
HAEMOGLOBIN_OD = np.array([0.05, 0.45, 0.5], dtype=np.float32)

KIND_KEYS = {"cells": 11, "tissue": 23, "sparse": 37}


@dataclass
class SpecimenMaps:
    """Optical density per channel (3, H, W) and optical path difference (H, W), both float32."""

    od: np.ndarray
    opd_um: np.ndarray


# --------------------------------------------------------------------------------------------
# Grid helpers
# --------------------------------------------------------------------------------------------
class Grid:
    """Pixel-centre coordinates (um) of a window on the slide, with bounding-box lookups."""

    def __init__(self, x_um: np.ndarray, y_um: np.ndarray) -> None:
        self.x = np.asarray(x_um, dtype=np.float64)
        self.y = np.asarray(y_um, dtype=np.float64)
        self.pitch = float(self.x[1] - self.x[0]) if self.x.size > 1 else 1.0
        self.shape = (self.y.size, self.x.size)

    def box(self, cx: float, cy: float, rx: float, ry: float) -> tuple[slice, slice] | None:
        """Rows/cols whose centres lie within ``cx +- rx``, ``cy +- ry``; None if empty."""
        p = self.pitch
        j0 = max(0, math.ceil((cx - rx - self.x[0]) / p))
        j1 = min(self.x.size, math.floor((cx + rx - self.x[0]) / p) + 1)
        i0 = max(0, math.ceil((cy - ry - self.y[0]) / p))
        i1 = min(self.y.size, math.floor((cy + ry - self.y[0]) / p) + 1)
        if j0 >= j1 or i0 >= i1:
            return None
        return slice(i0, i1), slice(j0, j1)

    def chunks(self, chunk_um: float, margin_um: float) -> list[tuple[int, int]]:
        ix0 = math.floor((self.x[0] - margin_um) / chunk_um)
        ix1 = math.floor((self.x[-1] + margin_um) / chunk_um)
        iy0 = math.floor((self.y[0] - margin_um) / chunk_um)
        iy1 = math.floor((self.y[-1] + margin_um) / chunk_um)
        return [(ix, iy) for iy in range(iy0, iy1 + 1) for ix in range(ix0, ix1 + 1)]

    def splat(self, target: np.ndarray, xs: np.ndarray, ys: np.ndarray, values: np.ndarray) -> None:
        """Add point masses at slide positions into ``target`` (bilinear, sub-pixel exact)."""
        if xs.size == 0:
            return
        fx = (xs - self.x[0]) / self.pitch
        fy = (ys - self.y[0]) / self.pitch
        j = np.floor(fx).astype(np.int64)
        i = np.floor(fy).astype(np.int64)
        tx = fx - j
        ty = fy - i
        h, w = target.shape
        for di, dj, wt in ((0, 0, (1 - ty) * (1 - tx)), (0, 1, (1 - ty) * tx), (1, 0, ty * (1 - tx)), (1, 1, ty * tx)):
            ii = i + di
            jj = j + dj
            ok = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
            np.add.at(target, (ii[ok], jj[ok]), (values * wt)[ok])


def blob(
    grid: Grid,
    cx: float,
    cy: float,
    a_um: float,
    b_um: float,
    angle: float,
    harmonics: np.ndarray,
    exponent: float,
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """A smooth blob: ``clip(1 - u^2, 0)^exponent`` inside a wobbly rotated ellipse.

    ``harmonics`` rows are (k, amplitude, phase) of the boundary's radial modulation.
    Returns the window box and the profile in it (0 outside the blob), or None when off-window.
    """
    wobble = 1.0 + float(np.abs(harmonics[:, 1]).sum()) if harmonics.size else 1.0
    c, s = math.cos(angle), math.sin(angle)
    rx = math.hypot(a_um * c, b_um * s) * wobble
    ry = math.hypot(a_um * s, b_um * c) * wobble
    box = grid.box(cx, cy, rx, ry)
    if box is None:
        return None
    X = (grid.x[box[1]] - cx).astype(np.float32)[None, :]
    Y = (grid.y[box[0]] - cy).astype(np.float32)[:, None]
    u = (X * np.float32(c / a_um)) + (Y * np.float32(s / a_um))
    v = (Y * np.float32(c / b_um)) - (X * np.float32(s / b_um))
    rho2 = u * u + v * v
    if harmonics.size:
        inv = 1.0 / np.sqrt(np.maximum(rho2, np.float32(1e-12)))
        cos1, sin1 = u * inv, v * inv
        mod = np.ones_like(rho2)
        ck, sk = cos1, sin1
        kmax = int(harmonics[:, 0].max())
        amps = {int(k): (float(amp), float(ph)) for k, amp, ph in harmonics}
        for k in range(2, kmax + 1):
            ck, sk = ck * cos1 - sk * sin1, sk * cos1 + ck * sin1
            if k in amps:
                amp, ph = amps[k]
                mod += np.float32(amp * math.cos(ph)) * ck + np.float32(amp * math.sin(ph)) * sk
        rho2 = rho2 / (mod * mod)
    prof = np.clip(1.0 - rho2, 0.0, None)
    if exponent != 1.0:
        prof **= np.float32(exponent)
    return box, prof


def boundary_harmonics(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    ks = np.arange(2, 2 + n, dtype=np.float64)
    amps = rng.uniform(0, amp, n) / np.sqrt(ks - 1)
    total = float(amps.sum())
    if total > 0.35:  # keeps the outline star-shaped and the bounding box known
        amps *= 0.35 / total
    phases = rng.uniform(0, 2 * np.pi, n)
    return np.stack([ks, amps, phases], axis=1)


def slide_noise_at(seed: int, key: int, x_um: float, y_um: float, scale_um: float) -> float:
    return noise_at(x_um / scale_um, y_um / scale_um, seed * 7919 + key)
