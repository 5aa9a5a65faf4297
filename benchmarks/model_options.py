"""The model options every benchmark takes (``--model``, ``--near-model``, ``--far-model``), the predictor they build,
and the run's settings as its result file records them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autofocus.aggregation import DEFAULT_AGGREGATE
from autofocus.predictor import DEFAULT_NEAR_GATE_TILES, Predictor


def add_model_arguments(parser: argparse.ArgumentParser, far_model: bool = True) -> None:
    """``--model`` (default: the bundled checkpoint), ``--near-model`` and, unless ``far_model`` is False
    (a bench that reads the wide model's own reading of far frames), ``--far-model`` (default: auto)."""
    parser.add_argument("--model", type=Path, default=None, help="checkpoint .pt (default: the bundled one)")
    parser.add_argument(
        "--near-model",
        default="auto",
        help="near-focus checkpoint: a path, 'none', or 'auto' (the bundled one when --model is not given)",
    )
    if not far_model:
        return
    parser.add_argument(
        "--far-model",
        default="auto",
        help="far-defocus checkpoint: a path, 'none', or 'auto' (the bundled one when --model is not given)",
    )


def open_predictor(
    args: argparse.Namespace,
    runtime: str = "onnx",
    threads: int = 2,
    aggregate: str = DEFAULT_AGGREGATE,
    max_tiles: int | None = None,
    near_gate_tiles: int | None = DEFAULT_NEAR_GATE_TILES,
) -> Predictor:
    """The predictor ``args.model``, ``args.near_model`` and ``args.far_model`` name (``predictor.description``
    says which)."""
    return Predictor.from_checkpoint(
        args.model,
        runtime=runtime,
        threads=threads,
        aggregate=aggregate,
        max_tiles=max_tiles,
        near_model=args.near_model,
        near_gate_tiles=near_gate_tiles,
        far_model=args.far_model,
    )


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed arguments as JSON values (paths such as ``--model`` as strings), for a result file."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
