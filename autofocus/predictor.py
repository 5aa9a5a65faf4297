"""Single-frame defocus prediction: tile the frame, drop blank tiles, run LDSE-NET, aggregate.

The pipeline follows section 3.1 of the LDSE-NET paper:

1. **Tiling.** ``models.tiles.tile_grid`` cuts the frame into full 224x224 tiles on a grid
   centred in the frame; the pixels left over are split evenly into margins that no tile
   covers (2592x1944 gives 11 x 8 = 88 tiles, margins of 64 px left/right and 76 px
   top/bottom).
2. **Discriminant.** ``models.tiles.blank_mask`` marks tiles that are mostly empty (the
   paper's discriminant); they are dropped because their estimates are unreliable.
3. **Inference.** The remaining tiles go through the network in one batch (torch or ONNX
   Runtime; both give the same numbers). Input is RGB float in [0, 1]; normalisation lives
   inside the model.
4. **Aggregation.** The paper averages the tile estimates (``aggregate="mean"``); ``"median"``
   and ``"trimmed"`` (mean of the tiles left after dropping ``trim_fraction`` of them at each
   end) are robust to a few wrong tiles. The default is ``"trimmed"`` (``autofocus.aggregation``):
   on the simulator's closed loop (120 paired trials, bundled model) one-shot + verify ended
   within 0.3 um in 35 % of trials with it, 37 % with the median and 27 % with the mean, and
   more than 1 um out in 19 %, 24 % and 24 % (``docs/autofocus.md``). A tile whose sign is wrong
   pulls the mean by twice its defocus; trimming drops it.

**Near-focus model.** A predictor may carry a second network trained on a narrow defocus range
(``meta["z_range_um"]`` of its checkpoint) and read within a window of it (``meta["near_window_um"]``,
written by ``autofocus evaluate --near-window``; without one, the whole training range: a network
reads the ends of its range poorly, so a model can be trained beyond the window it is read in).
When the first (wide-range) model's aggregate falls inside that window, the
same kept tiles go through the near model and its estimates replace the wide ones
(``Prediction.model == "near"``; ``wide_defocus_um`` keeps the wide reading). The near model
spreads less from field to field where the verify frame of a one-shot run lands (about 0..+2.5 um
with the recommended ``aim_um``), so the verify correction lands closer (``docs/autofocus.md``).
It costs a second inference on those frames only. A calibration (``autofocus.calibration``) is measured through the
predictor as configured, so it covers the switch between the two models.

**Near-model gate.** The wide model's reading only has to say whether the near model reads the
frame, so on a frame with more than ``near_gate_tiles`` (default 8) kept tiles the wide model
first reads that many of them spread evenly over the frame (every k-th kept tile in row-major
order). When their aggregate lies at least ``NEAR_GATE_MARGIN_UM`` (1 um) inside the near window
the near model reads every kept tile and ``wide_defocus_um`` is that gate aggregate; otherwise
(outside the window or near its edges) the wide model reads the remaining tiles and decides as
above. A frame near focus (a verify frame, every
focus-lock frame) then costs 8 + N tile inferences instead of 2N. Spread tiles, not the centre
ones: on 96 full frames near the window's edges (-3..-1 and +4.5..+7.5 um) the 16 spread tiles'
aggregate differed from all tiles' by sd 0.24 um, the 16 centre tiles' by 0.47 um (the centre of
stained tissue reads 0.5-0.65 um lower at +4.5..+7.5 um), so the two ways choose differently only
when the gate's tiles stray 1 um or more at a window edge. Eight tiles, not 16 (2026-11-28): on
328 full frames (4 fields each of cells and tissue, -10..+10 um in 0.5 um steps;
``benchmarks/bench_near_gate.py``) and 246 more on other fields, 8 spread tiles chose the model
the full reading chose on every frame (4 tiles: 20 frames otherwise), their aggregate 0.61-0.77 um
sd from the full one (16 tiles: 0.31-0.39 um), and they cost 6-8 ms instead of 16-17 ms.
``near_gate_tiles=None`` has the wide model read every tile.

**Far readings.** Far from focus the wide model's tiles saturate unevenly: on cells most flatten
near +8 um while some still follow the defocus, so the aggregate flattens early and scatters from
field to field. Where the wide model reads the frame and its aggregate lies beyond
+-``FAR_READING_UM`` (6 um), ``defocus_um`` is instead the ``far_quantile`` (default 0.75) of the
tile estimates on the reading's side (the 75th percentile for a positive reading, the 25th for a
negative one; ``autofocus.aggregation.far_reading``); ``wide_defocus_um`` keeps the aggregate.
Offline (12 fields per specimen, 1344x1120 frames, 0.5 um planes beyond +-6 um, curves from 6
fields) this put the defocus within 1 um on 69 % of cells frames beyond +6 um (trimmed mean:
56 %), 91 % beyond -6 um (89 %), and on 94 % / 97 % of tissue frames beyond +6 / -6 um (86 / 87 %).
In closed loop it narrowed the first moves from the far ends and bounded the worst run
(``docs/autofocus.md``, "Far readings"). ``far_quantile=None`` keeps the aggregate everywhere.
The region map keeps the aggregate.

**Far-defocus model.** A predictor may also carry a network trained on a range wider than the wide
model's (the bundled one: +-14 um), so that the +-10 um a one-shot run starts from is not the end
of its range, where a regression network's reading flattens. Where the wide model reads the frame
and its aggregate lies beyond +-``beyond_um`` (``meta["far_beyond_um"]`` of its checkpoint, default
``FAR_READING_UM``), the same kept tiles go through the far model and its estimates replace the wide
ones (``Prediction.model == "far"``); the far reading above then applies to its tiles. Its training
range must reach past that threshold on both sides. On the first frames of far cells it keeps a
slope where the wide reading is flat (``models/weights/README.md``, "Far-defocus model"), at the
cost of a second inference on those frames only.

``max_tiles`` (default ``None``: every tile, the paper's method) bounds the work per frame for
latency: tiles are examined in order of distance from the frame centre (the paper, section
4.3, finds the centre more accurate) in batches, until ``max_tiles`` non-blank tiles are found
or the frame is exhausted; tiles never examined have ``examined=False`` in ``tiles``. A budget
trades accuracy for speed: with 32 tiles ONNX Runtime reads a full frame near focus in 29-30 ms
(p95 31-33 ms; every tile: 54-57 ms; 2 threads, AMD EPYC), and with the previous near model one-shot + verify
ended within 0.3 um in 95.6 % of 500 simulated runs instead of 97.8 % with every tile (36 tiles:
95.2 %; 24 tiles: 92.8 %; ``docs/autofocus.md``).

**Threads.** ``threads`` (default 2 in ``from_checkpoint``) is the number of cores the predictor
uses: torch's intra-op threads or as many single-threaded ONNX Runtime sessions, each reading a
share of the batch (``_OnnxRuntime``), and as many shares of the tiles (at least
``MIN_TILES_PER_THREAD`` = 8 each) that are cut, put through the blank filter and scaled to float
on threads of their own (numpy and OpenCV release the GIL); each tile's answer is the one a
single thread gives (tested). These steps used one core while the other idled: on a full frame
near focus (2 cores, AMD EPYC) the blank filter took 12-15 ms instead of 24-27 and cutting and
scaling 5-6 ms instead of 9-12: 12-23 ms less a frame (``docs/autofocus.md``).

**Memory.** The kept tiles are scaled into one float batch, the near-model gate's tiles first
(``read_order``), whose memory the predictor keeps from frame to frame. Fresh batches and their
copies page-faulted on every frame: a process reading only 32-tile frames took 3,125 faults and
78-80 ms a frame before, none and 62-65 ms after. ``predict`` therefore runs one call at a time;
calls from other threads wait for it. The helper threads' own work arrays come from glibc arenas
that handed their memory back to the kernel after every frame (about 2,000 page faults, 10-14 ms
of a full frame); a predictor on more than one thread therefore has glibc keep freed memory
(``autofocus.heap.keep_freed_memory``, process-wide, as ``torch.set_num_threads`` is).

Confidence (in [0, 1]) combines how many tiles were usable and how well they agree::

    coverage  = min(1, (tiles_used / tiles_examined) / full_coverage_fraction)
    tolerance = spread_scale_um + spread_relative * |defocus_um|
    agreement = 1 / (1 + (spread_um / tolerance) ** 2)
    confidence = coverage * agreement            (0 when no tile was usable)

where ``defocus_um`` is the reported reading (the far reading beyond +-6 um, so far frames get a
little more tolerance), ``spread_um`` the standard deviation (ddof=0) of the used tiles' estimates and
``tiles_examined`` the number of tiles the discriminant looked at (all of them by default). The
tolerance grows with |defocus| because tiles disagree more far from focus while a large
estimate is still useful for a first move. The 3x3 region map (paper section 4.3) splits the
frame into 3 x 3 equal regions and aggregates the tiles whose centre lies in each one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from autofocus.aggregation import (
    AGGREGATES,
    DEFAULT_AGGREGATE,
    DEFAULT_FAR_QUANTILE,
    FAR_READING_UM,
    aggregate_estimates,
    check_far_quantile,
    far_reading,
)
from autofocus.brightness import mean_brightness
from autofocus.heap import keep_freed_memory
from models.errors import ModelInputError
from models.tiles import blank_mask, extract_tiles, tile_grid, to_unit_float

__all__ = [
    "DEFAULT_NEAR_GATE_TILES",
    "NEAR_GATE_MARGIN_UM",
    "RUNTIMES",
    "FarModel",
    "NearModel",
    "Prediction",
    "Predictor",
    "compute_confidence",
    "far_beyond_um",
    "in_near_window",
    "near_window_um",
    "resolve_far_model",
    "resolve_near_model",
]

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx")
Runtime = Literal["torch", "onnx"]
# The near-model gate (module docstring): the wide model first reads this many spread tiles, and
# their aggregate settles the choice when it lies this far inside the near model's window.
DEFAULT_NEAR_GATE_TILES = 8
NEAR_GATE_MARGIN_UM = 1.0
# Cutting, filtering and scaling the tiles run on the predictor's ``threads`` (module docstring,
# "Threads"), each share at least the blank filter's chunk of tiles.
MIN_TILES_PER_THREAD = 8

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


# --------------------------------------------------------------------------------------------
# confidence (a pure function, tested against an independent computation)
# --------------------------------------------------------------------------------------------
def compute_confidence(
    estimate_um: float,
    spread_um: float,
    tiles_used: int,
    tiles_total: int,
    *,
    full_coverage_fraction: float = 0.25,
    spread_scale_um: float = 1.0,
    spread_relative: float = 0.25,
) -> float:
    """The confidence formula of the module docstring; 0 when no tile was used."""
    if tiles_total <= 0 or tiles_used <= 0:
        return 0.0
    coverage = min(1.0, (tiles_used / tiles_total) / full_coverage_fraction)
    tolerance = spread_scale_um + spread_relative * abs(estimate_um)
    agreement = 1.0 / (1.0 + (spread_um / tolerance) ** 2)
    return float(coverage * agreement)


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------
@dataclass
class Prediction:
    """The predictor's answer for one frame. ``defocus_um`` is ``None`` when every tile was blank."""

    defocus_um: float | None
    confidence: float
    spread_um: float | None
    tiles_used: int
    tiles_total: int
    tiles: list[dict[str, Any]]
    region_map: list[list[float | None]]
    aggregate: str
    runtime: str
    frame_shape: tuple[int, int]
    timings_ms: dict[str, float] = field(default_factory=dict)
    tiles_examined: int | None = None  # tiles the discriminant looked at (< tiles_total only with max_tiles)
    model: str = "wide"  # "near" / "far" when the near-focus / far-defocus model's estimates replaced the wide ones
    # the wide model's aggregate that chose the model (with "near": possibly the gate tiles' only)
    wide_defocus_um: float | None = None
    # the frame's mean intensity, 0..1 of full scale (autofocus.brightness): a calibration over
    # several fields uses it to take out the part of a field's reading bias that follows it
    brightness: float | None = None

    @property
    def is_blank(self) -> bool:
        """True when no tile survived the blank filter."""
        return self.tiles_used == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: plain floats, ints, lists and ``None``."""
        return {
            "defocus_um": self.defocus_um,
            "confidence": self.confidence,
            "spread_um": self.spread_um,
            "tiles_used": self.tiles_used,
            "tiles_total": self.tiles_total,
            "tiles": [dict(t) for t in self.tiles],
            "region_map": [list(r) for r in self.region_map],
            "aggregate": self.aggregate,
            "runtime": self.runtime,
            "frame_shape": list(self.frame_shape),
            "timings_ms": dict(self.timings_ms),
            "tiles_examined": self.tiles_examined,
            "model": self.model,
            "wide_defocus_um": self.wide_defocus_um,
            "brightness": self.brightness,
        }


# --------------------------------------------------------------------------------------------
# runtimes
# --------------------------------------------------------------------------------------------
class _TorchRuntime:
    """Runs the checkpoint's module on CPU: channels_last, inference mode."""

    name = "torch"

    def __init__(self, model: Any, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)  # process-wide in torch; the predictor owns inference here
        self._torch = torch
        self._model = model.eval().to(memory_format=torch.channels_last)

    def run(self, batch_nhwc: np.ndarray) -> np.ndarray:
        torch = self._torch
        # NHWC memory viewed as NCHW is exactly channels_last: no copy.
        x = torch.from_numpy(batch_nhwc).permute(0, 3, 1, 2)
        with torch.inference_mode():
            out = self._model(x)
        return out.reshape(-1).to(torch.float32).numpy().copy()


