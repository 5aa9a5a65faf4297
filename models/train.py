"""Training loop for the defocus regressors, as in the paper (section 4.1), with resume and DDP.

- Loss: MSE on defocus in um. Optimiser: Adam, lr 1e-3; ``StepLR`` (every ``lr_step_epochs`` epochs
  the lr is multiplied by ``lr_gamma``). Batch size 50 (per process).
- Early stopping: the paper stops "when the loss values of the test set and training set tend to
  stabilise and do not decline"; here training stops when the test loss has not improved by more
  than ``min_rel_improvement`` (relative) for ``patience`` epochs, or at ``max_epochs``.
  The checkpoint with the lowest test loss is the result (``best.pt``).
- Every epoch ``last.pt`` (with optimiser, scheduler, history and RNG state) is written atomically, so
  ``resume=True`` continues from the epoch after the last completed one.
- At the end: ``loss_curve.png`` (train and test loss per epoch, like the paper's figure 10), and
  ``model.pt`` (best weights, no optimiser state, test metrics in its meta).
- Distributed: launched under ``torchrun`` (``WORLD_SIZE`` > 1) the same code wraps the model in
  ``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU), shards data with ``DistributedSampler``,
  all-reduces the losses, and only rank 0 writes files or prints.
- Device: CUDA when present (``device="auto"``), else CPU; ``threads`` sets ``torch.set_num_threads``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from models.checkpoint import Checkpoint, load_checkpoint, package_version, save_checkpoint
from models.evaluate import compute_metrics, predict_dataset
from models.registry import allowed_config, build_model

log = logging.getLogger(__name__)

LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
MODEL_NAME = "model.pt"
CURVE_NAME = "loss_curve.png"
HISTORY_NAME = "history.json"
NORM_SAMPLE = 512  # patches used to estimate the input mean/std


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (recorded in the checkpoint)."""

    max_epochs: int = 60
    batch_size: int = 50
    lr: float = 1e-3
    lr_step_epochs: int = 10
    lr_gamma: float = 0.5
    weight_decay: float = 0.0
    patience: int = 8
    min_rel_improvement: float = 0.01
    steps_per_epoch: int | None = None  # cap on optimiser steps per epoch (None: one pass over the data)
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    threads: int | None = None  # torch.set_num_threads; None leaves torch's default
    fit_normalisation: bool = True  # set the model's mean/std from training patches (new models only)
    max_wall_min: float | None = None  # stop before an epoch that would end past this budget (None: no limit)

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size", "lr_step_epochs", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma!r}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch!r}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers!r}")
        if self.max_wall_min is not None and not self.max_wall_min > 0:
            raise ValueError(f"max_wall_min must be > 0 or None, got {self.max_wall_min!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads!r}")


