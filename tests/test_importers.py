"""Importers (models.importers) on small fixtures in the Jiang et al. and folder layouts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from models.errors import DatasetError
from models.importers import JIANG_PIXEL_SIZE_UM, import_folder, import_jiang
from models.patches import PatchDataset
from models.zstack import ZStackDataset, read_image_file


def _texture(seed: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(abs(seed))
    t = cv2.GaussianBlur(rng.normal(0.0, 1.0, shape), (0, 0), 3.0)
    grey = np.clip(128 + 40 * t / t.std(), 0, 255).astype(np.uint8)
    return np.stack([grey, grey // 2, 255 - grey], axis=2)  # distinct channels: catches BGR/RGB swaps


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def _jiang_fixture(root: Path) -> None:
    """Two training folders of tiles (2 segments x 3 defocus) and one test folder of full frames."""
    for folder, seed in (("train/s1_l1", 0), ("train/s2_l3", 10)):
        for seg in (1, 2):
            for nm in (-1000, 0, 500):
                _write_jpeg(root / folder / f"Seg{seg}_defocus{nm}.jpg", _texture(seed + seg, (224, 224)))
    for nm in (-2000, 1500):
        _write_jpeg(root / "test" / "s7_l2" / f"defocus{nm}.jpg", _texture(nm, (300, 500)))
    (root / "README.txt").write_text("not an image")


def test_jiang_layout_becomes_two_datasets(tmp_path: Path) -> None:
    _jiang_fixture(tmp_path / "jiang")
    result = import_jiang(tmp_path / "jiang", tmp_path / "out")
    assert result.planes == {"tiles": 12, "frames": 2} and result.stacks == {"tiles": 2, "frames": 1}
    tiles = ZStackDataset(tmp_path / "out" / "tiles")
    frames = ZStackDataset(tmp_path / "out" / "frames")
    assert tiles.z_reference == frames.z_reference == "external:jiang2018"
    assert tiles.frame_shape == (224, 224, 3) and frames.frame_shape == (300, 500, 3)
    assert tiles.pixel_size_um == pytest.approx(JIANG_PIXEL_SIZE_UM) and tiles.objective == "20x/0.75"
    assert sorted(tiles.stacks) == ["s1_l1", "s2_l3"] and list(frames.stacks) == ["s7_l2"]
    by_key = {p.key: p for p in tiles.planes}
    assert by_key["train/s1_l1/Seg2_defocus-1000.jpg"].defocus_um == -1.0
    assert by_key["train/s2_l3/Seg1_defocus500.jpg"].defocus_um == 0.5
    assert sorted(p.defocus_um for p in frames.planes) == [-2.0, 1.5]
    # planes decode to RGB (not OpenCV's BGR): the blue channel was 255 - grey
    plane = tiles.read_plane(by_key["train/s1_l1/Seg2_defocus-1000.jpg"])
    expected = _texture(2, (224, 224))
    assert np.abs(plane.astype(int) - expected.astype(int)).mean() < 4
    # the split keeps each s{segment}_l{location} folder on one side
    train = PatchDataset(tmp_path / "out" / "tiles", split="train", drop_blank=False)
    test = PatchDataset(tmp_path / "out" / "tiles", split="test", drop_blank=False)
    assert len(train) == len(test) == 6 and not set(train.fields_of_view) & set(test.fields_of_view)


def test_jiang_flipped_sign_and_bad_layouts(tmp_path: Path) -> None:
    _jiang_fixture(tmp_path / "jiang")
    import_jiang(tmp_path / "jiang", tmp_path / "flipped", sign=-1)
    assert sorted(p.defocus_um for p in ZStackDataset(tmp_path / "flipped" / "frames").planes) == [-1.5, 2.0]
    with pytest.raises(DatasetError, match="sign must be"):
        import_jiang(tmp_path / "jiang", tmp_path / "x", sign=2)
    with pytest.raises(DatasetError, match="already holds a dataset"):
        import_jiang(tmp_path / "jiang", tmp_path / "flipped")
    (tmp_path / "unrelated" / "photos").mkdir(parents=True)
    _write_jpeg(tmp_path / "unrelated" / "photos" / "defocus100.jpg", _texture(1, (224, 224)))
    with pytest.raises(DatasetError, match=r"no labelled images found .* s\{segment\}_l\{location\}/"):
        import_jiang(tmp_path / "unrelated", tmp_path / "y")
    _write_jpeg(tmp_path / "jiang" / "train" / "s1_l1" / "Seg3_focus.jpg", _texture(1, (224, 224)))
    with pytest.raises(DatasetError, match=r"Seg3_focus\.jpg: the name carries no defocus label"):
        import_jiang(tmp_path / "jiang", tmp_path / "z")


def test_jiang_corrupt_and_wrong_size_images_are_named(tmp_path: Path) -> None:
    _jiang_fixture(tmp_path / "jiang")
    bad = tmp_path / "jiang" / "train" / "s1_l1" / "Seg1_defocus0.jpg"
    bad.write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(DatasetError, match=r"Seg1_defocus0\.jpg is not a readable JPG"):
        import_jiang(tmp_path / "jiang", tmp_path / "a")
    _write_jpeg(bad, _texture(0, (200, 224)))
    with pytest.raises(DatasetError, match=r"shape \(200, 224, 3\) uint8 differs from the dataset's \(224, 224, 3\)"):
        import_jiang(tmp_path / "jiang", tmp_path / "b")


def test_folder_import_with_regex_units_and_stacks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for pos in ("fieldA", "fieldB"):
        for z in (-1.5, 0.0, 2.0):
            (src / pos).mkdir(parents=True, exist_ok=True)
            img = _texture(int(z * 10) + len(pos), (240, 260)).astype(np.uint16) * 16  # 12-bit data in uint16
            tifffile.imwrite(src / pos / f"img_z{z:+.1f}um.tif", img, photometric="rgb")
    result = import_folder(
        src,
        tmp_path / "ds",
        pixel_size_um=0.22,
        objective="10x/0.25",
        bit_depth=12,
        z_reference="sharpness_peak:brenner",
    )
    assert result.planes == {"images": 6} and result.stacks == {"images": 2}
    ds = ZStackDataset(tmp_path / "ds")
    assert ds.bit_depth == 12 and ds.dtype == np.uint16 and ds.z_reference == "sharpness_peak:brenner"
    assert sorted(ds.stacks) == ["fieldA", "fieldB"]
    assert sorted({p.defocus_um for p in ds.planes}) == [-1.5, 0.0, 2.0]
    np.testing.assert_array_equal(ds.read_plane(0), tifffile.imread(src / ds.planes[0].key))

    # nanometres and a stack group in the expression; grey PNGs become RGB
    src2 = tmp_path / "src2"
    src2.mkdir()
    for pos in (1, 2):
        for nm in (-500, 750):
            cv2.imwrite(str(src2 / f"pos{pos}_dz{nm}nm.png"), _texture(pos, (224, 224))[:, :, 0])
    import_folder(src2, tmp_path / "ds2", regex=r"pos(?P<stack>\d+)_dz(?P<defocus>-?\d+)nm", unit="nm")
    ds2 = ZStackDataset(tmp_path / "ds2")
    assert sorted(ds2.stacks) == ["1", "2"] and sorted(p.defocus_um for p in ds2.planes) == [-0.5, -0.5, 0.75, 0.75]
    assert ds2.read_plane(0).shape == (224, 224, 3) and ds2.pixel_size_um is None


def test_folder_import_refusals(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "a_1.0um.png"), np.zeros((224, 224, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"named group \(\?P<defocus>"):
        import_folder(src, tmp_path / "o1", regex=r"(\d+)um")
    with pytest.raises(DatasetError, match="not a valid regular expression"):
        import_folder(src, tmp_path / "o2", regex=r"(?P<defocus>[")
    with pytest.raises(DatasetError, match="unit must be one of um, nm"):
        import_folder(src, tmp_path / "o3", unit="mm")
    with pytest.raises(DatasetError, match="z_reference"):
        import_folder(src, tmp_path / "o4", z_reference="whatever")
    cv2.imwrite(str(src / "overview.png"), np.zeros((224, 224, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"overview\.png: the file name does not match .* label is missing"):
        import_folder(src, tmp_path / "o5")
    with pytest.raises(DatasetError, match="not a folder"):
        import_folder(tmp_path / "nope", tmp_path / "o6")


def test_read_image_file_refuses_unsupported(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"unsupported image type '\.gif'"):
        read_image_file(tmp_path / "x.gif")
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((8, 8, 3), np.float32), photometric="rgb")
    with pytest.raises(DatasetError, match="dtype float32 is not supported"):
        read_image_file(tmp_path / "f.tif")


def test_cli_imports_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autofocus.cli import main

    _jiang_fixture(tmp_path / "jiang")
    assert (
        main(["dataset", "import-jiang", str(tmp_path / "jiang"), "--out", str(tmp_path / "j"), "--no-progress"]) == 0
    )
    assert '"tiles": 12' in capsys.readouterr().out
    src = tmp_path / "folder"
    src.mkdir()
    for z in (-1, 1):
        cv2.imwrite(str(src / f"z{z}um.png"), _texture(z, (224, 224)))
    assert (
        main(
            [
                "dataset",
                "import-folder",
                str(src),
                "--out",
                str(tmp_path / "f"),
                "--pixel-size-um",
                "0.2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert '"images": 2' in capsys.readouterr().out
    assert main(["dataset", "info", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["z_references"] == ["external:filenames", "external:jiang2018"] and report["planes"] == 16
    assert main(["dataset", "import-folder", str(src), "--out", str(tmp_path / "g"), "--regex", "nothing"]) == 2
    assert "(?P<defocus>" in capsys.readouterr().err
