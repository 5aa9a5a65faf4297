"""Position-keyed random numbers and smooth noise fields for the procedural slide.

Everything here is a pure function of (seed, key, slide position), never of the window that is
being rendered: the same slide XY always shows the same specimen, whatever the frame around it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["chunk_rng", "hash_uniform", "noise_at", "noise_grid", "noise_grid_at", "noise_points"]

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


def _bspline_taps(coords: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Cubic B-spline taps of each coordinate on the lattice ``k * scale``.

    Returns the first lattice index used by each coordinate (relative to ``k0``), the four
    weights (n, 4), ``k0`` and the number of lattice points spanned.
    """
    g = coords / scale
    base = np.floor(g).astype(np.int64)
    t = (g - base).astype(np.float32)
    k0 = int(base.min()) - 1
    k1 = int(base.max()) + 2
    w = np.stack(
        [
            (1 - t) ** 3 / 6,
            (3 * t**3 - 6 * t**2 + 4) / 6,
            (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6,
            t**3 / 6,
        ],
        axis=1,
    )
    return base - 1 - k0, w, k0, k1 - k0 + 1


def noise_grid(x_um: np.ndarray, y_um: np.ndarray, scale_um: float, key: int) -> np.ndarray:
    """Smooth value noise (unit std, zero mean) with feature size ``scale_um`` on a pixel grid.

    ``x_um`` (W,) and ``y_um`` (H,) are the slide coordinates of the grid's columns and rows;
    the result is (H, W) float32: random lattice values interpolated by cubic B-splines,
    separably (four gathers per axis; no BLAS, which is slow on a busy machine).
    """
    ix, wx, kx0, nx = _bspline_taps(np.asarray(x_um, dtype=np.float64), scale_um)
    iy, wy, ky0, ny = _bspline_taps(np.asarray(y_um, dtype=np.float64), scale_um)
    jj, ii = np.meshgrid(np.arange(ny) + ky0, np.arange(nx) + kx0, indexing="ij")
    lattice = (hash_uniform(ii, jj, key) * 2.0 - 1.0).astype(np.float32)  # (ny, nx)
    rows = np.zeros((ny, ix.size), dtype=np.float32)
    for d in range(4):
        rows += lattice[:, ix + d] * wx[:, d]
    out = np.zeros((iy.size, ix.size), dtype=np.float32)
    for d in range(4):
        out += rows[iy + d, :] * wy[:, d : d + 1]
    out *= np.float32(1.0 / _BSPLINE_STD)
    return out


def noise_points(u: np.ndarray, v: np.ndarray, key: int) -> np.ndarray:
    """Value noise (unit-ish std) at arbitrary lattice coordinates ``(u, v)`` (feature size 1).

    For rotated or warped textures (fibres) where the separable grid form does not apply.
    Smoothstep-interpolated between the four surrounding lattice values, which are hashed once
    for the bounding lattice box and gathered (much cheaper than hashing per pixel).
    """
    iu = np.floor(u)
    iv = np.floor(v)
    fu = (u - iu).astype(np.float32)
    fv = (v - iv).astype(np.float32)
    su = fu * fu * (3 - 2 * fu)
    sv = fv * fv * (3 - 2 * fv)
    u0, u1 = int(iu.min()), int(iu.max()) + 1
    v0, v1 = int(iv.min()), int(iv.max()) + 1
    gu, gv = np.meshgrid(np.arange(u0, u1 + 1), np.arange(v0, v1 + 1), indexing="ij")
    table = hash_uniform(gu, gv, key).astype(np.float32).ravel()
    stride = v1 - v0 + 1
    # flat indices into the table: one gather per corner
    idx = (iu - u0).astype(np.int64) * stride + (iv - v0).astype(np.int64)
    v00 = np.take(table, idx)
    v01 = np.take(table, idx + 1)
    idx += stride
    v10 = np.take(table, idx)
    v11 = np.take(table, idx + 1)
    a = v00 + (v10 - v00) * su
    b = v01 + (v11 - v01) * su
    return ((a + (b - a) * sv) * 2.0 - 1.0) * np.float32(2.2)


_MASK = (1 << 64) - 1


def _hash_scalar(i: int, j: int, key: int) -> float:
    """Scalar twin of ``hash_uniform`` (same numbers), without numpy's per-call overhead."""
    z = ((i & _MASK) * 0x9E3779B97F4A7C15 & _MASK) ^ ((j & _MASK) * 0xC2B2AE3D27D4EB4F & _MASK)
    z = (z + (key & _MASK)) & _MASK
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & _MASK
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return (z >> 11) * (1.0 / (1 << 53))


def noise_at(u: float, v: float, key: int) -> float:
    """``noise_points`` at one point (lattice units), in plain Python."""
    iu, iv = math.floor(u), math.floor(v)
    fu, fv = u - iu, v - iv
    su, sv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    v00 = _hash_scalar(iu, iv, key)
    v10 = _hash_scalar(iu + 1, iv, key)
    v01 = _hash_scalar(iu, iv + 1, key)
    v11 = _hash_scalar(iu + 1, iv + 1, key)
    a = v00 + (v10 - v00) * su
    b = v01 + (v11 - v01) * su
    return ((a + (b - a) * sv) * 2.0 - 1.0) * 2.2


def noise_grid_at(x_um: float, y_um: float, scale_um: float, key: int) -> float:
    """``noise_grid`` at one slide point, in plain Python (for per-chunk decisions)."""
    gx, gy = x_um / scale_um, y_um / scale_um
    bx, by = math.floor(gx), math.floor(gy)
    tx, ty = gx - bx, gy - by

    def taps(t: float) -> tuple[float, float, float, float]:
        return ((1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6)

    wx, wy = taps(tx), taps(ty)
    total = 0.0
    for j in range(4):
        for i in range(4):
            total += wy[j] * wx[i] * (_hash_scalar(bx - 1 + i, by - 1 + j, key) * 2.0 - 1.0)
    return total / _BSPLINE_STD
