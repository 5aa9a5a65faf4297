"""``autofocus calibrate``: sweep Z through a focused sample and save the model's reading curve."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autofocus.calibration_settings import (
    CALIBRATED_AIM_UM,
    DEFAULT_FIELD_SPACING_UM,
    DEFAULT_FIELDS,
    DEFAULT_RANGE_UM,
    DEFAULT_STEP_UM,
    default_fields,
)
from autofocus.cli.hardware_options import add_hardware_arguments, load_settings
from autofocus.cli.predictor_options import add_predictor_arguments, predictor_from_args

HELP = "measure a calibration curve: the model's reading at each defocus around a sample you have focused"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="calibration file to write (JSON), for `autofocus focus --calibration`")
    add_hardware_arguments(
        parser,
        "a hardware setting (autofocus.hardware.HardwareConfig field), wins over --config; "
        "default: the simulated microscope, which starts in focus",
    )
    parser.add_argument(
        "--range-um",
        type=float,
        default=DEFAULT_RANGE_UM,
        help=f"sweep -R..+R um of defocus (default {DEFAULT_RANGE_UM:g}; cover the defocus you will start from)",
    )
    parser.add_argument(
        "--step-um", type=float, default=DEFAULT_STEP_UM, help=f"plane spacing (default {DEFAULT_STEP_UM:g} um)"
    )
    parser.add_argument(
        "--fields",
        type=int,
        default=None,
        help=f"fields of view to sweep, a grid around the current one (default {DEFAULT_FIELDS} with an XY stage, "
        "1 without; a tilted slide is fitted with 5 or more)",
    )
    parser.add_argument(
        "--field-spacing-um", type=float, default=DEFAULT_FIELD_SPACING_UM, help="grid spacing of the fields (um)"
    )
    parser.add_argument("--min-confidence", type=float, default=0.3, help="frames below this confidence are ignored")
    parser.add_argument(
        "--no-brightness-correction",
        action="store_true",
        help="do not fit how the reading changes with the fields' mean brightness (fitted by default with 5+ fields)",
    )
    # give the same model options (--aggregate, --max-tiles) as the routines will use
    add_predictor_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the calibration as JSON")


def run(args: argparse.Namespace) -> int:
    from autofocus.calibration import measure_calibration, nearest_fields
    from autofocus.hardware import config_from_mapping, open_hardware

    if args.fields is not None and args.fields < 1:
        raise ValueError(f"--fields must be >= 1, got {args.fields}")
    if not args.out.parent.is_dir():
        raise ValueError(f"cannot write {args.out}: folder {args.out.parent} does not exist")
    predictor = predictor_from_args(args)
    values, _ignored = load_settings(args.config, dict(args.hw))
    with open_hardware(config_from_mapping(values)) as hw:
        positions = None
        fields = default_fields(hw.xy_stage is not None) if args.fields is None else args.fields
        if fields > 1:
            if hw.xy_stage is None:
                raise ValueError(f"--fields {fields} needs an XY stage; this configuration has none (give --fields 1)")
            positions = nearest_fields(hw.xy_stage.xy_um, fields, args.field_spacing_um)
        cal = measure_calibration(
            hw.camera,
            hw.focus_stage,
            predictor,
            range_um=args.range_um,
            step_um=args.step_um,
            xy_stage=hw.xy_stage,
            positions=positions,
            min_confidence=args.min_confidence,
            brightness_correction=not args.no_brightness_correction,
            source=predictor.description,
        )
    cal.save(args.out)
    if args.json:
        print(json.dumps(cal.to_dict(), indent=1))
    else:
        print(f"calibration of {len(cal.z_um)} planes on {cal.fields} field(s) written to {args.out}")
        print(f"  defocus (um): {' '.join(f'{z:+5.1f}' for z in cal.z_um)}")
        print(f"  reading (um): {' '.join(f'{r:+5.1f}' for r in cal.reading_um)}")
        print(f"  the model reads {cal.reading_at_focus_um:+.3f} um at your focus")
        if cal.tilt_um_per_mm is not None:
            tx, ty = cal.tilt_um_per_mm
            print(f"  slide tilt fitted over the fields: defocus {tx:+.2f} um per mm of X, {ty:+.2f} um per mm of Y")
        elif cal.fields > 1:
            print("  no slide tilt applied: the fields were read as on a level slide (-v logs why)")
        if cal.brightness_range is not None:
            lo, hi = cal.brightness_range
            print(f"  readings corrected for the fields' mean brightness ({lo:.3f}..{hi:.3f} of full scale)")
        print(f"  use it with: autofocus focus --calibration {args.out} --aim-um {CALIBRATED_AIM_UM:g}")
    return 0
