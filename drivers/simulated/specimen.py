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

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from drivers.simulated.procedural import chunk_rng, noise_at, noise_grid, noise_points

__all__ = ["SPECIMEN_KINDS", "SpecimenMaps", "render_specimen"]

SPECIMEN_KINDS: tuple[str, ...] = ("cells", "tissue", "sparse")

# Ruifrok & Johnston stain optical densities per (R, G, B) channel.
HAEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29], dtype=np.float32)
EOSIN_OD = np.array([0.07, 0.99, 0.11], dtype=np.float32)
# Weak, slightly blue-weighted absorption of unstained cells and debris.
UNSTAINED_OD = np.array([0.8, 0.9, 1.15], dtype=np.float32)
# Haemoglobin in red blood cells (on top of their eosin): absorbs green and blue, so they look red.
HAEMOGLOBIN_OD = np.array([0.05, 0.45, 0.5], dtype=np.float32)

_KIND_KEYS = {"cells": 11, "tissue": 23, "sparse": 37}


@dataclass
class SpecimenMaps:
    """Optical density per channel (3, H, W) and optical path difference (H, W), both float32."""

    od: np.ndarray
    opd_um: np.ndarray


# --------------------------------------------------------------------------------------------
# Grid helpers
# --------------------------------------------------------------------------------------------
class _Grid:
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