class _OnnxRuntime:
    """Runs an exported ``.onnx`` with ONNX Runtime on CPU: one single-threaded session per thread,
    each reading a contiguous share of the batch on a thread of its own.

    One session with ``threads`` intra-op threads splits every operator of these small networks
    across the cores and waits for both at each of them; sessions side by side on halves of the
    batch keep each core busy with whole tiles. Same numbers, bit for bit (a tile's result does not
    depend on its batch); on 2 cores (AMD EPYC, 2026-11-28) the near model's 80 tiles took 28 ms
    instead of 31-37 ms, the gate's 8 wide tiles 5.8 ms instead of 6.8 ms, 80 wide tiles 75 ms
    instead of 86 ms. With no intra-op thread pool, no worker spins between runs to take a core
    from the blank filter or the other model's session (the reason an earlier version turned
    spinning off).

    The file takes NCHW batches (``models.export``); the predictor's tiles are NHWC. Rather than
    transposing every batch in numpy (13 ms for a full frame's 80 float tiles, on one core), each
    session is built from the file's graph with a Transpose in front of it (``nhwc_input``): the
    near model's 80 tiles took about 8 % less time.
    """

    name = "onnx"

    def __init__(self, onnx_path: Path, threads: int) -> None:
        import onnx
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        graph = nhwc_input(onnx.load(str(onnx_path))).SerializeToString()
        self._sessions = [
            ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"]) for _ in range(threads)
        ]
        self._input = self._sessions[0].get_inputs()[0].name
        self.path = onnx_path

    def run(self, batch_nhwc: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch_nhwc, dtype=np.float32)
        if len(batch) == 0:
            return np.empty(0, dtype=np.float32)
        shares = _split(len(batch), min(len(self._sessions), len(batch)))

        def run_share(k: int) -> np.ndarray:
            lo, hi = shares[k]
            (out,) = self._sessions[k].run(None, {self._input: batch[lo:hi]})
            return np.asarray(out, dtype=np.float32).reshape(-1)

        return np.concatenate(_map_on_threads(run_share, list(range(len(shares)))))


