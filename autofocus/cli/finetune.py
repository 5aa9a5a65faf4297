"""``autofocus finetune``: adapt a trained checkpoint to a new microscope with a short run on its own data."""

from __future__ import annotations

import argparse

from autofocus.cli.train import add_common_training_arguments, load_data, train_config

HELP = "fine-tune a checkpoint (default: the bundled LDSE-NET) on your own acquired z-stacks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_training_arguments(parser, lr=1e-4, max_epochs=10)
    parser.add_argument("--checkpoint", default=None, help="starting checkpoint (default: the bundled model)")


def run(args: argparse.Namespace) -> int:
    import json

    from models.checkpoint import bundled_checkpoint_path, load_checkpoint
    from models.train import train

    path = args.checkpoint or bundled_checkpoint_path()
    base = load_checkpoint(path)
    cfg = train_config(args)
    train_set, test_set, meta = load_data(args)
    if base.meta.get("z_reference") != meta["z_reference"]:
        print(
            f"note: the base model's z = 0 is {base.meta.get('z_reference')!r}, the new data's is "
            f"{meta['z_reference']!r}; the fine-tuned model follows the new data"
        )
    meta["finetuned_from"] = {
        "path": str(path),
        "objective": base.meta.get("objective"),
        "pixel_size_um": base.meta.get("pixel_size_um"),
        "z_reference": base.meta.get("z_reference"),
        "metrics": {k: base.meta.get("metrics", {}).get(k) for k in ("mae_um", "median_abs_error_um")},
    }
    result = train(
        model_name=base.name,
        model_config=base.config,
        train_set=train_set,
        test_set=test_set,
        out_dir=args.out,
        meta=meta,
        config=cfg,
        resume=args.resume,
        init_from=None if args.resume else base,
        progress=not args.no_progress,
    )
    if result.model_path is not None:
        print(json.dumps({"model": str(result.model_path), "wall_s": round(result.wall_s, 1), **result.metrics}))
    return 0
