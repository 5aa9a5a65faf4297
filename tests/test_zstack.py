"""The on-disk z-stack format (models.zstack): round trip, atomic writes, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from models.errors import DatasetError
from models.zstack import (
    MANIFEST_NAME,
    ZStackDataset,
    ZStackWriter,
    check_z_reference,
    common_z_reference,
    find_datasets,
    open_datasets,
)


def _frame(seed: int, dtype: type = np.uint8, bits: int = 8, shape: tuple[int, int] = (40, 56)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << bits, size=(*shape, 3), dtype=np.int64).astype(dtype)


def _writer(path: Path, **overrides: object) -> ZStackWriter:
    settings: dict[str, object] = {
        "z_reference": "physical_focal_plane",
        "objective": "20x/0.75",
        "pixel_size_um": 0.1725,
        "bit_depth": 8,
    }
    settings.update(overrides)
    return ZStackWriter(path, **settings)  # type: ignore[arg-type]


def _write_stacks(w: ZStackWriter, stacks: int, planes: int, dtype: type = np.uint8, bits: int = 8) -> list[np.ndarray]:
    frames = []
    for s in range(stacks):
        w.set_stack(f"pos{s:03d}", x_um=1000.0 * s, y_um=-5.0, focus_z_um=100.0 + s)
        for i in range(planes):
            frame = _frame(100 * s + i, dtype, bits)
            frames.append(frame)
            d = -1.0 + 0.5 * i
            w.write_plane(
                frame,
                key=f"pos{s:03d}/z{i:03d}",
                stack=f"pos{s:03d}",
                defocus_um=d,
                z_um=100.0 + s + d,
                x_um=1000.0 * s,
                y_um=-5.0,
                time_s=float(i),
                exposure_ms=10.0,
            )
    return frames


def test_round_trip_and_plain_tifffile_json(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    with _writer(path) as w:
        frames = _write_stacks(w, stacks=2, planes=3)
        w.commit(complete=True)
    ds = ZStackDataset(path)
    assert len(ds) == 6 and set(ds.stacks) == {"pos000", "pos001"}
    assert ds.z_reference == "physical_focal_plane" and ds.complete
    assert ds.frame_shape == (40, 56, 3) and ds.dtype == np.uint8 and ds.bit_depth == 8
    assert ds.stacks["pos001"].focus_z_um == 101.0 and ds.stacks["pos001"].x_um == 1000.0
    for rec, frame in zip(ds.planes, frames, strict=True):
        np.testing.assert_array_equal(ds.read_plane(rec), frame)
    assert [p.defocus_um for p in ds.planes[:3]] == [-1.0, -0.5, 0.0]

    # Plain tools, no project code: json + tifffile.
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    assert manifest["format"] == "ldse-zstack" and manifest["pixel_size_um"] == 0.1725
    first = manifest["planes"][4]
    np.testing.assert_array_equal(tifffile.imread(path / first["file"]), frames[4])
    with tifffile.TiffFile(path / first["file"]) as tif:
        assert tif.is_ome
        assert 'PhysicalSizeX="0.1725"' in tif.ome_metadata
        assert first["z_um"] == 100.5
        assert f'PositionZ="{first["z_um"]}"' in tif.ome_metadata


def test_uint16_12_bit_round_trip_and_bit_depth_check(tmp_path: Path) -> None:
    w = _writer(tmp_path / "ds16", bit_depth=12)
    frames = _write_stacks(w, stacks=1, planes=2, dtype=np.uint16, bits=12)
    ds = ZStackDataset(tmp_path / "ds16")
    assert ds.dtype == np.uint16 and ds.bit_depth == 12
    np.testing.assert_array_equal(ds.read_plane(1), frames[1])
    too_bright = np.full((40, 56, 3), 5000, np.uint16)
    with pytest.raises(DatasetError, match="exceed the dataset's bit_depth 12"):
        w.write_plane(too_bright, key="x", stack="pos000", defocus_um=0.0)


def test_interrupted_write_leaves_a_readable_dataset_and_resume_overwrites_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    w = _writer(path)
    _write_stacks(w, stacks=1, planes=2)
    # Simulate a crash: a plane written without its manifest commit, plus a stray temp file.
    w.autocommit = False
    w.write_plane(_frame(99), key="pos000/z002", stack="pos000", defocus_um=0.0)
    (path / "planes" / ".000099.ome.tif.tmp").write_bytes(b"half a plane")
    del w
    ds = ZStackDataset(path)
    assert [p.key for p in ds.planes] == ["pos000/z000", "pos000/z001"]
    assert all(ds.read_plane(p).shape == (40, 56, 3) for p in ds.planes)

    resumed = _writer(path, resume=True)
    assert resumed.keys == {"pos000/z000", "pos000/z001"}
    rec = resumed.write_plane(_frame(7), key="pos000/z002", stack="pos000", defocus_um=0.0)
    assert rec.index == 2
    ds = ZStackDataset(path)
    assert [p.key for p in ds.planes] == ["pos000/z000", "pos000/z001", "pos000/z002"]
    np.testing.assert_array_equal(ds.read_plane(2), _frame(7))


def test_writer_refuses_duplicates_existing_folders_and_mismatched_resume(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    w = _writer(path)
    _write_stacks(w, stacks=1, planes=1)
    with pytest.raises(DatasetError, match="already in the dataset"):
        w.write_plane(_frame(1), key="pos000/z000", stack="pos000", defocus_um=0.0)
    with pytest.raises(DatasetError, match="already holds a dataset; pass resume=True"):
        _writer(path)
    with pytest.raises(DatasetError, match=r"objective is '20x/0.75' but this acquisition has '40x/0.65'"):
        _writer(path, resume=True, objective="40x/0.65")
    with pytest.raises(DatasetError, match="z_reference"):
        _writer(path, resume=True, z_reference="sharpness_peak:brenner")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        _writer(tmp_path / "busy")


def test_write_plane_bad_inputs(tmp_path: Path) -> None:
    w = _writer(tmp_path / "ds")
    w.set_stack("a", x_um=0.0, y_um=0.0, focus_z_um=0.0)
    with pytest.raises(DatasetError, match="uint8 or uint16, got float32"):
        w.write_plane(np.zeros((40, 56, 3), np.float32), key="k", stack="a", defocus_um=0.0)
    with pytest.raises(DatasetError, match=r"H x W x 3 RGB array, got shape \(40, 56\)"):
        w.write_plane(np.zeros((40, 56), np.uint8), key="k", stack="a", defocus_um=0.0)
    with pytest.raises(DatasetError, match="unknown; call set_stack"):
        w.write_plane(_frame(0), key="k", stack="nope", defocus_um=0.0)
    with pytest.raises(DatasetError, match="defocus_um must be a finite number"):
        w.write_plane(_frame(0), key="k", stack="a", defocus_um=float("nan"))
    w.write_plane(_frame(0), key="k", stack="a", defocus_um=0.0)
    with pytest.raises(DatasetError, match="differs from the dataset's"):
        w.write_plane(_frame(1, shape=(41, 56)), key="k2", stack="a", defocus_um=0.0)
    with pytest.raises(DatasetError, match="stack name"):
        w.set_stack("a b/c", x_um=0.0, y_um=0.0, focus_z_um=None)
    with pytest.raises(DatasetError, match="pixel_size_um must be positive"):
        _writer(tmp_path / "other", pixel_size_um=0.0)


def test_reader_names_corrupt_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    _write_stacks(_writer(path), stacks=1, planes=2)
    ds = ZStackDataset(path)
    (path / ds.planes[0].file).write_bytes(b"not a tiff at all")
    with pytest.raises(DatasetError, match=r"000000\.ome\.tif is not a readable TIFF"):
        ds.read_plane(0)
    (path / ds.planes[1].file).unlink()
    with pytest.raises(DatasetError, match=r"plane file planes/000001\.ome\.tif .* is missing"):
        ds.read_plane(1)
    tifffile.imwrite(path / ds.planes[1].file, np.zeros((40, 56, 3), np.uint16), photometric="rgb")
    with pytest.raises(DatasetError, match="dtype uint16 differs from the manifest's dtype uint8"):
        ds.read_plane(1)


def test_reader_rejects_bad_manifests(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    _write_stacks(_writer(path), stacks=1, planes=1)
    manifest_path = path / MANIFEST_NAME
    good = json.loads(manifest_path.read_text())

    def broken(change: dict[str, object], drop: str | None = None) -> None:
        data = {**good, **change}
        if drop:
            del data[drop]
        manifest_path.write_text(json.dumps(data))

    broken({}, drop="z_reference")
    with pytest.raises(DatasetError, match="required field 'z_reference' is missing"):
        ZStackDataset(path)
    broken({"z_reference": "best_guess"})
    with pytest.raises(DatasetError, match="'best_guess' is not allowed; use 'physical_focal_plane'"):
        ZStackDataset(path)
    broken({"planes": [{"index": 0, "key": "k", "file": "f", "stack": "pos000"}]})
    with pytest.raises(DatasetError, match="lacks the required field 'defocus_um'"):
        ZStackDataset(path)
    broken({"format": "something-else"})
    with pytest.raises(DatasetError, match="not a z-stack manifest"):
        ZStackDataset(path)
    manifest_path.write_text("{ truncated")
    with pytest.raises(DatasetError, match="not valid JSON"):
        ZStackDataset(path)
    with pytest.raises(DatasetError, match=r"manifest\.json is missing"):
        ZStackDataset(tmp_path)


def test_z_reference_values() -> None:
    assert check_z_reference("sharpness_peak:variance_of_laplacian") == "sharpness_peak:variance_of_laplacian"
    assert check_z_reference("external:jiang2018") == "external:jiang2018"
    for bad in ("sharpness_peak", "physical_focal_plane:x", "external:", 3):
        with pytest.raises(DatasetError, match=r"allowed|must be a string"):
            check_z_reference(bad)  # type: ignore[arg-type]


def test_mixed_z_references_are_an_error_unless_allowed(tmp_path: Path) -> None:
    _write_stacks(_writer(tmp_path / "root" / "a"), stacks=1, planes=1)
    _write_stacks(_writer(tmp_path / "root" / "b", z_reference="sharpness_peak:variance_of_laplacian"), 1, 1)
    assert [p.name for p in find_datasets(tmp_path / "root")] == ["a", "b"]
    with pytest.raises(DatasetError, match=r"define defocus 0 differently .*allow mixing explicitly"):
        open_datasets(tmp_path / "root")
    both = open_datasets([tmp_path / "root"], allow_mixed_z_reference=True)
    assert common_z_reference(both, allow_mixed=True) == (
        "mixed:physical_focal_plane+sharpness_peak:variance_of_laplacian"
    )
    assert len(open_datasets([tmp_path / "root" / "a", tmp_path / "root" / "a"])) == 1  # no duplicates
    with pytest.raises(DatasetError, match="no z-stack dataset"):
        find_datasets(tmp_path / "root" / "a" / "planes")