def _blob(
    grid: _Grid,
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


def _harmonics(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    ks = np.arange(2, 2 + n, dtype=np.float64)
    amps = rng.uniform(0, amp, n) / np.sqrt(ks - 1)
    total = float(amps.sum())
    if total > 0.35:  # keeps the outline star-shaped and the bounding box known
        amps *= 0.35 / total
    phases = rng.uniform(0, 2 * np.pi, n)
    return np.stack([ks, amps, phases], axis=1)


def _chunk_density_noise(seed: int, key: int, x_um: float, y_um: float, scale_um: float) -> float:
    return noise_at(x_um / scale_um, y_um / scale_um, seed * 7919 + key)


# --------------------------------------------------------------------------------------------
# Cultured cells (phase-dominated, unstained)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Cell:
    cx: float
    cy: float
    a: float
    b: float
    angle: float
    harmonics: np.ndarray
    exponent: float
    height_um: float
    dn_cyto: float
    nuc: tuple[float, float, float, float, float, float] | None  # dx, dy, a, b, angle, height
    dn_nuc: float
    granules: np.ndarray  # (n, 3): x, y, opd_um
    nucleoli: np.ndarray  # (n, 3): x, y, opd_um
    absorb: float


def _make_cell(rng: np.random.Generator, cx: float, cy: float, style: str) -> _Cell:
    angle = rng.uniform(0, np.pi)
    if style == "round":  # rounded-up (mitotic / detaching) cell: thick, strong phase, halo
        r = rng.uniform(5.0, 9.0)
        asp = rng.uniform(1.0, 1.15)
        harm = _harmonics(rng, 2, 0.04)
        exponent, height = 0.5, rng.uniform(5.0, 10.0)
        nuc_scale = rng.uniform(0.45, 0.6)
        nuc_h = rng.uniform(0.5, 1.5)
    elif style == "spindle":  # fibroblast-like, elongated with processes
        r = rng.uniform(10.0, 20.0)
        asp = rng.uniform(2.5, 5.0)
        harm = _harmonics(rng, 4, 0.25)
        exponent, height = rng.uniform(0.5, 0.8), rng.uniform(0.8, 2.0)
        nuc_scale = rng.uniform(0.55, 0.75)
        nuc_h = rng.uniform(1.5, 3.5)
    else:  # spread epithelial-like
        r = rng.uniform(8.0, 17.0)
        asp = rng.uniform(1.0, 1.8)
        harm = _harmonics(rng, 4, 0.18)
        exponent, height = rng.uniform(0.4, 0.7), rng.uniform(0.8, 2.5)
        nuc_scale = rng.uniform(0.3, 0.45)
        nuc_h = rng.uniform(1.5, 4.0)
    a, b = r * math.sqrt(asp), r / math.sqrt(asp)
    # nucleus: an ellipse inside the cell, roughly aligned with it
    if style == "spindle":
        na_um = min(a * 0.3, rng.uniform(5.0, 8.0))
        nb_um = na_um / rng.uniform(1.5, 2.3)
        nang = angle + rng.normal(0, 0.15)
    else:
        rn = r * nuc_scale if style == "round" else rng.uniform(3.8, 6.5)
        nasp = rng.uniform(1.0, 1.5)
        na_um, nb_um = rn * math.sqrt(nasp), rn / math.sqrt(nasp)
        nang = rng.uniform(0, np.pi)
    off = rng.uniform(0, 0.25) * min(a, b)
    oang = rng.uniform(0, 2 * np.pi)
    ndx, ndy = off * math.cos(oang), off * math.sin(oang)
    nuc = (ndx, ndy, na_um, nb_um, nang, nuc_h) if rng.uniform() > 0.03 else None
    # granules / lipid droplets: strong small phase dots, many around the nucleus
    n_gran = int(rng.poisson(rng.choice([1.0, 4.0, 10.0, 25.0], p=[0.3, 0.35, 0.25, 0.1])))
    ga = rng.uniform(0, 2 * np.pi, n_gran)
    gr = np.sqrt(rng.uniform(0.05, 0.8, n_gran))
    c, s = math.cos(angle), math.sin(angle)
    gu, gv = gr * np.cos(ga) * a, gr * np.sin(ga) * b
    gx = cx + gu * c - gv * s
    gy = cy + gu * s + gv * c
    gopd = rng.uniform(0.015, 0.07, n_gran) * rng.choice([0.6, 1.0, 1.5])
    granules = np.stack([gx, gy, gopd], axis=1) if n_gran else np.zeros((0, 3))
    nucleoli = np.zeros((0, 3))
    if nuc is not None:
        n_no = int(rng.integers(1, 4))
        no_r = np.sqrt(rng.uniform(0, 0.35, n_no)) * min(na_um, nb_um)
        no_a = rng.uniform(0, 2 * np.pi, n_no)
        nucleoli = np.stack(
            [cx + ndx + no_r * np.cos(no_a), cy + ndy + no_r * np.sin(no_a), rng.uniform(0.03, 0.08, n_no)], axis=1
        )
    return _Cell(
        cx=cx,
        cy=cy,
        a=a,
        b=b,
        angle=angle,
        harmonics=harm,
        exponent=exponent,
        height_um=height,
        dn_cyto=rng.uniform(0.015, 0.032),
        nuc=nuc,
        dn_nuc=rng.uniform(0.02, 0.04),
        granules=granules,
        nucleoli=nucleoli,
        absorb=rng.uniform(0.002, 0.01),
    )


_CELL_CHUNK_UM = 30.0
# the largest extent (um) of a cell of each style from its centre: a bound used to skip far cells
_CELL_REACH_UM = {"round": 12.0, "spread": 32.0, "spindle": 62.0}
_CELL_MARGIN_UM = max(_CELL_REACH_UM.values())


@lru_cache(maxsize=8192)
def _cell_stubs(seed: int, ix: int, iy: int) -> tuple[tuple[float, float, str], ...]:
    """Centres and styles of the cells of one chunk (the details come from ``_cell``)."""
    key = _KIND_KEYS["cells"]
    rng = chunk_rng(seed, key, ix, iy)
    c = _CELL_CHUNK_UM
    ccx, ccy = (ix + 0.5) * c, (iy + 0.5) * c
    # cells per 1000 um^2 vary smoothly over the slide: sparse colonies to confluent sheets
    density = 1.3 * math.exp(0.75 * _chunk_density_noise(seed, key, ccx, ccy, 350.0))
    spindle_share = 0.5 + 0.45 * math.tanh(_chunk_density_noise(seed, key + 1, ccx, ccy, 500.0))
    n = int(rng.poisson(density * c * c / 1000.0))
    xs = ix * c + rng.uniform(0, c, n)
    ys = iy * c + rng.uniform(0, c, n)
    us = rng.uniform(size=n)
    styles = ["round" if u < 0.08 else ("spindle" if u < 0.08 + 0.55 * spindle_share else "spread") for u in us]
    return tuple(zip(xs.tolist(), ys.tolist(), styles, strict=True))


@lru_cache(maxsize=16384)
def _cell(seed: int, ix: int, iy: int, k: int) -> _Cell:
    x, y, style = _cell_stubs(seed, ix, iy)[k]
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, _KIND_KEYS["cells"], ix + 2**31,
                                                        iy + 2**31, k]))
    return _make_cell(rng, x, y, style)


