"""``autofocus focus``: run one autofocus routine on the configured hardware (default: simulator)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autofocus.calibration_settings import CALIBRATED_AIM_UM
from autofocus.cli.hardware_options import add_hardware_arguments, load_settings
from autofocus.cli.predictor_options import add_predictor_arguments, predictor_from_args

HELP = "run one autofocus routine (oneshot, hybrid, zscan) on a camera and focus stage"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--routine", choices=("oneshot", "hybrid", "zscan"), default="oneshot")
    add_hardware_arguments(
        parser,
        "a hardware setting (autofocus.hardware.HardwareConfig field), wins over --config, e.g. "
        "--hw sim_specimen=tissue; default: the simulated microscope",
    )
    parser.add_argument(
        "--sim-start-defocus-um",
        type=float,
        default=None,
        help="simulator only: first put the stage where the true defocus is this value (um)",
    )
    add_predictor_arguments(parser)
    parser.add_argument("--min-confidence", type=float, default=None, help="refuse below this confidence (0..1)")
    parser.add_argument("--no-verify", action="store_true", help="one-shot/hybrid: skip the verify frame")
    parser.add_argument(
        "--focus-offset-um",
        type=float,
        default=None,
        help="one-shot/hybrid: end where the model reads this defocus (measure it with `autofocus offset`)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="one-shot/hybrid: read defocus through this curve (`autofocus calibrate`), not with --focus-offset-um",
    )
    parser.add_argument(
        "--aim-um",
        type=float,
        default=None,
        help="one-shot/hybrid: the first correction aims at this defocus, the verify one at focus "
        f"({CALIBRATED_AIM_UM:g} measured best with --calibration)",
    )
    parser.add_argument("--approach", choices=("below", "above", "none"), default=None, help="final approach side")
    parser.add_argument("--search-range-um", type=float, default=None, help="z-scan: search range centred on start")
    parser.add_argument("--tolerance-um", type=float, default=None, help="z-scan: Brent tolerance")
    parser.add_argument("--coarse-step-um", type=float, default=None, help="z-scan: coarse grid step first")
    parser.add_argument("--measure", default=None, help="z-scan: focus measure name (autofocus.measures.MEASURES)")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")


def run(args: argparse.Namespace) -> int:
    from autofocus.calibration import FocusCalibration
    from autofocus.hardware import config_from_mapping, open_hardware
    from autofocus.routines import AutofocusOptions, run_autofocus

    overrides: dict[str, Any] = {
        "min_confidence": args.min_confidence,
        "approach": args.approach,
        "search_range_um": args.search_range_um,
        "tolerance_um": args.tolerance_um,
        "coarse_step_um": args.coarse_step_um,
        "measure": args.measure,
        "focus_offset_um": args.focus_offset_um,
        "aim_um": args.aim_um,
    }
    options = AutofocusOptions(verify=not args.no_verify, **{k: v for k, v in overrides.items() if v is not None})
    predictor = None
    if args.routine != "zscan":
        predictor = predictor_from_args(args)
    values, _ignored = load_settings(args.config, dict(args.hw))
    config = config_from_mapping(values)
    with open_hardware(config) as hw:
        scope = hw.simulator
        if args.sim_start_defocus_um is not None:
            if scope is None:
                raise ValueError("--sim-start-defocus-um needs the simulated microscope (camera=simulated)")
            stage = hw.focus_stage
            stage.move_by(-stage.direction * (args.sim_start_defocus_um - scope.true_defocus_um()))
        truth_before = scope.true_defocus_um() if scope is not None else None
        record = run_autofocus(
            args.routine,
            hw.camera,
            hw.focus_stage,
            predictor,
            options,
            calibration=FocusCalibration.load(args.calibration) if args.calibration is not None else None,
            sim_clock=(lambda: scope.time_s) if scope is not None else None,
        )
        result = record.to_dict()
        if scope is not None:
            result["sim_true_defocus_before_um"] = truth_before
            result["sim_true_defocus_after_um"] = scope.true_defocus_um()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{record.routine}: {record.outcome} - {record.message}")
        print(
            f"  z {record.start_z_um:.3f} -> {record.final_z_um:.3f} um, {record.frames_used} frames, "
            f"{len(record.moves)} moves, {record.duration_s:.2f} s"
            + (f" ({record.sim_time_s:.2f} s simulated)" if record.sim_time_s is not None else "")
        )
        if scope is not None:
            print(
                f"  true defocus {result['sim_true_defocus_before_um']:+.3f} -> "
                f"{result['sim_true_defocus_after_um']:+.3f} um"
            )
    return 0 if record.outcome in ("converged", "moved") else 1