@dataclass
class TrainResult:
    """What a run produced: the best checkpoint, its test metrics and the loss history."""

    model_path: Path | None  # None on ranks > 0
    best_epoch: int
    best_test_loss: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def train(
    *,
    model_name: str,
    model_config: dict[str, Any],
    train_set: Dataset,
    test_set: Dataset,
    out_dir: str | os.PathLike[str],
    meta: dict[str, Any],
    config: TrainConfig | None = None,
    resume: bool = False,
    init_from: Checkpoint | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Train ``model_name`` on ``train_set``, early-stopping on ``test_set``; write checkpoints to ``out_dir``.

    ``meta`` is the checkpoint meta to record (patch_size, z_range_um, objective, pixel_size_um,
    z_reference, data; ``metrics`` and ``version`` are filled in here). ``init_from`` starts from a
    checkpoint's weights (fine-tuning); ``resume`` continues ``out_dir/last.pt``.
    """
    cfg = config or TrainConfig()
    started = time.monotonic()
    dist_info = _init_distributed(cfg)
    device = _pick_device(cfg.device, dist_info)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    say: Callable[[str], None] = echo if dist_info.is_main else (lambda _msg: None)
    try:
        _seed_everything(cfg.seed + dist_info.rank)
        model_config = dict(model_config)
        state: dict[str, Any] | None = None
        if resume:
            last = out / LAST_NAME
            if not last.is_file():
                raise FileNotFoundError(f"cannot resume: {last} does not exist (start without --resume)")
            ckpt = load_checkpoint(last, map_location="cpu")
            if ckpt.train_state is None:
                raise ValueError(f"cannot resume from {last}: it holds no training state")
            model_name, model_config, model = ckpt.name, ckpt.config, ckpt.model
            state = ckpt.train_state
            meta = {**ckpt.meta, **{k: v for k, v in meta.items() if k not in ckpt.meta}}
            say(f"resuming {model_name} from {last} after epoch {state['epoch']}")
        elif init_from is not None:
            model_name, model_config = init_from.name, dict(init_from.config)
            model = build_model(model_name, **model_config)
            model.load_state_dict(init_from.model.state_dict())
            say(f"fine-tuning {model_name} from a checkpoint trained on {init_from.meta.get('objective')}")
        else:
            if cfg.fit_normalisation and {"mean", "std"} <= set(allowed_config(model_name)):
                mean, std = channel_statistics(train_set, NORM_SAMPLE, seed=cfg.seed)
                model_config.update(mean=mean, std=std)
            model = build_model(model_name, **model_config)
            # record every constructor argument, defaults included, so a later change of a default
            # cannot silently change the architecture a checkpoint is rebuilt with
            model_config = {**allowed_config(model_name), **model_config}
        # channels_last: the convolutions run 1.2-1.6x faster on CPU (measured, docs/models.md)
        model.to(device, memory_format=torch.channels_last)
        say(
            f"training {model_name} ({count_parameters(model):,} parameters) on {device}"
            f"{f' x{dist_info.world_size} processes' if dist_info.enabled else ''}: "
            f"{len(train_set)} train / {len(test_set)} test patches, z reference {meta.get('z_reference')!r}"
        )
        net: nn.Module = model
        if dist_info.enabled:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
        history: list[dict[str, float]] = []
        start_epoch, best_loss, best_epoch, stale = 1, math.inf, 0, 0
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history = list(state["history"])
            start_epoch = int(state["epoch"]) + 1
            best_loss, best_epoch, stale = float(state["best_test_loss"]), int(state["best_epoch"]), int(state["stale"])
            _restore_rng(state.get("rng"), dist_info.rank)

        train_sampler = DistributedSampler(train_set, shuffle=True, seed=cfg.seed) if dist_info.enabled else None
        generator = torch.Generator().manual_seed(cfg.seed)
        train_loader = DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            shuffle=train_sampler is None,
            sampler=train_sampler,
            num_workers=cfg.num_workers,
            drop_last=len(train_set) > cfg.batch_size * max(1, dist_info.world_size),
            generator=generator if train_sampler is None else None,
            persistent_workers=cfg.num_workers > 0,
        )
        test_sampler = DistributedSampler(test_set, shuffle=False) if dist_info.enabled else None
        test_loader = DataLoader(
            test_set, batch_size=cfg.batch_size, shuffle=False, sampler=test_sampler, num_workers=cfg.num_workers
        )
        run_config = {"train": asdict(cfg), "world_size": dist_info.world_size, "device": str(device)}
        stopped_early = False
        epoch = start_epoch - 1
        for epoch in range(start_epoch, cfg.max_epochs + 1):
            if train_sampler is not None:
                train_sampler.set_epoch(epoch)
            generator.manual_seed(cfg.seed * 100_003 + epoch)  # the shuffle depends on the epoch only: resumable
            t0 = time.monotonic()
            train_loss = _train_epoch(net, train_loader, optimizer, device, cfg, dist_info, epoch, progress)
            test_loss = _test_loss(net, test_loader, device, dist_info)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "test_loss": test_loss,
                    "lr": lr,
                    "epoch_s": time.monotonic() - t0,
                }
            )
            improved = test_loss < best_loss * (1.0 - cfg.min_rel_improvement)
            if test_loss < best_loss:
                best_loss, best_epoch = test_loss, epoch
                if dist_info.is_main:
                    _save(model, model_name, model_config, meta, out / BEST_NAME, None)
            stale = 0 if improved else stale + 1
            say(
                f"epoch {epoch}: train loss {train_loss:.4f}, test loss {test_loss:.4f} um^2 "
                f"(RMSE {math.sqrt(test_loss):.3f} um), lr {lr:.2e}, {history[-1]['epoch_s']:.0f} s"
                f"{' *best*' if best_epoch == epoch else ''}"
            )
            if dist_info.is_main:
                train_state = {
                    "epoch": epoch,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                    "best_test_loss": best_loss,
                    "best_epoch": best_epoch,
                    "stale": stale,
                    "rng": _rng_state(),
                    "run_config": run_config,
                }
                _save(model, model_name, model_config, meta, out / LAST_NAME, train_state)
                (out / HISTORY_NAME).write_text(json.dumps(history, indent=1) + "\n")
            if stale >= cfg.patience:
                stopped_early = True
                say(f"stopping: test loss has not improved by {cfg.min_rel_improvement:.0%} for {stale} epochs")
                break
            budget = cfg.max_wall_min
            if budget is not None and _out_of_time(started, history[-1]["epoch_s"], budget, dist_info, device):
                stopped_early = True
                say(f"stopping: another epoch would exceed the {cfg.max_wall_min:g} min wall-time budget")
                break

        result = TrainResult(
            model_path=None,
            best_epoch=best_epoch,
            best_test_loss=best_loss,
            epochs_run=epoch,
            stopped_early=stopped_early,
            history=history,
        )
        if dist_info.enabled:
            dist.barrier()
        if dist_info.is_main:
            best = load_checkpoint(out / BEST_NAME)
            pred, true = predict_dataset(best.model, test_set, batch_size=cfg.batch_size, device=device)
            metrics = compute_metrics(pred, true)
            result.metrics = metrics
            result.wall_s = time.monotonic() - started
            final_meta = {
                **meta,
                "metrics": {
                    "split": "test (fields of view held out from training)",
                    **metrics,
                    "best_epoch": best_epoch,
                    "best_test_mse_um2": best_loss,
                    "epochs_run": epoch,
                    "stopped_early": stopped_early,
                },
                "training": {**run_config, "wall_s": round(result.wall_s, 1)},
                "version": package_version(),
            }
            best.meta = final_meta
            result.model_path = save_checkpoint(best, out / MODEL_NAME, with_train_state=False)
            plot_loss_curve(history, out / CURVE_NAME, title=f"{model_name}: MSE loss (um^2)")
            say(
                f"best epoch {best_epoch}: test MAE {metrics['mae_um']:.3f} um, "
                f"median {metrics['median_abs_error_um']:.3f} um, RMSE {metrics['rmse_um']:.3f} um, "
                f"sign accuracy (|z| >= 1 um) {metrics['sign_accuracy']}"
            )
            say(f"wrote {result.model_path} and {out / CURVE_NAME}")
        return result
    finally:
        if dist_info.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _out_of_time(started: float, epoch_s: float, budget_min: float, dist_info: _Dist, device: torch.device) -> bool:
    """True when one more epoch (as long as the last) would end past ``budget_min``; agreed by all ranks."""
    late = time.monotonic() - started + epoch_s > 60.0 * budget_min
    if dist_info.enabled:
        flag = torch.tensor([1.0 if late else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        late = bool(flag.item() > 0)
    return late


def _train_epoch(
    net: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    cfg: TrainConfig,
    dist_info: _Dist,
    epoch: int,
    progress: bool,
) -> float:
    """One pass (or ``steps_per_epoch`` steps); returns the mean training MSE over all processes."""
    net.train()
    total = len(loader) if cfg.steps_per_epoch is None else min(len(loader), cfg.steps_per_epoch)
    bar = None
    if progress and dist_info.is_main:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"epoch {epoch}", unit="batch", leave=False)
    sum_loss = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of squared errors, count)
    try:
        for step, (images, labels) in enumerate(loader):
            if step >= total:
                break
            images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
            labels = torch.as_tensor(labels, dtype=torch.float32).to(device, non_blocking=True)
            loss = nn.functional.mse_loss(net(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sum_loss[0] += loss.detach().double() * len(labels)
            sum_loss[1] += len(labels)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
    finally:
        if bar is not None:
            bar.close()
    if dist_info.enabled:
        dist.all_reduce(sum_loss)
    if sum_loss[1] == 0:
        raise ValueError("the training set yielded no batch")
    return float(sum_loss[0] / sum_loss[1])


@torch.no_grad()
def _test_loss(net: nn.Module, loader: DataLoader, device: torch.device, dist_info: _Dist) -> float:
    net.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for images, labels in loader:
        pred = net(images.to(device, memory_format=torch.channels_last))
        labels = torch.as_tensor(labels, dtype=torch.float32).to(device)
        sums[0] += ((pred - labels) ** 2).double().sum()
        sums[1] += len(labels)
    if dist_info.enabled:
        dist.all_reduce(sums)
    if sums[1] == 0:
        raise ValueError("the test set is empty")
    return float(sums[0] / sums[1])


def _save(
    model: nn.Module,
    name: str,
    config: dict[str, Any],
    meta: dict[str, Any],
    path: Path,
    train_state: dict[str, Any] | None,
) -> None:
    save_checkpoint(
        Checkpoint(
            model=model, name=name, config=config, meta={**meta, "version": package_version()}, train_state=train_state
        ),
        path,
    )


def channel_statistics(dataset: Dataset, sample: int, *, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of up to ``sample`` random patches (for the model's input normalisation)."""
    n = len(dataset)
    if n == 0:
        raise ValueError("cannot estimate input statistics from an empty training set")
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=min(n, sample), replace=False)
    sums = torch.zeros(3, dtype=torch.float64)
    sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for i in idx:
        x = dataset[int(i)][0].double()
        sums += x.sum(dim=(1, 2))
        sq += (x**2).sum(dim=(1, 2))
        count += x.shape[1] * x.shape[2]
    mean = sums / count
    std = (sq / count - mean**2).clamp_min(1e-8).sqrt()
    return [round(float(v), 6) for v in mean], [round(float(max(v, 1e-3)), 6) for v in std]


