"""``autofocus evaluate``: per-patch error statistics of a checkpoint on z-stack datasets."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.patches import PatchDataset

HELP = "evaluate a checkpoint on z-stacks: MAE/median/RMSE, sign accuracy, error by |z| band, PNG + JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", help="z-stack dataset folders (or parents holding several)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint .pt (default: the bundled model)")
    parser.add_argument("--out", required=True, help="folder for metrics.json, error_vs_defocus.png, predictions")
    parser.add_argument(
        "--split",
        choices=("all", "test", "train"),
        default="all",
        help="'all' for a held-out dataset (default); 'test' for the training run's held-out fields of view",
    )
    parser.add_argument("--test-fraction", type=float, default=0.1, help="as in training (for --split test)")
    parser.add_argument("--seed", type=int, default=0, help="as in training (for --split test)")
    parser.add_argument("--z-range", type=float, nargs=2, metavar=("LO_UM", "HI_UM"), help="keep planes in range")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cache-dir", default=None, help="keep decoded tiles as .npy here")
    parser.add_argument("--allow-mixed-z-reference", action="store_true")
    parser.add_argument(
        "--write-checkpoint",
        default=None,
        metavar="PATH",
        help="also save a copy of the checkpoint (no optimiser state) with these metrics in meta['heldout']",
    )
    parser.add_argument(
        "--near-window",
        type=float,
        nargs=2,
        metavar=("LO_UM", "HI_UM"),
        default=None,
        help="with --write-checkpoint: record in meta['near_window_um'] the defocus range in which the predictor "
        "reads this checkpoint as its near-focus model (within its training range; default: all of it)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from models.checkpoint import bundled_checkpoint_path, load_checkpoint
    from models.evaluate import evaluate_model
    from models.patches import PatchDataset

    if args.near_window is not None and not args.write_checkpoint:
        raise ValueError("--near-window is recorded in the checkpoint that --write-checkpoint writes: give both")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path = args.checkpoint or bundled_checkpoint_path()
    ckpt = load_checkpoint(path)
    if args.near_window is not None:
        from autofocus.predictor import near_window_um

        ckpt.meta = {**ckpt.meta, "near_window_um": list(args.near_window)}
        near_window_um(ckpt.meta, "--near-window")  # refused before any evaluation or file is written
    dataset = PatchDataset(
        args.data,
        split=args.split,
        test_fraction=args.test_fraction,
        seed=args.seed,
        z_range_um=tuple(args.z_range) if args.z_range else None,
        cache_dir=args.cache_dir,
        allow_mixed_z_reference=args.allow_mixed_z_reference,
        progress=True,
    )
    if dataset.z_reference != ckpt.meta.get("z_reference"):
        print(f"note: model z = 0 is {ckpt.meta.get('z_reference')!r}, data z = 0 is {dataset.z_reference!r}")
    objectives = sorted({d.objective for d in dataset.datasets})
    extra = {
        "checkpoint": str(path),
        "model": ckpt.name,
        "model_objective": ckpt.meta.get("objective"),
        "data_objectives": objectives,
        "data": dataset.summary(),
        "title": f"{ckpt.name} on {', '.join(objectives)} ({len(dataset)} patches)",
    }
    report = evaluate_model(
        ckpt.model, dataset, args.out, batch_size=args.batch_size, extra=extra, groups=specimen_labels(dataset)
    )
    print(format_report(report))
    if args.write_checkpoint:
        from models.checkpoint import save_checkpoint

        ckpt.meta = {**ckpt.meta, "heldout": {k: v for k, v in report.items() if k not in ("title",)}}
        save_checkpoint(ckpt, args.write_checkpoint, with_train_state=False)
        print(f"wrote {args.write_checkpoint} with the held-out metrics in its meta")
    print(f"wrote {args.out}/metrics.json and error_vs_defocus.png")
    print(json.dumps({k: report[k] for k in ("n", "mae_um", "median_abs_error_um", "rmse_um", "sign_accuracy")}))
    return 0


def specimen_labels(dataset: PatchDataset) -> list[str] | None:
    """The specimen kind of each patch (from synthetic datasets' manifests); None if any dataset lacks it."""
    kinds: dict[str, str] = {}
    for ds in dataset.datasets:
        synth = (ds.manifest.get("source") or {}).get("synth") or {}
        if "specimen" not in synth:
            return None
        kinds[ds.dataset_id] = str(synth["specimen"])
    return [kinds[dataset.field_of_view(i)[0]] for i in range(len(dataset))]


def format_report(report: dict) -> str:
    """A small text table: overall errors, errors per |z| band and, for synthetic data, per specimen."""
    lines = [
        f"patches: {report['n']}   MAE {report['mae_um']:.3f} um   median {report['median_abs_error_um']:.3f} um   "
        f"RMSE {report['rmse_um']:.3f} um   bias {report['bias_um']:+.3f} um",
        f"sign accuracy (|z| >= {report['sign_min_um']:g} um, n={report['sign_n']}): {report['sign_accuracy']}",
        "  |z| band (um)      n     MAE  median    RMSE   sign",
    ]
    for b in report["by_band"]:
        hi = "inf" if b["hi_um"] is None else f"{b['hi_um']:g}"
        lines.append(_table_row(f"{b['lo_um']:>5g} - {hi:<5}", b))
    if report.get("by_group"):
        lines.append("  specimen           n     MAE  median    RMSE   sign")
        lines.extend(_table_row(f"{name:<13}", g) for name, g in report["by_group"].items())
    return "\n".join(lines)


def _table_row(label: str, stats: dict) -> str:
    """One row of the report: a 13-character label, then n, MAE, median, RMSE and sign accuracy."""
    sign = "-" if stats["sign_accuracy"] is None else f"{stats['sign_accuracy']:.3f}"
    return (
        f"  {label} {stats['n']:>7} {stats['mae_um']:7.3f} {stats['median_abs_error_um']:7.3f} "
        f"{stats['rmse_um']:7.3f} {sign:>6}"
    )
