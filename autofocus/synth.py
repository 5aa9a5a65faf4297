"""Synthetic z-stack datasets from the simulated microscope, fast and in parallel.

This is the acquisition procedure of ``autofocus.acquire`` with an ideal stage: each plane is
rendered directly with ``SimulatedMicroscope.render_patch`` at its exact defocus (no stage moves,
no backlash, no drift), so defocus 0 is the physical focal plane (``physical_focal_plane``).

The output folder holds one z-stack dataset per *slide*: a specimen kind, a slide seed and one
optics variant (objective preset, condenser NA, spherical aberration, exposure, read noise,
JPEG or not), drawn reproducibly from ``--seed``. Each slide contributes ``positions`` fields
of view (random XY on the slide), each swept through the plan's z offsets plus optional random
off-grid planes. Slide seeds are ``seed * 1_000_000 + i``, so runs with different ``--seed``
never share a specimen: use one seed for training data and another for held-out test data.

Slides are rendered in parallel worker processes; a run that was interrupted resumes where it
stopped (finished slides are skipped, unfinished ones continue without duplicate planes).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from autofocus.acquire import default_z_offsets
from models.errors import DatasetError
from models.zstack import MANIFEST_NAME, ZStackDataset, ZStackWriter

__all__ = ["SLIDE_SEED_STRIDE", "SlideSpec", "SynthConfig", "SynthResult", "plan_slides", "summarize", "synthesize"]

SLIDE_SEED_STRIDE = 1_000_000
SPECIMEN_KINDS = ("cells", "tissue", "sparse")


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Ranges are ``(low, high)``; a value is drawn per slide, uniformly."""

    slides: int = 8
    positions: int = 4
    frame_size: int = 224
    z_offsets_um: tuple[float, ...] = field(default_factory=default_z_offsets)
    random_planes: int = 0
    seed: int = 0
    specimens: tuple[str, ...] = SPECIMEN_KINDS
    objectives: tuple[str, ...] = ("20x/0.75",)
    condenser_scale: tuple[float, float] = (0.7, 1.2)  # x the objective's typical condenser NA
    aberration_waves: tuple[float, float] = (0.0, 0.15)  # RMS primary spherical aberration
    exposure_ms: tuple[float, float] = (12.0, 24.0)  # 20 ms fills blank glass to 80 % of full scale
    read_noise_e: tuple[float, float] = (3.0, 12.0)
    jpeg_fraction: float = 0.25  # share of slides seen through an MJPG camera
    jpeg_quality: tuple[int, int] = (70, 95)
    bit_depth: int = 8
    source_points: int = 7
    field_um: float = 8000.0  # positions are drawn within +- field_um of the slide centre

    def __post_init__(self) -> None:
        if self.slides < 1 or self.positions < 1:
            raise ValueError(f"slides and positions must be >= 1, got {self.slides} and {self.positions}")
        if self.frame_size < 224:
            raise ValueError(f"frame_size must be >= 224 (one tile), got {self.frame_size}")
        if not self.z_offsets_um and self.random_planes < 1:
            raise ValueError("nothing to render: give z offsets or random_planes > 0")
        if self.random_planes < 0:
            raise ValueError(f"random_planes must be >= 0, got {self.random_planes}")
        if self.random_planes and len(self.z_offsets_um) < 2:
            raise ValueError("random_planes draw within the z offsets' range: give at least two z offsets")
        if not 0 <= self.seed < 2**31 // SLIDE_SEED_STRIDE:
            raise ValueError(f"seed must be 0..{2**31 // SLIDE_SEED_STRIDE - 1}, got {self.seed}")
        if self.slides > SLIDE_SEED_STRIDE:
            raise ValueError(f"at most {SLIDE_SEED_STRIDE} slides per seed")
        unknown = [s for s in self.specimens if s not in SPECIMEN_KINDS]
        if unknown or not self.specimens:
            raise ValueError(f"specimens must be some of {', '.join(SPECIMEN_KINDS)}, got {list(self.specimens)}")
        if not self.objectives:
            raise ValueError("give at least one objective preset")
        for label in ("condenser_scale", "aberration_waves", "exposure_ms", "read_noise_e", "jpeg_quality"):
            lo, hi = getattr(self, label)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"{label} must be (low, high) with low <= high, got {(lo, hi)}")
        if not 0.0 <= self.jpeg_fraction <= 1.0:
            raise ValueError(f"jpeg_fraction must be in [0, 1], got {self.jpeg_fraction}")
        if self.jpeg_fraction > 0 and self.bit_depth != 8:
            raise ValueError("JPEG needs bit_depth 8; set jpeg_fraction to 0 for other bit depths")


