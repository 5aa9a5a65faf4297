"""Self-describing model checkpoints: architecture, config, weights (with normalisation) and metadata.

A checkpoint is one ``torch.save`` file holding only plain types and tensors, so it loads with
``torch.load(weights_only=True)`` (no code execution from a file)::

    {"format": "ldse-autofocus-checkpoint", "format_version": 1,
     "name": "ldsenet", "config": {...constructor keywords...},
     "state_dict": {...},              # includes the input normalisation buffers (mean/std)
     "meta": {"patch_size", "z_range_um", "objective", "pixel_size_um", "z_reference",
              "data", "metrics", "version", ...},  # optional: "heldout", "near_window_um"
     "train_state": {...} | None}      # epoch, optimiser, scheduler, history: only while training

Files are written atomically (temporary file + rename), so an interrupted save never leaves a
half-written checkpoint behind, which matters for resumable training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.registry import build_model

FORMAT = "ldse-autofocus-checkpoint"
FORMAT_VERSION = 1
REQUIRED_META: tuple[str, ...] = (
    "patch_size",
    "z_range_um",
    "objective",
    "pixel_size_um",
    "z_reference",
    "data",
    "metrics",
    "version",
)
_REQUIRED_KEYS: tuple[str, ...] = ("format", "format_version", "name", "config", "state_dict", "meta")
BUNDLED_NAME = "ldsenet.pt"
BUNDLED_NEAR_NAME = "ldsenet_near.pt"
BUNDLED_FAR_NAME = "ldsenet_far.pt"


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, of another format, or lacks what a model needs."""


@dataclass
class Checkpoint:
    """A model with everything needed to use it. ``model`` is in eval mode after loading."""

    model: nn.Module
    name: str
    config: dict[str, Any]
    meta: dict[str, Any]
    train_state: dict[str, Any] | None = field(default=None, repr=False)


def package_version() -> str:
    """Version of the installed ldse-autofocus package (recorded in every checkpoint)."""
    try:
        return metadata.version("ldse-autofocus")
    except metadata.PackageNotFoundError:
        return "unknown (package not installed)"


def bundled_checkpoint_path() -> Path:
    """Path of the LDSE-NET checkpoint shipped with the package (models/weights/ldsenet.pt)."""
    return Path(__file__).resolve().parent / "weights" / BUNDLED_NAME


def bundled_near_checkpoint_path() -> Path:
    """Path of the near-focus LDSE-NET shipped with the package (models/weights/ldsenet_near.pt).

    Same network, fine-tuned on a narrow defocus range (its ``meta["z_range_um"]``) for the
    frames that the bundled model already places near focus (``autofocus.predictor``).
    """
    return Path(__file__).resolve().parent / "weights" / BUNDLED_NEAR_NAME


def bundled_far_checkpoint_path() -> Path:
    """Path of the far-defocus LDSE-NET shipped with the package (models/weights/ldsenet_far.pt).

    Same network, fine-tuned on a defocus range wider than the bundled model's, for the frames
    that the bundled model places beyond +-6 um, where its own reading flattens (``autofocus.predictor``).
    """
    return Path(__file__).resolve().parent / "weights" / BUNDLED_FAR_NAME


def check_meta(meta: dict[str, Any]) -> None:
    """Raise CheckpointError if ``meta`` lacks a required key or is not JSON-serialisable."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint meta lacks {missing}; required: {list(REQUIRED_META)}")
    try:
        json.dumps(meta)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint meta must be JSON-serialisable: {exc}") from exc


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike[str], *, with_train_state: bool = True) -> Path:
    """Write ``ckpt`` to ``path`` atomically; ``with_train_state=False`` drops optimiser state (for shipping)."""
    check_meta(ckpt.meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in _unwrap(ckpt.model).state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": ckpt.name,
        "config": dict(ckpt.config),
        "state_dict": state,
        "meta": ckpt.meta,
        "train_state": ckpt.train_state if with_train_state else None,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike[str] | None = None, *, map_location: str = "cpu") -> Checkpoint:
    """Load a checkpoint (``None``: the bundled one) and rebuild its model in eval mode."""
    path = bundled_checkpoint_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many types (IndexError, UnpicklingError, ...) for damaged files
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not an {FORMAT} dict")
    missing = [k for k in _REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks key(s) {missing}; an {FORMAT} file has {list(_REQUIRED_KEYS)}")
    if payload["format"] != FORMAT:
        raise CheckpointError(f"{path} has format {payload['format']!r}, expected {FORMAT!r}")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {payload['format_version']}; this code reads <= {FORMAT_VERSION}"
        )
    meta = payload["meta"]
    try:
        check_meta(meta)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    config = dict(payload["config"])
    try:
        model = build_model(payload["name"], **config)
        model.load_state_dict(payload["state_dict"], strict=True)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild model {payload['name']!r} with {config}: {exc}") from exc
    model.eval()
    return Checkpoint(
        model=model,
        name=payload["name"],
        config=config,
        meta=meta,
        train_state=payload.get("train_state"),
    )


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / DataParallel wrappers."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel) else model
