"""How well does one frame tell *how far* out of focus it is, 5-10 um from focus?

Far from focus the wide model's reading flattens (it was trained on +-10 um, and a regression
network pulls readings near the ends of its range inwards), so a one-shot run's first move from
there lands 1-2 um from its aim on some fields (``docs/autofocus.md``, "The far ends"). This bench
puts ``--fields`` random fields per specimen at every plane of 5..10 um on both sides of focus
(full 2592x1944 frames), and reads each frame three ways:

* ``far_reading``: the predictor's reading without the far-defocus model (as shipped before it;
  beyond +-6 um the 75th percentile of the tiles towards the reading's side; ``autofocus.predictor``,
  "Far readings"); the far-defocus model's own screen is in ``docs/autofocus.md``;
* ``wide_aggregate``: the trimmed mean of the same tiles;
* ``spectral_centroid``: the frame's radial-spectrum centroid (``autofocus.measures``), which
  falls as the defocus blur grows and does not saturate.

Each is then used the way a calibration uses a reading: a curve of per-plane medians over
``--calibration-fields`` fields (monotone fit, the flat runs mapped to their middle), inverted for
every frame of the other fields. Printed and written to ``benchmarks/results/<name>.json``: per
statistic and side, the RMSE of the defocus so recovered at |z| >= 7 um and at each plane, and
the share within 1 um (over ``--draws`` random choices of calibration fields).

All fields come from one slide (``--seed``), so this is the best case: a calibration measured on
one slide and used on another of the same kind also carries what differs between the slides, and
there the centroid did worse in closed loop than these figures promise (``docs/autofocus.md``,
"The far ends").

    .venv/bin/python benchmarks/bench_far_reading.py [--fields 12] [--specimens cells] [--seed 101]
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
from autofocus.calibration_fields import flat_run_knots, non_decreasing  # noqa: E402
from autofocus.measures import spectral_centroid  # noqa: E402
from autofocus.predictor import Predictor  # noqa: E402

TRIM_FRACTION = 0.2  # the predictor's default
STATISTICS = ("far_reading", "wide_aggregate", "spectral_centroid")
FAR_UM = 7.0  # where the summary starts: the wide reading is flat beyond about this


def invert(z: np.ndarray, curve: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The defocus at which a monotone fit of ``curve`` (one value per plane ``z``) gives ``values``.

    The fit is non-decreasing or non-increasing, whichever way the curve runs end to end; a flat run
    maps to the middle of its planes (as ``autofocus.calibration``), values beyond the ends extend
    with the curve's mean slope.
    """
    sign = 1.0 if curve[-1] >= curve[0] else -1.0
    knot_value, knot_z = flat_run_knots(z, non_decreasing(sign * curve))
    v = sign * values
    out = np.interp(v, knot_value, knot_z)
    if knot_value.size > 1:
        slope = (knot_z[-1] - knot_z[0]) / (knot_value[-1] - knot_value[0])
        out = np.where(v < knot_value[0], knot_z[0] + (v - knot_value[0]) * slope, out)
        out = np.where(v > knot_value[-1], knot_z[-1] + (v - knot_value[-1]) * slope, out)
    return out


def recovery_errors(table: np.ndarray, z: np.ndarray, k: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Defocus errors (draws x held-out fields, planes) of curves from ``k`` of the table's fields."""
    fields = table.shape[0]
    errors = []
    for _ in range(draws):
        order = rng.permutation(fields)
        curve = np.median(table[order[:k]], axis=0)
        errors.append(invert(z, curve, table[order[k:]]) - z[None, :])
    return np.concatenate(errors, axis=0)


def summarise(table: np.ndarray, planes: np.ndarray, k: int, draws: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side, mask in (("below", planes < 0), ("above", planes > 0)):
        z = planes[mask]
        err = recovery_errors(table[:, mask], z, k, draws, np.random.default_rng(seed))
        far = np.abs(z) >= FAR_UM
        out[side] = {
            "far_rmse_um": round(float(np.sqrt(np.mean(err[:, far] ** 2))), 3),
            "far_within_1_um": round(float(np.mean(np.abs(err[:, far]) <= 1.0)), 3),
            "rmse_um_per_plane": {
                f"{p:+.1f}": round(float(v), 3) for p, v in zip(z, np.sqrt(np.mean(err**2, 0)), strict=True)
            },
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, far_model=False)
    parser.add_argument("--fields", type=int, default=12, help="random fields of view per specimen")
    parser.add_argument("--calibration-fields", type=int, default=9, help="fields per calibration curve")
    parser.add_argument("--draws", type=int, default=200, help="random choices of calibration fields")
    parser.add_argument("--step-um", type=float, default=0.5)
    parser.add_argument("--specimens", default="cells,tissue")
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="far_reading", help="result file name stem")
    args = parser.parse_args()
    if not 1 <= args.calibration_fields < args.fields:
        parser.error(
            f"--calibration-fields must lie in 1..{args.fields - 1} (--fields - 1), got {args.calibration_fields}"
        )

    wide = Predictor.from_checkpoint(args.model, runtime="onnx", threads=args.threads, near_model=None)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores visible, {platform.platform()}")
    print(f"wide model: {wide.description}")
    side = np.arange(5.0, 10.0 + 1e-9, args.step_um)
    planes = np.round(np.r_[-side[::-1], side], 6)
    rng = np.random.default_rng([args.seed, 0xFA2])
    specimens = [s.strip() for s in args.specimens.split(",") if s.strip()]
    t0 = time.monotonic()
    tables: dict[str, dict[str, np.ndarray]] = {}
    for kind, scope in open_scopes(specimens, args.seed, (1944, 2592), 0.3).items():
        values = {name: np.full((args.fields, planes.size), np.nan) for name in STATISTICS}
        for f, (x, y) in enumerate(rng.uniform(-5000, 5000, size=(args.fields, 2))):
            scope.xy_stage.move_to(float(x), float(y))
            for p, z in enumerate(planes):
                set_true_defocus(scope, float(z))
                frame = scope.camera.snap()
                pred = wide.predict(frame)
                tiles = np.array([t["defocus_um"] for t in pred.tiles if t["defocus_um"] is not None])
                values["far_reading"][f, p] = pred.defocus_um
                values["wide_aggregate"][f, p] = aggregate_estimates(tiles, DEFAULT_AGGREGATE, TRIM_FRACTION)
                values["spectral_centroid"][f, p] = spectral_centroid(frame)
            print(f"{kind}: field {f + 1}/{args.fields}, {time.monotonic() - t0:.0f} s", flush=True)
        tables[kind] = values

    summary = {
        kind: {
            name: summarise(table, planes, args.calibration_fields, args.draws, args.seed)
            for name, table in values.items()
        }
        for kind, values in tables.items()
    }
    for kind, by_stat in summary.items():
        for name, s in by_stat.items():
            print(
                f"{kind:6s} {name:17s} |z| >= {FAR_UM:g} um: below focus RMSE {s['below']['far_rmse_um']:.2f} um "
                f"({s['below']['far_within_1_um']:.0%} within 1 um), above {s['above']['far_rmse_um']:.2f} um "
                f"({s['above']['far_within_1_um']:.0%})"
            )
    result = {
        "machine": machine_record(),
        "settings": settings(args),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "planes_um": planes.tolist(),
        "summary": summary,
        "values": {kind: {name: t.tolist() for name, t in v.items()} for kind, v in tables.items()},
    }
    print(f"wrote {write_result(args.name, result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