@dataclass(frozen=True)
class SlideSpec:
    """One slide: a specimen, its seed, one optics variant and its XY positions (all drawn from the config)."""

    index: int
    name: str
    specimen: str
    slide_seed: int
    objective: str
    condenser_na: float
    spherical_aberration_waves: float
    exposure_ms: float
    read_noise_e: float
    jpeg_quality: int | None
    positions_um: tuple[tuple[float, float], ...]
    planes: tuple[tuple[tuple[str, float], ...], ...]  # per position: (key suffix, defocus_um)


def plan_slides(config: SynthConfig) -> list[SlideSpec]:
    """Every slide's settings, reproducible from ``config`` alone (a resumed run plans the same)."""
    from drivers.simulated import OBJECTIVES

    for name in config.objectives:
        if name not in OBJECTIVES:
            raise ValueError(f"unknown objective {name!r}; presets: {', '.join(OBJECTIVES)}")
    slides = []
    for i in range(config.slides):
        rng = np.random.default_rng([config.seed, i, 0x5917])
        specimen = config.specimens[i % len(config.specimens)]
        objective = config.objectives[int(rng.integers(len(config.objectives)))]
        preset = OBJECTIVES[objective]
        condenser = min(preset.condenser_na * float(rng.uniform(*config.condenser_scale)), 0.95 * preset.na)
        jpeg = None
        if rng.random() < config.jpeg_fraction:
            jpeg = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        positions = tuple(
            (round(float(x), 1), round(float(y), 1))
            for x, y in rng.uniform(-config.field_um, config.field_um, size=(config.positions, 2))
        )
        planes = []
        lo = min(config.z_offsets_um, default=0.0)
        hi = max(config.z_offsets_um, default=0.0)
        for _ in positions:
            grid = [(f"z{z:+08.3f}", float(z)) for z in config.z_offsets_um]
            extra = [(f"r{k:03d}", round(float(rng.uniform(lo, hi)), 4)) for k in range(config.random_planes)]
            planes.append(tuple(grid + extra))
        slide_seed = config.seed * SLIDE_SEED_STRIDE + i
        slides.append(
            SlideSpec(
                index=i,
                name=f"slide-{slide_seed:010d}-{specimen}",
                specimen=specimen,
                slide_seed=slide_seed,
                objective=objective,
                condenser_na=round(condenser, 4),
                spherical_aberration_waves=round(float(rng.uniform(*config.aberration_waves)), 4),
                exposure_ms=round(float(rng.uniform(*config.exposure_ms)), 3),
                read_noise_e=round(float(rng.uniform(*config.read_noise_e)), 3),
                jpeg_quality=jpeg,
                positions_um=positions,
                planes=tuple(planes),
            )
        )
    return slides


