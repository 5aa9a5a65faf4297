"""A torch ``Dataset`` of 224 x 224 defocus patches cut from z-stack datasets.

Each item is ``(float32 tensor 3 x 224 x 224 RGB in [0, 1], float defocus_um)``. Every plane is
decoded once, tiled with ``tiles.tile_grid``, blank tiles are dropped with ``tiles.blank_mask``
(the paper's discriminant), and the kept tiles are held in memory in the plane's own dtype
(or, with ``cache_dir``, in a ``.npy`` file that later runs memory-map instead of decoding).

The train/test split is by field of view: all planes of one stack (one XY position of one
dataset) fall on the same side, 9:1 by default as in the paper, and deterministic by seed.
Augmentation (training only) never changes the defocus label: flips, 90-degree rotations,
brightness and colour gains and zero-mean noise (uniform, cheaper to draw than Gaussian;
only its standard deviation matters at this level).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from models import tiles as tiles_mod
from models.errors import DatasetError
from models.tiles import TILE_SIZE, blank_mask, extract_tiles, tile_grid, to_unit_float
from models.zstack import ZStackDataset, common_z_reference, open_datasets

__all__ = [
    "SPLITS",
    "Augmentation",
    "FieldOfView",
    "PatchDataset",
    "build_tile_caches",
    "dataset_folders",
    "split_fields_of_view",
]

SPLITS = ("train", "test", "all")
CACHE_VERSION = 2  # bump when the tiling or the discriminant changes

FieldOfView = tuple[str, str]  # (dataset_id, stack name)


def split_fields_of_view(
    fields: Iterable[FieldOfView], *, test_fraction: float = 0.1, seed: int = 0
) -> tuple[list[FieldOfView], list[FieldOfView]]:
    """Split fields of view into ``(train, test)``, ``round(n * test_fraction)`` of them (at least
    one, at most ``n - 1``) in test, chosen by a seeded shuffle of the sorted keys.

    The same keys and seed always give the same split, whatever order the keys come in.
    """
    if not (isinstance(test_fraction, float | int) and 0.0 < test_fraction < 1.0):
        raise DatasetError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    keys = sorted(set(fields))
    if len(keys) < 2:
        raise DatasetError(
            f"a train/test split needs at least 2 fields of view (stacks), got {len(keys)}; use split='all' or add data"
        )
    n_test = min(max(1, round(len(keys) * test_fraction)), len(keys) - 1)
    order = np.random.default_rng(seed).permutation(len(keys))
    test = sorted(keys[i] for i in order[:n_test])
    train = sorted(keys[i] for i in order[n_test:])
    return train, test


@dataclass(frozen=True)
class Augmentation:
    """Label-preserving augmentation settings (each applied independently per item)."""

    flips: bool = True  # horizontal / vertical flips, p = 0.5 each
    rotations: bool = True  # a random multiple of 90 degrees
    brightness: float = 0.15  # gain drawn from 1 +- brightness
    colour: float = 0.07  # per-channel gain drawn from 1 +- colour
    noise_sigma: float = 0.01  # zero-mean uniform noise, standard deviation drawn from 0..noise_sigma

    def apply(self, patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one ``H x W x 3`` float32 patch in [0, 1]; returns a new array in [0, 1]."""
        x = patch
        if self.flips:
            if rng.random() < 0.5:
                x = x[:, ::-1]
            if rng.random() < 0.5:
                x = x[::-1, :]
        if self.rotations:
            x = np.rot90(x, k=int(rng.integers(4)))
        gain = np.float32(1.0 + rng.uniform(-self.brightness, self.brightness))
        channel = (1.0 + rng.uniform(-self.colour, self.colour, size=3)).astype(np.float32)
        x = x * (gain * channel)  # a new array: the input patch is never modified
        if self.noise_sigma > 0:
            # uniform on [-a, a] has standard deviation a / sqrt(3); 4x faster to draw than normal
            half_width = np.float32(rng.uniform(0.0, self.noise_sigma) * math.sqrt(3.0))
            noise = rng.random(size=x.shape, dtype=np.float32)
            x += (noise - np.float32(0.5)) * (2 * half_width)
        return np.clip(x, 0.0, 1.0, out=x).astype(np.float32, copy=False)


