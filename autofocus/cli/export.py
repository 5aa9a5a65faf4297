"""``autofocus export``: write a checkpoint as ONNX (opset 18, dynamic batch), verified against torch."""

from __future__ import annotations

import argparse

HELP = "export a checkpoint (default: the bundled model) to ONNX and check it against torch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", default=None, help="checkpoint .pt (default: the bundled model)")
    parser.add_argument("--out", default=None, help="ONNX file to write (default: the checkpoint's path with .onnx)")
    parser.add_argument(
        "--tolerance-um", type=float, default=1e-3, help="largest |onnx - torch| accepted (default 0.001 um)"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from models.checkpoint import bundled_checkpoint_path, load_checkpoint
    from models.export import OPSET, export_onnx, verify_onnx

    src = Path(args.checkpoint) if args.checkpoint else bundled_checkpoint_path()
    out = Path(args.out) if args.out else src.with_suffix(".onnx")
    ckpt = load_checkpoint(src)
    export_onnx(ckpt, out, verify=False)
    worst = verify_onnx(ckpt, out, batch_sizes=(1, 3, 8), tolerance_um=args.tolerance_um)
    print(f"wrote {out} (opset {OPSET}, dynamic batch); max |onnx - torch| over batches 1, 3, 8: {worst:.2e} um")
    return 0