def patch_datasets(
    paths: list[str] | list[Path],
    *,
    test_fraction: float = 0.1,
    seed: int = 0,
    z_range_um: tuple[float, float] | None = None,
    augment: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    allow_mixed_z_reference: bool = False,
    progress: bool = True,
    decode_workers: int = 1,
) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """Train/test ``PatchDataset`` (split by field of view) of z-stack folders, and the checkpoint meta they imply.

    The meta records patch size, z range, objective, pixel size and z reference of the data, and a data
    summary. Datasets taken with different objectives or pixel sizes are refused (a model is trained
    for one optical configuration). With a ``cache_dir``, ``decode_workers`` processes first decode
    the planes into it, one dataset each (``build_tile_caches``).
    """
    from models.patches import PatchDataset, build_tile_caches
    from models.tiles import TILE_SIZE

    if decode_workers > 1 and cache_dir is not None:
        build_tile_caches(paths, cache_dir, workers=decode_workers)

    common = {
        "test_fraction": test_fraction,
        "seed": seed,
        "z_range_um": z_range_um,
        "cache_dir": cache_dir,
        "allow_mixed_z_reference": allow_mixed_z_reference,
    }
    train_set = PatchDataset(paths, split="train", augment=augment, augment_seed=seed, progress=progress, **common)
    test_set = PatchDataset(train_set.datasets, split="test", augment=False, **common)
    optics = sorted({(d.objective, d.pixel_size_um) for d in train_set.datasets})
    if len(optics) != 1:
        raise ValueError(
            f"the datasets were taken with different optics {optics}; train one model per objective/pixel size"
        )
    objective, pixel_size_um = optics[0]
    if len(train_set) == 0 or len(test_set) == 0:
        raise ValueError(f"empty split: {len(train_set)} train / {len(test_set)} test patches; add data")
    lo = float(min(train_set.defocus_um.min(), test_set.defocus_um.min()))
    hi = float(max(train_set.defocus_um.max(), test_set.defocus_um.max()))
    meta = {
        "patch_size": TILE_SIZE,
        "z_range_um": [lo, hi] if z_range_um is None else [float(z_range_um[0]), float(z_range_um[1])],
        "objective": objective,
        "pixel_size_um": pixel_size_um,
        "z_reference": train_set.z_reference,
        "data": {
            "train": train_set.summary(),
            "test": test_set.summary(),
            "sources": summarize_sources(train_set.datasets),
        },
        "metrics": {},
    }
    return train_set, test_set, meta


