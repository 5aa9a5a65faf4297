"""How many fields a calibration needs: the verify reading's error against the fields calibrated on.

The verify frame of a one-shot run lands about +1 um from focus, and its reading goes through
the calibration curve (the per-plane median of the model's readings over the calibrated fields).
Fields differ, so a curve from few fields carries their bias into every later run. This bench
reads every plane of ``-3..+6`` um (0.5 um steps) on ``--fields`` fields per specimen (ROI
frames, the bundled wide + near-focus predictor), then for K calibration fields drawn at random
(``--draws`` times each) builds the calibration from those (``calibration_from_table``, with the
brightness correction from 5 fields up unless ``--no-brightness-correction``) and reads the other
fields with it at the planes a verify frame lands on (``--landing`` um): the share within 0.3 um
and the p95 of |error|. Prints the table and writes ``benchmarks/results/calibration_fields.json``.

    .venv/bin/python benchmarks/bench_calibration_fields.py [--fields 40] [--frame 896x672]
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

from bench_closed_loop import open_scopes, set_true_defocus  # noqa: E402
from machine import cpu_model  # noqa: E402
from model_options import add_model_arguments, open_predictor, settings  # noqa: E402

from autofocus.calibration import calibration_from_table  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PLANES = np.round(np.arange(-3.0, 6.0 + 1e-9, 0.5), 3)


def read_fields(args: argparse.Namespace, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Readings, fields x planes (NaN where the frame was blank), and each field's mean brightness."""
    height, width = _shape(args.frame)
    scope = open_scopes([kind], args.seed, (height, width), 0.3)[kind]
    predictor = open_predictor(args)
    rng = np.random.default_rng([args.seed, 0xF1E1D])
    table = np.full((args.fields, PLANES.size), np.nan)
    brightness = np.zeros(args.fields)
    for i, (x, y) in enumerate(rng.uniform(-5000, 5000, size=(args.fields, 2))):
        scope.xy_stage.move_to(float(x), float(y))
        seen = []
        for j, z in enumerate(PLANES):
            set_true_defocus(scope, float(z))
            scope.camera.flush()
            pred = predictor.predict(scope.camera.snap())
            seen.append(pred.brightness)
            if pred.defocus_um is not None:
                table[i, j] = pred.defocus_um
        brightness[i] = float(np.mean(seen))
    return table, brightness


def _shape(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.split("x"))
    return height, width


def verify_errors(
    table: np.ndarray, brightness: np.ndarray | None, calibrate_on: np.ndarray, landing: np.ndarray
) -> np.ndarray:
    """|Errors| (um) of the other fields' readings at the landing planes, read through a calibration
    of the fields ``calibrate_on`` (with the brightness correction where ``brightness`` is given)."""
    cal = calibration_from_table(PLANES, table[calibrate_on], None if brightness is None else brightness[calibrate_on])
    others = np.setdiff1d(np.arange(table.shape[0]), calibrate_on)
    errors = []
    for j in np.flatnonzero(np.isin(PLANES, landing)):
        for i in others:
            if not np.isnan(table[i, j]):
                b = None if brightness is None else float(brightness[i])
                errors.append(cal.defocus_um(float(table[i, j]), b) - PLANES[j])
    return np.abs(np.asarray(errors))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--fields", type=int, default=40, help="fields read per specimen")
    parser.add_argument("--frame", default="896x672", help="ROI frame WIDTHxHEIGHT")
    parser.add_argument("--specimens", default="cells,tissue")
    parser.add_argument("--counts", default="1,3,5,9,20", help="calibration field counts to compare")
    parser.add_argument("--draws", type=int, default=20, help="random draws of the calibration fields per count")
    parser.add_argument("--landing", default="0.5,1.0,1.5,2.0", help="planes a verify frame lands on (um)")
    parser.add_argument(
        "--no-brightness-correction", action="store_true", help="plain per-plane medians (no brightness correction)"
    )
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--name", default="calibration_fields")
    args = parser.parse_args()
    landing = np.array([float(v) for v in args.landing.split(",")])
    counts = [int(v) for v in args.counts.split(",")]
    machine = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(), "threads": 2}
    print(f"machine: {machine}", flush=True)
    t0 = time.monotonic()
    rng = np.random.default_rng(args.seed)
    result: dict[str, Any] = {"machine": machine, "settings": settings(args), "specimens": {}}
    for kind in args.specimens.split(","):
        table, brightness = read_fields(args, kind)
        correct = None if args.no_brightness_correction else brightness
        print(f"{kind}: {args.fields} fields read in {time.monotonic() - t0:.0f} s", flush=True)
        rows = []
        for k in counts:
            shares, p95s = [], []
            for _ in range(args.draws):
                e = verify_errors(table, correct, rng.choice(args.fields, size=k, replace=False), landing)
                shares.append(float(np.mean(e <= 0.3)))
                p95s.append(float(np.percentile(e, 95)))
            row = {
                "calibration_fields": k,
                "within_0_3_um_mean": round(float(np.mean(shares)), 4),
                "within_0_3_um_worst": round(float(np.min(shares)), 4),
                "p95_abs_um_mean": round(float(np.mean(p95s)), 3),
            }
            rows.append(row)
            print(
                f"  {k:2d} calibration fields: within 0.3 um {row['within_0_3_um_mean']:.1%} on average, "
                f"{row['within_0_3_um_worst']:.1%} in the worst of {args.draws} draws; "
                f"p95 {row['p95_abs_um_mean']:.2f} um",
                flush=True,
            )
        result["specimens"][kind] = {
            "rows": rows,
            "readings": np.round(table, 3).tolist(),
            "brightness": np.round(brightness, 5).tolist(),
        }
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