@dataclass
class SynthResult:
    out_dir: str
    slides: int
    planes_written: int
    planes_skipped: int
    datasets: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _render_slide(args: tuple[SlideSpec, SynthConfig, str, Any]) -> tuple[int, int]:
    """Render one slide into its dataset folder; returns (planes written, planes skipped).

    ``args[3]`` has ``put(n)`` (a queue, or the progress reporter itself in-process); it gets the
    number of planes rendered after each stack.
    """
    spec, config, out_dir, progress_queue = args
    from drivers.simulated import SimulatedMicroscope

    folder = Path(out_dir) / spec.name
    scope = SimulatedMicroscope(
        seed=spec.slide_seed,
        objective=spec.objective,
        specimen=spec.specimen,
        frame_shape=(config.frame_size, config.frame_size),
        bit_depth=config.bit_depth,
        jpeg_quality=spec.jpeg_quality,
        condenser_na=spec.condenser_na,
        spherical_aberration_waves=spec.spherical_aberration_waves,
        source_points=config.source_points,
        exposure_ms=spec.exposure_ms,
        read_noise_e=spec.read_noise_e,
        fft_workers=1,
    )
    source = {"synth": {k: v for k, v in asdict(spec).items() if k not in ("planes", "positions_um")}}
    source["synth"]["frame_size"] = config.frame_size
    source["synth"]["source_points"] = config.source_points
    source["simulator"] = scope.describe()
    writer = ZStackWriter(
        folder,
        z_reference="physical_focal_plane",
        objective=spec.objective,
        pixel_size_um=scope.objective.pixel_um,
        bit_depth=config.bit_depth,
        source=source,
        resume=(folder / MANIFEST_NAME).exists(),
        autocommit=False,
    )
    written = skipped = 0
    for p, ((x_um, y_um), planes) in enumerate(zip(spec.positions_um, spec.planes, strict=True)):
        stack = f"p{p:04d}"
        todo = [(f"{stack}/{suffix}", d) for suffix, d in planes if not writer.has_plane(f"{stack}/{suffix}")]
        skipped += len(planes) - len(todo)
        if not todo:
            continue
        if stack not in writer.stacks:
            writer.set_stack(stack, x_um=x_um, y_um=y_um, focus_z_um=0.0)
        for j, (key, defocus) in enumerate(todo):
            frame = scope.render_patch(
                x_um, y_um, defocus, config.frame_size, rng=np.random.default_rng([spec.slide_seed, p, j, 0x9015E])
            )
            writer.write_plane(
                frame,
                key=key,
                stack=stack,
                defocus_um=defocus,
                z_um=-defocus,
                x_um=x_um,
                y_um=y_um,
                exposure_ms=spec.exposure_ms,
            )
            written += 1
        writer.commit()  # one manifest rewrite per stack: an interruption loses at most one stack
        progress_queue.put(len(todo))
    writer.commit(complete=True)
    return written, skipped


def synthesize(
    out_dir: str | os.PathLike[str],
    config: SynthConfig,
    *,
    workers: int = 1,
    show_progress: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> SynthResult:
    """Render every slide of ``config`` into ``out_dir`` (one dataset per slide); resumes a partial run."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slides = plan_slides(config)
    for spec in slides:
        if (out / spec.name).exists() and not (out / spec.name / MANIFEST_NAME).exists():
            raise DatasetError(f"{out / spec.name} exists but holds no {MANIFEST_NAME}; remove it and run again")
    todo = [s for s in slides if not _complete(out / s.name)]
    total = sum(len(p) for s in todo for p in s.planes)
    skipped_slides = sum(len(p) for s in slides if s not in todo for p in s.planes)
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"synth {out.name}", unit="plane")
    written = skipped = 0
    done = 0

    def report(n: int) -> None:
        nonlocal done
        done += n
        if bar is not None:
            bar.update(n)
        if progress is not None:
            progress({"event": "planes", "planes_done": done, "planes_total": total})

    try:
        if workers == 1 or len(todo) <= 1:
            direct = SimpleNamespace(put=report)
            for spec in todo:
                w, s = _render_slide((spec, config, str(out), direct))
                written, skipped = written + w, skipped + s
        else:
            ctx = mp.get_context("spawn")
            with ctx.Manager() as manager:
                mq = manager.Queue()
                tasks = [(spec, config, str(out), mq) for spec in todo]
                with ctx.Pool(min(workers, len(tasks))) as pool:
                    pending = pool.imap_unordered(_render_slide, tasks)
                    finished = 0
                    while finished < len(tasks):
                        _drain(mq, report)
                        try:
                            w, s = pending.next(timeout=0.2)
                        except mp.TimeoutError:
                            continue
                        written, skipped, finished = written + w, skipped + s, finished + 1
                    _drain(mq, report)
    finally:
        if bar is not None:
            bar.close()
    result = SynthResult(
        out_dir=str(out),
        slides=len(slides),
        planes_written=written,
        planes_skipped=skipped + skipped_slides,
        datasets=[str(out / s.name) for s in slides],
    )
    if progress is not None:
        progress({"event": "done", **result.to_dict()})
    return result


def _drain(q: Any, report: Callable[[int], None]) -> None:
    while True:
        try:
            report(q.get_nowait())
        except queue.Empty:
            return


def _complete(folder: Path) -> bool:
    return (folder / MANIFEST_NAME).exists() and ZStackDataset(folder).complete


def summarize(datasets: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """Planes per specimen kind and objective across synth datasets (for the CLI's closing line)."""
    counts: dict[str, int] = {}
    for d in datasets:
        ds = ZStackDataset(d)
        kind = ds.source.get("synth", {}).get("specimen", "?")
        key = f"{kind} {ds.objective}"
        counts[key] = counts.get(key, 0) + len(ds)
    return counts
