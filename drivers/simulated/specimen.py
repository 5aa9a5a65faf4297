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

from drivers.simulated.procedural import chunk_rng, noise_grid, noise_points

__all__ = ["SPECIMEN_KINDS", "SpecimenMaps", "render_specimen"]

SPECIMEN_KINDS: tuple[str, ...] = ("cells", "tissue", "sparse")

# Ruifrok & Johnston stain optical densities per (R, G, B) channel.
HAEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29], dtype=np.float32)
EOSIN_OD = np.array([0.07, 0.99, 0.11], dtype=np.float32)
# Weak, slightly blue-weighted absorption of unstained cells and debris.
UNSTAINED_OD = np.array([0.8, 0.9, 1.15], dtype=np.float32)

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
    r = max(a_um, b_um) * wobble
    box = grid.box(cx, cy, r, r)
    if box is None:
        return None
    X = (grid.x[box[1]] - cx).astype(np.float32)[None, :]
    Y = (grid.y[box[0]] - cy).astype(np.float32)[:, None]
    c, s = math.cos(angle), math.sin(angle)
    u = (X * c + Y * s) / a_um
    v = (-X * s + Y * c) / b_um
    rho2 = u * u + v * v
    if harmonics.size:
        z = u + 1j * v
        unit = z / np.maximum(np.abs(z), 1e-6)
        mod = np.ones_like(rho2)
        for k, amp, ph in harmonics:
            mod += amp * np.real(unit ** int(k) * np.exp(-1j * ph)).astype(np.float32)
        rho2 = rho2 / (mod * mod)
    prof = np.clip(1.0 - rho2, 0.0, None) ** exponent
    return box, prof


