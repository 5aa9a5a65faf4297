"""H&E-like tissue sections (stained, amplitude-dominated, with a smooth phase)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from drivers.simulated.procedural import chunk_rng, noise_at, noise_grid, noise_grid_at, noise_points
from drivers.simulated.shapes import (
    EOSIN_OD,
    HAEMATOXYLIN_OD,
    HAEMOGLOBIN_OD,
    KIND_KEYS,
    Grid,
    SpecimenMaps,
    blob,
    slide_noise_at,
)

__all__ = ["render_tissue"]


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


def _nuclei(
    rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, style: str, angles: np.ndarray | None = None
) -> np.ndarray:
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
    key = KIND_KEYS["tissue"]
    logits = [3.0 * noise_grid(x_um, y_um, _FIBRE_FAMILY_SCALE_UM, seed * 97 + key + k) for k in range(_FIBRE_FAMILIES)]
    top = np.maximum.reduce(logits)
    exps = [np.exp(lg - top) for lg in logits]
    total = sum(exps)
    return [e / total for e in exps]


def _fibre_angle(seed: int, x_um: float, y_um: float) -> float:
    """The dominant fibre direction at a slide point (spindle nuclei line up with it)."""
    key = KIND_KEYS["tissue"]
    logits = [noise_grid_at(x_um, y_um, _FIBRE_FAMILY_SCALE_UM, seed * 97 + key + k) for k in range(_FIBRE_FAMILIES)]
    k = int(np.argmax(logits))  # the family with the largest weight
    return _fibre_base_angle(seed) + k * np.pi / _FIBRE_FAMILIES


@lru_cache(maxsize=4096)
def _tissue_chunk(seed: int, ix: int, iy: int) -> _TissueChunk:
    key = KIND_KEYS["tissue"]
    rng = chunk_rng(seed, key, ix, iy)
    c = _TISSUE_CHUNK_UM
    x0, y0 = ix * c, iy * c
    area = c * c / 1000.0
    cellularity = slide_noise_at(seed, key, x0 + c / 2, y0 + c / 2, 180.0)
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


def _in_window(grid: Grid, xs: np.ndarray, ys: np.ndarray, reach: float) -> np.ndarray:
    return (
        (xs >= grid.x[0] - reach) & (xs <= grid.x[-1] + reach) & (ys >= grid.y[0] - reach) & (ys <= grid.y[-1] + reach)
    )


def render_tissue(grid: Grid, seed: int) -> SpecimenMaps:
    key = KIND_KEYS["tissue"]
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
        # bundles plus a finer fibrillar octave (detail a 40x objective resolves)
        fine = noise_points(u * 3.0, v * 3.0, seed * 47 + key + 10 + n_fam)
        fib += (noise_points(u, v, seed * 47 + key + n_fam) + 0.45 * fine) * weight
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
        got = blob(grid, gx, gy, ga, gb, gang, np.zeros((0, 3)), 1.0)
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
        got = blob(grid, row[_NX], row[_NY], row[_NA], row[_NB], row[_NANG], harm, 0.25)
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
        got = blob(grid, float(x), float(y), 3.7, 3.5, 0.0, np.zeros((0, 3)), 1.0)
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
