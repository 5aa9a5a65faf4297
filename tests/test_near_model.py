"""Near-focus model: the predictor reads it where the wide model places a frame in its window.

Expected values are recomputed here from the two networks and numpy, independently of
``autofocus.predictor``. The near model's window comes from its checkpoint's
``meta["near_window_um"]``, else its training range ``meta["z_range_um"]``; the tests write copies
of the bundled near checkpoint with chosen windows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autofocus.aggregation import DEFAULT_AGGREGATE, aggregate_estimates
from autofocus.predictor import Predictor, gate_positions, read_order, resolve_near_model
from models.checkpoint import bundled_near_checkpoint_path, load_checkpoint, save_checkpoint
from tests.test_predictor import busy_image, net_on

ROOT = Path(__file__).resolve().parents[1]


def near_copy(tmp_path: Path, window: list[float], name: str = "near.pt", **meta: object) -> Path:
    """The bundled near checkpoint saved with ``z_range_um = window``, no read window of its own
    (``near_window_um``) unless ``meta`` gives one, and other meta overrides."""
    ckpt = load_checkpoint(bundled_near_checkpoint_path())
    kept = {k: v for k, v in ckpt.meta.items() if k != "near_window_um"}
    ckpt.meta = {**kept, "z_range_um": window, **meta}
    return save_checkpoint(ckpt, tmp_path / name, with_train_state=False)


@pytest.fixture(scope="module")
def wide() -> Predictor:
    return Predictor.from_checkpoint(None, runtime="torch", threads=1)


@pytest.fixture(scope="module")
def near_network() -> torch.nn.Module:
    return load_checkpoint(bundled_near_checkpoint_path()).model.eval()


def test_near_model_replaces_the_estimates_inside_its_window(
    wide: Predictor, near_network: torch.nn.Module, tmp_path: Path
) -> None:
    frame = busy_image(448, 672, seed=3)
    frame[:224, :224] = 200  # one blank tile: the near model reads the same kept tiles
    plain = wide.predict(frame)
    assert plain.model == "wide" and plain.wide_defocus_um == pytest.approx(plain.defocus_um)
    w = plain.defocus_um
    assert w is not None
    inside = Predictor.from_checkpoint(
        None, runtime="torch", threads=1, near_model=near_copy(tmp_path, [w - 0.01, w + 0.01])
    )
    pred = inside.predict(frame)
    assert pred.model == "near" and pred.wide_defocus_um == pytest.approx(w, abs=1e-6)
    used = [t for t in pred.tiles if not t["blank"]]
    assert [(t["row"], t["col"]) for t in used] == [(t["row"], t["col"]) for t in plain.tiles if not t["blank"]]
    patches = np.stack([frame[t["y0"] : t["y0"] + 224, t["x0"] : t["x0"] + 224] for t in used])
    expected = net_on(near_network, patches)
    np.testing.assert_allclose([t["defocus_um"] for t in used], expected, atol=1e-4)
    assert pred.defocus_um == pytest.approx(aggregate_estimates(expected, DEFAULT_AGGREGATE, 0.2), abs=1e-4)
    assert pred.spread_um == pytest.approx(expected.std(), abs=1e-4)
    assert not np.allclose(expected, [t["defocus_um"] for t in plain.tiles if not t["blank"]], atol=1e-3)
    assert pred.timings_ms["near_inference"] > 0
    d = pred.to_dict()
    assert d["model"] == "near" and d["wide_defocus_um"] == pytest.approx(w, abs=1e-6)
    assert inside.description == f"{inside.source} + near-focus {tmp_path / 'near.pt'}"


def test_outside_its_window_the_wide_reading_stands(wide: Predictor, tmp_path: Path) -> None:
    frame = busy_image(448, 672, seed=4)
    plain = wide.predict(frame)
    w = plain.defocus_um
    assert w is not None
    above = Predictor.from_checkpoint(
        None, runtime="torch", threads=1, near_model=near_copy(tmp_path, [w + 0.01, w + 5])
    )
    pred = above.predict(frame)
    assert pred.model == "wide" and pred.defocus_um == pytest.approx(w, abs=1e-6)
    assert pred.timings_ms["near_inference"] == 0.0
    assert [t["defocus_um"] for t in pred.tiles] == pytest.approx([t["defocus_um"] for t in plain.tiles], abs=1e-6)
    blank = above.predict(np.full((448, 672, 3), 180, dtype=np.uint8))
    assert blank.model == "wide" and blank.defocus_um is None and blank.wide_defocus_um is None


def test_onnx_runtime_reads_the_near_model_like_torch(tmp_path: Path) -> None:
    frame = busy_image(448, 672, seed=5)
    path = near_copy(tmp_path, [-100.0, 100.0])
    a = Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=path)
    b = Predictor.from_checkpoint(None, runtime="onnx", threads=1, near_model=path, cache_dir=tmp_path / "onnx")
    pa, pb = a.predict(frame), b.predict(frame)
    assert pa.model == pb.model == "near" and b.near is not None and b.near.runtime.name == "onnx"
    assert pb.defocus_um == pytest.approx(pa.defocus_um, abs=1e-3)
    shipped = Predictor.from_checkpoint(
        bundled_near_checkpoint_path().parent / "ldsenet.onnx",
        runtime="onnx",
        threads=1,
        near_model=bundled_near_checkpoint_path().with_suffix(".onnx"),
    )
    assert shipped.near is not None and shipped.near.window_um == (-2.0, 6.0)


def test_a_read_window_within_the_training_range_decides_where_the_near_model_reads(
    wide: Predictor, tmp_path: Path
) -> None:
    frame = busy_image(448, 672, seed=4)
    w = wide.predict(frame).defocus_um
    assert w is not None
    trained = [w - 5.0, w + 5.0]  # the frame lies well inside the training range ...
    outside = near_copy(tmp_path, trained, "outside.pt", near_window_um=[w + 0.01, w + 5.0])
    above = Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=outside)
    assert above.near is not None and above.near.window_um == pytest.approx((w + 0.01, w + 5.0))
    assert above.predict(frame).model == "wide"  # ... but outside the window it is read in
    inside = near_copy(tmp_path, trained, "inside.pt", near_window_um=[w - 0.01, w + 0.01])
    assert Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=inside).predict(frame).model == "near"
    whole = Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=near_copy(tmp_path, trained))
    assert whole.near is not None and whole.near.window_um == pytest.approx(tuple(trained))  # no window: all of it


@pytest.mark.parametrize(
    ("window", "meta", "match"),
    [
        ([3.0, 1.0], {}, "lo < hi"),
        ("near", {}, r"z_range_um.*\[lo, hi\]"),
        ([-2.0, 6.0], {"near_window_um": [-3.0, 6.0]}, r"near_window_um.*\[-3, 6\].*within the training range"),
        ([-2.0, 6.0], {"near_window_um": [1.0, 0.0]}, r"near_window_um'\] must have lo < hi"),
        ([-2.0, 6.0], {"near_window_um": [0.0, True]}, r"near_window_um'\] = \[lo, hi\] \(where the predictor"),
        ([-2.0, 6.0], {"pixel_size_um": 0.345}, "pixel_size_um=0.345.*same frames"),
        ([-2.0, 6.0], {"z_reference": "sharpness_peak"}, "z_reference"),
    ],
)
def test_unusable_near_models_are_refused(tmp_path: Path, window: object, meta: dict, match: str) -> None:
    path = near_copy(tmp_path, window, **meta)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=path)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=tmp_path / "missing.pt")


def test_resolve_near_model_choices(tmp_path: Path) -> None:
    assert resolve_near_model("auto", None) == bundled_near_checkpoint_path()
    assert resolve_near_model("auto", tmp_path / "mine.pt") is None  # a near model matches its own wide model
    assert resolve_near_model("none", None) is None
    assert resolve_near_model(str(tmp_path / "n.pt"), None) == tmp_path / "n.pt"
    with pytest.raises(ValueError, match=r"'auto'.*'none'.*path"):
        resolve_near_model("  ", None)


# -- the near-model gate ------------------------------------------------------------------------
def gate_tiles(used: list[dict[str, object]], gate: int = 8) -> list[dict[str, object]]:
    """The tiles the gate reads: ``gate`` spread evenly over the kept tiles in row-major order."""
    positions = sorted({round(k * (len(used) - 1) / (gate - 1)) for k in range(gate)})
    return [used[p] for p in positions]


def gate_reading(frame: np.ndarray, kept: list[dict[str, object]], network: torch.nn.Module) -> float:
    """The wide network's aggregate over the gate's tiles of ``kept``, computed here from the network."""
    patches = np.stack([frame[t["y0"] : t["y0"] + 224, t["x0"] : t["x0"] + 224] for t in gate_tiles(kept)])
    return aggregate_estimates(net_on(network, patches), DEFAULT_AGGREGATE, 0.2)


@pytest.fixture(scope="module")
def wide_network() -> torch.nn.Module:
    return load_checkpoint(None).model.eval()


def gate_frame() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A 5 x 6-tile frame with two blank tiles, one of them near the centre."""
    frame = busy_image(1120, 1344, seed=6)
    frame[448:672, 448:672] = 200  # tile (2, 2)
    frame[:224, :224] = 200  # tile (0, 0)
    return frame, [(2, 2), (0, 0)]


