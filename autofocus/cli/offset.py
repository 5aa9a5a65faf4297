"""``autofocus offset``: what the model reads on a focused sample, to give as ``--focus-offset-um``."""

from __future__ import annotations

import argparse
import json

from autofocus.cli.hardware_options import add_hardware_arguments, load_settings
from autofocus.cli.predictor_options import add_predictor_arguments, predictor_from_args

HELP = "measure the focus offset: what the model reads on a sample you have focused (no stage move)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_hardware_arguments(
        parser,
        "a hardware setting (autofocus.hardware.HardwareConfig field), wins over --config; "
        "default: the simulated microscope, which starts in focus",
    )
    parser.add_argument("--frames", type=int, default=5, help="frames to snap where the stage is (default 5)")
    parser.add_argument("--min-confidence", type=float, default=0.3, help="frames below this confidence are ignored")
    # give the same model options (--aggregate, --max-tiles) as the routines will use
    add_predictor_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the reading as JSON")


def run(args: argparse.Namespace) -> int:
    from autofocus.hardware import config_from_mapping, open_hardware
    from autofocus.offset import measure_focus_offset

    predictor = predictor_from_args(args)
    values, _ignored = load_settings(args.config, dict(args.hw))
    with open_hardware(config_from_mapping(values)) as hw:
        reading = measure_focus_offset(hw.camera, predictor, frames=args.frames, min_confidence=args.min_confidence)
        result = reading.to_dict()
        if hw.simulator is not None:
            result["sim_true_defocus_um"] = hw.simulator.true_defocus_um()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"focus offset {reading.focus_offset_um:+.3f} um (spread {reading.spread_um:.3f} um, "
            f"{reading.reliable_frames} of {reading.frames} frames reliable)"
        )
        print(
            f"  use it with: autofocus focus --focus-offset-um {reading.focus_offset_um:.3f}, or the options "
            f'{{"focus_offset_um": {reading.focus_offset_um:.3f}}} of the service\'s /autofocus and focus lock'
        )
    return 0
