"""Focus lock over a simulated 8-hour time-lapse with thermal drift (1 um/min) plus a slow oscillation.

The lock runs on the simulator's clock (``clock=scope.time_s``, ``sleep`` advancing it), one
lock frame every ``--interval-s`` (default 30 s). The truth is sampled every ``--sample-s``
(default 5 s) between lock steps, so the RMS and worst error include the drift that builds up
between corrections. Frames are a centred ``--frame`` ROI (default 448x448 = 2x2 tiles, about
2 min for 8 hours); ``--frame 2592x1944`` (full frames) takes 30-40 min on 2 cores.
``--calibrate-frames``, ``--calibrate-curve-um`` and ``--stored-calibration-fields`` lock through
a focus offset, a curve on the lock's field, or a calibration stored beforehand on a grid of
fields; ``--integral-gain`` turns on the lock's integral term. ``--fields N`` runs the lock on N
fields (seeds) in turn and writes only a summary of each.

    .venv/bin/python benchmarks/bench_focus_lock.py [--hours 8] [--interval-s 30] [--frame 448x448]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_closed_loop import calibrate_curves  # noqa: E402  (a calibration on a drift-free slide)
from machine import cpu_model  # noqa: E402
from model_options import add_model_arguments, open_predictor, settings  # noqa: E402

from autofocus.aggregation import AGGREGATES, DEFAULT_AGGREGATE  # noqa: E402
from autofocus.calibration import FocusCalibration  # noqa: E402
from autofocus.calibration_settings import DEFAULT_RANGE_UM  # noqa: E402
from autofocus.focuslock import FocusLock, FocusLockOptions  # noqa: E402
from autofocus.offset import measure_focus_offset  # noqa: E402
from drivers.errors import UnreliableEstimateError  # noqa: E402
from drivers.simulated import DriftModel, SimulatedMicroscope  # noqa: E402
from models.checkpoint import load_checkpoint  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--interval-s", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--frame", default="448x448")
    parser.add_argument("--specimen", default="cells")
    parser.add_argument("--drift-um-per-min", type=float, default=1.0)
    parser.add_argument("--oscillation-um", type=float, default=1.0)
    parser.add_argument("--oscillation-period-s", type=float, default=1200.0)
    parser.add_argument("--dead-band-um", type=float, default=0.1)
    parser.add_argument("--max-correction-um", type=float, default=3.0)
    parser.add_argument(
        "--gain", type=float, default=FocusLockOptions().gain, help="fraction of each estimate that is corrected"
    )
    parser.add_argument(
        "--integral-gain",
        type=float,
        default=FocusLockOptions().integral_gain,
        help="fraction of each estimate added to the learned drift per step (0: proportional lock only)",
    )
    parser.add_argument(
        "--aggregate", choices=AGGREGATES, default=DEFAULT_AGGREGATE, help="how tile estimates are combined"
    )
    parser.add_argument(
        "--calibrate-frames",
        type=int,
        default=0,
        help="first measure the focus offset (autofocus offset) on this many frames at the in-focus start, "
        "as a user does before starting a lock, and lock to it (0: no offset)",
    )
    parser.add_argument(
        "--calibrate-curve-um",
        type=float,
        default=0.0,
        help="first measure a calibration curve (autofocus calibrate) over +-this range at the in-focus start "
        "and lock through it (0: none; not with --calibrate-frames)",
    )
    parser.add_argument(
        "--stored-calibration-fields",
        type=int,
        default=0,
        help="first measure a calibration the way `autofocus calibrate` does by default (+-10 um on this many "
        "fields of a 500 um grid around the lock's field), on a drift-free copy of the slide: one stored "
        "earlier; lock through it (0: none)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="the simulated slide (its field of view)")
    parser.add_argument(
        "--fields",
        type=int,
        default=1,
        help="run the lock on this many fields (seeds --seed, --seed + 1, ...) and write a summary only",
    )
    parser.add_argument("--name", default="focus_lock", help="result file name stem")
    args = parser.parse_args()
    chosen = [args.calibrate_frames > 0, args.calibrate_curve_um > 0, args.stored_calibration_fields > 0]
    if sum(chosen) > 1:
        parser.error("give one of --calibrate-frames, --calibrate-curve-um and --stored-calibration-fields")

    trained = "untrained" not in str(load_checkpoint(args.model).meta.get("status", ""))
    print(
        f"model: {args.model or 'bundled checkpoint'} ({'trained' if trained else 'UNTRAINED placeholder'}); "
        f"load average {[round(x, 2) for x in os.getloadavg()]}; {cpu_model()}, {os.cpu_count()} cores"
    )
    predictor = open_predictor(args, threads=args.threads, aggregate=args.aggregate)
    print(f"models: {predictor.description}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.fields > 1:
        return run_fields(args, predictor, trained)
    result, trace = run_lock(args, args.seed, predictor)
    if trace is None:
        return 1
    result = {"model_trained": trained, "settings": settings(args), "cpu": cpu_model(), **result}
    updates = result.pop("updates")
    (RESULTS / f"{args.name}.json").write_text(json.dumps({**result, "updates": updates[:2000]}, indent=1) + "\n")
    plot(trace, result, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / args.name}.json and .png")
    return 0


def run_fields(args: argparse.Namespace, predictor: Any, trained: bool) -> int:
    """The same lock on ``--fields`` fields (seeds ``--seed``, ``--seed`` + 1, ...): a summary, no traces."""
    runs = []
    for seed in range(args.seed, args.seed + args.fields):
        result, _ = run_lock(args, seed, predictor)
        result.pop("updates", None)
        runs.append(result)
    held = [r["rms_error_um"] for r in runs if "rms_error_um" in r]
    summary = {
        "fields": args.fields,
        "refused": sum("refused" in r for r in runs),
        "median_rms_error_um": round(float(np.median(held)), 3) if held else None,
        "worst_rms_error_um": round(float(np.max(held)), 3) if held else None,
    }
    print(
        f"{args.fields} fields, {args.hours} h each: {summary['refused']} refused; RMS error median "
        f"{summary['median_rms_error_um']} um, worst {summary['worst_rms_error_um']} um"
    )
    for r in runs:
        held_here = "refused" if "refused" in r else f"RMS {r['rms_error_um']} um, worst {r['worst_error_um']} um"
        print(f"  seed {r['seed']}: {held_here}")
    out = {"model_trained": trained, "settings": settings(args), "cpu": cpu_model(), **summary, "runs": runs}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS / args.name}.json")
    return 0


def run_lock(args: argparse.Namespace, seed: int, predictor: Any) -> tuple[dict[str, Any], np.ndarray | None]:
    """One lock of ``--hours`` on field ``seed``: its figures and the (time, truth, drift) trace
    (None where ``calibrate_here`` refused the field)."""
    width, height = (int(v) for v in args.frame.lower().split("x"))
    drift = DriftModel(
        rate_um_per_min=args.drift_um_per_min,
        oscillation_um=args.oscillation_um,
        oscillation_period_s=args.oscillation_period_s,
    )
    scope = SimulatedMicroscope(
        seed=seed,
        specimen=args.specimen,
        frame_shape=(height, width),
        drift=drift,
        z_limits_um=(-1000.0, 1000.0),
        z_max_step_um=100.0,
    )
    scope.camera.open()
    scope.focus_stage.open()

    trace: list[tuple[float, float, float]] = []  # (time_s, true defocus, drift)

    def sample() -> None:
        trace.append((scope.time_s, scope.true_defocus_um(), drift.drift_um(scope.time_s)))

    def sleep(seconds: float) -> None:
        """Advance simulated time in slices of at most ``sample_s``, sampling the truth after each."""
        remaining = seconds
        while remaining > 1e-9:
            step = min(args.sample_s, remaining)
            scope.advance(step)
            remaining -= step
            sample()

    focus_offset_um = 0.0
    if args.calibrate_frames > 0:  # the simulator starts in focus
        focus_offset_um = measure_focus_offset(scope.camera, predictor, frames=args.calibrate_frames).focus_offset_um
        print(f"focus offset {focus_offset_um:+.3f} um from {args.calibrate_frames} frames at focus")
    calibration: FocusCalibration | None = None
    if args.stored_calibration_fields > 0:  # measured before the run, so the drift does not enter it
        calibration = calibrate_curves(
            fields=args.stored_calibration_fields,
            range_um=DEFAULT_RANGE_UM,
            predictor=predictor,
            specimens=[args.specimen],
            frame_shape=(height, width),
            seed=seed,
            backlash_um=0.0,  # the lock's simulated stage has none either
            layout="grid",
        )[args.specimen]
        print(f"stored calibration: {calibration.fields} fields, {calibration.reading_at_focus_um:+.3f} um at focus")
    options = FocusLockOptions(
        focus_offset_um=focus_offset_um,
        interval_s=args.interval_s,
        dead_band_um=args.dead_band_um,
        max_correction_um=args.max_correction_um,
        gain=args.gain,
        integral_gain=args.integral_gain,
    )
    lock = FocusLock(
        scope.camera,
        scope.focus_stage,
        predictor,
        options,
        calibration=calibration,
        clock=lambda: scope.time_s,
        sleep=sleep,
    )
    if args.calibrate_curve_um > 0:  # a sweep around the in-focus start, on the lock's own field
        try:
            calibration = lock.calibrate_here(args.calibrate_curve_um)
        except UnreliableEstimateError as exc:
            print(f"seed {seed}: calibrate_here refused: {exc}")
            return {"seed": seed, "refused": str(exc)}, None
        print(f"calibration: reads {calibration.reading_at_focus_um:+.3f} um at focus ({scope.time_s:.1f} s simulated)")
    updates: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def on_update(update: dict[str, Any]) -> None:
        updates.append(update)
        sample()
        if len(updates) % 100 == 0:
            recent = np.array([t[1] for t in trace[-200:]])
            print(
                f"  {scope.time_s / 3600:.2f} h simulated, {len(updates)} lock frames, recent RMS "
                f"{np.sqrt(np.mean(recent**2)):.3f} um, state {lock.state}, {time.monotonic() - t0:.0f} s",
                flush=True,
            )

    sample()
    status = lock.run(on_update=on_update, duration_s=args.hours * 3600.0, poll_s=args.sample_s)
    elapsed = time.monotonic() - t0

    times = np.array([t[0] for t in trace])
    errors = np.array([t[1] for t in trace])
    drifts = np.array([t[2] for t in trace])
    settled = times >= 2 * args.interval_s
    result = {
        "seed": seed,
        "elapsed_s": round(elapsed, 1),
        "focus_offset_um": focus_offset_um,
        "calibration": calibration.to_dict() if calibration is not None else None,
        "frame": [width, height],
        "lock_frames": status["frames_snapped"],
        "corrections": status["corrections"],
        "final_state": status["state"],
        "final_reason": status["reason"],
        "paused_steps": sum(u["state"] == "paused_unreliable" for u in updates),
        "unreliable_estimates": sum(not u["reliable"] for u in updates),
        "drift_total_um": round(float(drifts[-1] - drifts[0]), 2),
        "mean_error_um": round(float(np.mean(errors[settled])), 3),
        "learned_drift_per_step_um": round(float(status["drift_per_step_um"]), 3),
        "rms_error_um": round(float(np.sqrt(np.mean(errors[settled] ** 2))), 3),
        "worst_error_um": round(float(np.max(np.abs(errors[settled]))), 3),
        "rms_error_without_lock_um": round(float(np.sqrt(np.mean((drifts - drifts[0]) ** 2))), 1),
        "samples": len(trace),
    }
    print(
        f"{args.hours} h with {args.drift_um_per_min} um/min drift + {args.oscillation_um} um oscillation: "
        f"RMS error {result['rms_error_um']} um, worst {result['worst_error_um']} um, "
        f"{result['lock_frames']} lock frames ({args.interval_s:.0f} s interval), {result['corrections']} "
        f"corrections, {result['paused_steps']} paused steps; final state {status['state']} ({status['reason']}); "
        f"{elapsed:.0f} s wall"
    )
    return {**result, "updates": updates}, np.array(trace)


def plot(trace: np.ndarray, result: dict[str, Any], path: Path) -> None:
    """The drift and the true defocus with the lock over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times, errors, drifts = trace[:, 0], trace[:, 1], trace[:, 2]

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    ax1.plot(times / 3600, drifts - drifts[0], color="0.5", lw=1, label="drift (um)")
    ax1.set_ylabel("drift (um)")
    ax1.legend(fontsize=8)
    ax2.plot(times / 3600, errors, lw=0.6, label="true defocus with lock")
    ax2.axhspan(-0.3, 0.3, color="0.9", zorder=0)
    ax2.set_ylabel("true defocus (um)")
    ax2.set_xlabel("time (h)")
    ax2.set_title(
        f"RMS {result['rms_error_um']} um, worst {result['worst_error_um']} um, {result['lock_frames']} lock frames",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
