"""Tiling and the blank-patch discriminant (models.tiles)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from models.errors import ModelInputError
from models.tiles import blank_mask, content_fraction, extract_tiles, tile_grid, to_unit_float

RNG_SEED = 1234


def _noisy(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(image + rng.normal(0.0, sigma, image.shape), 0.0, 1.0).astype(np.float32)


def _background(level: float = 0.8, gradient: float = 0.0) -> np.ndarray:
    xx = np.arange(224, dtype=np.float64)[None, :, None] / 224.0
    return np.broadcast_to(level + gradient * xx, (224, 224, 3)).copy()


def _cells(contrast: float, blur_px: float = 0.0) -> np.ndarray:
    """Background with two round cells that are ``contrast`` darker (a faint unstained cell is ~0.02)."""
    img = _background()
    yy, xx = np.mgrid[:224, :224]
    for cy, cx, r in ((80, 90, 28), (150, 160, 22)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] -= contrast
    if blur_px:
        img = cv2.GaussianBlur(img, (0, 0), blur_px)
    return img


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", (image * 255).round().astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float32) / 255.0


def test_tile_grid_full_frame_is_11_by_8_and_centred() -> None:
    grid = tile_grid(1944, 2592)
    assert len(grid) == 88
    assert {t.row for t in grid} == set(range(8)) and {t.col for t in grid} == set(range(11))
    left, top = grid[0].x0, grid[0].y0
    right = 2592 - (grid[-1].x0 + 224)
    bottom = 1944 - (grid[-1].y0 + 224)
    assert abs(left - right) <= 1 and abs(top - bottom) <= 1
    # tiles abut without overlap and in row-major order
    for a, b in itertools.pairwise(grid):
        if a.row == b.row:
            assert b.x0 - a.x0 == 224
        else:
            assert (b.row, b.col) == (a.row + 1, 0) and b.y0 - a.y0 == 224


def test_tile_grid_exact_and_odd_sizes() -> None:
    assert tile_grid(224, 224) == [(0, 0, 0, 0, 224)]
    grid = tile_grid(449, 673)  # 2 x 3 tiles, odd margins 1 and 1
    assert len(grid) == 6 and grid[0].y0 == 0 and grid[0].x0 == 0


@pytest.mark.parametrize(("h", "w", "size"), [(223, 500, 224), (500, 100, 224), (500, 500, 0)])
def test_tile_grid_refuses_impossible_grids(h: int, w: int, size: int) -> None:
    with pytest.raises(ModelInputError, match="tile"):
        tile_grid(h, w, size)


def test_tile_grid_refuses_non_integers() -> None:
    with pytest.raises(ModelInputError, match="height must be an integer"):
        tile_grid(224.0, 224)  # type: ignore[arg-type]


def test_extract_tiles_copies_the_right_pixels() -> None:
    frame = np.arange(500 * 700 * 3, dtype=np.uint16).reshape(500, 700, 3) % 4096
    grid = tile_grid(500, 700)
    cut = extract_tiles(frame, grid)
    assert cut.shape == (len(grid), 224, 224, 3) and cut.dtype == np.uint16
    t = grid[-1]
    np.testing.assert_array_equal(cut[-1], frame[t.y0 : t.y0 + 224, t.x0 : t.x0 + 224])


def test_to_unit_float_scales_by_bit_depth() -> None:
    img = np.array([[[0, 2048, 4095]]], dtype=np.uint16)
    np.testing.assert_allclose(to_unit_float(img, 12)[0, 0], [0.0, 2048 / 4095, 1.0], rtol=1e-6)
    np.testing.assert_allclose(to_unit_float(np.array([[[255, 0, 51]]], np.uint8))[0, 0], [1.0, 0.0, 0.2], rtol=1e-6)
    with pytest.raises(ModelInputError, match="above the 12-bit maximum 4095"):
        to_unit_float(np.array([[[5000, 0, 0]]], dtype=np.uint16), 12)
    with pytest.raises(ModelInputError, match="uint8 or uint16"):
        to_unit_float(np.zeros((2, 2, 3), np.float32))


def test_to_unit_float_fills_a_row_of_a_batch() -> None:
    tiles = np.arange(2 * 4 * 4 * 3, dtype=np.uint16).reshape(2, 4, 4, 3) * 40
    batch = np.full((3, 4, 4, 3), -1.0, dtype=np.float32)
    row = batch[2]
    assert to_unit_float(tiles[1], 12, out=row) is row
    assert np.array_equal(batch[2], to_unit_float(tiles[1], 12)) and np.all(batch[:2] == -1.0)
    for bad in (np.empty((4, 4, 3), np.float64), np.empty((4, 4, 2), np.float32), batch[:, :, :, 0:3:2][0]):
        with pytest.raises(ModelInputError, match="out must be a C-contiguous float32 array of shape"):
            to_unit_float(tiles[0], 12, out=bad)


def test_blank_patches_are_blank_even_noisy_tilted_and_jpeg() -> None:
    rng = np.random.default_rng(RNG_SEED)
    patches = [
        _background(),  # noise-free
        _noisy(_background(), 0.01, rng),
        _noisy(_background(), 0.04, rng),  # very noisy
        _noisy(_background(0.6, gradient=0.08), 0.01, rng),  # illumination gradient / vignetting
        _jpeg(_noisy(_background(), 0.015, rng), 75),  # MJPG camera: noise smeared into 8x8 blocks
        _noisy(_background(0.02), 0.003, rng),  # dark frame
    ]
    mask = blank_mask(np.stack(patches).astype(np.float32))
    assert mask.tolist() == [True] * len(patches), content_fraction(np.stack(patches).astype(np.float32))


def test_busy_and_faint_and_defocused_patches_are_kept() -> None:
    rng = np.random.default_rng(RNG_SEED)
    texture = cv2.GaussianBlur(rng.normal(0.0, 1.0, (224, 224)), (0, 0), 1.5)
    tissue = np.clip(0.5 + 0.15 * texture[:, :, None] / texture.std() * np.array([1.0, 0.7, 0.9]), 0, 1)
    patches = [
        _noisy(tissue, 0.01, rng),  # dense stained tissue, fine texture everywhere
        _noisy(_cells(0.02), 0.01, rng),  # faint unstained cells near focus (2 % contrast)
        _noisy(_cells(0.05, blur_px=12.0), 0.02, rng),  # strongly defocused cells: smooth blobs
        _jpeg(_noisy(_cells(0.03, blur_px=3.0), 0.01, rng), 80),
    ]
    mask = blank_mask(np.stack(patches).astype(np.float32))
    assert mask.tolist() == [False] * len(patches), content_fraction(np.stack(patches).astype(np.float32))


def test_a_single_small_speck_does_not_make_a_patch_busy() -> None:
    img = _background()
    img[100:104, 100:104] -= 0.3  # dust: 16 pixels, far below 1 % of the area
    assert blank_mask(img[None].astype(np.float32)).tolist() == [True]


def test_blank_mask_bad_inputs_say_what_is_allowed() -> None:
    good = np.full((2, 224, 224, 3), 0.5, np.float32)
    with pytest.raises(ModelInputError, match=r"float in \[0, 1\], uint8 or uint16, got dtype int32"):
        blank_mask((good * 255).astype(np.int32))
    with pytest.raises(ModelInputError, match="bit_depth applies to integer patches only"):
        blank_mask(good, bit_depth=8)
    with pytest.raises(ModelInputError, match="blank_mask: image holds values up to 4096, above the 12-bit maximum"):
        blank_mask(np.full((1, 224, 224, 3), 4096, np.uint16), bit_depth=12)
    with pytest.raises(ModelInputError, match=r"blank_mask: bit_depth must be an integer 1\.\.8"):
        blank_mask((good * 255).astype(np.uint8), bit_depth=12)
    with pytest.raises(ModelInputError, match="N x H x W x 3"):
        blank_mask(good[..., 0])
    with pytest.raises(ModelInputError, match=r"\[0, 1\]"):
        blank_mask(good * 3)
    with pytest.raises(ModelInputError, match=r"\[0, 1\]"):
        bad = good.copy()
        bad[0, 0, 0, 0] = np.nan
        blank_mask(bad)
    assert blank_mask(np.empty((0, 224, 224, 3), np.float32)).shape == (0,)


def test_integer_patches_get_the_answers_of_their_unit_float_scaling() -> None:
    """The predictor filters the camera's integer tiles and converts only the kept ones."""
    rng = np.random.default_rng(RNG_SEED)
    floats = np.stack(
        [_noisy(_background(), 0.01, rng), _noisy(_cells(0.03), 0.01, rng), _noisy(_cells(0.05, 10.0), 0.02, rng)]
    )
    u8 = (floats * 255).round().astype(np.uint8)
    u12 = (floats * 4095).round().astype(np.uint16)  # a 12-bit camera's uint16 frames
    for tiles, bits in ((u8, None), (u12, 12), (u12, None)):
        assert np.array_equal(content_fraction(tiles, bits), content_fraction(to_unit_float(tiles, bits)))
    assert blank_mask(u8).tolist() == [True, False, False]
    assert blank_mask(u12, 12).tolist() == [True, False, False]
    # read as 16-bit, the same 12-bit frame is 16x darker: its cells' contrast (0.03, 0.05) falls
    # below the 0.012 floor and they are dropped, which is why the bit depth must be passed on
    assert blank_mask(u12).tolist() == [True, True, True]


