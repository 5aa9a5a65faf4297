"""Position-keyed random numbers and smooth noise fields for the procedural slide.

Everything here is a pure function of (seed, key, slide position), never of the window that is
being rendered: the same slide XY always shows the same specimen, whatever the frame around it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["chunk_rng", "hash_uniform", "noise_grid", "noise_points"]

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0xBF58476D1CE4E5B9)
_M4 = np.uint64(0x94D049BB133111EB)
_OFFSET = 1 << 31

# std of cubic-B-spline interpolated uniform[-1, 1] lattice values (2-D): sqrt(1/3 * 0.479^2)
_BSPLINE_STD = float(np.sqrt(1.0 / 3.0) * 0.4794)


def hash_uniform(i: np.ndarray, j: np.ndarray, key: int) -> np.ndarray:
    """Uniform [0, 1) numbers from integer lattice coordinates (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        z = (np.asarray(i, dtype=np.int64).astype(np.uint64) * _M1) ^ (
            np.asarray(j, dtype=np.int64).astype(np.uint64) * _M2
        )
        z = z + np.uint64(key & 0xFFFFFFFFFFFFFFFF)
        z ^= z >> np.uint64(30)
        z *= _M3
        z ^= z >> np.uint64(27)
        z *= _M4
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def chunk_rng(seed: int, key: int, ix: int, iy: int) -> np.random.Generator:
    """A generator for one chunk of the slide, keyed by the chunk's integer coordinates."""
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, key, ix + _OFFSET, iy + _OFFSET]))


def _bspline_matrix(coords: np.ndarray, scale: float) -> tuple[np.ndarray, int]:
    """Cubic B-spline weights of each coordinate on the lattice ``k * scale``: (n, m) and first k."""
    g = coords / scale
    k0 = int(np.floor(g.min())) - 1
    k1 = int(np.floor(g.max())) + 2
    base = np.floor(g).astype(np.int64)
    t = g - base
    w = np.stack(
        [
            (1 - t) ** 3 / 6,
            (3 * t**3 - 6 * t**2 + 4) / 6,
            (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6,
            t**3 / 6,
        ],
        axis=1,
    )
    m = np.zeros((coords.size, k1 - k0 + 1), dtype=np.float32)
    rows = np.arange(coords.size)
    for d in range(4):
        m[rows, base - 1 + d - k0] += w[:, d]
    return m, k0


def noise_grid(x_um: np.ndarray, y_um: np.ndarray, scale_um: float, key: int) -> np.ndarray:
    """Smooth value noise (unit std, zero mean) with feature size ``scale_um`` on a pixel grid.

    ``x_um`` (W,) and ``y_um`` (H,) are the slide coordinates of the grid's columns and rows;
    the result is (H, W) float32. Separable: two small matrix products.
    """
    mx, kx0 = _bspline_matrix(np.asarray(x_um, dtype=np.float64), scale_um)
    my, ky0 = _bspline_matrix(np.asarray(y_um, dtype=np.float64), scale_um)
    jj, ii = np.meshgrid(np.arange(my.shape[1]) + ky0, np.arange(mx.shape[1]) + kx0, indexing="ij")
    lattice = (hash_uniform(ii, jj, key) * 2.0 - 1.0).astype(np.float32)
    return (my @ lattice @ mx.T) * np.float32(1.0 / _BSPLINE_STD)


def noise_points(u: np.ndarray, v: np.ndarray, key: int) -> np.ndarray:
    """Value noise (unit-ish std) at arbitrary lattice coordinates ``(u, v)`` (feature size 1).

    For rotated or warped textures (fibres) where the separable grid form does not apply.
    Smoothstep-interpolated between the four surrounding lattice values.
    """
    iu = np.floor(u)
    iv = np.floor(v)
    fu = (u - iu).astype(np.float32)
    fv = (v - iv).astype(np.float32)
    su = fu * fu * (3 - 2 * fu)
    sv = fv * fv * (3 - 2 * fv)
    iu = iu.astype(np.int64)
    iv = iv.astype(np.int64)
    v00 = hash_uniform(iu, iv, key).astype(np.float32)
    v10 = hash_uniform(iu + 1, iv, key).astype(np.float32)
    v01 = hash_uniform(iu, iv + 1, key).astype(np.float32)
    v11 = hash_uniform(iu + 1, iv + 1, key).astype(np.float32)
    a = v00 + (v10 - v00) * su
    b = v01 + (v11 - v01) * su
    return ((a + (b - a) * sv) * 2.0 - 1.0) * np.float32(2.2)
