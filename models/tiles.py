"""Tiling of camera frames into 224x224 patches, and the discriminant that drops blank patches.

The paper (LDSE-NET, section 3.1) splits a wide-field frame into 224 x 224 tiles, predicts the
defocus of each and averages the predictions of the tiles that are not "mostly blank area".
``tile_grid`` gives the tile positions (the same grid for training data and for prediction),
``extract_tiles`` cuts them out, ``to_unit_float`` scales integer frames to [0, 1] by bit depth,
and ``blank_mask`` is the discriminant.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import cv2
import numpy as np

from models.errors import ModelInputError

__all__ = [
    "BLOCK_PX",
    "MIN_CONTENT_FRACTION",
    "MIN_CONTRAST",
    "NOISE_K",
    "TILE_SIZE",
    "Tile",
    "blank_mask",
    "content_fraction",
    "extract_tiles",
    "tile_grid",
    "to_unit_float",
]

TILE_SIZE = 224

# Discriminant settings (see ``blank_mask``).
BLOCK_PX = 4  # block-mean size: averages noise down, keeps cells (tens of pixels across)
NOISE_K = 5.0  # a block counts as content when it differs from the background by NOISE_K noise sigmas
MIN_CONTRAST = 0.012  # ... and by at least this much (3 grey levels of 8 bits): JPEG steps, noise-free images
CORRELATED_NOISE_FACTOR = 2.0  # block-scale noise may exceed the white-noise prediction by this factor,
BLOCK_NOISE_CAP = 0.006  # ... or reach this level (JPEG removes pixel-scale noise but keeps block-scale noise)
MIN_CONTENT_FRACTION = 0.01  # a patch with less content than this fraction of its area is blank


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_CHANNEL_SUM = np.ones((1, 3), dtype=np.float32)


class Tile(NamedTuple):
    """One tile of a frame: grid ``row``/``col`` and its top-left pixel ``(y0, x0)``."""

    row: int
    col: int
    y0: int
    x0: int
    size: int


def tile_grid(height: int, width: int, size: int = TILE_SIZE) -> list[Tile]:
    """Full ``size x size`` tiles covering a ``height x width`` frame, the grid centred in it.

    ``height // size`` rows and ``width // size`` columns; the left-over margins are split evenly
    (the extra pixel of an odd margin goes to the bottom/right), so 2592 x 1944 gives 11 x 8
    tiles with margins of 64 px left and right and 76 px top and bottom. Row-major order.
    """
    for label, value in (("height", height), ("width", width), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ModelInputError(f"tile_grid: {label} must be an integer, got {value!r}")
    if size <= 0:
        raise ModelInputError(f"tile_grid: size must be positive, got {size}")
    if height < size or width < size:
        raise ModelInputError(
            f"tile_grid: a {height}x{width} frame holds no {size}x{size} tile; frames must be at least {size}x{size}"
        )
    rows, cols = int(height) // size, int(width) // size
    top, left = (int(height) - rows * size) // 2, (int(width) - cols * size) // 2
    return [Tile(r, c, top + r * size, left + c * size, int(size)) for r in range(rows) for c in range(cols)]


def extract_tiles(frame: np.ndarray, tiles: list[Tile]) -> np.ndarray:
    """Stack the ``tiles`` of an ``H x W x C`` frame into an ``N x size x size x C`` array (a copy)."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise ModelInputError(f"extract_tiles: expected an H x W x C array, got {_describe(frame)}")
    if not tiles:
        return np.empty((0, 0, 0, frame.shape[2]), dtype=frame.dtype)
    size = tiles[0].size
    out = np.empty((len(tiles), size, size, frame.shape[2]), dtype=frame.dtype)
    for i, t in enumerate(tiles):
        if t.size != size:
            raise ModelInputError("extract_tiles: all tiles must have the same size")
        if t.y0 < 0 or t.x0 < 0 or t.y0 + size > frame.shape[0] or t.x0 + size > frame.shape[1]:
            raise ModelInputError(f"extract_tiles: tile {t} lies outside the {frame.shape[0]}x{frame.shape[1]} frame")
        out[i] = frame[t.y0 : t.y0 + size, t.x0 : t.x0 + size]
    return out


