"""Checkpoints: round trip, the bundled model, and clear errors for missing, corrupt or foreign files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import build_model
from models.checkpoint import (
    REQUIRED_META,
    Checkpoint,
    CheckpointError,
    bundled_checkpoint_path,
    bundled_near_checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)

SMALL = {"growth_rate": 4, "stem_channels": 8, "block_config": [1, 1], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.4]}
META = {
    "patch_size": 224,
    "z_range_um": [-10.0, 10.0],
    "objective": "20x/0.75",
    "pixel_size_um": 0.1725,
    "z_reference": "physical_focal_plane",
    "data": {"patches": 3},
    "metrics": {"mae_um": 0.5},
    "version": "test",
}


def _ckpt() -> Checkpoint:
    torch.manual_seed(0)
    model = build_model("ldsenet", **SMALL)
    model.train()(torch.rand(4, 3, 224, 224))  # move the BN running statistics off their defaults
    return Checkpoint(model=model.eval(), name="ldsenet", config=dict(SMALL), meta=dict(META))


def test_round_trip_keeps_weights_normalisation_and_meta(tmp_path: Path) -> None:
    ckpt = _ckpt()
    path = save_checkpoint(ckpt, tmp_path / "sub" / "m.pt")
    assert not list(tmp_path.rglob("*.tmp"))
    loaded = load_checkpoint(path)
    assert loaded.name == "ldsenet" and loaded.config == SMALL and loaded.meta == META
    assert not loaded.model.training
    assert torch.allclose(loaded.model.mean.flatten(), torch.tensor(SMALL["mean"]))
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), ckpt.model(x))


def test_train_state_is_optional(tmp_path: Path) -> None:
    ckpt = _ckpt()
    ckpt.train_state = {"epoch": 3, "history": [{"epoch": 1, "train_loss": 1.0}]}
    assert load_checkpoint(save_checkpoint(ckpt, tmp_path / "a.pt")).train_state["epoch"] == 3
    assert load_checkpoint(save_checkpoint(ckpt, tmp_path / "b.pt", with_train_state=False)).train_state is None


@pytest.mark.parametrize("which", ["wide", "near"])
def test_bundled_checkpoints_are_usable_and_kb_level(which: str) -> None:
    path = bundled_checkpoint_path() if which == "wide" else bundled_near_checkpoint_path()
    assert path.is_file()
    assert path.stat().st_size <= 150_000
    ckpt = load_checkpoint(None if which == "wide" else path)  # None: the bundled model
    assert ckpt.name == "ldsenet"
    lo, hi = ckpt.meta["z_range_um"]
    assert (lo, hi) == ((-10.0, 10.0) if which == "wide" else (-2.0, 6.0))
    for key in REQUIRED_META:
        assert key in ckpt.meta
    assert ckpt.meta["patch_size"] == 224
    with torch.no_grad():
        assert ckpt.model(torch.rand(2, 3, 224, 224)).shape == (2,)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(junk)
    good = save_checkpoint(_ckpt(), tmp_path / "good.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(cut)


def test_missing_keys_and_foreign_formats(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=r"lacks key\(s\) \['format', 'format_version', 'name', 'config'"):
        load_checkpoint(path)
    torch.save(build_model("ldsenet", **SMALL).state_dict() | {"format": 1}, path)
    with pytest.raises(CheckpointError, match="lacks key"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(path)


def test_missing_meta_and_mismatched_weights(tmp_path: Path) -> None:
    good = save_checkpoint(_ckpt(), tmp_path / "g.pt")
    payload = torch.load(good, weights_only=True)
    bad_meta = dict(payload, meta={k: v for k, v in payload["meta"].items() if k != "z_reference"})
    torch.save(bad_meta, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"lacks \['z_reference'\]"):
        load_checkpoint(tmp_path / "m.pt")
    wrong_config = dict(payload, config={**payload["config"], "growth_rate": 6})
    torch.save(wrong_config, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="cannot rebuild model 'ldsenet'"):
        load_checkpoint(tmp_path / "w.pt")
    unknown_key = dict(payload, config={**payload["config"], "depth": 3})
    torch.save(unknown_key, tmp_path / "k.pt")
    with pytest.raises(CheckpointError, match=r"unknown config key\(s\) \['depth'\]"):
        load_checkpoint(tmp_path / "k.pt")


def test_save_rejects_incomplete_or_unserialisable_meta(tmp_path: Path) -> None:
    ckpt = _ckpt()
    ckpt.meta = {k: v for k, v in META.items() if k != "objective"}
    with pytest.raises(CheckpointError, match="objective"):
        save_checkpoint(ckpt, tmp_path / "a.pt")
    ckpt.meta = {**META, "data": {"when": object()}}
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(ckpt, tmp_path / "b.pt")
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()