def _near(grid: _Grid, x: float, y: float, reach: float) -> bool:
    return (grid.x[0] - reach <= x <= grid.x[-1] + reach) and (grid.y[0] - reach <= y <= grid.y[-1] + reach)


def _draw_cells(grid: _Grid, cells: list[_Cell], seed: int, opd: np.ndarray, od_grey: np.ndarray) -> None:
    """Rasterise cells into the OPD and grey-absorption maps (in place)."""
    if not cells:
        return
    key = _KIND_KEYS["cells"]
    h, w = grid.shape
    cyto = np.zeros((h, w), dtype=np.float32)  # dn * thickness of cell bodies
    nuc = np.zeros((h, w), dtype=np.float32)  # dn * thickness of nuclei
    for cell in cells:
        got = _blob(grid, cell.cx, cell.cy, cell.a, cell.b, cell.angle, cell.harmonics, cell.exponent)
        if got is not None:
            box, prof = got
            cyto[box] += prof * np.float32(cell.height_um * cell.dn_cyto)
            od_grey[box] += prof * np.float32(cell.absorb)
        if cell.nuc is not None:
            dx, dy, na_um, nb_um, nang, nh = cell.nuc
            got = _blob(grid, cell.cx + dx, cell.cy + dy, na_um, nb_um, nang, np.zeros((0, 3)), 0.7)
            if got is not None:
                box, prof = got
                nuc[box] += prof * np.float32(nh * cell.dn_nuc)
    # textures: cytoplasm irregularity and chromatin, keyed by slide position
    tex = noise_grid(grid.x, grid.y, 1.3, seed * 31 + key)
    cyto *= 1.0 + 0.15 * tex
    chrom = noise_grid(grid.x, grid.y, 0.7, seed * 37 + key)
    nuc *= 1.0 + 0.12 * chrom
    opd += cyto + nuc
    # granules and nucleoli: point masses blurred to small dots (sub-pixel positions are exact)
    # (splatted on a padded grid so that dots just outside the window still spill into it)
    sigma_px = 0.35 / grid.pitch
    pad = math.ceil(4 * sigma_px) + 1
    padded = _Grid(
        grid.x[0] + (np.arange(w + 2 * pad) - pad) * grid.pitch, grid.y[0] + (np.arange(h + 2 * pad) - pad) * grid.pitch
    )
    dots = np.zeros(padded.shape, dtype=np.float32)
    gran = np.concatenate([c.granules for c in cells] + [c.nucleoli for c in cells])
    padded.splat(dots, gran[:, 0], gran[:, 1], gran[:, 2].astype(np.float32))
    # normalise so that the peak of a dot is its OPD (a gaussian of sigma 0.35 um)
    dots = ndimage.gaussian_filter(dots, sigma_px, mode="constant", truncate=4.0) * np.float32(2 * np.pi * sigma_px**2)
    dots = dots[pad : pad + h, pad : pad + w]
    opd += dots
    od_grey += dots * 0.15


def _render_cells(grid: _Grid, seed: int) -> SpecimenMaps:
    cells = [
        _cell(seed, ix, iy, k)
        for ix, iy in grid.chunks(_CELL_CHUNK_UM, _CELL_MARGIN_UM)
        for k, (x, y, style) in enumerate(_cell_stubs(seed, ix, iy))
        if _near(grid, x, y, _CELL_REACH_UM[style])
    ]
    h, w = grid.shape
    opd = np.zeros((h, w), dtype=np.float32)
    grey = np.zeros((h, w), dtype=np.float32)
    _draw_cells(grid, cells, seed, opd, grey)
    od = grey[None, :, :] * UNSTAINED_OD[:, None, None]
    return SpecimenMaps(od=od.astype(np.float32), opd_um=opd)


# --------------------------------------------------------------------------------------------
# Sparse fields: a few cell clusters and some debris on a mostly blank slide
# --------------------------------------------------------------------------------------------
_SPARSE_CHUNK_UM = 120.0
_SPARSE_SPREAD_UM = 25.0  # cells of a cluster lie within this distance of its centre (per axis)