def test_a_patch_gets_the_same_answer_alone_and_in_a_batch() -> None:
    """Patches go through in chunks stacked as one tall image: no patch may see its neighbours."""
    from models.tiles import _noise_and_blocks

    rng = np.random.default_rng(RNG_SEED)
    kinds = [_background(), _cells(0.03), _cells(0.05, 10.0), _background(0.2), _background(1.0)]
    floats = np.stack([_noisy(kinds[i % len(kinds)], 0.01, rng) for i in range(19)])  # 19: two chunks and a part
    for patches, bits in (((floats * 255).round().astype(np.uint8), None), (floats, None)):
        together = content_fraction(patches, bits)
        alone = np.array([content_fraction(patches[i : i + 1], bits)[0] for i in range(len(patches))])
        assert np.array_equal(together, alone)
        sigma, blocks = _noise_and_blocks(patches, bits)  # the noise and block means too, bit for bit
        for i in range(len(patches)):
            sigma_i, blocks_i = _noise_and_blocks(patches[i : i + 1], bits)
            assert sigma[i] == sigma_i[0] and np.array_equal(blocks[i], blocks_i[0])
        assert not np.array_equal(together, np.roll(together, 1))  # the patches do differ
    # a 230 x 227 patch: blocks cover its top-left 228 x 224 pixels, in a batch as alone
    odd = (np.stack([_noisy(np.pad(_cells(0.04), ((3, 3), (2, 1), (0, 0)), mode="edge"), 0.01, rng)] * 3) * 255).round()
    odd = odd.astype(np.uint8)
    assert odd.shape == (3, 230, 227, 3)
    assert np.array_equal(content_fraction(odd), np.repeat(content_fraction(odd[:1]), 3))


