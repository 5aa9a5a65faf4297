"""The model options shared by ``predict``, ``focus`` and ``offset``, and the predictor they build."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autofocus.aggregation import AGGREGATES, DEFAULT_AGGREGATE


def add_predictor_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--model``, ``--near-model``, ``--far-model``, ``--runtime``, ``--threads``, ``--aggregate`` and
    ``--max-tiles``."""
    parser.add_argument("--model", type=Path, default=None, help="checkpoint .pt or exported .onnx (default: bundled)")
    parser.add_argument(
        "--near-model",
        default="auto",
        help="near-focus model, read where --model places a frame near focus: 'auto' (default: the bundled one "
        "with the bundled model, none with another), 'none', or a .pt/.onnx file",
    )
    parser.add_argument(
        "--far-model",
        default="auto",
        help="far-defocus model, read where --model places a frame beyond +-6 um: 'auto' (default: the bundled "
        "one with the bundled model, none with another), 'none', or a .pt/.onnx file",
    )
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch", help="inference runtime")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for inference (default 2)")
    parser.add_argument(
        "--aggregate",
        choices=AGGREGATES,
        default=DEFAULT_AGGREGATE,
        help=f"how tile estimates are combined (default {DEFAULT_AGGREGATE}; mean is the paper's)",
    )
    parser.add_argument(
        "--max-tiles", type=int, default=None, help="use at most N non-blank tiles per frame, centre first"
    )


def predictor_from_args(args: argparse.Namespace) -> Any:
    """The ``autofocus.predictor.Predictor`` the options ask for (torch is imported only here)."""
    from autofocus.predictor import Predictor

    return Predictor.from_checkpoint(
        args.model,
        runtime=args.runtime,
        threads=args.threads,
        aggregate=args.aggregate,
        max_tiles=args.max_tiles,
        near_model=args.near_model,
        far_model=args.far_model,
    )