@lru_cache(maxsize=4096)
def _sparse_in_chunk(seed: int, ix: int, iy: int) -> tuple[tuple[_Cell, ...], np.ndarray]:
    key = _KIND_KEYS["sparse"]
    rng = chunk_rng(seed, key, ix, iy)
    cells: list[_Cell] = []
    if rng.uniform() < 0.3:
        ccx = ix * _SPARSE_CHUNK_UM + rng.uniform(20, _SPARSE_CHUNK_UM - 20)
        ccy = iy * _SPARSE_CHUNK_UM + rng.uniform(20, _SPARSE_CHUNK_UM - 20)
        for _ in range(int(rng.integers(1, 6))):
            style = ("round", "spindle", "spread")[int(rng.choice(3, p=[0.2, 0.35, 0.45]))]
            dx, dy = np.clip(rng.normal(0, 10, 2), -_SPARSE_SPREAD_UM, _SPARSE_SPREAD_UM)
            cells.append(_make_cell(rng, ccx + float(dx), ccy + float(dy), style))
    debris = np.zeros((0, 5))
    if rng.uniform() < 0.35:
        n = int(rng.integers(1, 12))
        debris = np.stack(
            [
                ix * _SPARSE_CHUNK_UM + rng.uniform(0, _SPARSE_CHUNK_UM, n),
                iy * _SPARSE_CHUNK_UM + rng.uniform(0, _SPARSE_CHUNK_UM, n),
                rng.uniform(0.4, 2.5, n),  # radius um
                rng.uniform(0.1, 1.0, n),  # grey OD
                rng.uniform(0.02, 0.15, n),  # OPD um
            ],
            axis=1,
        )
    return tuple(cells), debris


def _render_sparse(grid: _Grid, seed: int) -> SpecimenMaps:
    h, w = grid.shape
    opd = np.zeros((h, w), dtype=np.float32)
    grey = np.zeros((h, w), dtype=np.float32)
    cells: list[_Cell] = []
    for ch in grid.chunks(_SPARSE_CHUNK_UM, _CELL_MARGIN_UM + _SPARSE_SPREAD_UM):
        cs, debris = _sparse_in_chunk(seed, *ch)
        cells.extend(cs)
        for x, y, r, od_val, opd_val in debris:
            got = _blob(grid, x, y, r, r * 0.8, 0.3, np.zeros((0, 3)), 0.5)
            if got is not None:
                box, prof = got
                grey[box] += prof * np.float32(od_val)
                opd[box] += prof * np.float32(opd_val)
    _draw_cells(grid, cells, seed, opd, grey)
    od = grey[None, :, :] * UNSTAINED_OD[:, None, None]
    return SpecimenMaps(od=od.astype(np.float32), opd_um=opd)


# --------------------------------------------------------------------------------------------
# H&E-like tissue section
# --------------------------------------------------------------------------------------------
_TISSUE_CHUNK_UM = 80.0
_GLAND_REACH_UM = 62.0
_NUCLEUS_REACH_UM = 13.0
_RBC_REACH_UM = 4.5
# nucleus table columns
_NX, _NY, _NA, _NB, _NANG, _NHEMA, _NRIM = range(7)
_NHARM = 7  # then 3 x (amplitude, phase) for boundary harmonics k = 2, 3, 4
_NUC_STYLES = {
    # radius um, aspect, haematoxylin, envelope share
    "lymph": ((2.3, 3.2), (1.0, 1.2), (1.0, 1.5), 0.1),
    "spindle": ((2.4, 3.4), (3.0, 5.5), (0.7, 1.1), 0.2),
    "epi": ((3.5, 5.2), (1.1, 1.7), (0.35, 0.65), 0.6),
    "plasma": ((2.8, 3.6), (1.0, 1.4), (0.8, 1.1), 0.5),
}


