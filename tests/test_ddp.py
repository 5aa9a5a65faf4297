"""DistributedDataParallel: the unchanged training code under torchrun, two CPU processes, gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from models.checkpoint import load_checkpoint

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from torch.utils.data import TensorDataset
    from models.train import TrainConfig, train

    torch.set_num_threads(1)
    out = sys.argv[1]
    g = torch.Generator().manual_seed(0)
    labels = torch.rand(24, generator=g) * 4
    images = (torch.rand(24, 3, 224, 224, generator=g) * 0.2 + labels.view(-1, 1, 1, 1) / 5).clamp(0, 1)
    meta = {"patch_size": 224, "z_range_um": [0.0, 4.0], "objective": "toy", "pixel_size_um": 0.2,
            "z_reference": "physical_focal_plane", "data": {}, "metrics": {}}
    result = train(model_name="ldsenet", model_config={"growth_rate": 4, "stem_channels": 8, "block_config": [1, 1]},
                   train_set=TensorDataset(images[:16], labels[:16]), test_set=TensorDataset(images[16:], labels[16:]),
                   out_dir=out, meta=meta, progress=False,
                   config=TrainConfig(max_epochs=2, batch_size=4, device="cpu"))
    rank = int(os.environ["RANK"])
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump({"world_size": int(os.environ["WORLD_SIZE"]), "history": result.history,
                   "model_path": None if result.model_path is None else str(result.model_path)}, fh)
    """
)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_process_gloo_training(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(script), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # losses are all-reduced: both processes see the same numbers
    assert [h["train_loss"] for h in ranks[0]["history"]] == [h["train_loss"] for h in ranks[1]["history"]]
    assert [h["test_loss"] for h in ranks[0]["history"]] == [h["test_loss"] for h in ranks[1]["history"]]
    # only rank 0 writes checkpoints
    assert ranks[0]["model_path"] == str(out / "model.pt") and ranks[1]["model_path"] is None
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.meta["training"]["world_size"] == 2
    assert load_checkpoint(out / "last.pt").train_state["epoch"] == 2
    assert proc.stdout.count("epoch 1: train loss") == 1  # progress lines from rank 0 only
