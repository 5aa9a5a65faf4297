"""Far-defocus model: the predictor reads it where the wide model places a frame beyond +-N um.

Expected values are recomputed here from the networks and numpy, independently of
``autofocus.predictor``. A far model is read beyond its checkpoint's ``meta["far_beyond_um"]``
(default ``FAR_READING_UM``); the tests write copies of the bundled near-focus network (weights
unlike the wide model's, so a swap shows) with chosen thresholds and training ranges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autofocus.aggregation import (
    DEFAULT_AGGREGATE,
    DEFAULT_FAR_QUANTILE,
    FAR_READING_UM,
    aggregate_estimates,
    far_reading,
)
from autofocus.predictor import Predictor, resolve_far_model
from models.checkpoint import (
    bundled_checkpoint_path,
    bundled_far_checkpoint_path,
    bundled_near_checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from tests.test_near_model import near_copy
from tests.test_predictor import busy_image, net_on


def far_copy(tmp_path: Path, beyond_um: object | None, name: str = "far.pt", **meta: object) -> Path:
    """The bundled near-focus network saved as a far model read beyond ``beyond_um`` (None: no
    ``far_beyond_um``, the default), trained (``z_range_um``) on +-(beyond + 5) um unless ``meta``
    says otherwise."""
    ckpt = load_checkpoint(bundled_near_checkpoint_path())
    kept = {k: v for k, v in ckpt.meta.items() if k != "near_window_um"}
    reach = (beyond_um if isinstance(beyond_um, int | float) else FAR_READING_UM) + 5.0
    extra: dict[str, object] = {} if beyond_um is None else {"far_beyond_um": beyond_um}
    ckpt.meta = {**kept, "z_range_um": [-reach, reach], **extra, **meta}
    return save_checkpoint(ckpt, tmp_path / name, with_train_state=False)


@pytest.fixture(scope="module")
def wide() -> Predictor:
    return Predictor.from_checkpoint(None, runtime="torch", threads=1, far_quantile=None)


@pytest.fixture(scope="module")
def far_network() -> torch.nn.Module:
    return load_checkpoint(bundled_near_checkpoint_path()).model.eval()


def reading(wide: Predictor, seed: int) -> tuple[np.ndarray, float]:
    frame = busy_image(448, 672, seed=seed)
    frame[:224, :224] = 200  # one blank tile: the far model reads the same kept tiles
    w = wide.predict(frame).defocus_um
    assert w is not None and abs(w) > 0.05  # a threshold just inside |w| must stay positive
    return frame, w


def test_far_model_replaces_the_estimates_beyond_its_threshold(
    wide: Predictor, far_network: torch.nn.Module, tmp_path: Path
) -> None:
    frame, w = reading(wide, seed=3)
    plain = wide.predict(frame)
    path = far_copy(tmp_path, abs(w) - 0.01)
    far = Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=None, far_model=path)
    assert far.far is not None and far.far.beyond_um == pytest.approx(abs(w) - 0.01)
    pred = far.predict(frame)
    assert pred.model == "far" and pred.wide_defocus_um == pytest.approx(w, abs=1e-6)
    used = [t for t in pred.tiles if not t["blank"]]
    assert [(t["row"], t["col"]) for t in used] == [(t["row"], t["col"]) for t in plain.tiles if not t["blank"]]
    patches = np.stack([frame[t["y0"] : t["y0"] + 224, t["x0"] : t["x0"] + 224] for t in used])
    expected = net_on(far_network, patches)
    np.testing.assert_allclose([t["defocus_um"] for t in used], expected, atol=1e-4)
    # the far model's aggregate, read as the wide model's is beyond +-6 um (the far quantile of its tiles)
    aggregate = aggregate_estimates(expected, DEFAULT_AGGREGATE, 0.2)
    assert pred.defocus_um == pytest.approx(far_reading(expected, aggregate, DEFAULT_FAR_QUANTILE), abs=1e-4)
    assert pred.spread_um == pytest.approx(expected.std(), abs=1e-4)
    assert not np.allclose(expected, [t["defocus_um"] for t in plain.tiles if not t["blank"]], atol=1e-3)
    assert pred.timings_ms["far_inference"] > 0 and pred.timings_ms["near_inference"] == 0.0
    assert pred.to_dict()["model"] == "far"
    assert far.description == f"{far.source} + far-defocus {path}"


def test_within_its_threshold_the_wide_reading_stands(wide: Predictor, tmp_path: Path) -> None:
    frame, w = reading(wide, seed=4)
    far = Predictor.from_checkpoint(
        None, runtime="torch", threads=1, near_model=None, far_model=far_copy(tmp_path, abs(w) + 0.01)
    )
    pred = far.predict(frame)
    assert pred.model == "wide" and pred.defocus_um == pytest.approx(w, abs=1e-6)
    assert pred.timings_ms["far_inference"] == 0.0
    blank = far.predict(np.full((448, 672, 3), 180, dtype=np.uint8))
    assert blank.model == "wide" and blank.defocus_um is None


def test_the_near_model_reads_its_window_before_the_far_model(wide: Predictor, tmp_path: Path) -> None:
    frame, w = reading(wide, seed=3)
    both = Predictor.from_checkpoint(
        None,
        runtime="torch",
        threads=1,
        near_model=near_copy(tmp_path, [w - 0.01, w + 0.01]),
        far_model=far_copy(tmp_path, abs(w) - 0.01),
        near_gate_tiles=None,
    )
    assert both.predict(frame).model == "near"
    assert both.description.endswith(f"near-focus {tmp_path / 'near.pt'} + far-defocus {tmp_path / 'far.pt'}")


def test_onnx_runtime_reads_the_far_model_like_torch(wide: Predictor, tmp_path: Path) -> None:
    frame, w = reading(wide, seed=5)
    path = far_copy(tmp_path, abs(w) - 0.01)
    a = Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=None, far_model=path)
    b = Predictor.from_checkpoint(
        None, runtime="onnx", threads=1, near_model=None, far_model=path, cache_dir=tmp_path / "onnx"
    )
    pa, pb = a.predict(frame), b.predict(frame)
    assert pa.model == pb.model == "far" and b.far is not None and b.far.runtime.name == "onnx"
    assert pb.defocus_um == pytest.approx(pa.defocus_um, abs=1e-3)


def test_the_bundled_far_model_ships_in_both_formats() -> None:
    shipped = Predictor.from_checkpoint(
        bundled_checkpoint_path().with_suffix(".onnx"),
        runtime="onnx",
        threads=1,
        far_model=bundled_far_checkpoint_path().with_suffix(".onnx"),
    )
    meta = load_checkpoint(bundled_far_checkpoint_path()).meta
    assert shipped.far is not None and shipped.far.beyond_um == meta.get("far_beyond_um", FAR_READING_UM)
    assert meta["z_range_um"][0] < -10.0 and meta["z_range_um"][1] > 10.0  # trained past the wide model's range


@pytest.mark.parametrize(
    ("beyond", "meta", "match"),
    [
        (None, {"z_range_um": [-2.0, 6.0]}, r"beyond \+-6 um.*reach past both, got \[-2, 6\]"),
        (8.0, {"z_range_um": [-10.0, 8.0]}, r"beyond \+-8 um.*got \[-10, 8\]"),
        (0.0, {}, "far_beyond_um'] must be a positive number"),
        (True, {}, "far_beyond_um'] must be a positive number"),
        (None, {"z_range_um": "far"}, r"far-defocus model needs meta\['z_range_um'\] = \[lo, hi\]"),
        (None, {"pixel_size_um": 0.345}, "pixel_size_um=0.345.*same frames"),
    ],
)
def test_unusable_far_models_are_refused(tmp_path: Path, beyond: object, meta: dict, match: str) -> None:
    path = far_copy(tmp_path, beyond, **meta)
    with pytest.raises(ValueError, match=match):
        Predictor.from_checkpoint(None, runtime="torch", threads=1, far_model=path)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Predictor.from_checkpoint(None, runtime="torch", threads=1, far_model=tmp_path / "missing.pt")


def test_resolve_far_model_choices(tmp_path: Path) -> None:
    assert resolve_far_model("auto", None) == bundled_far_checkpoint_path()
    assert resolve_far_model("auto", tmp_path / "mine.pt") is None  # a far model matches its own wide model
    assert resolve_far_model("none", None) is None
    assert resolve_far_model(str(tmp_path / "f.pt"), None) == tmp_path / "f.pt"
    with pytest.raises(ValueError, match=r"far model must be 'auto'.*'none'.*path"):
        resolve_far_model("  ", None)


def test_far_frames_are_read_with_the_far_quantile_of_the_far_models_tiles(
    wide: Predictor, far_network: torch.nn.Module, tmp_path: Path
) -> None:
    frame, w = reading(wide, seed=3)
    ckpt = load_checkpoint(far_copy(tmp_path, abs(w) - 0.01))
    ckpt.config = {**ckpt.config, "output_scale_um": 50.0 * ckpt.config["output_scale_um"]}  # tiles read 50x as far
    path = save_checkpoint(ckpt, tmp_path / "far50.pt", with_train_state=False)
    far = Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=None, far_model=path)
    pred = far.predict(frame)
    used = [t for t in pred.tiles if not t["blank"]]
    patches = np.stack([frame[t["y0"] : t["y0"] + 224, t["x0"] : t["x0"] + 224] for t in used])
    expected = 50.0 * net_on(far_network, patches)
    aggregate = aggregate_estimates(expected, DEFAULT_AGGREGATE, 0.2)
    assert pred.model == "far" and abs(aggregate) > FAR_READING_UM
    side = DEFAULT_FAR_QUANTILE if aggregate > 0 else 1.0 - DEFAULT_FAR_QUANTILE
    assert pred.defocus_um == pytest.approx(float(np.quantile(expected, side)), rel=1e-4)
    assert pred.defocus_um != pytest.approx(aggregate, rel=1e-3)
    plain = Predictor.from_checkpoint(
        None, runtime="torch", threads=1, near_model=None, far_model=path, far_quantile=None
    ).predict(frame)
    assert plain.defocus_um == pytest.approx(aggregate, rel=1e-4)