def test_gate_tiles_choose_the_near_model_when_clearly_inside(
    wide: Predictor, wide_network: torch.nn.Module, near_network: torch.nn.Module, tmp_path: Path
) -> None:
    frame, blanks = gate_frame()
    plain = wide.predict(frame)
    used = [t for t in plain.tiles if not t["blank"]]
    assert len(used) == 28 and sorted((t["row"], t["col"]) for t in plain.tiles if t["blank"]) == sorted(blanks)
    g = gate_reading(frame, used, wide_network)
    assert abs(g - plain.defocus_um) > 1e-3  # 8 tiles read differently from all 28
    path = near_copy(tmp_path, [g - 3.0, g + 3.0])
    gated = Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=path)
    ungated = Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=path, near_gate_tiles=None)
    assert gated.near_gate_tiles == 8  # the documented default
    pred, full = gated.predict(frame), ungated.predict(frame)
    assert pred.model == full.model == "near"
    assert pred.wide_defocus_um == pytest.approx(g, abs=1e-4)
    assert full.wide_defocus_um == pytest.approx(plain.defocus_um, abs=1e-6)
    all_patches = np.stack([frame[t["y0"] : t["y0"] + 224, t["x0"] : t["x0"] + 224] for t in used])
    expected = net_on(near_network, all_patches)
    np.testing.assert_allclose([t["defocus_um"] for t in pred.tiles if not t["blank"]], expected, atol=1e-4)
    assert pred.defocus_um == pytest.approx(full.defocus_um, abs=1e-6)
    assert pred.confidence == pytest.approx(full.confidence, abs=1e-9)


