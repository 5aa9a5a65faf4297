"""Evaluation metrics, plots, and the train -> evaluate -> export -> finetune command line on a tiny z-stack."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from autofocus.cli import main
from models.checkpoint import load_checkpoint
from models.evaluate import compute_metrics, metrics_by_group, plot_error_vs_defocus
from models.export import read_onnx_meta
from models.zstack import ZStackWriter


def test_metrics_on_known_errors() -> None:
    true = np.array([-6.0, -2.0, -0.5, 0.0, 0.5, 2.0, 6.0, 10.0])
    pred = true + np.array([0.5, -0.5, 1.0, 0.25, -0.25, 0.5, -0.5, 1.0])
    m = compute_metrics(pred, true)
    err = pred - true
    assert m["n"] == 8
    assert m["mae_um"] == pytest.approx(np.mean(np.abs(err)))
    assert m["median_abs_error_um"] == pytest.approx(0.5)
    assert m["rmse_um"] == pytest.approx(math.sqrt(np.mean(err**2)))
    assert m["bias_um"] == pytest.approx(np.mean(err))
    assert m["sign_n"] == 5 and m["sign_accuracy"] == 1.0  # |z| >= 1: -6, -2, 2, 6, 10
    bands = {(b["lo_um"], b["hi_um"]): b for b in m["by_band"]}
    assert sum(b["n"] for b in m["by_band"]) == 8
    assert bands[(0.0, 1.0)]["n"] == 3
    assert bands[(7.5, 10.0)]["n"] == 1  # |z| = 10 belongs to the last closed band
    assert bands[(5.0, 7.5)]["mae_um"] == pytest.approx(0.5)


def test_sign_accuracy_counts_wrong_signs_and_overflow_band() -> None:
    true = np.array([-3.0, -3.0, 3.0, 3.0, 0.2, 12.0])
    pred = np.array([-2.0, 1.0, 2.5, -0.1, -0.2, 11.0])
    m = compute_metrics(pred, true)
    assert m["sign_n"] == 5
    assert m["sign_accuracy"] == pytest.approx(3 / 5)
    over = [b for b in m["by_band"] if b["hi_um"] is None]
    assert len(over) == 1 and over[0]["n"] == 1


def test_metrics_by_group_split_the_patches() -> None:
    true = np.array([-3.0, 3.0, 5.0, -5.0, 2.0])
    pred = np.array([-2.0, -1.0, 5.5, -4.0, 2.0])
    groups = ["cells", "tissue", "cells", "tissue", "cells"]
    by = metrics_by_group(pred, true, groups)
    assert list(by) == ["cells", "tissue"]
    assert by["cells"]["n"] == 3 and by["cells"]["mae_um"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert by["cells"]["sign_accuracy"] == 1.0
    assert by["tissue"]["sign_accuracy"] == pytest.approx(0.5)
    assert by["tissue"]["rmse_um"] == pytest.approx(math.sqrt((16 + 1) / 2))
    with pytest.raises(ValueError, match="one group label per patch"):
        metrics_by_group(pred, true, groups[:-1])


def test_evaluate_reports_each_specimen_kind_of_synthetic_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from autofocus.synth import SynthConfig, synthesize

    data = tmp_path / "synth"
    synthesize(data, SynthConfig(slides=2, positions=1, z_offsets_um=(-4.0, 4.0), specimens=("cells", "tissue")))
    assert main(["evaluate", str(data), "--out", str(tmp_path / "eval"), "--threads", "1"]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(report["by_group"]) == {"cells", "tissue"}
    assert sum(g["n"] for g in report["by_group"].values()) == report["n"]
    assert "specimen" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("pred", "true", "message"),
    [([1.0], [1.0, 2.0], "differ in length"), ([], [], "no predictions"), ([np.nan], [1.0], "finite")],
)
def test_metric_input_errors(pred: list[float], true: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(pred, true)


def test_error_plot_is_written(tmp_path: Path) -> None:
    true = np.linspace(-10, 10, 200)
    path = plot_error_vs_defocus(true + 0.1 * np.sin(true), true, tmp_path / "e.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _write_tiny_zstack(path: Path, *, stacks: int, seed: int) -> None:
    """Textures whose blur grows with |z|, brighter for z > 0 (a learnable, signed toy defocus)."""
    rng = np.random.default_rng(seed)
    with ZStackWriter(
        path,
        z_reference="physical_focal_plane",
        objective="toy/0.5",
        pixel_size_um=0.2,
        bit_depth=8,
        source={"kind": "test textures"},
    ) as writer:
        for s in range(stacks):
            name = f"fov{s}"
            writer.set_stack(name, x_um=100.0 * s, y_um=0.0, focus_z_um=0.0)
            base = torch.from_numpy(rng.random((3, 224, 224), dtype=np.float32))
            for z in (-3.0, -1.5, 0.0, 1.5, 3.0):
                sigma = 2.0 + abs(z)
                k = torch.exp(-(torch.arange(-15, 16, dtype=torch.float32) ** 2) / (2 * sigma**2))
                k = k / k.sum()
                img = torch.nn.functional.conv2d(base[:, None], k.view(1, 1, 1, -1), padding=(0, 15))
                img = torch.nn.functional.conv2d(img, k.view(1, 1, -1, 1), padding=(15, 0))[:, 0]
                img = (img - img.mean()) / (img.std() + 1e-6) * 0.15 + 0.5 + 0.05 * z
                frame = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
                writer.write_plane(frame, key=f"{name}-{z}", stack=name, defocus_um=z, z_um=z)
        writer.commit(complete=True)


@pytest.mark.slow
def test_command_line_train_evaluate_export_finetune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _write_tiny_zstack(data, stacks=4, seed=0)
    run = tmp_path / "run"
    tiny = ["--set", "growth_rate=4", "--set", "stem_channels=8", "--set", "block_config=[1,1]"]
    common = ["--batch-size", "5", "--test-fraction", "0.25", "--no-progress", "--device", "cpu"]
    assert main(["train", str(data), "--out", str(run), "--epochs", "2", *tiny, *common]) == 0
    out = capsys.readouterr().out
    assert "z reference 'physical_focal_plane'" in out
    ckpt = load_checkpoint(run / "model.pt")
    assert ckpt.meta["objective"] == "toy/0.5" and ckpt.meta["pixel_size_um"] == 0.2
    assert ckpt.meta["z_range_um"] == [-3.0, 3.0]
    assert ckpt.meta["data"]["train"]["fields_of_view"] == 3 and ckpt.meta["data"]["test"]["fields_of_view"] == 1
    assert (run / "loss_curve.png").is_file()

    held_out = tmp_path / "held_out"
    _write_tiny_zstack(held_out, stacks=1, seed=1)
    report_dir = tmp_path / "eval"
    assert main(["evaluate", str(held_out), "--checkpoint", str(run / "model.pt"), "--out", str(report_dir)]) == 0
    report = json.loads((report_dir / "metrics.json").read_text())
    assert report["n"] == 5 and report["model"] == "ldsenet"
    assert "by_group" not in report  # not synthetic: no specimen kind to group by
    assert (report_dir / "error_vs_defocus.png").is_file()
    assert "sign accuracy" in capsys.readouterr().out

    # --near-window: recorded in the written checkpoint, refused (nothing written) outside the training range
    evaluate = ["evaluate", str(held_out), "--checkpoint", str(run / "model.pt"), "--out", str(report_dir)]
    shipped = tmp_path / "near.pt"
    assert main([*evaluate, "--write-checkpoint", str(shipped), "--near-window", "-1", "2"]) == 0
    assert load_checkpoint(shipped).meta["near_window_um"] == [-1.0, 2.0]
    assert load_checkpoint(shipped).meta["heldout"]["n"] == 5
    refused = tmp_path / "refused.pt"
    assert main([*evaluate, "--write-checkpoint", str(refused), "--near-window", "-4", "2"]) == 2
    assert "must lie within the training range meta['z_range_um'] = [-3, 3]" in capsys.readouterr().err
    assert main([*evaluate, "--near-window", "-1", "2"]) == 2
    assert "give both" in capsys.readouterr().err
    assert not refused.exists()

    assert main(["export", str(run / "model.pt"), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "max |onnx - torch|" in capsys.readouterr().out
    assert read_onnx_meta(tmp_path / "m.onnx")["objective"] == "toy/0.5"

    tuned = tmp_path / "tuned"
    args = ["finetune", str(held_out), str(data), "--checkpoint", str(run / "model.pt"), "--out", str(tuned)]
    assert main([*args, "--epochs", "1", *common]) == 0
    tuned_ckpt = load_checkpoint(tuned / "model.pt")
    assert tuned_ckpt.meta["finetuned_from"]["path"] == str(run / "model.pt")
    assert tuned_ckpt.config == ckpt.config


def test_command_line_reports_bad_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _write_tiny_zstack(data, stacks=2, seed=0)
    rc = main(["train", str(data), "--out", str(tmp_path / "r"), "--set", "growthrate=4", "--no-progress"])
    assert rc == 2
    assert "unknown config key(s) ['growthrate']" in capsys.readouterr().err