@dataclass
class _Source:
    """The kept tiles of one dataset: ``tiles`` (N x 224 x 224 x 3, plane dtype) and their labels."""

    dataset: ZStackDataset
    tiles: np.ndarray
    plane_index: np.ndarray  # N: index of the plane each tile came from
    defocus_um: np.ndarray  # N float32
    tiles_per_plane: int  # tiles of the grid, before the discriminant


def _cache_key(ds: ZStackDataset, drop_blank: bool) -> str:
    """Changes whenever the manifest, the discriminant settings or the cache layout change."""
    settings = {
        "v": CACHE_VERSION,
        "dataset_id": ds.dataset_id,
        "updated": ds.manifest.get("updated"),
        "planes": len(ds.planes),
        "drop_blank": drop_blank,
        "tile": TILE_SIZE,
        "discriminant": [
            tiles_mod.BLOCK_PX,
            tiles_mod.NOISE_K,
            tiles_mod.MIN_CONTRAST,
            tiles_mod.CORRELATED_NOISE_FACTOR,
            tiles_mod.BLOCK_NOISE_CAP,
            tiles_mod.MIN_CONTENT_FRACTION,
        ],
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _tile_dataset(
    ds: ZStackDataset, drop_blank: bool, wanted: np.ndarray | None, on_plane: Callable[[], None] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Decode each plane (each ``wanted`` one) once, tile it and keep the non-blank tiles.

    Returns the kept tiles, their plane indices and labels, and the number of tiles per plane.
    """
    if ds.frame_shape is None or not ds.planes:
        empty = np.empty((0, TILE_SIZE, TILE_SIZE, 3), dtype=ds.dtype or np.uint8)
        return empty, np.empty(0, np.int64), np.empty(0, np.float32), 0
    h, w, _ = ds.frame_shape
    if h < TILE_SIZE or w < TILE_SIZE:
        raise DatasetError(f"{ds.path}: frames of {h}x{w} are smaller than one {TILE_SIZE}x{TILE_SIZE} tile")
    grid = tile_grid(h, w, TILE_SIZE)
    kept_tiles: list[np.ndarray] = []
    kept_plane: list[np.ndarray] = []
    kept_defocus: list[np.ndarray] = [np.empty(0, np.float32)]
    kept_tiles.append(np.empty((0, TILE_SIZE, TILE_SIZE, 3), dtype=ds.dtype or np.uint8))
    kept_plane.append(np.empty(0, np.int64))
    for plane in ds.planes:
        if wanted is not None and not wanted[plane.index]:
            continue
        cut = extract_tiles(ds.read_plane(plane), grid)
        if drop_blank:
            cut = cut[~blank_mask(cut, ds.bit_depth)]
        kept_tiles.append(cut)
        kept_plane.append(np.full(len(cut), plane.index, dtype=np.int64))
        kept_defocus.append(np.full(len(cut), plane.defocus_um, dtype=np.float32))
        if on_plane is not None:
            on_plane()
    return np.concatenate(kept_tiles), np.concatenate(kept_plane), np.concatenate(kept_defocus), len(grid)


def _load_source(
    ds: ZStackDataset,
    drop_blank: bool,
    cache_dir: Path | None,
    wanted: np.ndarray,
    on_plane: Callable[[], None] | None,
) -> _Source:
    """The kept tiles of ``ds``: without a cache only of the ``wanted`` planes; a cache holds all planes."""
    if cache_dir is None:
        tiles, plane_index, defocus, per_plane = _tile_dataset(ds, drop_blank, wanted, on_plane)
        return _Source(ds, tiles, plane_index, defocus, per_plane)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = cache_dir / f"{ds.dataset_id}-{_cache_key(ds, drop_blank)}"
    tiles_path, index_path = stem.with_suffix(".tiles.npy"), stem.with_suffix(".index.npz")
    if tiles_path.is_file() and index_path.is_file():
        try:
            tiles = np.load(tiles_path, mmap_mode="r")
            with np.load(index_path) as index:
                plane_index, defocus = index["plane_index"], index["defocus_um"]
                per_plane = int(index["tiles_per_plane"])
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetError(f"tile cache {stem}.* is unreadable ({exc}); delete it to rebuild") from exc
        if len(tiles) != len(plane_index):
            raise DatasetError(f"tile cache {stem}.* is inconsistent; delete it to rebuild")
        if on_plane is not None:
            for _ in ds.planes:
                on_plane()
        return _Source(ds, tiles, plane_index, defocus, per_plane)
    tiles, plane_index, defocus, per_plane = _tile_dataset(ds, drop_blank, None, on_plane)
    # Write both files atomically (index last: it marks the cache complete).
    tmp_tiles = tiles_path.with_name(tiles_path.name + f".{os.getpid()}.tmp")
    with open(tmp_tiles, "wb") as fh:
        np.save(fh, tiles)
    os.replace(tmp_tiles, tiles_path)
    tmp_index = index_path.with_name(index_path.name + f".{os.getpid()}.tmp")
    with open(tmp_index, "wb") as fh:
        np.savez(fh, plane_index=plane_index, defocus_um=defocus, tiles_per_plane=np.int64(per_plane))
    os.replace(tmp_index, index_path)
    return _Source(ds, np.load(tiles_path, mmap_mode="r"), plane_index, defocus, per_plane)


def _cache_one(args: tuple[str, bool, str]) -> int:
    """Pool task: build (or find) the tile cache of one dataset; returns its kept tiles."""
    path, drop_blank, cache_dir = args
    ds = ZStackDataset(path)
    src = _load_source(ds, drop_blank, Path(cache_dir), np.ones(len(ds.planes), dtype=bool), None)
    return len(src.tiles)


def build_tile_caches(
    datasets: Sequence[str | os.PathLike[str]],
    cache_dir: str | os.PathLike[str],
    *,
    drop_blank: bool = True,
    workers: int = 1,
) -> int:
    """Decode and tile every plane of ``datasets`` into ``cache_dir``, one dataset per process.

    Decoding is the slow part of building a ``PatchDataset`` (about 3 ms per 224 x 224 plane, one
    process); a ``PatchDataset`` with the same ``cache_dir`` then only memory-maps the files. Caches
    that exist are reused. Returns the number of kept tiles over all datasets.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    paths = [str(d.path) for d in open_datasets(list(datasets), allow_mixed_z_reference=True)]
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tasks = [(p, drop_blank, str(cache_dir)) for p in paths]
    if workers == 1 or len(tasks) <= 1:
        return sum(_cache_one(t) for t in tasks)
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
        return sum(pool.imap_unordered(_cache_one, tasks))


def dataset_folders(paths: Iterable[str | os.PathLike[str]]) -> dict[str, int]:
    """How many datasets lie in each parent folder: a compact record for checkpoints (not 700 paths)."""
    counts: dict[str, int] = {}
    for path in paths:
        parent = str(Path(path).parent)
        counts[parent] = counts.get(parent, 0) + 1
    return dict(sorted(counts.items()))


class PatchDataset(Dataset[tuple[torch.Tensor, float]]):
    """Patches of one or more z-stack datasets: ``(3 x 224 x 224 float32 in [0, 1], defocus_um)``.

    Args:
        datasets: dataset folders (or parents of several), or opened ``ZStackDataset`` objects.
        split: ``"train"``, ``"test"`` or ``"all"``; train and test never share a field of view.
        test_fraction, seed: the split (``split_fields_of_view``).
        augment: label-preserving augmentation (an ``Augmentation``, ``True`` for the defaults).
        drop_blank: drop tiles that ``tiles.blank_mask`` calls blank (the paper's discriminant).
        z_range_um: keep only planes with ``lo <= defocus_um <= hi``.
        allow_mixed_z_reference: permit datasets with different z references (see ``z_reference``).
        cache_dir: keep the kept tiles of each dataset in ``.npy`` files there and memory-map them.
        augment_seed: seed of the augmentation stream (each DataLoader worker derives its own).
        progress: show a tqdm bar while planes are decoded.
    """

    def __init__(
        self,
        datasets: Sequence[ZStackDataset | str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        split: str = "all",
        test_fraction: float = 0.1,
        seed: int = 0,
        augment: Augmentation | bool = False,
        drop_blank: bool = True,
        z_range_um: tuple[float, float] | None = None,
        allow_mixed_z_reference: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        augment_seed: int = 0,
        progress: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if z_range_um is not None:
            lo, hi = z_range_um
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise DatasetError(f"z_range_um must be (low, high) with low <= high, got {z_range_um!r}")
        if isinstance(datasets, str | os.PathLike):
            datasets = [datasets]
        opened = [d for d in datasets if isinstance(d, ZStackDataset)]
        paths = [d for d in datasets if not isinstance(d, ZStackDataset)]
        if paths:
            opened += open_datasets(paths, allow_mixed_z_reference=allow_mixed_z_reference)
        if not opened:
            raise DatasetError("PatchDataset needs at least one dataset")
        self.z_reference: str = common_z_reference(opened, allow_mixed=allow_mixed_z_reference)
        self.split = split
        self.seed = seed
        self.test_fraction = test_fraction
        self.augmentation: Augmentation | None = (
            Augmentation() if augment is True else (augment if isinstance(augment, Augmentation) else None)
        )
        self._augment_seed = augment_seed
        self._rng: np.random.Generator | None = None
        self._rng_worker: int | None = None

        all_fields = sorted({(d.dataset_id, p.stack) for d in opened for p in d.planes})
        if split == "all":
            selected = set(all_fields)
        else:
            train, test = split_fields_of_view(all_fields, test_fraction=test_fraction, seed=seed)
            selected = set(train if split == "train" else test)
        self.fields_of_view: list[FieldOfView] = sorted(selected)

        wanted = [
            np.array(
                [
                    (d.dataset_id, p.stack) in selected
                    and (z_range_um is None or z_range_um[0] <= p.defocus_um <= z_range_um[1])
                    for p in d.planes
                ],
                dtype=bool,
            )
            for d in opened
        ]
        cache = None if cache_dir is None else Path(cache_dir)
        bar = None
        if progress:
            from tqdm import tqdm

            to_decode = sum(len(d.planes) if cache else int(w.sum()) for d, w in zip(opened, wanted, strict=True))
            bar = tqdm(total=to_decode, desc="decoding planes", unit="plane")
        self._sources: list[_Source] = []
        source_ids: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        try:
            for d, plane_ok in zip(opened, wanted, strict=True):
                tick = None if bar is None else (lambda: bar.update(1))
                src = _load_source(d, drop_blank, cache, plane_ok, tick)
                keep = np.flatnonzero(plane_ok[src.plane_index])
                source_ids.append(np.full(len(keep), len(self._sources), dtype=np.int32))
                rows.append(keep)
                self._sources.append(src)
        finally:
            if bar is not None:
                bar.close()
        self._source_of = np.concatenate(source_ids)
        self._row_of = np.concatenate(rows)
        self.defocus_um: np.ndarray = np.concatenate(
            [src.defocus_um[keep] for src, keep in zip(self._sources, rows, strict=True)]
        ).astype(np.float32)
        # tiles of the selected planes before and after the discriminant
        self.tiles_total = sum(int(w.sum()) * s.tiles_per_plane for w, s in zip(wanted, self._sources, strict=True))
        self.tiles_kept = len(self._row_of)

    @property
    def datasets(self) -> list[ZStackDataset]:
        return [s.dataset for s in self._sources]

    def __len__(self) -> int:
        return len(self._row_of)

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        worker = None if info is None else info.id
        if self._rng is None or worker != self._rng_worker:
            # Each DataLoader worker gets its own stream (torch seeds workers differently per epoch).
            base = self._augment_seed if info is None else info.seed
            self._rng = np.random.default_rng([base % (2**63), self._augment_seed])
            self._rng_worker = worker
        return self._rng

    def patch(self, index: int) -> np.ndarray:
        """The ``224 x 224 x 3`` float32 patch of item ``index``, in [0, 1], not augmented."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        src = self._sources[int(self._source_of[index])]
        raw = np.asarray(src.tiles[int(self._row_of[index])])
        return to_unit_float(raw, src.dataset.bit_depth)

    def field_of_view(self, index: int) -> FieldOfView:
        """``(dataset_id, stack)`` of item ``index``: the unit the split keeps on one side."""
        src = self._sources[int(self._source_of[index])]
        plane = src.dataset.planes[int(src.plane_index[int(self._row_of[index])])]
        return (src.dataset.dataset_id, plane.stack)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, float]:
        x = self.patch(index)
        if self.augmentation is not None:
            x = self.augmentation.apply(x, self._generator())
        tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
        return tensor, float(self.defocus_um[index])

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (for training reports and ``autofocus dataset info``)."""
        return {
            "split": self.split,
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "z_reference": self.z_reference,
            "datasets": len(self._sources),
            "dataset_folders": dataset_folders([s.dataset.path for s in self._sources]),
            "fields_of_view": len(self.fields_of_view),
            "patches": len(self),
            "tiles_total": self.tiles_total,
            "tiles_kept_after_discriminant": self.tiles_kept,
            "defocus_range_um": [float(self.defocus_um.min()), float(self.defocus_um.max())] if len(self) else None,
            "augment": self.augmentation is not None,
        }