@pytest.mark.parametrize("offset", [0.5, -0.5])
def test_gate_inside_the_margin_lets_every_tile_decide(
    wide: Predictor, wide_network: torch.nn.Module, tmp_path: Path, offset: float
) -> None:
    frame, _ = gate_frame()
    plain = wide.predict(frame)
    used = [t for t in plain.tiles if not t["blank"]]
    g = gate_reading(frame, used, wide_network)
    # the gate reading lies 0.5 um inside one edge of the window: less than the 1 um margin
    window = [g - 0.5, g + 5.0] if offset > 0 else [g - 5.0, g + 0.5]
    pred = Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=near_copy(tmp_path, window)).predict(
        frame
    )
    w = plain.defocus_um
    assert pred.wide_defocus_um == pytest.approx(w, abs=1e-5)
    assert pred.model == ("near" if window[0] <= w <= window[1] else "wide")
    if pred.model == "wide":
        assert pred.defocus_um == pytest.approx(w, abs=1e-5)
        assert pred.timings_ms["near_inference"] == 0.0


def test_gate_with_a_tile_budget_spreads_over_the_kept_tiles_by_position(
    wide_network: torch.nn.Module, tmp_path: Path
) -> None:
    frame, _ = gate_frame()
    budget = Predictor.from_checkpoint(None, runtime="torch", threads=1, max_tiles=24)
    plain = budget.predict(frame)
    kept = [t for t in plain.tiles if t["examined"] and not t["blank"]]  # row-major order
    assert len(kept) == 24 and sum(not t["examined"] for t in plain.tiles) > 0
    g = gate_reading(frame, kept, wide_network)
    path = near_copy(tmp_path, [g - 3.0, g + 3.0])
    pred = Predictor.from_checkpoint(None, runtime="torch", threads=1, max_tiles=24, near_model=path).predict(frame)
    assert pred.model == "near" and pred.wide_defocus_um == pytest.approx(g, abs=1e-4)
    assert [t["examined"] for t in pred.tiles] == [t["examined"] for t in plain.tiles]