def nhwc_input(model: Any) -> Any:
    """``model`` (an ``onnx.ModelProto`` taking one NCHW input) changed in place to take NHWC:
    a Transpose node from a new input ``<name>_nhwc`` feeds the old input. Returned for chaining."""
    from onnx import TensorProto, helper

    graph = model.graph
    if len(graph.input) != 1:
        raise ModelInputError(f"expected an ONNX model with one input, got {len(graph.input)}")
    old = graph.input[0]
    dims = [d.dim_param or d.dim_value for d in old.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ModelInputError(f"expected an N x C x H x W input, got {old.name} with shape {dims}")
    new = helper.make_tensor_value_info(f"{old.name}_nhwc", TensorProto.FLOAT, [dims[0], dims[2], dims[3], dims[1]])
    graph.node.insert(0, helper.make_node("Transpose", [new.name], [old.name], perm=[0, 3, 1, 2]))
    graph.input.remove(old)
    graph.input.insert(0, new)
    return model


@dataclass(frozen=True)
class FarModel:
    """The far-defocus network: read when the wide model's aggregate lies beyond +-``beyond_um``."""

    runtime: _TorchRuntime | _OnnxRuntime
    beyond_um: float
    source: str


def far_beyond_um(meta: dict[str, Any], where: str) -> float:
    """Beyond which |wide reading| the predictor reads a far-defocus checkpoint: ``meta["far_beyond_um"]``
    when it records one, else ``FAR_READING_UM``; its training range ``meta["z_range_um"]`` must reach
    past it on both sides (the frames it reads lie there), else ValueError."""
    lo, hi = _window(meta, "z_range_um", "its training range", where, "far-defocus")
    beyond = meta.get("far_beyond_um", FAR_READING_UM)
    if isinstance(beyond, bool) or not isinstance(beyond, int | float) or not beyond > 0:
        raise ValueError(f"{where}: meta['far_beyond_um'] must be a positive number (um), got {beyond!r}")
    if not (lo < -beyond and hi > beyond):
        raise ValueError(
            f"{where}: a far-defocus model is read beyond +-{beyond:g} um, so its training range "
            f"meta['z_range_um'] must reach past both, got [{lo:g}, {hi:g}]"
        )
    return float(beyond)


@dataclass(frozen=True)
class NearModel:
    """The near-focus network: read when the wide model's aggregate lies in ``window_um``."""

    runtime: _TorchRuntime | _OnnxRuntime
    window_um: tuple[float, float]
    source: str


def near_window_um(meta: dict[str, Any], where: str) -> tuple[float, float]:
    """The defocus range in which the predictor reads a near-focus checkpoint: ``meta["near_window_um"]``
    when the checkpoint records one (it must lie within the training range), else its training range
    ``meta["z_range_um"]`` (module docstring, "Near-focus model")."""
    lo, hi = _window(meta, "z_range_um", "its training range", where)
    if meta.get("near_window_um") is None:
        return lo, hi
    read_lo, read_hi = _window(meta, "near_window_um", "where the predictor reads it", where)
    if read_lo < lo or read_hi > hi:  # _window already checked read_lo < read_hi
        raise ValueError(
            f"{where}: meta['near_window_um'] = [{read_lo:g}, {read_hi:g}] must lie within the training range "
            f"meta['z_range_um'] = [{lo:g}, {hi:g}]"
        )
    return read_lo, read_hi


def _window(meta: dict[str, Any], key: str, what: str, where: str, kind: str = "near-focus") -> tuple[float, float]:
    """``meta[key]`` as ``(lo, hi)`` with ``lo < hi``; ValueError naming the key otherwise."""
    window = meta.get(key)
    if not (
        isinstance(window, list | tuple)
        and len(window) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in window)
    ):
        raise ValueError(f"{where}: a {kind} model needs meta['{key}'] = [lo, hi] ({what}), got {window!r}")
    lo, hi = float(window[0]), float(window[1])
    if not lo < hi:
        raise ValueError(f"{where}: meta['{key}'] must have lo < hi, got {window!r}")
    return lo, hi


