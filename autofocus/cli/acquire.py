"""``autofocus acquire``: record a defocus z-stack dataset on the configured microscope.

The paper's self-built dataset procedure (``autofocus.acquire``): at each XY position of a grid,
find focus, then record planes from ``--z-min`` to ``--z-max`` in ``--z-step`` steps (plus
``--random-planes`` off-grid ones) into the z-stack format (``docs/datasets.md``).

Hardware settings as in ``autofocus check``: ``--config`` (TOML, flat ``HardwareConfig`` names)
and ``--hw NAME=VALUE``; ``--simulated`` is short for ``--hw camera=simulated --hw stage=simulated``.
One of them must say which hardware to use. Ctrl-C stops the stage and keeps every plane
written so far; ``--resume`` continues the dataset without duplicates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autofocus.cli.hardware_options import add_hardware_arguments

HELP = "record a defocus z-stack dataset (-10..+10 um at a grid of XY positions) on the configured microscope"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="dataset folder to create (or continue with --resume)")
    hw = parser.add_argument_group("hardware")
    add_hardware_arguments(hw, "a hardware setting (autofocus.hardware.HardwareConfig field), wins over --config")
    hw.add_argument(
        "--simulated",
        action="store_true",
        help="use the simulated microscope (--hw sim_frame_width=448 etc. set it up)",
    )
    hw.add_argument(
        "--objective",
        default=None,
        help="objective recorded in the dataset (required on real hardware; simulator: sim_objective)",
    )
    plan = parser.add_argument_group("plan")
    plan.add_argument("--z-min", type=float, default=-10.0, help="lowest defocus (um; default -10)")
    plan.add_argument("--z-max", type=float, default=10.0, help="highest defocus (um; default +10)")
    plan.add_argument("--z-step", type=float, default=0.5, help="defocus step (um; default 0.5)")
    plan.add_argument("--random-planes", type=int, default=0, help="extra off-grid planes per position (default 0)")
    plan.add_argument("--seed", type=int, default=0, help="seed of the off-grid planes (default 0)")
    plan.add_argument(
        "--grid",
        type=int,
        nargs=2,
        default=(1, 1),
        metavar=("NX", "NY"),
        help="XY positions, a grid centred on the current position (default 1 1; needs an XY stage)",
    )
    plan.add_argument("--spacing-um", type=float, default=1000.0, help="grid spacing (um; default 1000 as the paper)")
    plan.add_argument(
        "--z-reference",
        choices=("sharpness_peak", "physical_focal_plane"),
        default=None,
        help="defocus 0: the variance-of-Laplacian peak (default on real hardware) or the simulator's "
        "physical focal plane (default on the simulator)",
    )
    plan.add_argument("--focus-range-um", type=float, default=15.0, help="focus scan half-range (um; default 15)")
    plan.add_argument(
        "--overshoot-um",
        type=float,
        default=2.0,
        help="approach each position's first plane from this far below (backlash; default 2)",
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted dataset in OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from autofocus.acquire import AcquisitionPlan, acquire_dataset, default_z_offsets, grid_positions
    from autofocus.cli.hardware_options import load_settings
    from autofocus.hardware import config_from_mapping, open_hardware
    from drivers.errors import ConfigurationError

    overrides: dict[str, Any] = dict(args.hw)
    if args.simulated:
        for name in ("camera", "stage"):
            if overrides.get(name, "simulated") != "simulated":
                raise ConfigurationError(f"--simulated contradicts --hw {name}={overrides[name]}")
            overrides[name] = "simulated"
    if args.config is None and not overrides:
        raise ConfigurationError(
            "say which microscope to use: --simulated, --config FILE or --hw camera=... --hw stage=..."
        )
    values, ignored = load_settings(args.config, overrides)
    config = config_from_mapping(values)
    simulated = config.camera == "simulated"
    z_reference = args.z_reference or ("physical_focal_plane" if simulated else "sharpness_peak")
    if z_reference == "physical_focal_plane" and not simulated:
        raise ConfigurationError("--z-reference physical_focal_plane needs the simulator; real hardware has no truth")
    objective = args.objective or (config.sim_objective if simulated else None)
    if objective is None:
        raise ConfigurationError("--objective is required on real hardware (e.g. --objective 20x/0.40)")

    with open_hardware(config) as hw:
        nx, ny = args.grid
        positions = None
        if (nx, ny) != (1, 1):
            if hw.xy_stage is None:
                raise ConfigurationError(f"--grid {nx} {ny} needs an XY stage; the configured hardware has none")
            positions = grid_positions(hw.xy_stage.xy_um, nx, ny, args.spacing_um)
        elif hw.xy_stage is not None:
            positions = (hw.xy_stage.xy_um,)
        plan = AcquisitionPlan(
            positions_um=positions,
            z_offsets_um=default_z_offsets(args.z_min, args.z_max, args.z_step),
            random_planes=args.random_planes,
            seed=args.seed,
            z_reference=z_reference,
            focus_range_um=args.focus_range_um,
            overshoot_um=args.overshoot_um,
        )
        scope = hw.simulator
        result = acquire_dataset(
            args.out,
            hw.camera,
            hw.focus_stage,
            plan,
            objective=objective,
            xy_stage=hw.xy_stage,
            true_defocus=scope.true_defocus_um if scope is not None else None,
            clock=(lambda: scope.time_s) if scope is not None else None,
            source={"hardware": hw.describe(), "ignored_settings": ignored},
            resume=args.resume,
            show_progress=not args.no_progress,
        )
    print(json.dumps(result.to_dict(), indent=2))
    return 0
