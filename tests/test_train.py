"""Training loop: a tiny end-to-end run lowers the loss, writes checkpoints and curve; resume; fine-tune."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from models.checkpoint import load_checkpoint
from models.train import TrainConfig, TrainResult, channel_statistics, train

TINY = {"growth_rate": 4, "stem_channels": 8, "block_config": [1, 1], "bn_size": 0}
META = {
    "patch_size": 224,
    "z_range_um": [0.0, 4.0],
    "objective": "test",
    "pixel_size_um": 0.2,
    "z_reference": "physical_focal_plane",
    "data": {"kind": "blurred random texture"},
    "metrics": {},
}


class BlurredTextures(Dataset):
    """Random textures blurred by a Gaussian whose sigma (px) grows with the label: a defocus-like task."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.rand(n, generator=g) * 4.0
        noise = torch.rand(n, 3, 224, 224, generator=g)
        self.images = torch.stack([_blur(noise[i], 0.3 + 1.5 * float(z)) for i, z in enumerate(self.labels)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, float]:
        return self.images[i], float(self.labels[i])


def _blur(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    radius = math.ceil(3 * sigma_px)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma_px**2))
    k = k / k.sum()
    img = image.unsqueeze(1)  # 3 x 1 x H x W, each channel separately
    img = torch.nn.functional.conv2d(img, k.view(1, 1, 1, -1), padding=(0, radius))
    img = torch.nn.functional.conv2d(img, k.view(1, 1, -1, 1), padding=(radius, 0))
    return img.squeeze(1).clamp(0, 1)


@pytest.fixture(scope="module")
def data() -> tuple[BlurredTextures, BlurredTextures]:
    return BlurredTextures(48, seed=1), BlurredTextures(16, seed=2)


def _cfg(**kw: object) -> TrainConfig:
    base = {"max_epochs": 6, "batch_size": 8, "lr": 1e-2, "lr_step_epochs": 10, "patience": 10, "device": "cpu"}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _train_tiny(data: tuple[Dataset, Dataset], out_dir: Path, config: TrainConfig, **extra: Any) -> TrainResult:
    """``train`` on the tiny textures with the tiny LDSE-NET; ``extra`` are further ``train`` arguments."""
    train_set, test_set = data
    args: dict[str, Any] = {
        "model_name": "ldsenet",
        "model_config": TINY,
        "train_set": train_set,
        "test_set": test_set,
        "out_dir": out_dir,
        "meta": META,
        "progress": False,
        "echo": lambda _m: None,
    }
    return train(**{**args, **extra}, config=config)


@pytest.mark.slow
def test_tiny_training_lowers_loss_and_writes_outputs(data, tmp_path: Path) -> None:
    train_set, test_set = data
    result = _train_tiny(data, tmp_path, _cfg())
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 6
    assert losses[-1] < 0.5 * losses[0]
    assert result.best_test_loss < result.history[0]["test_loss"]
    for name in ("model.pt", "best.pt", "last.pt", "loss_curve.png", "history.json"):
        assert (tmp_path / name).is_file(), name
    ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt.train_state is None
    assert ckpt.meta["metrics"]["n"] == len(test_set)
    assert ckpt.meta["metrics"]["best_epoch"] == result.best_epoch
    assert ckpt.meta["z_reference"] == "physical_focal_plane"
    # the input normalisation was fitted from the training patches and travels in the checkpoint
    mean, _std = channel_statistics(train_set, 512)
    assert ckpt.config["mean"] == pytest.approx(mean)
    assert torch.allclose(ckpt.model.mean.flatten(), torch.tensor(mean))
    assert json.loads((tmp_path / "history.json").read_text())[-1]["epoch"] == 6


@pytest.mark.slow
def test_resume_continues_from_saved_epoch(data, tmp_path: Path) -> None:
    _train_tiny(data, tmp_path, _cfg(max_epochs=2))
    assert load_checkpoint(tmp_path / "last.pt").train_state["epoch"] == 2
    messages: list[str] = []
    result = _train_tiny(data, tmp_path, _cfg(max_epochs=3), echo=messages.append, resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert any("after epoch 2" in m for m in messages)
    assert load_checkpoint(tmp_path / "last.pt").train_state["epoch"] == 3


def test_resume_without_checkpoint_is_a_clear_error(data, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        _train_tiny(data, tmp_path, _cfg(), resume=True)


@pytest.mark.slow
def test_finetune_starts_from_checkpoint_weights(data, tmp_path: Path) -> None:
    first = _train_tiny(data, tmp_path / "a", _cfg(max_epochs=3))
    base = load_checkpoint(first.model_path)
    tuned = _train_tiny(
        data,
        tmp_path / "b",
        _cfg(max_epochs=1, lr=1e-4),
        model_config={},
        meta={**META, "objective": "other"},
        init_from=base,
    )
    ckpt = load_checkpoint(tuned.model_path)
    assert ckpt.config == base.config  # same architecture and normalisation as the base model
    assert ckpt.meta["objective"] == "other"
    # starting from trained weights, the first fine-tuning epoch is already near the base model's loss
    assert tuned.history[0]["test_loss"] < 2 * first.best_test_loss + 0.05


def test_wall_time_budget_stops_training(data, tmp_path: Path) -> None:
    messages: list[str] = []
    result = _train_tiny(data, tmp_path, _cfg(max_wall_min=1e-4), echo=messages.append)
    assert result.epochs_run == 1 and result.stopped_early
    assert any("wall-time budget" in m for m in messages)
    assert (tmp_path / "model.pt").is_file()


def test_bad_train_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="max_wall_min"):
        TrainConfig(max_wall_min=0.0)