NEAR_MODEL_CHOICES = "'auto' (the bundled near-focus model with the bundled model, else none), 'none', or a path"
FAR_MODEL_CHOICES = "'auto' (the bundled far-defocus model with the bundled model, else none), 'none', or a path"


def resolve_near_model(choice: str | os.PathLike[str], model: str | os.PathLike[str] | None) -> Path | None:
    """The near-focus model file that ``choice`` names for the wide ``model`` (None: the bundled one).

    ``"auto"``: the bundled near-focus model when ``model`` is the bundled one, else none (a
    near model is trained to match its wide model); ``"none"``: none; anything else: a path.
    """
    from models.checkpoint import bundled_near_checkpoint_path

    return _resolve_companion(choice, model, bundled_near_checkpoint_path(), "near model", NEAR_MODEL_CHOICES)


def resolve_far_model(choice: str | os.PathLike[str], model: str | os.PathLike[str] | None) -> Path | None:
    """The far-defocus model file that ``choice`` names for the wide ``model``, as ``resolve_near_model``."""
    from models.checkpoint import bundled_far_checkpoint_path

    return _resolve_companion(choice, model, bundled_far_checkpoint_path(), "far model", FAR_MODEL_CHOICES)


def _resolve_companion(
    choice: str | os.PathLike[str], model: str | os.PathLike[str] | None, bundled: Path, what: str, choices: str
) -> Path | None:
    text = os.fspath(choice)
    if text == "none":
        return None
    if text == "auto":
        return bundled if model is None or os.fspath(model) == "" else None
    if not text.strip():
        raise ValueError(f"{what} must be {choices}, got an empty string")
    return Path(text)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_cache_dir() -> Path:
    """Where exported ONNX files are cached: ``$AUTOFOCUS_CACHE_DIR`` or ``<tmp>/ldse-autofocus-onnx``."""
    base = os.environ.get("AUTOFOCUS_CACHE_DIR")
    return Path(base) if base else Path(tempfile.gettempdir()) / "ldse-autofocus-onnx"


def onnx_cache_path(cache: Path, ckpt_path: Path, model: Any) -> Path:
    """Cache file for a checkpoint's ONNX export, keyed by the checkpoint's bytes *and* the model's code.

    The same weights can mean another function after a code change (e.g. a constant in the
    network's head), so the key hashes the source of the model's module and of the exporter too.
    """
    import inspect

    import models.export

    digest = hashlib.sha256(_file_sha256(ckpt_path).encode())
    for module in (inspect.getmodule(type(model)), models.export):
        if module is not None:
            digest.update(inspect.getsource(module).encode())
    return cache / f"{ckpt_path.stem}-{digest.hexdigest()[:16]}.onnx"


