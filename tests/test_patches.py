"""The patch dataset (models.patches): tiles, discriminant, split by field of view, augmentation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.errors import DatasetError
from models.patches import Augmentation, PatchDataset, build_tile_caches, split_fields_of_view
from models.tiles import blank_mask, to_unit_float
from models.zstack import ZStackDataset, ZStackWriter

FRAME = (448, 448)  # 2 x 2 tiles


def _busy_frame(seed: int, dtype: type = np.uint8, bits: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.normal(0.0, 1.0, FRAME), (0, 0), 3.0)
    img = np.clip(0.5 + 0.2 * texture / texture.std(), 0.0, 1.0)
    top = (1 << bits) - 1
    return np.repeat((img * top).round()[:, :, None], 3, axis=2).astype(dtype)


def _half_blank_frame(seed: int) -> np.ndarray:
    """Texture in the left column of tiles, flat noisy background in the right one."""
    frame = _busy_frame(seed)
    rng = np.random.default_rng(seed + 1)
    frame[:, 224:] = np.clip(200 + rng.normal(0, 2.0, (448, 224, 3)), 0, 255).astype(np.uint8)
    return frame


def _make_dataset(
    path: Path,
    stacks: int,
    planes: int,
    *,
    z_reference: str = "physical_focal_plane",
    half_blank: bool = False,
    bits: int = 8,
) -> ZStackDataset:
    dtype = np.uint8 if bits == 8 else np.uint16
    with ZStackWriter(
        path, z_reference=z_reference, objective="20x/0.75", pixel_size_um=0.1725, bit_depth=bits, autocommit=False
    ) as w:
        for s in range(stacks):
            w.set_stack(f"pos{s:03d}", x_um=float(s), y_um=0.0, focus_z_um=0.0)
            for i in range(planes):
                frame = _half_blank_frame(10 * s + i) if half_blank else _busy_frame(10 * s + i, dtype, bits)
                w.write_plane(frame, key=f"pos{s:03d}/{i}", stack=f"pos{s:03d}", defocus_um=float(i) - 1.0)
    return ZStackDataset(path)


def test_items_are_3x224x224_float_tensors_with_their_plane_labels(tmp_path: Path) -> None:
    ds = _make_dataset(tmp_path / "ds", stacks=2, planes=3)
    patches = PatchDataset([tmp_path / "ds"])
    assert len(patches) == 2 * 3 * 4 and patches.z_reference == "physical_focal_plane"
    x, d = patches[5]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert isinstance(d, float)
    # item 5 = plane 1 (4 tiles per plane), tile 1 = top-right tile of that plane's frame
    frame = ds.read_plane(1)
    np.testing.assert_allclose(x.numpy().transpose(1, 2, 0), frame[0:224, 224:448] / 255.0, atol=1e-6)
    assert d == ds.planes[1].defocus_um == 0.0
    assert sorted(set(patches.defocus_um.tolist())) == [-1.0, 0.0, 1.0]
    batch, labels = next(iter(torch.utils.data.DataLoader(patches, batch_size=8)))
    assert batch.shape == (8, 3, 224, 224) and labels.dtype == torch.float64


def test_blank_tiles_are_dropped_by_the_discriminant(tmp_path: Path) -> None:
    _make_dataset(tmp_path / "ds", stacks=1, planes=2, half_blank=True)
    kept = PatchDataset(tmp_path / "ds")
    everything = PatchDataset(tmp_path / "ds", drop_blank=False)
    assert len(everything) == 8 and everything.tiles_total == 8
    assert len(kept) == 4 and kept.tiles_total == 8  # the right column of each frame is blank
    assert not blank_mask(np.stack([kept.patch(i) for i in range(len(kept))])).any()


def test_uint16_frames_are_scaled_by_the_recorded_bit_depth(tmp_path: Path) -> None:
    ds = _make_dataset(tmp_path / "ds12", stacks=1, planes=1, bits=12)
    patches = PatchDataset(tmp_path / "ds12")
    frame = ds.read_plane(0)
    np.testing.assert_allclose(patches.patch(0), frame[:224, :224] / 4095.0, rtol=1e-6)
    assert patches.patch(0).max() > 0.9  # 12-bit data fills [0, 1], not [0, 1/16]


def test_split_is_by_field_of_view_deterministic_and_9_to_1(tmp_path: Path) -> None:
    _make_dataset(tmp_path / "a", stacks=6, planes=1)
    _make_dataset(tmp_path / "b", stacks=4, planes=1)
    train = PatchDataset([tmp_path], split="train", seed=3)
    test = PatchDataset([tmp_path], split="test", seed=3)
    assert len(train.fields_of_view) == 9 and len(test.fields_of_view) == 1
    assert not set(train.fields_of_view) & set(test.fields_of_view)
    assert len(train) + len(test) == len(PatchDataset([tmp_path]))
    again = PatchDataset([tmp_path], split="test", seed=3)
    assert again.fields_of_view == test.fields_of_view
    # Each item's stack really lies on its side.
    assert len(train) == 9 * 4 and len(test) == 4
    assert {train.field_of_view(i) for i in range(len(train))} == set(train.fields_of_view)
    assert {test.field_of_view(i) for i in range(len(test))} == set(test.fields_of_view)
    everything = train.fields_of_view + test.fields_of_view
    tests_by_seed = {tuple(split_fields_of_view(everything, seed=s)[1]) for s in range(8)}
    assert len(tests_by_seed) > 1  # the seed matters


def test_split_function_properties() -> None:
    keys = [("d", f"s{i}") for i in range(25)]
    train, test = split_fields_of_view(reversed(keys), test_fraction=0.2, seed=1)
    assert len(test) == 5 and len(train) == 20 and not set(train) & set(test)
    assert (train, test) == split_fields_of_view(keys, test_fraction=0.2, seed=1)  # order-independent
    with pytest.raises(DatasetError, match="at least 2 fields of view"):
        split_fields_of_view([("d", "only")])
    with pytest.raises(DatasetError, match="strictly between 0 and 1"):
        split_fields_of_view(keys, test_fraction=1.0)


def test_augmentation_keeps_labels_and_range_and_changes_pixels(tmp_path: Path) -> None:
    _make_dataset(tmp_path / "ds", stacks=1, planes=2)
    plain = PatchDataset(tmp_path / "ds")
    augmented = PatchDataset(tmp_path / "ds", augment=True, augment_seed=5)
    changed = 0
    for i in range(len(plain)):
        xa, da = augmented[i]
        xp, dp = plain[i]
        assert da == dp and xa.shape == xp.shape
        assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
        changed += int(not torch.equal(xa, xp))
    assert changed == len(plain)
    # A pure flip/rotation keeps the pixel histogram: the label-preserving geometric part.
    geometric = Augmentation(brightness=0.0, colour=0.0, noise_sigma=0.0)
    rng = np.random.default_rng(0)
    p = plain.patch(0)
    q = geometric.apply(p, rng)
    np.testing.assert_array_equal(np.sort(p.ravel()), np.sort(q.ravel()))


def test_tile_cache_is_reused(tmp_path: Path) -> None:
    _make_dataset(tmp_path / "ds", stacks=2, planes=2)
    cache = tmp_path / "cache"
    first = PatchDataset(tmp_path / "ds", cache_dir=cache, split="train", seed=0)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith(".index.npz") and files[1].endswith(".tiles.npy")
    # Damage the planes: a second build must come from the cache alone.
    for f in (tmp_path / "ds" / "planes").iterdir():
        f.write_bytes(b"gone")
    second = PatchDataset(tmp_path / "ds", cache_dir=cache, split="train", seed=0)
    assert len(second) == len(first)
    for i in range(len(first)):
        assert torch.equal(first[i][0], second[i][0]) and first[i][1] == second[i][1]


def test_tile_caches_built_in_parallel_serve_the_same_patches(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _make_dataset(tmp_path / "data" / name, stacks=2, planes=2, half_blank=name == "b")
    serial = PatchDataset(tmp_path / "data", split="all")
    kept = build_tile_caches([tmp_path / "data"], tmp_path / "cache", workers=2)
    assert kept == len(serial) == 3 * 2 * 2 * 4 - 2 * 2 * 2  # "b" loses its blank half
    assert len(list((tmp_path / "cache").glob("*.tiles.npy"))) == 3
    planes = [f for f in (tmp_path / "data").rglob("planes/*") if f.is_file()]
    assert len(planes) == 3 * 2 * 2
    for f in planes:  # from now on only the caches can serve the patches
        f.write_bytes(b"gone")
    cached = PatchDataset(tmp_path / "data", split="all", cache_dir=tmp_path / "cache")
    assert len(cached) == len(serial)
    for i in range(len(serial)):
        assert torch.equal(cached[i][0], serial[i][0]) and cached[i][1] == serial[i][1]
    with pytest.raises(ValueError, match="workers must be >= 1"):
        build_tile_caches([tmp_path / "data"], tmp_path / "cache", workers=0)


def test_training_data_decoded_by_worker_processes_is_the_same(tmp_path: Path) -> None:
    from models.train import patch_datasets

    for name in ("a", "b"):
        _make_dataset(tmp_path / "data" / name, stacks=2, planes=2)
    plain = patch_datasets([tmp_path / "data"], augment=False, progress=False)
    cache = tmp_path / "cache"
    parallel = patch_datasets([tmp_path / "data"], augment=False, progress=False, cache_dir=cache, decode_workers=2)
    assert len(list(cache.glob("*.tiles.npy"))) == 2  # built by the workers before the datasets opened
    for a, b in zip(plain[:2], parallel[:2], strict=True):
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a.defocus_um, b.defocus_um)
        assert torch.equal(a[0][0], b[0][0])
    assert plain[2]["data"]["train"]["patches"] == parallel[2]["data"]["train"]["patches"]


def test_z_range_filter_and_mixed_references(tmp_path: Path) -> None:
    _make_dataset(tmp_path / "phys", stacks=1, planes=3)
    sub = PatchDataset(tmp_path / "phys", z_range_um=(-0.5, 1.0))
    assert sorted(set(sub.defocus_um.tolist())) == [0.0, 1.0]
    _make_dataset(tmp_path / "sharp", stacks=1, planes=1, z_reference="sharpness_peak:variance_of_laplacian")
    with pytest.raises(DatasetError, match="define defocus 0 differently"):
        PatchDataset([tmp_path / "phys", tmp_path / "sharp"])
    mixed = PatchDataset([tmp_path / "phys", tmp_path / "sharp"], allow_mixed_z_reference=True)
    assert mixed.z_reference.startswith("mixed:")
    summary = mixed.summary()
    assert summary["z_reference"] == mixed.z_reference
    assert summary["datasets"] == 2 and summary["dataset_folders"] == {str(tmp_path): 2}


def test_bad_arguments_and_small_frames(tmp_path: Path) -> None:
    _make_dataset(tmp_path / "ds", stacks=1, planes=1)
    with pytest.raises(DatasetError, match="split must be one of train, test, all"):
        PatchDataset(tmp_path / "ds", split="validation")
    with pytest.raises(DatasetError, match="at least 2 fields of view"):
        PatchDataset(tmp_path / "ds", split="train")
    with pytest.raises(DatasetError, match="z_range_um"):
        PatchDataset(tmp_path / "ds", z_range_um=(1.0, -1.0))
    with ZStackWriter(
        tmp_path / "small", z_reference="physical_focal_plane", objective="x", pixel_size_um=1.0, bit_depth=8
    ) as w:
        w.set_stack("s", x_um=None, y_um=None, focus_z_um=None)
        w.write_plane(np.zeros((100, 300, 3), np.uint8), key="k", stack="s", defocus_um=0.0)
    with pytest.raises(DatasetError, match=r"frames of 100x300 are smaller than one 224x224 tile"):
        PatchDataset(tmp_path / "small")
    assert to_unit_float(np.zeros((1, 1, 3), np.uint8)).dtype == np.float32


def test_only_the_selected_planes_are_decoded_without_a_cache(tmp_path: Path) -> None:
    ds = _make_dataset(tmp_path / "ds", stacks=4, planes=2)
    test = PatchDataset(tmp_path / "ds", split="test", seed=1)
    (test_stack,) = {stack for _, stack in test.fields_of_view}
    for p in ds.planes:  # break every plane of the test stack: the train split must not read them
        if p.stack == test_stack:
            (tmp_path / "ds" / p.file).write_bytes(b"broken")
    train = PatchDataset(tmp_path / "ds", split="train", seed=1)
    assert len(train) == 3 * 2 * 4 and train.tiles_total == 24
    with pytest.raises(DatasetError, match="is not a readable TIFF"):
        PatchDataset(tmp_path / "ds", split="test", seed=1)
