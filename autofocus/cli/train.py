"""``autofocus train``: train a defocus regressor on z-stack datasets (MSE, Adam, step lr, early stopping)."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "train LDSE-NET (or a baseline) on z-stack datasets; checkpoints every epoch, resumable, torchrun-ready"


def add_common_training_arguments(parser: argparse.ArgumentParser, *, lr: float, max_epochs: int) -> None:
    """Options shared by ``train`` and ``finetune``."""
    parser.add_argument("data", nargs="+", help="z-stack dataset folders (or parents holding several)")
    parser.add_argument("--out", required=True, help="run folder: last.pt, best.pt, model.pt, loss_curve.png")
    parser.add_argument("--epochs", type=int, default=max_epochs, help=f"maximum epochs (default {max_epochs})")
    parser.add_argument("--batch-size", type=int, default=50, help="patches per batch and process (default 50)")
    parser.add_argument("--lr", type=float, default=lr, help=f"Adam learning rate (default {lr:g})")
    parser.add_argument("--lr-step", type=int, default=10, help="StepLR: epochs between lr drops (default 10)")
    parser.add_argument("--lr-gamma", type=float, default=0.5, help="StepLR: lr factor at each drop (default 0.5)")
    parser.add_argument("--patience", type=int, default=8, help="early stopping: epochs without test improvement")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="cap optimiser steps per epoch")
    parser.add_argument(
        "--max-wall-min", type=float, default=None, help="stop before an epoch that would end past this many minutes"
    )
    parser.add_argument("--test-fraction", type=float, default=0.1, help="fields of view held out (default 0.1)")
    parser.add_argument("--z-range", type=float, nargs=2, metavar=("LO_UM", "HI_UM"), help="keep planes in range")
    parser.add_argument("--seed", type=int, default=0, help="split, shuffling and initialisation seed")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader worker processes; with --cache-dir also the processes that decode planes (default 0)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--cache-dir", default=None, help="keep decoded tiles as .npy here (faster reruns)")
    parser.add_argument("--no-augment", action="store_true", help="no flips/rotations/gain/noise augmentation")
    parser.add_argument("--allow-mixed-z-reference", action="store_true", help="train on datasets whose z = 0 differs")
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.pt from the next epoch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_training_arguments(parser, lr=1e-3, max_epochs=60)
    parser.add_argument("--model", default="ldsenet", help="ldsenet | resnet50 | botnet (default ldsenet)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model constructor setting, VALUE as JSON (e.g. --set growth_rate=12 --set 'block_config=[2,2,2,2]')",
    )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["growth_rate=12", "block_config=[2,2]"]`` -> {"growth_rate": 12, "block_config": [2, 2]}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw  # a bare word is a string
    return out


def train_config(args: argparse.Namespace) -> Any:
    from models.train import TrainConfig

    return TrainConfig(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_step_epochs=args.lr_step,
        lr_gamma=args.lr_gamma,
        patience=args.patience,
        steps_per_epoch=args.steps_per_epoch,
        num_workers=args.workers,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        max_wall_min=args.max_wall_min,
    )


def load_data(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    from models.train import patch_datasets

    return patch_datasets(
        args.data,
        test_fraction=args.test_fraction,
        seed=args.seed,
        z_range_um=tuple(args.z_range) if args.z_range else None,
        augment=not args.no_augment,
        cache_dir=args.cache_dir,
        allow_mixed_z_reference=args.allow_mixed_z_reference,
        progress=not args.no_progress,
        decode_workers=max(1, args.workers),
    )


def run(args: argparse.Namespace) -> int:
    from models.registry import allowed_config
    from models.train import train

    overrides = parse_overrides(args.overrides)
    allowed_config(args.model)  # unknown model names fail before the data is decoded
    cfg = train_config(args)
    train_set, test_set, meta = load_data(args)
    result = train(
        model_name=args.model,
        model_config=overrides,
        train_set=train_set,
        test_set=test_set,
        out_dir=args.out,
        meta=meta,
        config=cfg,
        resume=args.resume,
        progress=not args.no_progress,
    )
    if result.model_path is not None:
        print(json.dumps({"model": str(result.model_path), "wall_s": round(result.wall_s, 1), **result.metrics}))
    return 0