def _harmonics(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    ks = np.arange(2, 2 + n, dtype=np.float64)
    amps = rng.uniform(0, amp, n) / np.sqrt(ks - 1)
    phases = rng.uniform(0, 2 * np.pi, n)
    return np.stack([ks, amps, phases], axis=1)


def _chunk_density_noise(seed: int, key: int, x_um: float, y_um: float, scale_um: float) -> float:
    return float(noise_points(np.array([x_um / scale_um]), np.array([y_um / scale_um]), seed * 7919 + key)[0])


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
        r = rng.uniform(10.0, 24.0)
        asp = rng.uniform(2.5, 5.5)
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
    n_gran = int(rng.poisson(rng.choice([3.0, 12.0, 35.0])))
    ga = rng.uniform(0, 2 * np.pi, n_gran)
    gr = np.sqrt(rng.uniform(0.05, 0.8, n_gran))
    c, s = math.cos(angle), math.sin(angle)
    gu, gv = gr * np.cos(ga) * a, gr * np.sin(ga) * b
    gx = cx + gu * c - gv * s
    gy = cy + gu * s + gv * c
    gopd = rng.uniform(0.02, 0.12, n_gran) * rng.choice([0.5, 1.0, 1.6])
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


_CELL_CHUNK_UM = 50.0
_CELL_MARGIN_UM = 80.0


@lru_cache(maxsize=4096)
def _cells_in_chunk(seed: int, ix: int, iy: int) -> tuple[_Cell, ...]:
    key = _KIND_KEYS["cells"]
    rng = chunk_rng(seed, key, ix, iy)
    ccx, ccy = (ix + 0.5) * _CELL_CHUNK_UM, (iy + 0.5) * _CELL_CHUNK_UM
    # cells per 1000 um^2 varies smoothly over the slide: sparse colonies to confluent sheets
    density = 1.3 * math.exp(0.75 * _chunk_density_noise(seed, key, ccx, ccy, 350.0))
    spindle_share = 0.5 + 0.45 * math.tanh(_chunk_density_noise(seed, key + 1, ccx, ccy, 500.0))
    n = int(rng.poisson(density * _CELL_CHUNK_UM**2 / 1000.0))
    cells = []
    for _ in range(n):
        x = ix * _CELL_CHUNK_UM + rng.uniform(0, _CELL_CHUNK_UM)
        y = iy * _CELL_CHUNK_UM + rng.uniform(0, _CELL_CHUNK_UM)
        u = rng.uniform()
        style = "round" if u < 0.08 else ("spindle" if u < 0.08 + 0.92 * spindle_share * 0.6 else "spread")
        cells.append(_make_cell(rng, x, y, style))
    return tuple(cells)


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
    dots = np.zeros((h, w), dtype=np.float32)
    gran = np.concatenate([c.granules for c in cells] + [c.nucleoli for c in cells])
    grid.splat(dots, gran[:, 0], gran[:, 1], gran[:, 2].astype(np.float32))
    sigma_px = 0.35 / grid.pitch
    # normalise so that the peak of a dot is its OPD (a gaussian of sigma 0.35 um)
    dots = ndimage.gaussian_filter(dots, sigma_px, mode="constant") * np.float32(2 * np.pi * sigma_px**2)
    opd += dots
    od_grey += dots * 0.15


def _render_cells(grid: _Grid, seed: int) -> SpecimenMaps:
    cells = [c for ch in grid.chunks(_CELL_CHUNK_UM, _CELL_MARGIN_UM) for c in _cells_in_chunk(seed, *ch)]
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
            cells.append(_make_cell(rng, ccx + rng.normal(0, 10), ccy + rng.normal(0, 10), style))
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
    for ch in grid.chunks(_SPARSE_CHUNK_UM, _CELL_MARGIN_UM):
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
_TISSUE_MARGIN_UM = 80.0


@dataclass(frozen=True)
class _Nucleus:
    cx: float
    cy: float
    a: float
    b: float
    angle: float
    harmonics: np.ndarray
    hema: float  # haematoxylin concentration at the centre
    rim: float  # extra staining at the nuclear envelope (0..1)


@dataclass(frozen=True)
class _TissueChunk:
    nuclei: tuple[_Nucleus, ...]
    glands: tuple[tuple[float, float, float, float, float], ...]  # cx, cy, a, b, angle
    rbcs: np.ndarray  # (n, 2) centres


def _nucleus(rng: np.random.Generator, cx: float, cy: float, style: str, angle: float | None = None) -> _Nucleus:
    if style == "lymph":
        r, asp, hema, rim = rng.uniform(2.3, 3.2), rng.uniform(1.0, 1.2), rng.uniform(1.1, 1.7), 0.1
    elif style == "spindle":
        r, asp, hema, rim = rng.uniform(2.5, 3.5), rng.uniform(3.0, 5.5), rng.uniform(0.8, 1.2), 0.2
    else:  # epithelial: large, paler, vesicular chromatin
        r, asp, hema, rim = rng.uniform(3.5, 5.5), rng.uniform(1.1, 1.7), rng.uniform(0.45, 0.8), 0.6
    ang = rng.uniform(0, np.pi) if angle is None else angle + rng.normal(0, 0.2)
    return _Nucleus(cx, cy, r * math.sqrt(asp), r / math.sqrt(asp), ang, _harmonics(rng, 3, 0.08), hema, rim)


def _fibre_angle(seed: int, x_um: float, y_um: float) -> float:
    return float(np.pi * _chunk_density_noise(seed, 91, x_um, y_um, 400.0))


@lru_cache(maxsize=4096)
def _tissue_chunk(seed: int, ix: int, iy: int) -> _TissueChunk:
    key = _KIND_KEYS["tissue"]
    rng = chunk_rng(seed, key, ix, iy)
    x0, y0, c = ix * _TISSUE_CHUNK_UM, iy * _TISSUE_CHUNK_UM, _TISSUE_CHUNK_UM
    cell = _chunk_density_noise(seed, key, x0 + c / 2, y0 + c / 2, 180.0)
    nuclei: list[_Nucleus] = []
    glands: list[tuple[float, float, float, float, float]] = []
    # stroma: spindle nuclei along the fibres plus scattered / clustered lymphocytes
    n_sp = int(rng.poisson(c * c / 1000.0 * 2.0))
    ang = _fibre_angle(seed, x0 + c / 2, y0 + c / 2)
    for _ in range(n_sp):
        nuclei.append(_nucleus(rng, x0 + rng.uniform(0, c), y0 + rng.uniform(0, c), "spindle", ang))
    n_ly = int(rng.poisson(c * c / 1000.0 * 4.0 * (1 + math.tanh(1.5 * cell)) ** 2))
    for _ in range(n_ly):
        nuclei.append(_nucleus(rng, x0 + rng.uniform(0, c), y0 + rng.uniform(0, c), "lymph"))
    # glands: epithelium (large nuclei along the basal side) around a blank lumen
    if rng.uniform() < 0.45:
        gx, gy = x0 + rng.uniform(0, c), y0 + rng.uniform(0, c)
        ga = rng.uniform(25.0, 55.0)
        gb = ga / rng.uniform(1.0, 1.7)
        gang = rng.uniform(0, np.pi)
        glands.append((gx, gy, ga, gb, gang))
        n_ep = int(2 * np.pi * math.sqrt((ga * ga + gb * gb) / 2) / rng.uniform(5.5, 8.0))
        cg, sg = math.cos(gang), math.sin(gang)
        for k in range(n_ep):
            t = 2 * np.pi * (k + rng.uniform(-0.2, 0.2)) / n_ep
            rr = rng.uniform(0.78, 0.9)
            u, v = rr * ga * math.cos(t), rr * gb * math.sin(t)
            ex, ey = gx + u * cg - v * sg, gy + u * sg + v * cg
            radial = math.atan2(ey - gy, ex - gx)
            nuclei.append(_nucleus(rng, ex, ey, "epi", radial))
    rbcs = np.zeros((0, 2))
    if rng.uniform() < 0.3:  # a capillary: a streak of red blood cells
        n = int(rng.integers(4, 30))
        t = rng.uniform(-1, 1, n) * rng.uniform(15, 40)
        va = rng.uniform(0, np.pi)
        vx, vy = x0 + rng.uniform(0, c), y0 + rng.uniform(0, c)
        rbcs = np.stack(
            [vx + t * math.cos(va) + rng.normal(0, 2.5, n), vy + t * math.sin(va) + rng.normal(0, 2.5, n)], axis=1
        )
    return _TissueChunk(tuple(nuclei), tuple(glands), rbcs)


def _render_tissue(grid: _Grid, seed: int) -> SpecimenMaps:
    key = _KIND_KEYS["tissue"]
    h, w = grid.shape
    chunks = [_tissue_chunk(seed, *ch) for ch in grid.chunks(_TISSUE_CHUNK_UM, _TISSUE_MARGIN_UM)]
    # -- stroma: wavy eosinophilic fibres, two families of orientation blended over the slide
    X = grid.x[None, :]
    Y = grid.y[:, None]
    warp = noise_grid(grid.x, grid.y, 22.0, seed * 41 + key) * np.float32(3.0)
    theta = _fibre_angle(seed, float(grid.x.mean()), float(grid.y.mean()))
    fib = np.zeros((h, w), dtype=np.float32)
    mix = 1.0 / (1.0 + np.exp(-1.5 * noise_grid(grid.x, grid.y, 90.0, seed * 43 + key)))
    for n_fam, (dth, weight) in enumerate(((0.0, mix), (1.2, 1.0 - mix))):
        c, s = math.cos(theta + dth), math.sin(theta + dth)
        u = (X * c + Y * s) / 9.0
        v = (-X * s + Y * c + warp) / 1.1
        fib += noise_points(u, v, seed * 47 + key + n_fam) * weight
    coarse = noise_grid(grid.x, grid.y, 30.0, seed * 53 + key)
    eosin = np.clip(0.32 + 0.1 * fib + 0.08 * coarse, 0.03, None).astype(np.float32)
    hema = np.full((h, w), 0.04, dtype=np.float32)
    # -- tissue presence: tears and fat spaces are blank
    presence = noise_grid(grid.x, grid.y, 70.0, seed * 59 + key)
    tissue = np.clip((presence + 1.4) / 0.5, 0.0, 1.0).astype(np.float32)
    # -- glands: pink-purple epithelium around a blank lumen
    for ch in chunks:
        for gx, gy, ga, gb, gang in ch.glands:
            got = _blob(grid, gx, gy, ga, gb, gang, np.zeros((0, 3)), 1.0)
            if got is None:
                continue
            box, prof = got  # prof = 1 - rho^2
            rho2 = 1.0 - prof
            epi = ((rho2 < 1.0) & (rho2 > 0.42)).astype(np.float32)
            lumen = np.clip((0.42 - rho2) / 0.04, 0.0, 1.0)
            eosin[box] = eosin[box] * (1 - epi) + epi * 0.22
            hema[box] += epi * 0.08
            tissue[box] *= 1.0 - lumen
    # -- nuclei (haematoxylin) with chromatin texture and envelope
    nuc = np.zeros((h, w), dtype=np.float32)
    for ch in chunks:
        for n in ch.nuclei:
            got = _blob(grid, n.cx, n.cy, n.a, n.b, n.angle, n.harmonics, 0.25)
            if got is None:
                continue
            box, prof = got
            rim = np.float32(n.rim) * np.clip(1.0 - np.abs(prof - 0.55) / 0.25, 0.0, 1.0)
            nuc[box] = np.maximum(nuc[box], np.float32(n.hema) * (prof * (1 - n.rim * 0.5) + rim))
    chrom = noise_grid(grid.x, grid.y, 0.6, seed * 61 + key)
    hema += nuc * (1.0 + 0.25 * chrom)
    eosin *= 1.0 - np.clip(nuc, 0, 1) * 0.6
    # -- red blood cells: small, strongly eosinophilic biconcave discs
    rbc = np.zeros((h, w), dtype=np.float32)
    for ch in chunks:
        for x, y in ch.rbcs:
            got = _blob(grid, float(x), float(y), 3.7, 3.5, 0.0, np.zeros((0, 3)), 0.3)
            if got is not None:
                box, prof = got
                rho2 = 1.0 - prof ** (1 / 0.3)
                rbc[box] = np.maximum(rbc[box], prof * (0.75 + 0.35 * rho2))
    eosin = eosin * (1 - np.clip(rbc, 0, 1)) + rbc * 1.15
    eosin *= tissue
    hema *= tissue
    # phase: sections are thin and stained, but denser structures still add optical path
    thick = noise_grid(grid.x, grid.y, 12.0, seed * 67 + key)
    opd = tissue * (0.03 + 0.008 * thick) + 0.035 * eosin + 0.03 * hema
    od = hema[None] * HAEMATOXYLIN_OD[:, None, None] + eosin[None] * EOSIN_OD[:, None, None]
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