def to_unit_float(image: np.ndarray, bit_depth: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Scale a ``uint8``/``uint16`` image to ``float32`` in [0, 1] by its bit depth.

    ``bit_depth`` (1..16) is the number of significant bits, e.g. 12 for a 12-bit camera that
    delivers ``uint16``; ``None`` means the full range of the dtype (8 or 16). A value above the
    bit depth's maximum is an error rather than being clipped. ``out``, a C-contiguous ``float32``
    array of the image's shape, receives the result (a row of a batch being filled) and is returned.
    """
    scale = _unit_scale(image, bit_depth)
    if out is not None and (
        not isinstance(out, np.ndarray)
        or out.dtype != np.float32
        or out.shape != image.shape
        or not out.flags.c_contiguous
    ):
        raise ModelInputError(
            f"to_unit_float: out must be a C-contiguous float32 array of shape {image.shape}, got {_describe(out)}"
        )
    return np.multiply(image, scale, out=out, dtype=np.float32)  # one pass, no integer->float copy


def _unit_scale(image: np.ndarray, bit_depth: int | None, caller: str = "to_unit_float") -> np.float32:
    """The factor that maps the integer ``image`` to [0, 1] (``to_unit_float``), after checking it."""
    if not isinstance(image, np.ndarray) or image.dtype not in (np.uint8, np.uint16):
        raise ModelInputError(f"{caller}: expected a uint8 or uint16 array, got {_describe(image)}")
    full_bits = 8 if image.dtype == np.uint8 else 16
    bits = full_bits if bit_depth is None else bit_depth
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= full_bits:
        raise ModelInputError(
            f"{caller}: bit_depth must be an integer 1..{full_bits} for {image.dtype}, got {bit_depth!r}"
        )
    max_value = (1 << bits) - 1
    if bits < full_bits and image.size and int(image.max()) > max_value:
        raise ModelInputError(
            f"{caller}: image holds values up to {int(image.max())}, above the {bits}-bit maximum {max_value}"
        )
    return np.float32(1.0 / max_value)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__}"


def _check_patches(patches: np.ndarray, bit_depth: int | None) -> np.float32 | None:
    """Validate ``blank_mask``'s input; the ``to_unit_float`` factor for integer patches, else None."""
    if not isinstance(patches, np.ndarray) or patches.ndim != 4 or patches.shape[3] != 3:
        raise ModelInputError(
            f"blank_mask: expected N x H x W x 3 patches (float in [0, 1], uint8 or uint16), got {_describe(patches)}"
        )
    if patches.shape[1] < 4 * BLOCK_PX or patches.shape[2] < 4 * BLOCK_PX:
        raise ModelInputError(f"blank_mask: patches of {patches.shape[1]}x{patches.shape[2]} are too small (min 16x16)")
    if patches.dtype in (np.uint8, np.uint16):
        return _unit_scale(patches, bit_depth, caller="blank_mask")
    if not np.issubdtype(patches.dtype, np.floating):
        raise ModelInputError(
            f"blank_mask: patches must be float in [0, 1], uint8 or uint16, got dtype {patches.dtype}"
        )
    if bit_depth is not None:
        raise ModelInputError(f"blank_mask: bit_depth applies to integer patches only; these are {patches.dtype}")
    if patches.size:
        lo, hi = float(patches.min()), float(patches.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ModelInputError(f"blank_mask: patch values must lie in [0, 1], got the range [{lo:g}, {hi:g}]")
    return None


# Patches are filtered in chunks of this many, stacked as one tall image: a few large OpenCV calls
# instead of four small ones per patch, with the float copy bounded (8 x 224 x 224 x 3 x 4 B = 4.8 MB).
_CHUNK = 8
# Exact integer medians by counting: |response| values at or above this share the top bin.
_COUNT_LIMIT = 4096


def _noise_and_blocks(patches: np.ndarray, bit_depth: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Each patch's pixel noise sigma (``N``) and ``BLOCK_PX`` block means (``N x H/4 x W/4``), in unit grey.

    Grey is the mean of the three channels. Patches go through in chunks of ``_CHUNK`` stacked as
    one tall image (a few large OpenCV calls, and a float copy that stays small). For integer
    patches the channel sums are exact integers (at most 3 x 65535 < 2**24), so is the noise
    response, and its median is counted; the unit-grey factor is ``to_unit_float``'s scale / 3.

    Pixel noise (Immerkaer 1996): the 3x3 kernel [1,-2,1] x [1,-2,1] passes almost nothing of
    optically band-limited structure (the objectives oversample) but multiplies white noise by 6;
    the median (of every other row and column: 12,000 samples, plenty) makes it robust to sharp
    edges. The rows kept (1, 3, ..., H - 3) never reach a neighbouring patch of the tall image.
    Block means: noise falls by BLOCK_PX for white noise; cells (tens of pixels) stay.
    """
    scale = _check_patches(patches, bit_depth)
    factor = (1.0 if scale is None else float(scale)) / 3.0
    n, h, w, _ = patches.shape
    hb, wb = h // BLOCK_PX, w // BLOCK_PX
    median = np.empty(n, dtype=np.float64)
    blocks = np.empty((n, hb, wb), dtype=np.float32)
    buffer = np.empty((min(n, _CHUNK) * h, w, 3), dtype=np.float32)
    for s in range(0, n, _CHUNK):
        c = min(_CHUNK, n - s)
        tall = buffer[: c * h]
        np.copyto(tall, patches[s : s + c].reshape(c * h, w, 3), casting="unsafe")
        sums = cv2.transform(tall, _CHANNEL_SUM).reshape(c, h, w)
        lap = cv2.filter2D(sums.reshape(c * h, w), -1, _NOISE_KERNEL).reshape(c, h, w)[:, 1:-1:2, 1:-1:2]
        median[s : s + c] = _median_abs_rows(lap.reshape(c, -1), exact_integers=scale is not None)
        cropped = sums[:, : hb * BLOCK_PX, : wb * BLOCK_PX].reshape(c * hb * BLOCK_PX, wb * BLOCK_PX)
        blocks[s : s + c] = cv2.resize(cropped, (wb, c * hb), interpolation=cv2.INTER_AREA).reshape(c, hb, wb)
    sigma_px = median * factor / (6.0 * 0.6745)
    block_means = blocks.astype(np.float64)
    block_means *= factor
    return sigma_px, block_means


def _median_abs_rows(values: np.ndarray, exact_integers: bool) -> np.ndarray:
    """Median of ``|values|`` along each row of an ``N x M`` array (upper median for even ``M``).

    Integer-valued rows are counted (one ``bincount`` for all rows, exact); rows whose median
    reaches ``_COUNT_LIMIT`` and non-integer input go through ``np.partition``.
    """
    a = np.abs(values)
    n, m = a.shape
    k = m // 2
    if not exact_integers:
        return np.partition(a, k, axis=1)[:, k].astype(np.float64)
    ints = np.minimum(a, _COUNT_LIMIT).astype(np.int32)
    ints += (np.arange(n, dtype=np.int32) * (_COUNT_LIMIT + 1))[:, None]
    counts = np.bincount(ints.ravel(), minlength=n * (_COUNT_LIMIT + 1)).reshape(n, _COUNT_LIMIT + 1)
    median = (np.cumsum(counts, axis=1) <= k).sum(axis=1).astype(np.float64)
    over = median >= _COUNT_LIMIT
    if over.any():
        median[over] = np.partition(a[over], k, axis=1)[:, k]
    return median


def _row_median(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=1)`` of an ``N x M`` array with one selection per row: the lower middle
    value of an even row is the largest of the values left of the upper one."""
    k = x.shape[1] // 2
    p = np.partition(x, k, axis=1)
    upper = p[:, k].astype(np.float64)
    if x.shape[1] % 2:
        return upper
    return (p[:, :k].max(axis=1) + upper) / 2.0


@functools.lru_cache(maxsize=8)
def _plane_axes(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Block coordinates ``u`` (along a row, ``width``) and ``v`` (down a column, ``height``), both
    -1..1 (read-only; cached per grid size). Over the full grid the plane's terms (the constant,
    ``u`` and ``v``) are orthogonal: each sums to zero against the others."""
    u = np.linspace(-1.0, 1.0, width)
    v = np.linspace(-1.0, 1.0, height)
    u.flags.writeable = False
    v.flags.writeable = False
    return u, v


def _plane(coef: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The planes ``c0 + c1 u + c2 v`` of ``coef`` (``N x 3``) on the block grid: ``N x len(v) x len(u)``."""
    return (coef[:, 0, None, None] + coef[:, 1, None, None] * u) + coef[:, 2, None, None] * v[:, None]


def content_fraction(patches: np.ndarray, bit_depth: int | None = None) -> np.ndarray:
    """Fraction (0..1) of each patch's area that differs from its background by more than noise.

    See ``blank_mask`` for the rule and the arguments; returned so callers can log or tune the
    discriminant.
    """
    sigma_px, b = _noise_and_blocks(patches, bit_depth)
    n, hb, wb = b.shape
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    sigma_white = sigma_px / BLOCK_PX
    u, v = _plane_axes(hb, wb)
    # Least-squares background plane. 1, u and v are orthogonal on the full grid, so each
    # coefficient is one projection, taken from the column and row sums. ``einsum``, not ``@``:
    # ``@`` hands small products to OpenBLAS, whose worker threads keep spinning for a while after
    # it returns and took a core from the network that runs next (ONNX Runtime, 2 threads on
    # 2 cores: a full frame's near-model inference 117 -> 80 ms).
    col, row = b.sum(axis=1), b.sum(axis=2)
    coef = np.stack(
        [
            col.sum(axis=1) / (hb * wb),
            np.einsum("nw,w->n", col, u) / (hb * np.einsum("w,w->", u, u)),
            np.einsum("nh,h->n", row, v) / (wb * np.einsum("h,h->", v, v)),
        ],
        axis=1,
    )
    resid = (b - _plane(coef, u, v)).reshape(n, -1)
    # Block-scale noise measured directly: the median absolute deviation of the blocks from the
    # plane (the background blocks dominate the median unless the patch is mostly content).
    # (in float32, which halves the time of the two selections; the estimate needs no more digits)
    resid32 = resid.astype(np.float32)
    sigma_block = _row_median(np.abs(resid32 - _row_median(resid32)[:, None])) / 0.6745
    # Correlated noise (JPEG, demosaicing) averages down less, so the block-scale estimate may
    # raise the noise level, but never beyond max(CORRELATED_NOISE_FACTOR x the white
    # prediction, BLOCK_NOISE_CAP), so that structure cannot pass itself off as noise.
    cap = np.maximum(CORRELATED_NOISE_FACTOR * sigma_white, BLOCK_NOISE_CAP)
    sigma = np.maximum(sigma_white, np.minimum(sigma_block, cap))
    threshold = np.maximum(NOISE_K * sigma, MIN_CONTRAST)[:, None, None]

    # Background: the plane (illumination gradients, vignetting) refitted, by weighted least
    # squares, to the blocks that the first fit calls background (the normal equations from the
    # weighted column and row sums).
    inlier = (np.abs(resid.reshape(n, hb, wb)) <= threshold).astype(np.float64)
    solvable = inlier.sum(axis=(1, 2)) >= 0.1 * hb * wb
    if solvable.any():
        wgt = inlier[solvable]
        weighted_b = wgt * b[solvable]
        w_col, w_row = wgt.sum(axis=1), wgt.sum(axis=2)
        s1 = w_col.sum(axis=1)
        su, suu = np.einsum("nw,w->n", w_col, u), np.einsum("nw,w->n", w_col, u * u)
        sv, svv = np.einsum("nh,h->n", w_row, v), np.einsum("nh,h->n", w_row, v * v)
        suv = np.einsum("nhw,h,w->n", wgt, v, u)
        b_col, b_row = weighted_b.sum(axis=1), weighted_b.sum(axis=2)
        ata = np.stack([s1, su, sv, su, suu, suv, sv, suv, svv], axis=1).reshape(-1, 3, 3)
        atb = np.stack([b_col.sum(axis=1), np.einsum("nw,w->n", b_col, u), np.einsum("nh,h->n", b_row, v)], axis=1)
        coef[solvable] = np.linalg.solve(ata + 1e-9 * np.eye(3), atb[:, :, None])[:, :, 0]
    return (np.abs(b - _plane(coef, u, v)) > threshold).mean(axis=(1, 2))


def blank_mask(patches: np.ndarray, bit_depth: int | None = None) -> np.ndarray:
    """The discriminant: ``True`` for each patch that is mostly background (blank).

    ``patches``: ``N x H x W x 3``, float in [0, 1], or the camera's ``uint8``/``uint16`` with
    ``bit_depth`` as in ``to_unit_float`` (the same answers as on ``to_unit_float(patches,
    bit_depth)``, without converting the whole batch: the predictor converts only the tiles kept).

    Rule, per patch, on the mean of the three channels:
      1. pixel noise sigma from the median absolute response of the 3x3 kernel
         ``[1,-2,1] x [1,-2,1]`` (Immerkaer's estimator; optics band-limit the image, so this
         kernel sees almost only noise);
      2. the patch is averaged in ``BLOCK_PX x BLOCK_PX`` = 4 x 4 blocks and a background plane is
         fitted to the blocks (it absorbs illumination gradients and vignetting);
      3. block noise: ``sigma / 4`` (white noise), raised to the median absolute deviation of the
         blocks from the plane (correlated noise: JPEG, demosaicing), but at most to
         ``max(2 x sigma / 4, BLOCK_NOISE_CAP = 0.006)`` so that structure cannot pass for noise;
      4. a block is content when it differs from the background plane (refitted to the blocks
         within the threshold) by more than ``max(NOISE_K x block noise, MIN_CONTRAST)`` =
         ``max(5 sigma, 0.012)``: 0.012 is 3 grey levels of 8 bits, above JPEG's DC steps;
      5. the patch is blank when less than ``MIN_CONTENT_FRACTION`` = 1 % of its blocks are content.

    A defocused cell is a smooth blob far above block noise, and a faint unstained cell near focus
    still differs from the background by several block sigmas over tens of blocks, so both are
    kept; empty background, noisy or not, has essentially no block beyond 5 sigma and is dropped.
    JPEG below quality ~50 with strong noise can leave block artefacts that count as content.
    """
    return content_fraction(patches, bit_depth) < MIN_CONTENT_FRACTION