def test_noise_median_is_counted_exactly_and_falls_back_above_the_count() -> None:
    """Integer patches: the noise response's median is counted; very noisy 16-bit patches go past
    the counting range and are selected instead. Both must equal the float patches' answer."""
    from models.tiles import _COUNT_LIMIT, _median_abs_rows, _row_median

    rng = np.random.default_rng(RNG_SEED)
    rows = rng.integers(-3 * _COUNT_LIMIT, 3 * _COUNT_LIMIT, size=(6, 1001)).astype(np.float32)
    rows[:3] //= 64  # three rows well inside the counted range, three mostly beyond it
    expected = np.sort(np.abs(rows), axis=1)[:, 500]
    assert np.array_equal(_median_abs_rows(rows, exact_integers=True), expected)
    assert np.array_equal(_median_abs_rows(rows, exact_integers=False), expected)
    for width in (1, 2, 7, 3136):
        x = rng.normal(size=(4, width))
        assert np.array_equal(_row_median(x), np.median(x, axis=1))
    floats = np.stack([_noisy(_background(0.5), 0.08, rng), _noisy(_cells(0.2), 0.08, rng)])
    u16 = (floats * 65535).round().astype(np.uint16)  # noise response ~ 6 x 0.08 x 65535 x sqrt(3): past the count
    assert np.array_equal(content_fraction(u16), content_fraction(to_unit_float(u16)))
    assert blank_mask(u16).tolist() == [True, False]


def test_discriminant_on_the_simulator_keeps_faint_phase_cells_and_drops_empty_glass() -> None:
    from drivers.simulated import SimulatedMicroscope

    def patches(phase_scale: float, jpeg: int | None) -> np.ndarray:
        scope = SimulatedMicroscope(
            seed=21,
            specimen="cells",
            frame_shape=(224, 224),
            stain_scale=0.0,
            phase_scale=phase_scale,
            jpeg_quality=jpeg,
            source_points=1,
        )
        frames = [
            scope.render_patch(400.0 * i, 0.0, d, 224, read_noise_e=12.0, exposure_ms=10.0, rng=i)
            for i in range(2)
            for d in (0.0, 0.5, 6.0)
        ]  # dim, noisy; in focus, near focus, defocused
        return to_unit_float(np.stack(frames))

    for jpeg in (None, 70):
        assert not blank_mask(patches(0.5, jpeg)).any()  # unstained cells at half the usual phase
        assert blank_mask(patches(0.0, jpeg)).all()  # empty glass


@pytest.mark.parametrize("quality", [50, 70, 90])
def test_jpeg_compressed_noisy_glass_is_blank(quality: int) -> None:
    rng = np.random.default_rng(quality)
    patches = np.stack([_jpeg(_noisy(_background(), sigma, rng), quality) for sigma in (0.004, 0.01, 0.02, 0.03)])
    assert blank_mask(patches).all(), content_fraction(patches)
