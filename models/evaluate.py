"""Per-patch evaluation of a defocus regressor: error statistics, error-vs-defocus plot, JSON report.

Metrics (all in um, per patch):
- ``mae_um``, ``median_abs_error_um``, ``rmse_um``, ``bias_um`` (mean signed error), ``p90_abs_error_um``;
- ``sign_accuracy``: fraction of patches with |z| >= ``sign_min_um`` (1 um) whose predicted sign is right;
- ``by_band``: the same errors per |z| band (edges ``BAND_EDGES_UM``; the last band is open-ended);
- ``by_group`` (when each patch carries a group label, e.g. the specimen kind of its slide): the
  overall errors and sign accuracy per group, to see which kind of specimen limits a model.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

BAND_EDGES_UM: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0)
SIGN_MIN_UM = 1.0


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over a dataset of (image, defocus_um); return (predicted_um, true_um) as float64 arrays."""
    model.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    preds: list[np.ndarray] = []
    trues: list[np.ndarray] = []
    for images, labels in loader:
        preds.append(model(images.to(device)).double().cpu().numpy())
        trues.append(torch.as_tensor(labels).double().cpu().numpy())
    if not preds:
        raise ValueError("cannot evaluate on an empty dataset")
    return np.concatenate(preds), np.concatenate(trues)


def compute_metrics(
    pred_um: Sequence[float] | np.ndarray,
    true_um: Sequence[float] | np.ndarray,
    *,
    band_edges_um: Sequence[float] = BAND_EDGES_UM,
    sign_min_um: float = SIGN_MIN_UM,
) -> dict[str, Any]:
    """Error statistics of predictions against ground truth (see module docstring)."""
    pred = np.asarray(pred_um, dtype=np.float64).ravel()
    true = np.asarray(true_um, dtype=np.float64).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"pred_um and true_um differ in length: {pred.size} vs {true.size}")
    if pred.size == 0:
        raise ValueError("no predictions to evaluate")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(true))):
        raise ValueError("predictions and labels must be finite")
    edges = list(band_edges_um)
    if any(b <= a for a, b in itertools.pairwise(edges)) or edges[0] != 0.0:
        raise ValueError(f"band_edges_um must start at 0 and increase, got {edges}")
    err = pred - true
    out: dict[str, Any] = {"n": int(pred.size), **_error_stats(err)}
    signed = np.abs(true) >= sign_min_um
    out["sign_min_um"] = sign_min_um
    out["sign_n"] = int(signed.sum())
    out["sign_accuracy"] = float(np.mean(np.sign(pred[signed]) == np.sign(true[signed]))) if signed.any() else None
    bands = []
    abs_true = np.abs(true)
    # [e0, e1), [e1, e2), ..., [e(n-2), e(n-1)] (the last edge is inclusive: |z| = 10 is in 7.5-10), (e(n-1), inf)
    limits = [(lo, hi, hi == edges[-1]) for lo, hi in itertools.pairwise(edges)] + [(edges[-1], math.inf, False)]
    for lo, hi, closed in limits:
        sel = (abs_true > lo) & (abs_true < hi) if math.isinf(hi) else (abs_true >= lo) & (abs_true < hi)
        if closed:
            sel |= abs_true == hi
        if not sel.any():
            continue
        band: dict[str, Any] = {"lo_um": lo, "hi_um": None if math.isinf(hi) else hi, "n": int(sel.sum())}
        band.update(_error_stats(err[sel]))
        sign_sel = sel & signed
        band["sign_accuracy"] = (
            float(np.mean(np.sign(pred[sign_sel]) == np.sign(true[sign_sel]))) if sign_sel.any() else None
        )
        bands.append(band)
    out["by_band"] = bands
    return out


def metrics_by_group(
    pred_um: np.ndarray, true_um: np.ndarray, groups: Sequence[str], *, sign_min_um: float = SIGN_MIN_UM
) -> dict[str, dict[str, Any]]:
    """Overall errors and sign accuracy for each distinct label in ``groups`` (one label per patch)."""
    pred = np.asarray(pred_um, dtype=np.float64).ravel()
    true = np.asarray(true_um, dtype=np.float64).ravel()
    labels = np.asarray(list(groups), dtype=object)
    if labels.shape != pred.shape or pred.shape != true.shape:
        raise ValueError(f"need one group label per patch: {labels.size} labels for {pred.size} predictions")
    out: dict[str, dict[str, Any]] = {}
    for label in sorted(set(labels.tolist())):
        sel = labels == label
        stats = compute_metrics(pred[sel], true[sel], sign_min_um=sign_min_um)
        out[str(label)] = {k: v for k, v in stats.items() if k not in ("by_band", "sign_min_um")}
    return out


def _error_stats(err: np.ndarray) -> dict[str, float]:
    abs_err = np.abs(err)
    return {
        "mae_um": float(abs_err.mean()),
        "median_abs_error_um": float(np.median(abs_err)),
        "p90_abs_error_um": float(np.percentile(abs_err, 90)),
        "rmse_um": float(np.sqrt(np.mean(err**2))),
        "bias_um": float(err.mean()),
    }


def plot_error_vs_defocus(
    pred_um: np.ndarray, true_um: np.ndarray, path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Scatter of per-patch error against true defocus, with the median |error| per 0.5 um bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = np.asarray(pred_um, dtype=np.float64)
    true = np.asarray(true_um, dtype=np.float64)
    err = pred - true
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.scatter(true, err, s=3, alpha=0.3)
    ax1.axhline(0.0, color="k", lw=0.8)
    ax1.set_xlabel("true defocus (um)")
    ax1.set_ylabel("predicted - true (um)")
    ax1.set_title("per-patch error")
    bins = np.arange(np.floor(true.min() * 2) / 2, np.ceil(true.max() * 2) / 2 + 0.5, 0.5)
    centres, medians = [], []
    for lo, hi in itertools.pairwise(bins):
        sel = (true >= lo) & (true < hi)
        if sel.any():
            centres.append((lo + hi) / 2)
            medians.append(float(np.median(np.abs(err[sel]))))
    ax2.plot(centres, medians, marker="o")
    ax2.set_xlabel("true defocus (um)")
    ax2.set_ylabel("median |error| (um)")
    ax2.set_title("median absolute error per 0.5 um")
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    extra: dict[str, Any] | None = None,
    groups: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Predict the dataset, compute metrics; with ``out_dir`` write metrics.json and error_vs_defocus.png.

    ``groups`` (one label per item of ``dataset``) adds ``by_group`` to the report.
    """
    pred, true = predict_dataset(model, dataset, batch_size=batch_size, device=device)
    report = compute_metrics(pred, true)
    if groups is not None:
        report["by_group"] = metrics_by_group(pred, true, groups)
    if extra:
        report = {**extra, **report}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        plot_error_vs_defocus(pred, true, out / "error_vs_defocus.png", title=str((extra or {}).get("title", "")))
        (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        np.savez_compressed(out / "predictions.npz", pred_um=pred, true_um=true)
    return report
