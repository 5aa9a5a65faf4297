"""``autofocus dataset``: make, import and inspect z-stack datasets (``docs/datasets.md``).

autofocus dataset synth OUT [--slides N --positions P --workers W --seed S ...]
autofocus dataset import-jiang PATH --out DIR [--flip-sign]
autofocus dataset import-folder PATH --out DIR [--regex RE --unit um|nm ...]
autofocus dataset info DIR [--json] [--patches]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "make synthetic datasets, import existing ones (Jiang et al. 2018, image folders), show dataset info"


def _csv(text: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    synth = sub.add_parser("synth", help="render z-stacks with the simulated microscope (training data)")
    synth.add_argument("out", type=Path, help="output folder (one dataset per slide inside; a rerun resumes)")
    synth.add_argument("--slides", type=int, default=8, help="slides (specimen + optics variant) (default 8)")
    synth.add_argument("--positions", type=int, default=4, help="fields of view per slide (default 4)")
    synth.add_argument("--size", type=int, default=224, help="square frame size in pixels, >= 224 (default 224)")
    synth.add_argument("--z-min", type=float, default=-10.0, help="lowest defocus (um; default -10)")
    synth.add_argument("--z-max", type=float, default=10.0, help="highest defocus (um; default +10)")
    synth.add_argument("--z-step", type=float, default=0.5, help="defocus step (um; default 0.5)")
    synth.add_argument("--random-planes", type=int, default=0, help="extra off-grid planes per position")
    synth.add_argument(
        "--seed",
        type=int,
        default=0,
        help="slide seeds are seed*1000000+i: use another seed for held-out test data (default 0)",
    )
    synth.add_argument(
        "--specimens",
        type=_csv,
        default=("cells", "tissue", "sparse"),
        help="comma-separated specimen kinds, cycled over the slides (default cells,tissue,sparse)",
    )
    synth.add_argument(
        "--objectives",
        type=_csv,
        default=("20x/0.75",),
        help="comma-separated objective presets drawn per slide (default 20x/0.75)",
    )
    synth.add_argument("--jpeg-fraction", type=float, default=0.25, help="share of slides JPEG-compressed (0.25)")
    synth.add_argument("--bit-depth", type=int, default=8, help="camera bit depth (default 8; JPEG needs 8)")
    synth.add_argument("--source-points", type=int, default=7, help="condenser source points (1, 7, 19, 37; 7)")
    synth.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")

    jiang = sub.add_parser("import-jiang", help="import the public dataset of Jiang et al. (2018)")
    jiang.add_argument("path", type=Path, help="folder holding the s{segment}_l{location}/ folders")
    jiang.add_argument("--out", type=Path, required=True, help="output folder (gets tiles/ and frames/ datasets)")
    jiang.add_argument("--flip-sign", action="store_true", help="negate the file names' defocus labels")
    jiang.add_argument("--no-progress", action="store_true", help="no progress bar")

    folder = sub.add_parser("import-folder", help="import a folder of images whose names carry the defocus")
    folder.add_argument("path", type=Path, help="folder of images (searched recursively)")
    folder.add_argument("--out", type=Path, required=True, help="output dataset folder")
    folder.add_argument(
        "--regex",
        default=None,
        help=r"regular expression on the file name with a group (?P<defocus>...) and optionally "
        r"(?P<stack>...); default: '(?P<defocus>[-+]?\d+(?:\.\d+)?)\s*um'",
    )
    folder.add_argument("--unit", choices=("um", "nm"), default="um", help="unit of the captured defocus (um)")
    folder.add_argument(
        "--z-reference",
        default="external:filenames",
        help="how defocus 0 was defined: physical_focal_plane, sharpness_peak:<measure> or "
        "external:<source> (default external:filenames)",
    )
    folder.add_argument("--objective", default="unknown", help="objective name to record")
    folder.add_argument("--pixel-size-um", type=float, default=None, help="pixel size at the sample (um)")
    folder.add_argument("--bit-depth", type=int, default=None, help="significant bits (default 8 or 16 by dtype)")
    folder.add_argument("--no-progress", action="store_true", help="no progress bar")

    info = sub.add_parser("info", help="summarise the dataset(s) at or below a folder")
    info.add_argument("path", type=Path, help="a dataset folder or a folder of datasets")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument(
        "--patches",
        action="store_true",
        help="also decode every plane and count the 224x224 patches the blank discriminant keeps",
    )


def run(args: argparse.Namespace) -> int:
    action = args.dataset_command
    if action == "synth":
        return _synth(args)
    if action == "import-jiang":
        from models.importers import import_jiang

        result = import_jiang(args.path, args.out, sign=-1 if args.flip_sign else 1, progress=not args.no_progress)
        print(json.dumps({"datasets": result.datasets, "planes": result.planes, "stacks": result.stacks}, indent=2))
        return 0
    if action == "import-folder":
        from models.importers import DEFAULT_FOLDER_REGEX, import_folder

        result = import_folder(
            args.path,
            args.out,
            regex=args.regex or DEFAULT_FOLDER_REGEX,
            unit=args.unit,
            z_reference=args.z_reference,
            objective=args.objective,
            pixel_size_um=args.pixel_size_um,
            bit_depth=args.bit_depth,
            progress=not args.no_progress,
        )
        print(json.dumps({"datasets": result.datasets, "planes": result.planes, "stacks": result.stacks}, indent=2))
        return 0
    return _info(args)


def _synth(args: argparse.Namespace) -> int:
    from autofocus.acquire import default_z_offsets
    from autofocus.synth import SynthConfig, summarize, synthesize

    config = SynthConfig(
        slides=args.slides,
        positions=args.positions,
        frame_size=args.size,
        z_offsets_um=default_z_offsets(args.z_min, args.z_max, args.z_step),
        random_planes=args.random_planes,
        seed=args.seed,
        specimens=args.specimens,
        objectives=args.objectives,
        jpeg_fraction=args.jpeg_fraction,
        bit_depth=args.bit_depth,
        source_points=args.source_points,
    )
    result = synthesize(args.out, config, workers=args.workers, show_progress=not args.no_progress)
    summary = result.to_dict()
    summary.pop("datasets")
    summary["planes_by_specimen_and_objective"] = summarize(result.datasets)
    print(json.dumps(summary, indent=2))
    return 0


def _info(args: argparse.Namespace) -> int:
    from models.zstack import open_datasets

    datasets = open_datasets(args.path, allow_mixed_z_reference=True)
    rows: list[dict[str, Any]] = [d.summary() for d in datasets]
    refs = sorted({d.z_reference for d in datasets})
    report: dict[str, Any] = {
        "datasets": len(datasets),
        "stacks": sum(len(d.stacks) for d in datasets),
        "planes": sum(len(d) for d in datasets),
        "z_references": refs,
        "items": rows,
    }
    if args.patches:
        from models.patches import PatchDataset

        for d, row in zip(datasets, rows, strict=True):
            patches = PatchDataset([d])
            row["patches_total"] = patches.tiles_total
            row["patches_kept"] = patches.tiles_kept
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for row in rows:
        rng = row["defocus_range_um"]
        span = "-" if rng is None else f"{rng[0]:+.2f}..{rng[1]:+.2f} um"
        shape = "-" if row["frame_shape"] is None else "x".join(str(v) for v in row["frame_shape"][:2])
        extra = f", patches kept {row['patches_kept']}/{row['patches_total']}" if args.patches else ""
        print(
            f"{row['path']}: {row['planes']} planes in {row['stacks']} stacks, {shape} {row['dtype']} "
            f"({row['bit_depth']} bit), {row['objective']}, defocus {span}, z_reference {row['z_reference']}"
            f"{'' if row['complete'] else ', INCOMPLETE'}{extra}"
        )
    print(f"total: {report['datasets']} datasets, {report['stacks']} stacks, {report['planes']} planes")
    if len(refs) > 1:
        print(f"warning: mixed z references {', '.join(refs)}; training refuses them unless explicitly allowed")
    return 0
