"""Does the near-model gate choose the model the full wide reading would, and with how few tiles?

The gate (``autofocus.predictor``, "Near-model gate") lets the wide model read only
``near_gate_tiles`` tiles spread over the frame and hands the frame to the near model when their
aggregate lies at least ``NEAR_GATE_MARGIN_UM`` inside the near window; otherwise the wide model
reads every tile and their aggregate decides. This bench puts ``--fields`` random fields per
specimen at every plane of ``-range..+range`` (``--step-um``), reads every kept tile of each full
frame with the wide model once, and works out from those tile estimates what each gate size in
``--gates`` would have chosen (the wide model gives a tile the same estimate in any batch). Printed
and written to ``benchmarks/results/<name>.json``: per gate size, the frames where its choice
differs from the full reading's, and how far its aggregate strays from the full aggregate.

    .venv/bin/python benchmarks/bench_near_gate.py [--fields 3] [--gates 4,6,8,12,16] [--seed 31]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_closed_loop import open_scopes, set_true_defocus  # noqa: E402
from machine import cpu_model, machine_record  # noqa: E402
from model_options import add_model_arguments, settings  # noqa: E402
from result_file import write_result  # noqa: E402

from autofocus.aggregation import DEFAULT_AGGREGATE, aggregate_estimates  # noqa: E402
from autofocus.predictor import NEAR_GATE_MARGIN_UM, Predictor, gate_positions, in_near_window  # noqa: E402

TRIM_FRACTION = 0.2  # the predictor's default


def gate_aggregate(tile_estimates: np.ndarray, gate: int) -> float:
    """The aggregate of the gate's ``gate`` tiles, spread over the frame's kept tiles (row-major)."""
    return aggregate_estimates(
        tile_estimates[gate_positions(tile_estimates.size, gate)], DEFAULT_AGGREGATE, TRIM_FRACTION
    )


def choices(tile_estimates: np.ndarray, window: tuple[float, float], gate: int | None) -> tuple[bool, float]:
    """(near model chosen?, the deciding aggregate) for one frame's wide tile estimates in row-major
    order, as the predictor decides with ``near_gate_tiles=gate`` (None: every tile)."""
    if gate is not None and gate < tile_estimates.size:
        first = gate_aggregate(tile_estimates, gate)
        if in_near_window(window, first, NEAR_GATE_MARGIN_UM):
            return True, first
    full = aggregate_estimates(tile_estimates, DEFAULT_AGGREGATE, TRIM_FRACTION)
    return in_near_window(window, full), full


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, far_model=False)
    parser.add_argument("--fields", type=int, default=3, help="random fields of view per specimen")
    parser.add_argument("--range-um", type=float, default=10.0)
    parser.add_argument("--step-um", type=float, default=0.5)
    parser.add_argument("--gates", default="4,6,8,12,16", help="gate sizes (tiles) to compare")
    parser.add_argument("--specimens", default="cells,tissue")
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--name", default="near_gate", help="result file name stem")
    args = parser.parse_args()

    gates = sorted({int(g) for g in args.gates.split(",")})
    if not gates or min(gates) < 2:
        parser.error(f"--gates must list integers >= 2, got {args.gates!r}")
    with_near = Predictor.from_checkpoint(args.model, runtime="onnx", threads=2, near_model=args.near_model)
    if with_near.near is None:
        parser.error("the gate needs a near model; --near-model none has none")
    window = with_near.near.window_um
    wide = Predictor.from_checkpoint(args.model, runtime="onnx", threads=2, near_model=None)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores visible, {platform.platform()}")
    print(f"wide model: {wide.description}; near window {window[0]:+g}..{window[1]:+g} um")
    k = round(args.range_um / args.step_um)
    planes = [round(args.step_um * i, 6) for i in range(-k, k + 1)]
    rng = np.random.default_rng([args.seed, 0x6A7E])
    specimens = [s.strip() for s in args.specimens.split(",") if s.strip()]
    t0 = time.monotonic()
    frames: list[dict[str, Any]] = []
    for kind, scope in open_scopes(specimens, args.seed, (1944, 2592), 0.3).items():
        for x, y in rng.uniform(-5000, 5000, size=(args.fields, 2)):
            scope.xy_stage.move_to(float(x), float(y))
            for z in planes:
                truth = set_true_defocus(scope, z)
                pred = wide.predict(scope.camera.snap())
                est = np.array([t["defocus_um"] for t in pred.tiles if t["defocus_um"] is not None])
                row: dict[str, Any] = {"specimen": kind, "field_um": [float(x), float(y)], "true_um": truth}
                row["tiles"] = int(est.size)
                row["full"] = dict(zip(("near", "aggregate_um"), choices(est, window, None), strict=True))
                row["gates"] = {
                    str(g): dict(zip(("near", "aggregate_um"), choices(est, window, g), strict=True)) for g in gates
                }
                row["gate_aggregate_um"] = {str(g): gate_aggregate(est, g) for g in gates if g < est.size}
                frames.append(row)
        print(f"{kind}: {len(frames)} frames so far, {time.monotonic() - t0:.0f} s", flush=True)

    summary: dict[str, Any] = {}
    print(
        f"{len(frames)} full frames; the full reading chose the near model for {sum(f['full']['near'] for f in frames)}"
    )
    for g in gates:
        key = str(g)
        differ = [f for f in frames if f["gates"][key]["near"] != f["full"]["near"]]
        gaps = np.array(
            [f["gate_aggregate_um"][key] - f["full"]["aggregate_um"] for f in frames if key in f["gate_aggregate_um"]]
        )
        edges = np.array(
            [
                f["gate_aggregate_um"][key] - f["full"]["aggregate_um"]
                for f in frames
                if key in f["gate_aggregate_um"] and min(abs(f["full"]["aggregate_um"] - w) for w in window) <= 2.0
            ]
        )
        summary[key] = {
            "frames_choosing_otherwise": len(differ),
            "where": [{"specimen": f["specimen"], "true_um": round(f["true_um"], 2)} for f in differ],
            "gate_minus_full_sd_um": round(float(gaps.std()), 3),
            "gate_minus_full_max_abs_um": round(float(np.abs(gaps).max()), 3),
            "near_window_edges_sd_um": round(float(edges.std()), 3) if edges.size else None,
            "near_window_edges_frames": int(edges.size),
        }
        s = summary[key]
        print(
            f"  gate {g:2d} tiles: {s['frames_choosing_otherwise']} frames choose otherwise {s['where']}; "
            f"gate - full aggregate sd {s['gate_minus_full_sd_um']:.3f} um "
            f"(max {s['gate_minus_full_max_abs_um']:.2f}); within 2 um of a window edge sd "
            f"{s['near_window_edges_sd_um']} um over {s['near_window_edges_frames']} frames"
        )
    result = {
        "machine": machine_record(),
        "settings": settings(args),
        "near_window_um": list(window),
        "gate_margin_um": NEAR_GATE_MARGIN_UM,
        "elapsed_s": round(time.monotonic() - t0, 1),
        "summary": summary,
        "frames": frames,
    }
    print(f"wrote {write_result(args.name, result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
