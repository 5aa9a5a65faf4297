"""``autofocus predict IMAGE...``: the defocus of image files, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from autofocus.cli.predictor_options import add_predictor_arguments, predictor_from_args

HELP = "predict the defocus (um) of image files (TIFF, PNG, JPEG) with LDSE-NET"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (TIFF, PNG, JPEG, BMP)")
    add_predictor_arguments(parser)
    parser.add_argument("--bit-depth", type=int, default=None, help="significant bits of 16-bit images (default 16)")
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    parser.add_argument("--tiles", action="store_true", help="with --json: include every tile and the 3x3 region map")


def read_image(path: Path) -> np.ndarray:
    """An image file as ``HxW`` or ``HxWx3`` RGB (``uint8``/``uint16``); ``ValueError`` if unreadable."""
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        image = np.asarray(tifffile.imread(path))
        if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[2] not in (3, 4):
            image = np.moveaxis(image, 0, 2)  # planar (CxHxW) TIFF
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]  # RGBA: drop alpha
    else:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f"{path}: not an image OpenCV can read (TIFF, PNG, JPEG, BMP are supported)")
        if image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        elif image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # OpenCV reads colour as BGR
    if image.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a 2-D mono or RGB image, got an array of shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: pixel type {image.dtype} is not supported (8- or 16-bit images only)")
    return image


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run(args: argparse.Namespace) -> int:
    predictor = predictor_from_args(args)
    rows: list[dict[str, Any]] = []
    for path in args.images:
        pred = predictor.predict(read_image(path), bit_depth=args.bit_depth)
        row: dict[str, Any] = {
            "path": str(path),
            "defocus_um": pred.defocus_um,
            "confidence": pred.confidence,
            "spread_um": pred.spread_um,
            "tiles_used": pred.tiles_used,
            "tiles_total": pred.tiles_total,
            "model": pred.model,
            "width": pred.frame_shape[1],
            "height": pred.frame_shape[0],
        }
        if args.tiles:
            row["tiles"] = pred.tiles
            row["region_map"] = pred.region_map
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(4, *(len(r["path"]) for r in rows))
    print(f"{'path':<{width}}  {'defocus_um':>10}  {'confidence':>10}  {'spread_um':>9}  {'tiles':>7}  model")
    for r in rows:
        tiles = f"{r['tiles_used']}/{r['tiles_total']}"
        print(
            f"{r['path']:<{width}}  {_fmt(r['defocus_um'], '+10.3f')}  {r['confidence']:>10.2f}  "
            f"{_fmt(r['spread_um'], '9.3f')}  {tiles:>7}  {r['model']}"
        )
    return 0
