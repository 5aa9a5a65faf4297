"""LDSE-NET vs ResNet-50 vs BoTNet-50 side by side (the paper's table 1), on this machine's CPU.

For each model: parameters, checkpoint size, training time per epoch (a fixed number of Adam steps on
batches of 50, scaled to an epoch of ``EPOCH_PATCHES`` patches: the public dataset's ~130,000 patches
split 9:1), and inference time per patch (batch 1) and per 88-patch batch (one 2592x1944 frame) with
torch and with ONNX Runtime, both on ``THREADS`` threads. Random weights and inputs: timing only.

Run: ``.venv/bin/python benchmarks/bench_models.py`` (about 4-5 minutes on 2 cores). Writes
benchmarks/results/models.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py; scripts run from benchmarks/)

from models import build_model  # noqa: E402
from models.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from models.export import INPUT_NAME, OUTPUT_NAME, export_onnx  # noqa: E402

THREADS = 2
BATCH = 50
FRAME_PATCHES = 88  # 11 x 8 tiles of a 2592 x 1944 frame
EPOCH_PATCHES = 117_000  # ~130,000 public-dataset patches, 9:1 train/test
TRAIN_STEPS = {"ldsenet": 5, "resnet50": 1, "botnet": 1}
REPEATS_SINGLE = {"ldsenet": 20, "resnet50": 5, "botnet": 5}
REPEATS_FRAME = {"ldsenet": 3, "resnet50": 1, "botnet": 1}
META = {
    "patch_size": 224,
    "z_range_um": [-10.0, 10.0],
    "objective": "benchmark",
    "pixel_size_um": 0.1725,
    "z_reference": "none (random weights)",
    "data": {},
    "metrics": {},
    "version": "benchmark",
}


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in seconds after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step_s(name: str) -> float:
    torch.manual_seed(0)
    model = build_model(name).train().to(memory_format=torch.channels_last)  # as models/train.py does
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(BATCH, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.rand(BATCH) * 20 - 10

    def step() -> None:
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed(step, TRAIN_STEPS[name])


def bench(name: str, workdir: Path) -> dict[str, object]:
    torch.manual_seed(0)
    model = build_model(name).eval()
    params = sum(p.numel() for p in model.parameters())
    ckpt = Checkpoint(model=model, name=name, config={}, meta=META)
    pt = save_checkpoint(ckpt, workdir / f"{name}.pt", with_train_state=False)
    row: dict[str, object] = {"model": name, "parameters": params, "checkpoint_kb": round(pt.stat().st_size / 1e3, 1)}
    step_s = train_step_s(name)
    row["train_step_s_batch50"] = round(step_s, 3)
    row["train_epoch_min"] = round(step_s * EPOCH_PATCHES / BATCH / 60, 1)
    one, frame = torch.rand(1, 3, 224, 224), torch.rand(FRAME_PATCHES, 3, 224, 224)
    with torch.no_grad():
        row["torch_ms_per_patch"] = round(1e3 * timed(lambda: model(one), REPEATS_SINGLE[name]), 2)
        row["torch_ms_per_88_batch"] = round(1e3 * timed(lambda: model(frame), REPEATS_FRAME[name]), 1)

    import onnxruntime as ort

    onnx_path = export_onnx(ckpt, workdir / f"{name}.onnx", verify=False)
    row["onnx_kb"] = round(onnx_path.stat().st_size / 1e3, 1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    one_np, frame_np = one.numpy(), frame.numpy()
    row["onnx_ms_per_patch"] = round(
        1e3 * timed(lambda: session.run([OUTPUT_NAME], {INPUT_NAME: one_np}), REPEATS_SINGLE[name]), 2
    )
    row["onnx_ms_per_88_batch"] = round(
        1e3 * timed(lambda: session.run([OUTPUT_NAME], {INPUT_NAME: frame_np}), REPEATS_FRAME[name]), 1
    )
    return row


def machine() -> dict[str, object]:
    cpu = cpu_model()
    return {
        "cpu": cpu,
        "cores_visible": os.cpu_count(),
        "threads_used": THREADS,
        "load_average_at_start": list(os.getloadavg()),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main() -> int:
    torch.set_num_threads(THREADS)
    info = machine()
    load = info["load_average_at_start"]
    print(f"machine: {info['cpu']}, {info['cores_visible']} cores, {THREADS} threads, load average {load}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("ldsenet", "resnet50", "botnet"):
            t0 = time.perf_counter()
            rows.append(bench(name, Path(tmp)))
            print(f"  {name}: measured in {time.perf_counter() - t0:.0f} s", flush=True)
    cols = [
        ("model", "{:<9}"),
        ("parameters", "{:>11,}"),
        ("checkpoint_kb", "{:>9.1f}"),
        ("train_epoch_min", "{:>9.1f}"),
        ("torch_ms_per_patch", "{:>8.2f}"),
        ("torch_ms_per_88_batch", "{:>9.1f}"),
        ("onnx_ms_per_patch", "{:>8.2f}"),
        ("onnx_ms_per_88_batch", "{:>9.1f}"),
    ]
    print(f"\nper epoch = {EPOCH_PATCHES:,} patches at batch {BATCH}; inference on {THREADS} threads")
    print("model       params   ckpt KB  epoch min  torch/1 torch/88  onnx/1  onnx/88  (ms)")
    for row in rows:
        print(" ".join(fmt.format(row[key]) for key, fmt in cols))
    out = ROOT / "benchmarks" / "results" / "models.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"machine": info, "epoch_patches": EPOCH_PATCHES, "batch_size": BATCH, "results": rows}, indent=2)
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