def _nuclei(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, style: str,
            angles: np.ndarray | None = None) -> np.ndarray:
    """A table of nuclei (n x 13) of one style at the given centres (vectorised draws)."""
    n = xs.size
    (r0, r1), (a0, a1), (h0, h1), rim = _NUC_STYLES[style]
    r = rng.uniform(r0, r1, n)
    asp = rng.uniform(a0, a1, n)
    ang = rng.uniform(0, np.pi, n) if angles is None else angles + rng.normal(0, 0.2, n)
    amps = rng.uniform(0, 0.08, (n, 3)) / np.sqrt([1.0, 2.0, 3.0])
    phases = rng.uniform(0, 2 * np.pi, (n, 3))
    table = np.empty((n, 13))
    table[:, _NX], table[:, _NY] = xs, ys
    table[:, _NA], table[:, _NB] = r * np.sqrt(asp), r / np.sqrt(asp)
    table[:, _NANG] = ang
    table[:, _NHEMA] = rng.uniform(h0, h1, n)
    table[:, _NRIM] = rim
    table[:, _NHARM::2] = amps
    table[:, _NHARM + 1 :: 2] = phases
    return table


@dataclass(frozen=True)
class _TissueChunk:
    nuclei: np.ndarray  # (n, 13) table, see _nuclei
    glands: np.ndarray  # (n, 5): cx, cy, a, b, angle
    rbcs: np.ndarray  # (n, 2) centres


_FIBRE_FAMILIES = 3
_FIBRE_FAMILY_SCALE_UM = 150.0


def _fibre_base_angle(seed: int) -> float:
    return float(np.pi * noise_at(0.5, 0.5, seed * 89 + 91))


def _fibre_weights(seed: int, x_um: np.ndarray, y_um: np.ndarray) -> list[np.ndarray]:
    """Soft weights of the fibre orientation families over a grid (they sum to 1)."""
    key = _KIND_KEYS["tissue"]
    logits = [3.0 * noise_grid(x_um, y_um, _FIBRE_FAMILY_SCALE_UM, seed * 97 + key + k) for k in range(_FIBRE_FAMILIES)]
    top = np.maximum.reduce(logits)
    exps = [np.exp(lg - top) for lg in logits]
    total = sum(exps)
    return [e / total for e in exps]


def _fibre_angle(seed: int, x_um: float, y_um: float) -> float:
    """The dominant fibre direction at a slide point (spindle nuclei line up with it)."""
    weights = _fibre_weights(seed, np.array([x_um]), np.array([y_um]))
    k = int(np.argmax([float(wt[0, 0]) for wt in weights]))
    return _fibre_base_angle(seed) + k * np.pi / _FIBRE_FAMILIES


@lru_cache(maxsize=4096)
def _tissue_chunk(seed: int, ix: int, iy: int) -> _TissueChunk:
    key = _KIND_KEYS["tissue"]
    rng = chunk_rng(seed, key, ix, iy)
    c = _TISSUE_CHUNK_UM
    x0, y0 = ix * c, iy * c
    area = c * c / 1000.0
    cellularity = _chunk_density_noise(seed, key, x0 + c / 2, y0 + c / 2, 180.0)
    ang = _fibre_angle(seed, x0 + c / 2, y0 + c / 2)
    tables = []
    # stroma: spindle nuclei along the fibres
    n = int(rng.poisson(area * 1.6))
    tables.append(_nuclei(rng, x0 + rng.uniform(0, c, n), y0 + rng.uniform(0, c, n), "spindle", np.full(n, ang)))
    # inflammatory cells: scattered or in dense clusters where the slide is cellular
    n = int(rng.poisson(area * 2.5 * (1 + math.tanh(1.5 * cellularity)) ** 2))
    if n:
        if cellularity > 0.4:  # a lymphoid aggregate: a tight cluster
            cx, cy = x0 + rng.uniform(0, c), y0 + rng.uniform(0, c)
            # (clipped so that every nucleus stays within the chunk search margin)
            xs = cx + np.clip(rng.normal(0, 18, n), -45, 45)
            ys = cy + np.clip(rng.normal(0, 18, n), -45, 45)
        else:
            xs, ys = x0 + rng.uniform(0, c, n), y0 + rng.uniform(0, c, n)
        style = "lymph" if rng.uniform() < 0.75 else "plasma"
        tables.append(_nuclei(rng, xs, ys, style))
    # glands: epithelium (large pale nuclei along the basal side) around a blank lumen
    glands = np.zeros((0, 5))
    if rng.uniform() < 0.45:
        gx, gy = x0 + rng.uniform(0, c), y0 + rng.uniform(0, c)
        ga = rng.uniform(22.0, 45.0)
        gb = ga / rng.uniform(1.0, 1.7)
        gang = rng.uniform(0, np.pi)
        glands = np.array([[gx, gy, ga, gb, gang]])
        n_ep = int(2 * np.pi * math.sqrt((ga * ga + gb * gb) / 2) / rng.uniform(5.5, 8.0))
        t = 2 * np.pi * (np.arange(n_ep) + rng.uniform(-0.2, 0.2, n_ep)) / n_ep
        rr = rng.uniform(0.8, 0.9, n_ep)
        u, v = rr * ga * np.cos(t), rr * gb * np.sin(t)
        cg, sg = math.cos(gang), math.sin(gang)
        ex, ey = gx + u * cg - v * sg, gy + u * sg + v * cg
        tables.append(_nuclei(rng, ex, ey, "epi", np.arctan2(ey - gy, ex - gx)))
    rbcs = np.zeros((0, 2))
    if rng.uniform() < 0.3:  # a capillary: a streak of red blood cells
        n = int(rng.integers(4, 30))
        t = rng.uniform(-1, 1, n) * rng.uniform(15, 40)
        va = rng.uniform(0, np.pi)
        vx, vy = x0 + rng.uniform(0, c), y0 + rng.uniform(0, c)
        rbcs = np.stack(
            [vx + t * math.cos(va) + rng.normal(0, 2.5, n), vy + t * math.sin(va) + rng.normal(0, 2.5, n)], axis=1
        )
    return _TissueChunk(np.concatenate(tables), glands, rbcs)