def test_read_order_puts_the_gate_tiles_first_then_the_rest_as_examined() -> None:
    kept = np.array([40, 39, 51, 28, 50, 41, 29, 52, 30])  # tile indices, examined centre first
    rows = read_order(kept, 4)
    row_major = np.sort(kept)
    gate = row_major[gate_positions(kept.size, 4)]  # spread over the kept tiles by position
    rest = [i for i in kept if i not in gate]
    assert kept[rows].tolist() == [*gate.tolist(), *rest]
    assert sorted(rows.tolist()) == list(range(kept.size))
    assert read_order(kept, 0).tolist() == list(range(kept.size))


def test_gate_positions_spread_from_first_to_last() -> None:
    positions = gate_positions(28, 16)
    assert positions[0] == 0 and positions[-1] == 27 and np.all(np.diff(positions) >= 1) and positions.size == 16
    with pytest.raises(ValueError, match="2 <= gate <= kept"):
        gate_positions(5, 1)
    with pytest.raises(ValueError, match="2 <= gate <= kept"):
        gate_positions(5, 6)


@pytest.mark.parametrize("bad", [0, 1, -3, True, 2.5, "16"])
def test_near_gate_tiles_must_be_a_count_of_two_or_more_or_none(bad: object) -> None:
    with pytest.raises(ValueError, match=r"near_gate_tiles must be None .* integer >= 2"):
        Predictor.from_checkpoint(None, runtime="torch", threads=1, near_gate_tiles=bad)  # type: ignore[arg-type]


def test_the_gate_bench_decides_as_the_predictor(wide: Predictor, tmp_path: Path) -> None:
    """``benchmarks/bench_near_gate.py`` works out offline what a gate size would choose; it must
    choose as the predictor does, for windows that put the gate and the full reading on either side."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_near_gate", ROOT / "benchmarks" / "bench_near_gate.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    frame, _ = gate_frame()
    plain = wide.predict(frame)
    est = np.array([t["defocus_um"] for t in plain.tiles if not t["blank"]])  # row-major, the wide model's
    full = plain.defocus_um
    windows = [
        (full - 3.0, full + 3.0),  # both inside
        (full + 0.2, full + 6.0),  # the full reading just below the window
        (full - 6.0, full - 0.2),  # just above
        (full - 1.1, full + 8.0),  # inside, near the lower edge
    ]
    # the 4 gate tiles inside the window but within the 1 um margin, every tile outside: every tile decides
    g4 = aggregate_estimates(est[gate_positions(est.size, 4)], DEFAULT_AGGREGATE, 0.2)
    assert 0.05 < abs(g4 - full) < 2.0
    mid = (g4 + full) / 2.0
    windows.append((mid, mid + 8.0) if g4 > full else (mid - 8.0, mid))
    chosen = []
    for k, window in enumerate(windows):
        near = near_copy(tmp_path, list(window), name=f"near{k}.pt")
        for gate in (4, 8, None):
            pred = Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model=near, near_gate_tiles=gate)
            got = pred.predict(frame)
            near_chosen, deciding = bench.choices(est, window, gate)
            assert near_chosen == (got.model == "near"), (window, gate)
            assert deciding == pytest.approx(got.wide_defocus_um, abs=1e-4)
            chosen.append(near_chosen)
    assert any(chosen) and not all(chosen)