def _read_onnx_meta(onnx_path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == "ldse_meta":
            return dict(json.loads(prop.value))
    raise ModelInputError(f"{onnx_path}: no 'ldse_meta' metadata; export it with models.export.export_onnx")


# --------------------------------------------------------------------------------------------
# predictor
# --------------------------------------------------------------------------------------------
def _load_runtime(
    path: Path, runtime: str, threads: int, cache_dir: str | os.PathLike[str] | None
) -> tuple[_TorchRuntime | _OnnxRuntime, dict[str, Any]]:
    """A checkpoint (``.pt``) or exported model (``.onnx``) ready to run, and its meta."""
    from models.checkpoint import load_checkpoint

    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix == ".onnx":
        if runtime != "onnx":
            raise ValueError(f"{path} is an ONNX file: use runtime='onnx'")
        return _OnnxRuntime(path, threads), _read_onnx_meta(path)
    ckpt = load_checkpoint(path)
    meta = dict(ckpt.meta)
    if runtime == "torch":
        return _TorchRuntime(ckpt.model, threads), meta
    from models.export import ExportError, export_onnx, verify_onnx

    cache = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    onnx_path = onnx_cache_path(cache, path, ckpt.model)
    if onnx_path.is_file():
        try:  # a cache entry that disagrees with torch (stale or corrupt) is exported again
            verify_onnx(ckpt, onnx_path, batch_sizes=(1,))
        except (ExportError, OSError, ValueError, RuntimeError) as exc:
            log.warning("cached ONNX %s disagrees with the checkpoint (%s); exporting again", onnx_path, exc)
            onnx_path.unlink()
    if not onnx_path.is_file():
        _remove_abandoned_exports(cache)
        tmp = onnx_path.with_name(f"{onnx_path.stem}.{os.getpid()}.tmp.onnx")
        export_onnx(ckpt, tmp)
        os.replace(tmp, onnx_path)  # atomic: concurrent exporters never see a half file
    return _OnnxRuntime(onnx_path, threads), meta


ABANDONED_EXPORT_AGE_S = 3600.0  # an export takes seconds; a temporary file this old was left by a killed process


# what an export into the cache writes before its rename: <checkpoint>-<16 hex>.<pid>.tmp.onnx (+ ".tmp")
_EXPORT_TEMP_NAME = re.compile(r"-[0-9a-f]{16}\.\d+\.tmp\.onnx(\.tmp)?$")


def _remove_abandoned_exports(cache: Path) -> None:
    """Delete the temporary files of exports into ``cache`` that killed processes left behind.

    Only names of the cache's own scheme that are older than ``ABANDONED_EXPORT_AGE_S`` go, so an
    export running in another process keeps its file (and a shared directory keeps others' files);
    a file that cannot be deleted is logged and the export goes on.
    """
    removed: list[Path] = []
    now = time.time()
    for tmp in cache.glob("*.tmp.onnx*"):
        if not _EXPORT_TEMP_NAME.search(tmp.name):
            continue
        try:
            if now - tmp.stat().st_mtime > ABANDONED_EXPORT_AGE_S:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:  # another process removed it first
            continue
        except OSError as exc:  # e.g. another user's file in a shared cache: the export goes on regardless
            log.warning("could not remove the abandoned ONNX export %s: %s", tmp, exc)
    if removed:
        log.info("removed %d abandoned ONNX export file(s) from %s", len(removed), cache)


class Predictor:
    """Frame -> ``Prediction``. Build it with ``Predictor.from_checkpoint``."""

    def __init__(
        self,
        runtime: _TorchRuntime | _OnnxRuntime,
        meta: dict[str, Any],
        *,
        aggregate: str = DEFAULT_AGGREGATE,
        trim_fraction: float = 0.2,
        full_coverage_fraction: float = 0.25,
        spread_scale_um: float = 1.0,
        spread_relative: float = 0.25,
        max_tiles: int | None = None,
        source: str = "",
        near: NearModel | None = None,
        near_gate_tiles: int | None = DEFAULT_NEAR_GATE_TILES,
        far_quantile: float | None = DEFAULT_FAR_QUANTILE,
        far: FarModel | None = None,
        threads: int = 1,
    ) -> None:
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction!r}")
        if not 0.0 < full_coverage_fraction <= 1.0:
            raise ValueError(f"full_coverage_fraction must be in (0, 1], got {full_coverage_fraction!r}")
        if not spread_scale_um > 0 or not spread_relative >= 0:
            raise ValueError("spread_scale_um must be > 0 and spread_relative >= 0")
        if max_tiles is not None and (isinstance(max_tiles, bool) or not isinstance(max_tiles, int) or max_tiles < 1):
            raise ValueError(f"max_tiles must be None (all tiles) or an integer >= 1, got {max_tiles!r}")
        if near_gate_tiles is not None and (
            isinstance(near_gate_tiles, bool) or not isinstance(near_gate_tiles, int) or near_gate_tiles < 2
        ):
            raise ValueError(
                f"near_gate_tiles must be None (the wide model reads every tile) or an integer >= 2, "
                f"got {near_gate_tiles!r}"
            )
        if far_quantile is not None:
            check_far_quantile(far_quantile)
        _check_threads(threads)
        if threads > 1:
            keep_freed_memory()  # helper threads' arenas would hand each frame's memory back (``autofocus.heap``)
        self._runtime = runtime
        self.threads = threads
        self.meta = dict(meta)
        self.patch_size = int(self.meta.get("patch_size", 224))
        self.aggregate = aggregate
        self.trim_fraction = float(trim_fraction)
        self.full_coverage_fraction = float(full_coverage_fraction)
        self.spread_scale_um = float(spread_scale_um)
        self.spread_relative = float(spread_relative)
        self.max_tiles = max_tiles
        self.source = source
        self.near = near
        self.near_gate_tiles = near_gate_tiles
        self.far_quantile = far_quantile
        self.far = far
        # the float batch's memory, kept from frame to frame; predict holds the lock while it is used
        self._lock = threading.Lock()
        self._batch_memory = np.empty(0, dtype=np.float32)

    @property
    def runtime(self) -> str:
        return self._runtime.name

    @property
    def description(self) -> str:
        """The model file(s) read: what a calibration records as its ``source``."""
        parts = [self.source]
        if self.near is not None:
            parts.append(f"near-focus {self.near.source}")
        if self.far is not None:
            parts.append(f"far-defocus {self.far.source}")
        return " + ".join(parts)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str] | None = None,
        runtime: str = "torch",
        threads: int = 2,
        aggregate: str = DEFAULT_AGGREGATE,
        *,
        trim_fraction: float = 0.2,
        full_coverage_fraction: float = 0.25,
        spread_scale_um: float = 1.0,
        spread_relative: float = 0.25,
        max_tiles: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        near_model: str | os.PathLike[str] | None = None,
        near_gate_tiles: int | None = DEFAULT_NEAR_GATE_TILES,
        far_quantile: float | None = DEFAULT_FAR_QUANTILE,
        far_model: str | os.PathLike[str] | None = None,
    ) -> Predictor:
        """Load a checkpoint (``None``: the bundled one) or a shipped ``.onnx`` for ``runtime``.

        ``near_model``: a near-focus checkpoint or ``.onnx`` (module docstring) loaded the same
        way, or ``"auto"``/``"none"`` (``resolve_near_model``, against ``path``); None: none.
        ``far_model``: the same for the far-defocus model (``resolve_far_model``).
        For ``runtime="onnx"`` and a ``.pt`` checkpoint, the ONNX file is exported once with
        ``models.export.export_onnx`` and cached under ``cache_dir`` (default
        ``onnx_cache_dir()``), keyed by the checkpoint's SHA-256 and the model code
        (``onnx_cache_path``); a cached file is checked against torch on load and exported
        again if it disagrees.
        """
        from models.checkpoint import bundled_checkpoint_path

        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        _check_threads(threads)  # before any model is loaded
        ckpt_path = Path(path) if path is not None else Path(bundled_checkpoint_path())
        run, meta = _load_runtime(ckpt_path, runtime, threads, cache_dir)
        near: NearModel | None = None
        near_path = resolve_near_model(near_model, path) if near_model is not None else None
        if near_path is not None:
            near_run, near_meta = _load_companion(near_path, "near model", runtime, threads, cache_dir, meta, ckpt_path)
            near = NearModel(near_run, near_window_um(near_meta, str(near_path)), str(near_path))
        far: FarModel | None = None
        far_path = resolve_far_model(far_model, path) if far_model is not None else None
        if far_path is not None:
            far_run, far_meta = _load_companion(far_path, "far model", runtime, threads, cache_dir, meta, ckpt_path)
            far = FarModel(far_run, far_beyond_um(far_meta, str(far_path)), str(far_path))
        return cls(
            run,
            meta,
            source=str(ckpt_path),
            near=near,
            aggregate=aggregate,
            trim_fraction=trim_fraction,
            full_coverage_fraction=full_coverage_fraction,
            spread_scale_um=spread_scale_um,
            spread_relative=spread_relative,
            max_tiles=max_tiles,
            near_gate_tiles=near_gate_tiles,
            far_quantile=far_quantile,
            far=far,
            threads=threads,
        )

    # -- input -----------------------------------------------------------------------------
    def _check_frame(self, frame: np.ndarray) -> np.ndarray:
        """Validate a frame; mono (``HxW`` or ``HxWx1``) is replicated to ``HxWx3``."""
        if not isinstance(frame, np.ndarray):
            raise ModelInputError(f"frame must be a numpy array, got {type(frame).__name__}")
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[:, :, 0]
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ModelInputError(f"frame must be HxW (mono) or HxWx3 (RGB), got shape {frame.shape}")
        h, w = frame.shape[:2]
        if h < self.patch_size or w < self.patch_size:
            raise ModelInputError(
                f"frame is {w}x{h} px; the predictor needs at least {self.patch_size}x{self.patch_size}"
            )
        if frame.dtype not in (np.uint8, np.uint16):
            raise ModelInputError(f"frame dtype must be uint8 or uint16, got {frame.dtype}")
        return frame

    # -- prediction ------------------------------------------------------------------------
    def predict(self, frame: np.ndarray, bit_depth: int | None = None) -> Prediction:
        """Estimate the signed defocus (um) of ``frame`` (``HxWx3``/``HxW``, uint8/uint16, >= 224x224).

        ``bit_depth`` gives the significant bits of a ``uint16`` frame (default 16). Calls from
        several threads run one at a time (they would share the cores anyway).
        """
        with self._lock:
            return self._predict(frame, bit_depth)

    def _predict(self, frame: np.ndarray, bit_depth: int | None) -> Prediction:
        t0 = time.perf_counter()
        frame = self._check_frame(frame)
        h, w = frame.shape[:2]
        tiles = tile_grid(h, w, size=self.patch_size)
        n = len(tiles)
        # None: not examined (only with max_tiles); True/False: the discriminant's answer.
        blank: list[bool | None] = [None] * n
        estimates = np.full(n, np.nan, dtype=np.float64)
        if self.max_tiles is None or self.max_tiles >= n:
            order = list(range(n))
            batch_size = n
        else:
            cy, cx = h / 2.0, w / 2.0
            order = sorted(
                range(n),
                key=lambda i: (tiles[i].y0 + tiles[i].size / 2 - cy) ** 2 + (tiles[i].x0 + tiles[i].size / 2 - cx) ** 2,
            )
            batch_size = self.max_tiles
        t_blank = 0.0
        kept: list[int] = []  # tile indices, in the order examined
        kept_tiles: list[np.ndarray] = []  # their integer pixels (views into each cut)
        position = 0
        while position < n and len(kept) < (self.max_tiles or n):
            chosen = order[position : position + max(1, batch_size - len(kept))]
            position += len(chosen)
            # Cut the integer tiles and filter them, a share of them on each thread; only the kept
            # ones are scaled to float, below.
            parts = self._share(len(chosen))
            cut_tiles = [[tiles[i] for i in chosen[lo:hi]] for lo, hi in parts]
            cuts = _map_on_threads(lambda share: extract_tiles(frame, share), cut_tiles)
            tb = time.perf_counter()
            masks = _map_on_threads(lambda cut: np.asarray(blank_mask(cut, bit_depth), dtype=bool).reshape(-1), cuts)
            t_blank += time.perf_counter() - tb
            for (lo, hi), cut, mask in zip(parts, cuts, masks, strict=True):
                for j, i in enumerate(chosen[lo:hi]):
                    blank[i] = bool(mask[j])
                    if not mask[j]:
                        kept.append(i)
                        kept_tiles.append(cut[j])
        examined = sum(b is not None for b in blank)
        used = np.asarray(sorted(kept), dtype=np.int64)
        wide_defocus: float | None = None
        model = "wide"
        t_near = t_far = 0.0
        if kept:
            # One float batch, the near-model gate's tiles first: the gate and the rest of the
            # wide reading are slices of it, and no batch is copied or concatenated again.
            gate = self._gate_size(len(kept))
            examined_order = np.asarray(kept, dtype=np.int64)
            rows = read_order(examined_order, gate)
            batch = self._float_batch(len(kept), kept_tiles[0].shape)

            def scale(r: tuple[int, int]) -> None:
                for row in range(*r):
                    to_unit_float(kept_tiles[rows[row]], bit_depth, out=batch[row])

            _map_on_threads(scale, self._share(len(rows)))
            kept_index = examined_order[rows]
            t2 = time.perf_counter()
            wide_defocus, wide_estimates = self._read_wide(batch, gate)
            if wide_estimates is not None:
                estimates[kept_index] = wide_estimates
            if self.near is not None and (wide_estimates is None or self._near_reads(wide_defocus)):
                tn = time.perf_counter()
                estimates[kept_index] = self.near.runtime.run(batch)
                t_near = time.perf_counter() - tn
                model = "near"
            elif self.far is not None and wide_estimates is not None and abs(wide_defocus) > self.far.beyond_um:
                tf = time.perf_counter()
                estimates[kept_index] = self.far.runtime.run(batch)
                t_far = time.perf_counter() - tf
                model = "far"
        else:
            t2 = time.perf_counter()
        t3 = time.perf_counter()

        if used.size:
            values = estimates[used]
            defocus: float | None = aggregate_estimates(values, self.aggregate, self.trim_fraction)
            if model != "near" and self.far_quantile is not None:
                defocus = far_reading(values, defocus, self.far_quantile)
            spread: float | None = float(values.std())
            confidence = compute_confidence(
                defocus,
                spread,
                int(used.size),
                examined,
                full_coverage_fraction=self.full_coverage_fraction,
                spread_scale_um=self.spread_scale_um,
                spread_relative=self.spread_relative,
            )
        else:
            defocus, spread, confidence = None, None, 0.0

        tile_dicts: list[dict[str, Any]] = []
        region_values: list[list[list[float]]] = [[[] for _ in range(3)] for _ in range(3)]
        for i, t in enumerate(tiles):
            value = float(estimates[i]) if blank[i] is False else None
            tile_dicts.append(
                {
                    "row": t.row,
                    "col": t.col,
                    "y0": t.y0,
                    "x0": t.x0,
                    "size": t.size,
                    "defocus_um": value,
                    "blank": bool(blank[i]),
                    "examined": blank[i] is not None,
                }
            )
            if value is not None:
                r, c = region_of(t.y0 + t.size / 2.0, t.x0 + t.size / 2.0, h, w)
                region_values[r][c].append(value)
        region_map: list[list[float | None]] = [
            [
                aggregate_estimates(np.asarray(cell), self.aggregate, self.trim_fraction) if cell else None
                for cell in row
            ]
            for row in region_values
        ]
        t4 = time.perf_counter()
        frame_brightness = mean_brightness(frame, bit_depth)
        t5 = time.perf_counter()
        return Prediction(
            defocus_um=defocus,
            confidence=confidence,
            spread_um=spread,
            tiles_used=int(used.size),
            tiles_total=len(tiles),
            tiles=tile_dicts,
            region_map=region_map,
            aggregate=self.aggregate,
            runtime=self.runtime,
            frame_shape=(h, w),
            tiles_examined=examined,
            model=model,
            wide_defocus_um=wide_defocus,
            brightness=frame_brightness,
            timings_ms={
                "tiling": (t2 - t0 - t_blank) * 1e3,
                "blank_filter": t_blank * 1e3,
                "inference": (t3 - t2 - t_near - t_far) * 1e3,
                "near_inference": t_near * 1e3,
                "far_inference": t_far * 1e3,
                "aggregation": (t4 - t3) * 1e3,
                "brightness": (t5 - t4) * 1e3,
                "total": (t5 - t0) * 1e3,
            },
        )

    def _share(self, n: int) -> list[tuple[int, int]]:
        """``n`` tiles split into contiguous ``(lo, hi)`` shares, one per thread of the predictor
        (``threads``), none smaller than ``MIN_TILES_PER_THREAD`` unless there is only one."""
        return _split(n, max(1, min(self.threads, n // MIN_TILES_PER_THREAD)))

    def _near_reads(self, wide_defocus_um: float, margin_um: float = 0.0) -> bool:
        """True when a near model is loaded and the wide reading lies ``margin_um`` inside its window."""
        return self.near is not None and in_near_window(self.near.window_um, wide_defocus_um, margin_um)

    def _float_batch(self, n: int, tile_shape: tuple[int, ...]) -> np.ndarray:
        """An ``n x tile_shape`` float32 batch in memory kept from frame to frame (under the lock):
        a fresh array for a full frame's 80 tiles (48 MB) cost 3-5 ms of page faults per frame. The
        memory grows to the largest batch seen; the runtimes return new arrays, never a view of it."""
        size = n * math.prod(tile_shape)
        if self._batch_memory.size < size:
            self._batch_memory = np.empty(size, dtype=np.float32)
        return self._batch_memory[:size].reshape(n, *tile_shape)

    def _gate_size(self, kept: int) -> int:
        """How many of ``kept`` tiles the near-model gate reads first; 0 when there is no gate
        (no near model, ``near_gate_tiles=None``, or no more tiles kept than the gate reads)."""
        gate = self.near_gate_tiles
        return 0 if self.near is None or gate is None or gate >= kept else gate

    def _read_wide(self, batch: np.ndarray, gate: int) -> tuple[float, np.ndarray | None]:
        """The wide model's aggregate over the kept tiles (``batch``, the gate's ``gate`` tiles
        first: ``read_order``) and its tile estimates in batch order; ``None`` for the estimates
        when the gate chose the near model.

        With a gate, the wide model first reads ``batch[:gate]``: tiles spread evenly over the kept
        tiles in row-major order. When their aggregate lies at least ``NEAR_GATE_MARGIN_UM`` inside
        the near window, the near model will read the frame: that aggregate is returned with
        ``None``. Otherwise the wide model reads the other kept tiles too and the aggregate of all
        of them decides.
        """
        if gate == 0:
            wide = self._runtime.run(batch)
            return aggregate_estimates(wide, self.aggregate, self.trim_fraction), wide
        gate_estimates = self._runtime.run(batch[:gate])
        gate_defocus = aggregate_estimates(gate_estimates, self.aggregate, self.trim_fraction)
        if self._near_reads(gate_defocus, NEAR_GATE_MARGIN_UM):
            return gate_defocus, None
        wide = np.concatenate([gate_estimates, self._runtime.run(batch[gate:])]).astype(np.float64)
        return aggregate_estimates(wide, self.aggregate, self.trim_fraction), wide


def in_near_window(window_um: tuple[float, float], reading_um: float, margin_um: float = 0.0) -> bool:
    """True when ``reading_um`` lies at least ``margin_um`` inside the near window ``(lo, hi)``."""
    lo, hi = window_um
    return lo + margin_um <= reading_um <= hi - margin_um


def _load_companion(
    path: Path,
    what: str,
    runtime: str,
    threads: int,
    cache_dir: str | os.PathLike[str] | None,
    meta: dict[str, Any],
    ckpt_path: Path,
) -> tuple[_TorchRuntime | _OnnxRuntime, dict[str, Any]]:
    """Load a near or far model (``what``) beside the wide model of ``ckpt_path`` (whose ``meta`` is
    given); it must read frames as the wide model does (tile size, pixel size, z = 0)."""
    run, companion_meta = _load_runtime(path, runtime, threads, cache_dir)
    for key in ("patch_size", "pixel_size_um", "z_reference"):
        if companion_meta.get(key) != meta.get(key):
            raise ValueError(
                f"{what} {path} has {key}={companion_meta.get(key)!r} but {ckpt_path} has "
                f"{meta.get(key)!r}: both models must read the same frames the same way"
            )
    return run, companion_meta


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    """``0..n`` cut into ``parts`` contiguous ``(lo, hi)`` shares whose sizes differ by at most one."""
    bounds = [round(k * n / parts) for k in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def _check_threads(threads: object) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")


def _map_on_threads(fn: Callable[[_Item], _Result], items: list[_Item]) -> list[_Result]:
    """``[fn(item) for item in items]``, the first on this thread and each other on a thread
    of its own (numpy and OpenCV release the GIL). The first error is raised once all are done."""
    results: list[Any] = [None] * len(items)
    errors: list[BaseException | None] = [None] * len(items)

    def work(k: int) -> None:
        try:
            results[k] = fn(items[k])
        except BaseException as exc:  # handed to the calling thread below
            errors[k] = exc

    helpers = [threading.Thread(target=work, args=(k,), name="predictor-share") for k in range(1, len(items))]
    for helper in helpers:
        helper.start()
    work(0)
    for helper in helpers:
        helper.join()
    for exc in errors:
        if exc is not None:
            raise exc
    return results


def read_order(kept_index: np.ndarray, gate: int) -> np.ndarray:
    """Positions into ``kept_index`` (tile indices of the kept tiles, in the order examined): the
    gate's ``gate`` tiles first, spread evenly over the kept tiles in row-major order
    (``gate_positions``; with ``max_tiles`` the tiles are examined centre first, so they are spread
    by tile index), then the others in the order examined. ``gate=0``: the order examined."""
    if gate == 0:
        return np.arange(kept_index.size)
    first = np.argsort(kept_index, kind="stable")[gate_positions(kept_index.size, gate)]
    rest = np.setdiff1d(np.arange(kept_index.size), first, assume_unique=True)
    return np.concatenate([first, rest])


def gate_positions(kept: int, gate: int) -> np.ndarray:
    """``gate`` positions spread evenly over ``0..kept-1``, the first and the last included
    (``2 <= gate <= kept``)."""
    if not 2 <= gate <= kept:
        raise ValueError(f"gate_positions needs 2 <= gate <= kept, got gate={gate}, kept={kept}")
    return np.linspace(0, kept - 1, gate).round().astype(np.int64)


def region_of(y_px: float, x_px: float, height: int, width: int) -> tuple[int, int]:
    """The (row, col) of the 3x3 region of a ``height x width`` frame that holds pixel (y, x)."""
    r = min(2, int(3.0 * y_px / height))
    c = min(2, int(3.0 * x_px / width))
    return r, c