def _in_window(grid: _Grid, xs: np.ndarray, ys: np.ndarray, reach: float) -> np.ndarray:
    return (xs >= grid.x[0] - reach) & (xs <= grid.x[-1] + reach) & (ys >= grid.y[0] - reach) & (
        ys <= grid.y[-1] + reach
    )


def _render_tissue(grid: _Grid, seed: int) -> SpecimenMaps:
    key = _KIND_KEYS["tissue"]
    h, w = grid.shape
    chunks = [_tissue_chunk(seed, *ch) for ch in grid.chunks(_TISSUE_CHUNK_UM, _GLAND_REACH_UM)]
    nuclei = np.concatenate([ch.nuclei for ch in chunks])
    nuclei = nuclei[_in_window(grid, nuclei[:, _NX], nuclei[:, _NY], _NUCLEUS_REACH_UM)]
    glands = np.concatenate([ch.glands for ch in chunks])
    rbcs = np.concatenate([ch.rbcs for ch in chunks])
    rbcs = rbcs[_in_window(grid, rbcs[:, 0], rbcs[:, 1], _RBC_REACH_UM)]
    # -- stroma: wavy eosinophilic collagen fibres with pale gaps, orientation families blended
    X = grid.x[None, :]
    Y = grid.y[:, None]
    warp = noise_grid(grid.x, grid.y, 22.0, seed * 41 + key) * np.float32(3.0)
    theta = _fibre_base_angle(seed)
    fib = np.zeros((h, w), dtype=np.float32)
    for n_fam, weight in enumerate(_fibre_weights(seed, grid.x, grid.y)):
        if float(weight.max()) < 0.02:
            continue
        c, s = math.cos(theta + n_fam * np.pi / _FIBRE_FAMILIES), math.sin(theta + n_fam * np.pi / _FIBRE_FAMILIES)
        u = (X * c + Y * s) / 9.0
        v = (-X * s + Y * c + warp) / 1.3
        fib += noise_points(u, v, seed * 47 + key + n_fam) * weight
    coarse = noise_grid(grid.x, grid.y, 30.0, seed * 53 + key)
    density = np.clip(0.5 + 0.35 * fib, 0.0, 1.0)  # fibre bundles vs pale gaps between them
    eosin = (np.float32(0.06) + np.float32(0.18) * density) * (1.0 + 0.25 * coarse)
    eosin = np.clip(eosin, 0.02, None).astype(np.float32)
    hema = np.full((h, w), 0.025, dtype=np.float32)
    # -- tissue presence: tears and fat spaces are blank
    presence = noise_grid(grid.x, grid.y, 70.0, seed * 59 + key)
    tissue = np.clip((presence + 1.4) / 0.5, 0.0, 1.0).astype(np.float32)
    # -- glands: pink-lilac epithelium around a blank lumen
    for gx, gy, ga, gb, gang in glands:
        got = _blob(grid, gx, gy, ga, gb, gang, np.zeros((0, 3)), 1.0)
        if got is None:
            continue
        box, prof = got  # prof = 1 - rho^2
        rho2 = 1.0 - prof
        epi = np.clip((1.0 - rho2) / 0.05, 0.0, 1.0) * np.clip((rho2 - 0.42) / 0.03, 0.0, 1.0)
        lumen = np.clip((0.42 - rho2) / 0.04, 0.0, 1.0)
        eosin[box] = eosin[box] * (1 - epi) + epi * 0.2
        hema[box] += epi * 0.06
        tissue[box] *= 1.0 - lumen
    # -- nuclei (haematoxylin) with chromatin texture and envelope
    nuc = np.zeros((h, w), dtype=np.float32)
    nuc_dome = np.zeros((h, w), dtype=np.float32)  # nuclei are thicker in the middle: smooth lenses
    ks = np.array([2.0, 3.0, 4.0])
    for row in nuclei:
        harm = np.stack([ks, row[_NHARM::2], row[_NHARM + 1 :: 2]], axis=1)
        got = _blob(grid, row[_NX], row[_NY], row[_NA], row[_NB], row[_NANG], harm, 0.25)
        if got is None:
            continue
        box, prof = got
        rim_share = np.float32(row[_NRIM])
        rim = rim_share * np.clip(1.0 - np.abs(prof - 0.55) / 0.25, 0.0, 1.0)
        np.maximum(nuc[box], np.float32(row[_NHEMA]) * (prof * (1 - rim_share * 0.5) + rim), out=nuc[box])
        np.maximum(nuc_dome[box], prof**4, out=nuc_dome[box])  # (1 - rho^2): a dome
    chrom = noise_grid(grid.x, grid.y, 0.6, seed * 61 + key)
    hema += nuc * (1.0 + 0.3 * chrom)
    eosin *= 1.0 - np.clip(nuc, 0, 1) * 0.5
    # -- red blood cells: small, strongly eosinophilic biconcave discs
    rbc = np.zeros((h, w), dtype=np.float32)
    for x, y in rbcs:
        got = _blob(grid, float(x), float(y), 3.7, 3.5, 0.0, np.zeros((0, 3)), 1.0)
        if got is not None:
            box, prof = got
            disc = np.clip(prof / 0.15, 0.0, 1.0) * (0.8 + 0.25 * (1.0 - prof))
            np.maximum(rbc[box], disc, out=rbc[box])
    eosin = eosin * (1 - np.clip(rbc, 0, 1)) + rbc * 0.6
    eosin *= tissue
    hema *= tissue
    # phase: sections are thin and stained, but denser structures still add optical path
    thick = noise_grid(grid.x, grid.y, 12.0, seed * 67 + key)
    # (smooth on purpose: the fine texture of stain is amplitude, so sharpness still peaks at focus,
    # while nuclei act as weak lenses and red cells as strong ones, which carries the sign)
    opd = tissue * (0.04 + 0.012 * thick + 0.01 * coarse + 0.09 * nuc_dome + 0.08 * rbc)
    od = (
        hema[None] * HAEMATOXYLIN_OD[:, None, None]
        + eosin[None] * EOSIN_OD[:, None, None]
        + (rbc * tissue)[None] * HAEMOGLOBIN_OD[:, None, None]
    )
    return SpecimenMaps(od=od.astype(np.float32), opd_um=opd.astype(np.float32))


_RENDERERS = {"cells": _render_cells, "tissue": _render_tissue, "sparse": _render_sparse}


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
    maps = _RENDERERS[kind](_Grid(x_um, y_um), int(seed))
    if phase_scale != 1.0:
        maps.opd_um *= np.float32(phase_scale)
    if stain_scale != 1.0:
        maps.od *= np.float32(stain_scale)
    return maps
