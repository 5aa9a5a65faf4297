"""Unstained cultured cells and sparse fields (phase-dominated specimens)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from drivers.simulated.procedural import chunk_rng, noise_grid
from drivers.simulated.shapes import (
    KIND_KEYS,
    UNSTAINED_OD,
    Grid,
    SpecimenMaps,
    blob,
    boundary_harmonics,
    slide_noise_at,
)

__all__ = ["render_cells", "render_sparse"]


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
        harm = boundary_harmonics(rng, 2, 0.04)
        exponent, height = 0.5, rng.uniform(5.0, 10.0)
        nuc_scale = rng.uniform(0.45, 0.6)
        nuc_h = rng.uniform(0.5, 1.5)
    elif style == "spindle":  # fibroblast-like, elongated with processes
        r = rng.uniform(10.0, 20.0)
        asp = rng.uniform(2.5, 5.0)
        harm = boundary_harmonics(rng, 4, 0.25)
        exponent, height = rng.uniform(0.5, 0.8), rng.uniform(0.8, 2.0)
        nuc_scale = rng.uniform(0.55, 0.75)
        nuc_h = rng.uniform(1.5, 3.5)
    else:  # spread epithelial-like
        r = rng.uniform(8.0, 17.0)
        asp = rng.uniform(1.0, 1.8)
        harm = boundary_harmonics(rng, 4, 0.18)
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
    key = KIND_KEYS["cells"]
    rng = chunk_rng(seed, key, ix, iy)
    c = _CELL_CHUNK_UM
    ccx, ccy = (ix + 0.5) * c, (iy + 0.5) * c
    # cells per 1000 um^2 vary smoothly over the slide: sparse colonies to confluent sheets
    density = 1.3 * math.exp(0.75 * slide_noise_at(seed, key, ccx, ccy, 350.0))
    spindle_share = 0.5 + 0.45 * math.tanh(slide_noise_at(seed, key + 1, ccx, ccy, 500.0))
    n = int(rng.poisson(density * c * c / 1000.0))
    xs = ix * c + rng.uniform(0, c, n)
    ys = iy * c + rng.uniform(0, c, n)
    us = rng.uniform(size=n)
    styles = ["round" if u < 0.08 else ("spindle" if u < 0.08 + 0.55 * spindle_share else "spread") for u in us]
    return tuple(zip(xs.tolist(), ys.tolist(), styles, strict=True))


@lru_cache(maxsize=16384)
def _cell(seed: int, ix: int, iy: int, k: int) -> _Cell:
    x, y, style = _cell_stubs(seed, ix, iy)[k]
    rng = np.random.default_rng(
        np.random.SeedSequence([seed & 0xFFFFFFFF, KIND_KEYS["cells"], ix + 2**31, iy + 2**31, k])
    )
    return _make_cell(rng, x, y, style)


def _near(grid: Grid, x: float, y: float, reach: float) -> bool:
    return (grid.x[0] - reach <= x <= grid.x[-1] + reach) and (grid.y[0] - reach <= y <= grid.y[-1] + reach)


def _draw_cells(grid: Grid, cells: list[_Cell], seed: int, opd: np.ndarray, od_grey: np.ndarray) -> None:
    """Rasterise cells into the OPD and grey-absorption maps (in place)."""
    if not cells:
        return
    key = KIND_KEYS["cells"]
    h, w = grid.shape
    cyto = np.zeros((h, w), dtype=np.float32)  # dn * thickness of cell bodies
    nuc = np.zeros((h, w), dtype=np.float32)  # dn * thickness of nuclei
    for cell in cells:
        got = blob(grid, cell.cx, cell.cy, cell.a, cell.b, cell.angle, cell.harmonics, cell.exponent)
        if got is not None:
            box, prof = got
            cyto[box] += prof * np.float32(cell.height_um * cell.dn_cyto)
            od_grey[box] += prof * np.float32(cell.absorb)
        if cell.nuc is not None:
            dx, dy, na_um, nb_um, nang, nh = cell.nuc
            got = blob(grid, cell.cx + dx, cell.cy + dy, na_um, nb_um, nang, np.zeros((0, 3)), 0.7)
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
    padded = Grid(
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


def render_cells(grid: Grid, seed: int) -> SpecimenMaps:
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
    key = KIND_KEYS["sparse"]
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


def render_sparse(grid: Grid, seed: int) -> SpecimenMaps:
    h, w = grid.shape
    opd = np.zeros((h, w), dtype=np.float32)
    grey = np.zeros((h, w), dtype=np.float32)
    cells: list[_Cell] = []
    for ch in grid.chunks(_SPARSE_CHUNK_UM, _CELL_MARGIN_UM + _SPARSE_SPREAD_UM):
        cs, debris = _sparse_in_chunk(seed, *ch)
        cells.extend(cs)
        for x, y, r, od_val, opd_val in debris:
            got = blob(grid, x, y, r, r * 0.8, 0.3, np.zeros((0, 3)), 0.5)
            if got is not None:
                box, prof = got
                grey[box] += prof * np.float32(od_val)
                opd[box] += prof * np.float32(opd_val)
    _draw_cells(grid, cells, seed, opd, grey)
    od = grey[None, :, :] * UNSTAINED_OD[:, None, None]
    return SpecimenMaps(od=od.astype(np.float32), opd_um=opd)
