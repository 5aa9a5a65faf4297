"""Predictor latency for one full 2592x1944 frame on 2 CPU threads: torch and ONNX Runtime.

Target: the camera's frame period at 14 fps (71 ms). Prints median and p95 per runtime, the
split between tiling, blank filter, inference and the near-focus model's second inference, and
the network's arithmetic per frame so the reader can see what limits it. The frame sits at
``--defocus-um`` (default +1.25 um, the first move's aim: where a verify frame lands and where the
focus lock holds, so the near model's inference is paid). There the wide model reads only 8
spread tiles to choose the near model where more than 8 are kept (the near-model gate,
``autofocus.predictor``); one more row, "no near gate", has it read every tile first.
Writes benchmarks/results/predictor.json and .png (``--name`` another stem, for a variant such as
``--near-model runs/x/model.pt``).

    .venv/bin/python benchmarks/bench_predictor.py [--repeats 20] [--threads 2] [--defocus-um 1.25] [--name predictor]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py; scripts run from benchmarks/)
from model_options import add_model_arguments, open_predictor  # noqa: E402

from autofocus.calibration_settings import CALIBRATED_AIM_UM  # noqa: E402
from autofocus.predictor import DEFAULT_NEAR_GATE_TILES, resolve_near_model  # noqa: E402
from drivers.simulated import SimulatedMicroscope  # noqa: E402
from models.checkpoint import load_checkpoint  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FRAME_PERIOD_MS = 1000.0 / 14.0


def machine(threads: int) -> dict[str, Any]:
    cpu = cpu_model()
    return {
        "cpu": cpu,
        "cores_visible": os.cpu_count(),
        "threads_used": threads,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def network_gflop_per_tile(path: Path | None) -> float:
    """Multiply-adds x 2 of a network (None: the bundled wide one) for one 224x224 tile (torch's FLOP counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = load_checkpoint(path).model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, 224, 224))
    return counter.get_total_flops() / 1e9


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--specimen", default="cells")
    parser.add_argument(
        "--defocus-um", type=float, default=CALIBRATED_AIM_UM, help="true defocus of the frame (default: the aim)"
    )
    parser.add_argument(
        "--max-tiles", default="all,36,32,24,12", help="comma list: 'all' (the paper: every tile) and/or tile budgets"
    )
    parser.add_argument(
        "--name", default="predictor", help="results file stem: benchmarks/results/NAME.json and NAME.png"
    )
    args = parser.parse_args()
    if not args.name or any(c in args.name for c in "/\\.") or args.name.startswith("-"):
        parser.error(f"--name must be a plain file stem (no '/', '\\' or '.'), got {args.name!r}")

    info = machine(args.threads)
    print(
        f"machine: {info['cpu']}, {info['cores_visible']} cores visible, {args.threads} threads, "
        f"load average {info['load_average_at_start']}"
    )
    meta = load_checkpoint(args.model).meta
    trained = "untrained" not in str(meta.get("status", ""))
    print(f"model: {args.model or 'bundled checkpoint'} ({'trained' if trained else 'UNTRAINED placeholder'})")

    scope = SimulatedMicroscope(seed=0, specimen=args.specimen)  # 20x/0.75, 2592x1944
    scope.camera.open()
    scope.focus_stage.open()
    scope.focus_stage.move_to(-scope.focus_stage.direction * args.defocus_um)
    frame = scope.camera.snap()
    truth = scope.true_defocus_um()
    print(f"frame: {frame.shape[1]}x{frame.shape[0]} {frame.dtype} ({args.specimen}, {truth:+.1f} um defocus)")

    gflop_tile = network_gflop_per_tile(args.model)
    near_path = resolve_near_model(args.near_model, args.model)
    near_gflop_tile = network_gflop_per_tile(near_path) if near_path is not None else None
    gflop_by_model = {"wide": gflop_tile, "near": near_gflop_tile}  # per tile, of the network that ran
    results: dict[str, Any] = {
        "machine": info,
        "model_trained": trained,
        "frame": [int(frame.shape[1]), int(frame.shape[0])],
        "true_defocus_um": round(truth, 3),
        "target_ms": round(FRAME_PERIOD_MS, 1),
        "network_gflop_per_tile": round(gflop_tile, 3),
        "near_network_gflop_per_tile": None if near_gflop_tile is None else round(near_gflop_tile, 3),
        "runtimes": {},
    }
    budgets = [None if v.strip() == "all" else int(v) for v in args.max_tiles.split(",")]
    configs = [(rt, b, DEFAULT_NEAR_GATE_TILES) for b in budgets for rt in ("torch", "onnx")]
    configs.append(("onnx", None, None))
    for runtime, budget, gate in configs:
        label = runtime if budget is None else f"{runtime}, max_tiles={budget}"
        label += "" if gate is not None else ", no near gate"
        predictor = open_predictor(args, runtime=runtime, threads=args.threads, max_tiles=budget, near_gate_tiles=gate)
        results["near_model"] = predictor.near.source if predictor.near else None
        for _ in range(2):
            predictor.predict(frame)  # warm-up (allocations, ONNX graph optimisation)
        totals: list[float] = []
        parts: dict[str, list[float]] = {
            "tiling": [],
            "blank_filter": [],
            "inference": [],
            "near_inference": [],
            "aggregation": [],
        }
        tiles_used = 0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            pred = predictor.predict(frame)
            totals.append((time.perf_counter() - t0) * 1e3)
            for key in parts:
                parts[key].append(pred.timings_ms[key])
            tiles_used = pred.tiles_used
        median = percentile(totals, 50)
        # the near model reads every kept tile when it runs; the wide model may read only the gate's
        inference_median = percentile(parts["near_inference" if pred.model == "near" else "inference"], 50)
        row = {
            "median_ms": round(median, 1),
            "p95_ms": round(percentile(totals, 95), 1),
            "split_median_ms": {k: round(percentile(v, 50), 1) for k, v in parts.items()},
            "tiles_used": tiles_used,
            "tiles_total": pred.tiles_total,
            "inference_gflop_s": round(gflop_by_model[pred.model] * tiles_used / (inference_median / 1e3), 1),
            "ratio_to_target": round(median / FRAME_PERIOD_MS, 2),
        }
        row["estimate_um"] = round(float(pred.defocus_um), 3) if pred.defocus_um is not None else None
        row["model"] = pred.model
        results["runtimes"][label] = row
        split = ", ".join(f"{k} {v} ms" for k, v in row["split_median_ms"].items())
        print(
            f"{runtime:>5}: median {row['median_ms']} ms, p95 {row['p95_ms']} ms "
            f"({row['ratio_to_target']}x the {FRAME_PERIOD_MS:.0f} ms frame period); {split}; "
            f"{tiles_used}/{pred.tiles_total} tiles read by the {pred.model} model, "
            f"{row['inference_gflop_s']} GFLOP/s in the {pred.model} network"
        )

    full = {k: v for k, v in results["runtimes"].items() if "max_tiles" not in k} or results["runtimes"]
    best = min(full.items(), key=lambda kv: kv[1]["median_ms"])
    split = best[1]["split_median_ms"]
    limiter = max(split, key=split.get)
    results["summary"] = (
        f"all tiles: best {best[0]} {best[1]['median_ms']} ms median vs {FRAME_PERIOD_MS:.0f} ms target; largest part: "
        f"{limiter} ({split[limiter]} ms); {best[1]['model']} network "
        f"{gflop_by_model[best[1]['model']]:.3f} GFLOP per tile x {best[1]['tiles_used']} tiles"
    )
    within = [
        (row["tiles_used"], label, row)
        for label, row in results["runtimes"].items()
        if "max_tiles" in label and row["median_ms"] <= FRAME_PERIOD_MS
    ]
    if within:
        tiles, label, row = max(within, key=lambda t: (t[0], -t[2]["median_ms"]))
        results["summary"] += (
            f"; most tiles within the frame period: {tiles} ({label}: {row['median_ms']} ms median, "
            f"p95 {row['p95_ms']} ms)"
        )
    print(results["summary"])

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.5 * len(configs)))
    names = list(results["runtimes"])
    left = np.zeros(len(names))
    for part, colour in zip(
        ("tiling", "blank_filter", "inference", "near_inference", "aggregation"),
        ("C0", "C1", "C2", "C4", "C3"),
        strict=True,
    ):
        values = np.array([results["runtimes"][n]["split_median_ms"][part] for n in names])
        ax.barh(names, values, left=left, color=colour, label=part)
        left += values
    ax.axvline(FRAME_PERIOD_MS, color="k", ls="--", label="14 fps frame period")
    ax.set_xlabel("ms per 2592x1944 frame (median)")
    ax.set_title(f"predictor latency, {args.threads} CPU threads")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=120)
    print(f"wrote {RESULTS / (args.name + '.json')} and {args.name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
