"""``autofocus predict``: table and --json output, file formats (PNG, JPEG via OpenCV's BGR, TIFF)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from autofocus.cli import main
from autofocus.predictor import Predictor


def busy_rgb(height: int, width: int, seed: int) -> np.ndarray:
    """Colour-asymmetric structured image, so a red/blue swap changes what the network sees."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 4.0)
    base = (base - base.mean()) / base.std()
    rgb = np.stack([0.85 + 0.05 * base, 0.45 + 0.25 * base, 0.25 + 0.15 * base], axis=2)
    return np.clip(rgb * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    """What the command builds by default: the bundled model with its near-focus model."""
    return Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model="auto")


@pytest.fixture
def images(tmp_path: Path) -> dict[str, tuple[Path, np.ndarray]]:
    rgb = busy_rgb(448, 448, seed=1)
    png = tmp_path / "field.png"
    cv2.imwrite(str(png), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    tif = tmp_path / "field16.tif"
    rgb16 = rgb.astype(np.uint16) * 257
    tifffile.imwrite(tif, rgb16, photometric="rgb")
    jpg = tmp_path / "field.jpg"
    cv2.imwrite(str(jpg), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return {"png": (png, rgb), "tif": (tif, rgb16), "jpg": (jpg, rgb)}


def test_json_output_matches_the_predictor(
    images: dict[str, tuple[Path, np.ndarray]], predictor: Predictor, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(images[k][0]) for k in ("png", "tif", "jpg")]
    assert main(["predict", "--json", "--threads", "1", *paths]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows] == paths
    for row in rows:
        assert {"path", "defocus_um", "confidence", "tiles_used", "tiles_total"} <= set(row)
        assert row["tiles_total"] == 4 and 0.0 <= row["confidence"] <= 1.0
    png_rgb = images["png"][1]
    expected = predictor.predict(png_rgb).defocus_um
    assert rows[0]["defocus_um"] == pytest.approx(expected, abs=1e-5)  # PNG is lossless and read as RGB
    assert rows[1]["defocus_um"] == pytest.approx(expected, abs=1e-4)  # 16-bit TIFF of the same image
    bgr_estimate = predictor.predict(np.ascontiguousarray(png_rgb[:, :, ::-1])).defocus_um
    if abs(bgr_estimate - expected) > 1e-3:  # the check below can tell RGB from BGR
        assert abs(rows[0]["defocus_um"] - bgr_estimate) > 1e-3
    assert rows[2]["defocus_um"] == pytest.approx(expected, abs=0.5)  # JPEG: lossy but close
    assert rows[0]["model"] == predictor.predict(png_rgb).model


def test_near_model_option(images: dict[str, tuple[Path, np.ndarray]], capsys: pytest.CaptureFixture[str]) -> None:
    png, rgb = images["png"]
    wide = Predictor.from_checkpoint(None, runtime="torch", threads=1)
    assert main(["predict", "--json", "--threads", "1", "--near-model", "none", str(png)]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["model"] == "wide" and row["defocus_um"] == pytest.approx(wide.predict(rgb).defocus_um, abs=1e-5)
    assert main(["predict", "--threads", "1", "--near-model", str(png.with_name("no.pt")), str(png)]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert main(["predict", "--threads", "1", "--far-model", str(png.with_name("nofar.pt")), str(png)]) == 2
    assert "nofar.pt" in capsys.readouterr().err


def test_table_output_and_tiles_option(
    images: dict[str, tuple[Path, np.ndarray]], capsys: pytest.CaptureFixture[str]
) -> None:
    png = str(images["png"][0])
    assert main(["predict", "--threads", "1", png]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["path", "defocus_um", "confidence", "spread_um", "tiles", "model"]
    assert lines[1].startswith(png) and lines[1].split()[-2:] in (["4/4", "wide"], ["4/4", "near"])
    assert main(["predict", "--json", "--tiles", "--aggregate", "median", "--threads", "1", png]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert len(row["tiles"]) == 4 and len(row["region_map"]) == 3


def test_max_tiles_option_limits_the_tiles_used(
    images: dict[str, tuple[Path, np.ndarray]], capsys: pytest.CaptureFixture[str]
) -> None:
    png_path, rgb = images["png"]
    assert main(["predict", "--json", "--max-tiles", "2", "--threads", "1", str(png_path)]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    limited = Predictor.from_checkpoint(None, runtime="torch", threads=1, max_tiles=2, near_model="auto").predict(rgb)
    assert row["tiles_used"] == limited.tiles_used == 2
    assert row["defocus_um"] == pytest.approx(limited.defocus_um, abs=1e-5)
    assert main(["predict", "--max-tiles", "0", str(png_path)]) == 2
    assert "max_tiles" in capsys.readouterr().err


def test_errors_are_reported_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(tmp_path / "nope.png")]) == 2
    assert "not found" in capsys.readouterr().err
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((100, 100, 3), np.uint8))
    assert main(["predict", str(small)]) == 2
    assert "at least 224x224" in capsys.readouterr().err
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    assert main(["predict", str(junk)]) == 2
    assert "not an image" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_runs(images: dict[str, tuple[Path, np.ndarray]]) -> None:
    exe = Path(sys.executable).with_name("autofocus")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "autofocus"]
    out = subprocess.run(
        [*cmd, "predict", "--json", "--threads", "1", str(images["png"][0])],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout)[0]["tiles_used"] >= 1
