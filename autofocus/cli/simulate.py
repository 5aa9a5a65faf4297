"""``autofocus simulate``: render a through-focus montage of the simulated microscope to a PNG."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

HELP = "render a through-focus montage (PNG) of the simulated microscope"


def _z_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--z must be comma-separated numbers in um, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("--z needs at least one value")
    return values


# argparse takes "-4,-2,0" for an option; let this subcommand read comma lists of negative numbers as values
_NUMBER_LIST = re.compile(r"^-\d*\.?\d+(,-?\d*\.?\d+)*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser._negative_number_matcher = _NUMBER_LIST  # the documented argparse hook for negative numbers
    parser.add_argument("--objective", default="20x/0.75", help="objective preset (default 20x/0.75)")
    parser.add_argument("--specimen", default="cells", help="cells | tissue | sparse (default cells)")
    parser.add_argument("--seed", type=int, default=0, help="slide seed (default 0)")
    parser.add_argument(
        "--z",
        type=_z_list,
        default=[-4.0, -2.0, 0.0, 2.0, 4.0],
        help="defocus values in um, comma-separated (default -4,-2,0,2,4; > 0: specimen beyond focus)",
    )
    parser.add_argument("--x-um", type=float, default=0.0, help="slide x of the panel centre (um)")
    parser.add_argument("--y-um", type=float, default=0.0, help="slide y of the panel centre (um)")
    parser.add_argument("--size", type=int, default=320, help="panel size in pixels (default 320)")
    parser.add_argument("--condenser-na", type=float, default=None, help="condenser NA (default: the preset's)")
    parser.add_argument("--sa-waves", type=float, default=None, help="spherical aberration, waves RMS")
    parser.add_argument("--no-noise", action="store_true", help="render without shot/read noise")
    parser.add_argument("--out", type=Path, required=True, help="output PNG path")


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from drivers.simulated import SimulatedMicroscope

    if args.size < 32 or args.size > 2048:
        raise ValueError(f"--size must be 32..2048 pixels, got {args.size}")
    scope = SimulatedMicroscope(
        seed=args.seed, objective=args.objective, specimen=args.specimen, noise=not args.no_noise
    )
    panels = []
    for z in args.z:
        img = scope.render_patch(
            args.x_um,
            args.y_um,
            z,
            size=args.size,
            condenser_na=args.condenser_na,
            spherical_aberration_waves=args.sa_waves,
            rng=args.seed,
        )
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        label = f"z = {z:+g} um"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        cv2.rectangle(bgr, (4, 4), (12 + tw, 12 + th), (255, 255, 255), thickness=-1)
        cv2.putText(bgr, label, (8, 8 + th), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(bgr)
        panels.append(np.full((args.size, 4, 3), 255, dtype=np.uint8))
    montage = np.concatenate(panels[:-1], axis=1)
    title = np.full((30, montage.shape[1], 3), 255, dtype=np.uint8)
    text = (
        f"{args.specimen}, {scope.objective.name}, {scope.objective.pixel_um:.4g} um/px, condenser NA "
        f"{scope.optics.condenser_na:g}, SA {scope.optics.spherical_aberration_waves:g} waves, seed {args.seed}"
    )
    cv2.putText(title, text, (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    montage = np.concatenate([title, montage], axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), montage, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise ValueError(f"could not write {args.out}")
    print(f"wrote {args.out} ({montage.shape[1]}x{montage.shape[0]}, z = {', '.join(f'{z:g}' for z in args.z)} um)")
    return 0