def summarize_sources(datasets: Sequence[Any]) -> dict[str, Any]:
    """A compact description of the source datasets for the checkpoint meta (which must stay KB-sized).

    Counts, folders, and for each setting in the manifests' ``source`` (flattened one level, e.g.
    ``synth.condenser_na``) its range (numbers) or its distinct values (anything else).
    """
    values: dict[str, list[Any]] = {}
    for d in datasets:
        for key, value in d.source.items():
            items = value.items() if isinstance(value, dict) else [("", value)]
            for sub, v in items:
                if isinstance(v, dict | list):
                    continue
                values.setdefault(f"{key}.{sub}" if sub else key, []).append(v)
    settings: dict[str, Any] = {}
    for key, vs in sorted(values.items()):
        numbers = [v for v in vs if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(vs):
            settings[key] = [min(numbers), max(numbers)]
        else:
            distinct = sorted({json.dumps(v) for v in vs})
            settings[key] = [json.loads(v) for v in distinct[:12]] + (["..."] if len(distinct) > 12 else [])
    return {
        "datasets": len(datasets),
        "folders": sorted({str(Path(d.path).parent) for d in datasets}),
        "stacks": sum(len(d.stacks) for d in datasets),
        "planes": sum(len(d.planes) for d in datasets),
        "settings": settings,
    }


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def plot_loss_curve(history: list[dict[str, float]], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Train and test loss per epoch on a log scale (the paper's figure 10)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], label="train_loss")
    ax.plot(epochs, [h["test_loss"] for h in history], label="test_loss")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (um^2)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _init_distributed(cfg: TrainConfig) -> _Dist:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Dist()
    info = _Dist(rank=int(os.environ["RANK"]), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_cuda = cfg.device != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info


def _pick_device(requested: str, dist_info: _Dist) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} requested but CUDA is not available; use 'cpu' or 'auto'")
        if requested == "cuda":
            requested = f"cuda:{dist_info.local_rank}"
        device = torch.device(requested)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed 224 x 224 batches: let cuDNN pick its fastest kernels
        return device
    if requested != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {requested!r}")
    return torch.device("cpu")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def _restore_rng(state: dict[str, Any] | None, rank: int) -> None:
    if state is not None and rank == 0:
        torch.set_rng_state(state["torch"])
