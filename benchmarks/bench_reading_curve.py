"""The model's frame-level reading against the true defocus, and its spread from field to field.

For each specimen kind, ``--fields`` random fields of view are put at every true defocus in
``-range..+range`` (``--step``) and the predictor reads one ``--frame`` ROI there. Printed and
written (``benchmarks/results/reading_curve.json`` / ``.png``): mean and standard deviation of
the reading per plane. This is what a calibration curve (``autofocus.calibration``) corrects,
and the spread is what it cannot: it sets how close one frame can bring a field to focus.

    .venv/bin/python benchmarks/bench_reading_curve.py [--fields 12] [--frame 896x672] [--range-um 4]
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_closed_loop import open_scopes, set_true_defocus  # noqa: E402
from model_options import add_model_arguments, open_predictor, settings  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--fields", type=int, default=12, help="random fields of view per specimen")
    parser.add_argument("--frame", default="896x672", help="ROI frame WIDTHxHEIGHT")
    parser.add_argument("--range-um", type=float, default=4.0)
    parser.add_argument("--step-um", type=float, default=0.5)
    parser.add_argument("--specimens", default="cells,tissue")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--name", default="reading_curve", help="result file name stem")
    args = parser.parse_args()

    width, height = (int(v) for v in args.frame.lower().split("x"))
    specimens = [s.strip() for s in args.specimens.split(",") if s.strip()]
    predictor = open_predictor(args, threads=args.threads)
    print(f"models: {predictor.description}")
    k = round(args.range_um / args.step_um)
    planes = [round(args.step_um * i, 6) for i in range(-k, k + 1)]
    rng = np.random.default_rng([args.seed, 0x5EAD])
    t0 = time.monotonic()
    readings: dict[str, list[dict[str, Any]]] = {}
    for kind, scope in open_scopes(specimens, args.seed, (height, width), 0.3).items():
        rows: list[dict[str, Any]] = []
        for x, y in rng.uniform(-5000, 5000, size=(args.fields, 2)):
            scope.xy_stage.move_to(float(x), float(y))
            for z in planes:
                truth = set_true_defocus(scope, z)
                pred = predictor.predict(scope.camera.snap())
                rows.append(
                    {
                        "field_um": [float(x), float(y)],
                        "plane_um": z,
                        "true_um": truth,
                        "reading_um": pred.defocus_um,
                        "confidence": float(pred.confidence),
                    }
                )
        readings[kind] = rows
        print(f"{kind}: {len(rows)} frames, {time.monotonic() - t0:.0f} s", flush=True)

    summary: dict[str, list[dict[str, Any]]] = {}
    for kind, rows in readings.items():
        summary[kind] = []
        for z in planes:
            values = np.array([r["reading_um"] for r in rows if r["plane_um"] == z and r["reading_um"] is not None])
            summary[kind].append(
                {
                    "true_um": z,
                    "n": int(values.size),
                    "mean_um": round(float(values.mean()), 3),
                    "std_um": round(float(values.std()), 3),
                }
            )
    print("true defocus -> mean reading +- std across fields (um)")
    for kind, rows in summary.items():
        print(f"  {kind:7s} " + "  ".join(f"{r['true_um']:+.1f}:{r['mean_um']:+.2f}+-{r['std_um']:.2f}" for r in rows))

    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "threads": args.threads},
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "settings": settings(args),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "summary": summary,
        "readings": readings,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for kind, rows in summary.items():
        z = [r["true_um"] for r in rows]
        m = np.array([r["mean_um"] for r in rows])
        s = np.array([r["std_um"] for r in rows])
        ax.plot(z, m, marker="o", ms=3, label=kind)
        ax.fill_between(z, m - s, m + s, alpha=0.2)
    lim = args.range_um
    ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8, label="reading = truth")
    ax.set_xlabel("true defocus (um)")
    ax.set_ylabel("model reading (um), mean +- std across fields")
    ax.set_title(f"{args.fields} fields per specimen, {width}x{height} frames")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=110)
    print(f"wrote {RESULTS / (args.name + '.json')} and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
