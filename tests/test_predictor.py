"""Predictor: tiling geometry, blank filter use, aggregation/confidence maths, runtimes, input checks.

The network is the bundled checkpoint (trained or the untrained placeholder: these tests check
the pipeline around the network, which is the same for both); expected values are recomputed
here from the network and numpy, independently of ``autofocus.predictor``.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch
from scipy import stats

from autofocus.aggregation import DEFAULT_AGGREGATE, FAR_READING_UM, aggregate_estimates, far_reading
from autofocus.predictor import Predictor, _map_on_threads, compute_confidence, nhwc_input, onnx_cache_path
from models.checkpoint import bundled_checkpoint_path, load_checkpoint
from models.errors import ModelInputError
from tests.sim_scope import open_scope


def busy_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB frame full of cell-like blobs (smoothed noise with contrast): no tile is blank."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height, width)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 4.0)
    smooth = (smooth - smooth.mean()) / smooth.std()
    rgb = np.stack([0.6 + 0.15 * smooth, 0.5 + 0.2 * smooth, 0.7 + 0.1 * smooth], axis=2)
    return np.clip(rgb * 255.0, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(None, runtime="torch", threads=1)


@pytest.fixture(scope="module")
def network():
    return load_checkpoint(bundled_checkpoint_path()).model.eval()


def net_on(network, patches_u8: np.ndarray) -> np.ndarray:
    """The network applied directly to ``N x 224 x 224 x 3`` uint8 patches (reference values)."""
    x = torch.from_numpy(patches_u8.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        return network(x).reshape(-1).double().numpy()


# -- tiling -------------------------------------------------------------------------------------
def test_full_frame_tiling_geometry_and_blank_frame(predictor: Predictor) -> None:
    frame = np.full((1944, 2592, 3), 180, dtype=np.uint8)  # featureless: every tile blank
    pred = predictor.predict(frame)
    assert pred.tiles_total == 88 and pred.tiles_used == 0
    assert pred.defocus_um is None and pred.confidence == 0.0 and pred.spread_um is None
    rows = sorted({t["row"] for t in pred.tiles})
    cols = sorted({t["col"] for t in pred.tiles})
    assert rows == list(range(8)) and cols == list(range(11))
    for t in pred.tiles:
        assert t["y0"] == 76 + 224 * t["row"] and t["x0"] == 64 + 224 * t["col"] and t["size"] == 224
        assert t["blank"] is True and t["defocus_um"] is None
    # margins: 64 px left and right, 76 px top and bottom
    assert min(t["x0"] for t in pred.tiles) == 64
    assert 2592 - max(t["x0"] + 224 for t in pred.tiles) == 64
    assert min(t["y0"] for t in pred.tiles) == 76
    assert 1944 - max(t["y0"] + 224 for t in pred.tiles) == 76
    assert pred.region_map == [[None] * 3 for _ in range(3)]


def test_odd_sized_frame_grid_is_centred(predictor: Predictor) -> None:
    frame = busy_image(500, 700)
    pred = predictor.predict(frame)
    assert pred.tiles_total == 2 * 3
    expected = {(26 + 224 * r, 14 + 224 * c) for r in range(2) for c in range(3)}
    assert {(t["y0"], t["x0"]) for t in pred.tiles} == expected


# -- blank filter, aggregation, region map -----------------------------------------------------------
def test_half_blank_frame_uses_only_busy_tiles(predictor: Predictor, network) -> None:
    frame = busy_image(448, 672, seed=1)
    frame[:, 336:] = 200  # right half featureless: tiles whose area lies there are blank
    pred = predictor.predict(frame)
    by_pos = {(t["row"], t["col"]): t for t in pred.tiles}
    assert by_pos[(0, 0)]["blank"] is False and by_pos[(1, 0)]["blank"] is False
    assert by_pos[(0, 2)]["blank"] is True and by_pos[(1, 2)]["blank"] is True
    used = [t for t in pred.tiles if not t["blank"]]
    assert pred.tiles_used == len(used) and 2 <= len(used) <= 4

    patches = np.stack([frame[t["y0"] : t["y0"] + 224, t["x0"] : t["x0"] + 224] for t in used])
    expected = net_on(network, patches)
    got = np.array([t["defocus_um"] for t in used])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert pred.defocus_um == pytest.approx(expected.mean(), abs=1e-4)
    assert pred.spread_um == pytest.approx(expected.std(), abs=1e-4)

    coverage = min(1.0, (len(used) / 6) / 0.25)
    agreement = 1.0 / (1.0 + (expected.std() / (1.0 + 0.25 * abs(expected.mean()))) ** 2)
    assert pred.confidence == pytest.approx(coverage * agreement, abs=1e-4)

    # region map: tile centres of a 672x448 frame fall in region (row, col) = (3 * cy // 448, 3 * cx // 672)
    cells: dict[tuple[int, int], list[float]] = {}
    for t, value in zip(used, expected, strict=True):
        cy, cx = t["y0"] + 112, t["x0"] + 112
        cells.setdefault((int(3 * cy // 448), int(3 * cx // 672)), []).append(value)
    for r in range(3):
        for c in range(3):
            if (r, c) in cells:
                assert pred.region_map[r][c] == pytest.approx(np.mean(cells[(r, c)]), abs=1e-4)
            else:
                assert pred.region_map[r][c] is None
    d = pred.to_dict()
    assert d["tiles_used"] == len(used) and len(d["tiles"]) == 6 and d["runtime"] == "torch"
    # the frame's mean brightness, for a calibration's brightness correction: the whole frame, blank half too
    assert d["brightness"] == pred.brightness == pytest.approx(frame.mean() / 255.0, abs=0.005)


@pytest.mark.parametrize("method", ["mean", "median", "trimmed"])
def test_aggregate_estimates_matches_reference(method: str) -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(2.0, 0.3, size=37), [15.0, -12.0, 9.0]])
    reference = {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "trimmed": float(stats.trim_mean(values, 0.2)),
    }[method]
    assert aggregate_estimates(values, method, 0.2) == pytest.approx(reference, rel=1e-12)


def test_robust_aggregates_resist_outliers() -> None:
    values = np.array([1.0] * 9 + [40.0])
    assert aggregate_estimates(values, "mean") == pytest.approx(4.9)
    assert aggregate_estimates(values, "median") == pytest.approx(1.0)
    assert aggregate_estimates(values, "trimmed", 0.1) == pytest.approx(1.0)


def test_aggregate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="aggregate"):
        aggregate_estimates(np.ones(3), "mode")
    with pytest.raises(ValueError, match="empty"):
        aggregate_estimates(np.array([]), "mean")
    with pytest.raises(ValueError, match="trim_fraction"):
        aggregate_estimates(np.ones(3), "trimmed", 0.5)


def test_far_reading_takes_the_quantile_towards_its_side_beyond_the_limit() -> None:
    values = np.array([3.0, 9.5, 7.0, 8.0, 6.5, 8.5, 7.5, 10.0, 4.0])
    within = FAR_READING_UM - 0.01
    assert far_reading(values, within, 0.75) == within and far_reading(-values, -within, 0.75) == -within
    # the 75th percentile by linear interpolation between order statistics (statistics' "inclusive")
    q75 = statistics.quantiles(values.tolist(), n=4, method="inclusive")[2]
    q25_negative = statistics.quantiles((-values).tolist(), n=4, method="inclusive")[0]
    assert far_reading(values, 6.5, 0.75) == pytest.approx(q75) == pytest.approx(8.5)
    assert far_reading(-values, -6.5, 0.75) == pytest.approx(q25_negative) == pytest.approx(-8.5)
    assert far_reading(values, 7.0, 0.5) == pytest.approx(float(np.median(values)))
    assert far_reading(values, 7.0, 1.0) == 10.0
    with pytest.raises(ValueError, match=r"far_quantile must be a number in \[0.5, 1\], got 0.4"):
        far_reading(values, 7.0, 0.4)
    with pytest.raises(ValueError, match="empty"):
        far_reading(np.array([]), 7.0, 0.75)


@pytest.mark.parametrize("defocus_um", [9.0, -9.0])
def test_far_frames_are_read_at_the_quantile_and_near_ones_with_the_aggregate(defocus_um: float) -> None:
    scope = open_scope(seed=3, specimen="tissue", frame_shape=(672, 896))
    scope.focus_stage.move_to(-scope.focus_stage.direction * defocus_um)
    frame = scope.camera.snap()
    far = Predictor.from_checkpoint(None, runtime="torch", threads=1)
    plain = Predictor.from_checkpoint(None, runtime="torch", threads=1, far_quantile=None)
    assert far.far_quantile == 0.75 and plain.far_quantile is None
    a, b = far.predict(frame), plain.predict(frame)
    values = np.array([t["defocus_um"] for t in b.tiles if not t["blank"]])
    trimmed = aggregate_estimates(values, DEFAULT_AGGREGATE, 0.2)
    assert b.defocus_um == pytest.approx(trimmed, abs=1e-9)
    assert abs(trimmed) > FAR_READING_UM  # the model reads this frame beyond the limit
    expected = statistics.quantiles(values.tolist(), n=4, method="inclusive")[2 if trimmed > 0 else 0]
    assert a.defocus_um == pytest.approx(expected, abs=1e-9)
    assert abs(a.defocus_um) > abs(trimmed)  # the tiles that still resolve the defocus read further
    assert a.wide_defocus_um == pytest.approx(trimmed, abs=1e-9)  # the aggregate is kept
    near_frame = busy_image(672, 896, 5)
    assert far.predict(near_frame).defocus_um == pytest.approx(plain.predict(near_frame).defocus_um, abs=1e-12)
    for bad in (0.3, True, "0.75"):
        with pytest.raises(ValueError, match=r"far_quantile must be a number in \[0.5, 1\]"):
            Predictor.from_checkpoint(None, runtime="torch", threads=1, far_quantile=bad)  # type: ignore[arg-type]


def test_confidence_formula_and_bounds() -> None:
    # all tiles, perfect agreement -> 1
    assert compute_confidence(3.0, 0.0, 88, 88) == 1.0
    # no tiles -> 0
    assert compute_confidence(0.0, 0.0, 0, 88) == 0.0
    # 11 of 88 tiles (12.5 %) -> coverage 0.5; spread 1 um at 0 um defocus -> agreement 0.5
    assert compute_confidence(0.0, 1.0, 11, 88) == pytest.approx(0.25)
    # at 8 um the tolerance is 1 + 0.25 * 8 = 3 um: spread 3 -> agreement 0.5
    assert compute_confidence(-8.0, 3.0, 88, 88) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    for _ in range(200):
        n_total = int(rng.integers(1, 100))
        c = compute_confidence(
            float(rng.normal(0, 8)), float(abs(rng.normal(0, 3))), int(rng.integers(0, n_total + 1)), n_total
        )
        assert 0.0 <= c <= 1.0


def test_default_predictor_uses_the_trimmed_mean(network) -> None:
    pred = Predictor.from_checkpoint(None, runtime="torch", threads=1).predict(busy_image(672, 896, 5))
    values = np.sort([t["defocus_um"] for t in pred.tiles if not t["blank"]])
    k = int(len(values) * 0.2)  # the trimmed mean drops floor(20 %) of the tiles at each end
    assert len(values) == 12 and k == 2
    assert pred.aggregate == DEFAULT_AGGREGATE == "trimmed"
    assert pred.defocus_um == pytest.approx(float(values[k:-k].mean()), abs=1e-6)


def test_median_predictor_aggregates_with_median(network) -> None:
    median_predictor = Predictor.from_checkpoint(None, runtime="torch", threads=1, aggregate="median")
    pred = median_predictor.predict(busy_image(448, 448, 2))
    values = np.array([t["defocus_um"] for t in pred.tiles if not t["blank"]])
    assert pred.aggregate == "median" and pred.defocus_um == pytest.approx(float(np.median(values)))


# -- input handling -----------------------------------------------------------------------------------
def test_uint16_mono_and_bit_depth_give_the_same_numbers(predictor: Predictor) -> None:
    rgb8 = busy_image(448, 448, seed=4)
    base = predictor.predict(rgb8)
    as16 = predictor.predict(rgb8.astype(np.uint16) * 257)  # x * 257 / 65535 == x / 255
    assert as16.defocus_um == pytest.approx(base.defocus_um, abs=1e-4)
    as12 = predictor.predict((rgb8.astype(np.int32) * 4095 // 255).astype(np.uint16), bit_depth=12)
    assert as12.defocus_um == pytest.approx(base.defocus_um, abs=0.05)
    mono = rgb8[:, :, 1]
    mono_pred = predictor.predict(mono)
    rep_pred = predictor.predict(np.repeat(mono[:, :, None], 3, axis=2))
    assert mono_pred.defocus_um == pytest.approx(rep_pred.defocus_um, abs=1e-6)


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (np.zeros((223, 400, 3), np.uint8), "at least 224x224"),
        (np.zeros((300, 300, 3), np.float32), "uint8 or uint16"),
        (np.zeros((300, 300, 4), np.uint8), "HxWx3"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_frames_are_refused_clearly(predictor: Predictor, frame: object, match: str) -> None:
    with pytest.raises(ModelInputError, match=match):
        predictor.predict(frame)  # type: ignore[arg-type]


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="runtime"):
        Predictor.from_checkpoint(None, runtime="tensorrt")
    with pytest.raises(ValueError, match="threads"):
        Predictor.from_checkpoint(None, threads=0)
    with pytest.raises(ValueError, match="aggregate"):
        Predictor.from_checkpoint(None, aggregate="mode")
    with pytest.raises(FileNotFoundError):
        Predictor.from_checkpoint(tmp_path / "missing.pt")


# -- ONNX Runtime -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_onnx_export_cached_and_equal_to_torch(predictor: Predictor, tmp_path: Path) -> None:
    # what killed exporters left: hour-old temporary files of the cache's scheme go (this
    # checkpoint's, and an older code version's), a fresh one (an export running in another process)
    # and a file of another name stay
    key = onnx_cache_path(tmp_path, bundled_checkpoint_path(), load_checkpoint(bundled_checkpoint_path()).model)
    abandoned = [tmp_path / f"{key.stem}.11.tmp.onnx", tmp_path / "ldsenet-0123456789abcdef.7.tmp.onnx.tmp"]
    running, foreign = tmp_path / f"{key.stem}.12.tmp.onnx", tmp_path / "notes.tmp.onnx"
    for leftover in (*abandoned, running, foreign):
        leftover.write_bytes(b"half an export")
        if leftover is not running:
            os.utime(leftover, (time.time() - 2 * 3600,) * 2)
    onnx_pred = Predictor.from_checkpoint(None, runtime="onnx", threads=1, cache_dir=tmp_path)
    assert not any(p.exists() for p in abandoned) and running.exists() and foreign.exists()
    running.unlink()
    foreign.unlink()
    cached = list(tmp_path.glob("*.onnx"))
    assert cached == [key]
    mtime = cached[0].stat().st_mtime_ns
    again = Predictor.from_checkpoint(None, runtime="onnx", threads=1, cache_dir=tmp_path)  # reuses the cache
    assert cached[0].stat().st_mtime_ns == mtime and again.runtime == "onnx"

    # a stale cache entry (here: the output shifted by 1 um) is detected and exported again
    tampered = onnx.load(str(cached[0]))
    out_name = tampered.graph.output[0].name
    for node in tampered.graph.node:
        node.output[:] = [f"{o}_pre" if o == out_name else o for o in node.output]
    tampered.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.0, np.float32), "one_um"))
    tampered.graph.node.append(onnx.helper.make_node("Add", [f"{out_name}_pre", "one_um"], [out_name]))
    onnx.save(tampered, str(cached[0]))
    stale = Predictor.from_checkpoint(None, runtime="onnx", threads=1, cache_dir=tmp_path)
    probe = busy_image(224, 224, seed=8)
    assert stale.predict(probe).defocus_um == pytest.approx(predictor.predict(probe).defocus_um, abs=1e-3)

    frame = busy_image(448, 672, seed=5)
    frame[:224, :224] = 90
    a, b = predictor.predict(frame), onnx_pred.predict(frame)
    assert b.runtime == "onnx" and a.tiles_used == b.tiles_used
    for ta, tb in zip(a.tiles, b.tiles, strict=True):
        assert ta["blank"] == tb["blank"]
        if not ta["blank"]:
            assert tb["defocus_um"] == pytest.approx(ta["defocus_um"], abs=1e-3)
    assert b.defocus_um == pytest.approx(a.defocus_um, abs=1e-3)
    assert b.confidence == pytest.approx(a.confidence, abs=1e-3)


def test_shipped_onnx_loads_with_its_metadata() -> None:
    shipped = bundled_checkpoint_path().with_suffix(".onnx")
    if not shipped.is_file():
        pytest.skip(f"no shipped ONNX file at {shipped}")
    p = Predictor.from_checkpoint(shipped, runtime="onnx", threads=1)
    assert p.meta["patch_size"] == 224 and p.runtime == "onnx"
    pred = p.predict(busy_image(224, 224, seed=6))
    assert pred.tiles_total == 1 and math.isfinite(pred.defocus_um or math.nan)
    with pytest.raises(ValueError, match="runtime='onnx'"):
        Predictor.from_checkpoint(shipped, runtime="torch")


def test_onnx_sessions_side_by_side_read_each_tile_as_one_session_does() -> None:
    shipped = bundled_checkpoint_path().with_suffix(".onnx")
    if not shipped.is_file():
        pytest.skip(f"no shipped ONNX file at {shipped}")
    one = Predictor.from_checkpoint(shipped, runtime="onnx", threads=1)._runtime
    tiles = np.stack([busy_image(224, 224, seed=s) for s in range(8)]).astype(np.float32) / 255.0
    for threads in (2, 3):
        runtime = Predictor.from_checkpoint(shipped, runtime="onnx", threads=threads)._runtime
        sessions = runtime._sessions
        assert len(sessions) == threads
        assert all(s.get_session_options().intra_op_num_threads == 1 for s in sessions)
        shares: list[list[int]] = [[] for _ in sessions]
        for k, session in enumerate(sessions):  # record each session's share, then run it for real

            def recording(
                outputs: Any, feed: dict[str, np.ndarray], _run: Any = session.run, _share: list[int] = shares[k]
            ) -> Any:
                _share.append(len(next(iter(feed.values()))))
                return _run(outputs, feed)

            session.run = recording  # type: ignore[method-assign]
        for n in (0, 1, 2, 5, 8):
            for share in shares:
                share.clear()
            got = runtime.run(tiles[:n])
            np.testing.assert_array_equal(got, one.run(tiles[:n]))  # bit for bit
            assert got.dtype == np.float32 and got.shape == (n,)
            used = [sum(share) for share in shares]
            assert sum(used) == n and max(used) - min(used[: min(n, threads)] or [0]) <= 1
            assert sum(1 for u in used if u) == min(
                n, threads
            )  # every session reads a share when there are enough tiles


def test_nhwc_input_reads_nhwc_tiles_as_the_file_reads_nchw_ones() -> None:
    import onnxruntime as ort

    shipped = bundled_checkpoint_path().with_suffix(".onnx")
    if not shipped.is_file():
        pytest.skip(f"no shipped ONNX file at {shipped}")
    tiles = np.stack([busy_image(224, 224, seed=s) for s in range(3)]).astype(np.float32) / 255.0
    plain = ort.InferenceSession(str(shipped), providers=["CPUExecutionProvider"])
    (expected,) = plain.run(None, {plain.get_inputs()[0].name: np.ascontiguousarray(tiles.transpose(0, 3, 1, 2))})
    changed = nhwc_input(onnx.load(str(shipped)))
    (graph_input,) = changed.graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert graph_input.name.endswith("_nhwc") and dims[1:] == [224, 224, 3]
    session = ort.InferenceSession(changed.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {graph_input.name: tiles})
    assert np.allclose(got, expected, atol=1e-3)
    assert np.ptp(expected) > 1e-3  # three different tiles: a transposition mistake would show

    two_inputs = onnx.load(str(shipped))
    two_inputs.graph.input.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, [1]))
    with pytest.raises(ModelInputError, match="one input"):
        nhwc_input(two_inputs)


def test_max_tiles_takes_central_tiles_first_and_skips_blank_ones(network) -> None:
    frame = busy_image(672, 1120, seed=7)  # 3 x 5 tiles
    frame[224:448, 448:672] = 200  # the central tile is featureless
    limited = Predictor.from_checkpoint(None, runtime="torch", threads=1, max_tiles=4)
    pred = limited.predict(frame)
    by_pos = {(t["row"], t["col"]): t for t in pred.tiles}
    assert by_pos[(1, 2)]["examined"] and by_pos[(1, 2)]["blank"]
    used = [t for t in pred.tiles if t["defocus_um"] is not None]
    assert pred.tiles_used == len(used) == 4 and pred.tiles_total == 15
    # the four nearest non-blank tiles to the centre are the direct neighbours of the centre tile
    assert {(t["row"], t["col"]) for t in used} == {(0, 2), (2, 2), (1, 1), (1, 3)}
    assert pred.tiles_examined == 5 and sum(t["examined"] for t in pred.tiles) == 5
    patches = np.stack([frame[t["y0"] : t["y0"] + 224, t["x0"] : t["x0"] + 224] for t in used])
    expected = net_on(network, patches)
    assert pred.defocus_um == pytest.approx(expected.mean(), abs=1e-4)
    coverage = min(1.0, (4 / 5) / 0.25)
    agreement = 1.0 / (1.0 + (expected.std() / (1.0 + 0.25 * abs(expected.mean()))) ** 2)
    assert pred.confidence == pytest.approx(coverage * agreement, abs=1e-4)
    with pytest.raises(ValueError, match="max_tiles"):
        Predictor.from_checkpoint(None, max_tiles=0)


def test_batch_memory_kept_between_frames_carries_nothing_over(network) -> None:
    """The float batch's memory is reused from frame to frame: a larger, a smaller and a larger
    frame again are each read as the network reads their tiles."""
    reused = Predictor.from_checkpoint(None, runtime="torch", threads=1, aggregate="mean")
    for seed, (height, width) in enumerate([(672, 1120), (448, 448), (896, 1344)]):
        frame = busy_image(height, width, seed=10 + seed)  # no blank tile: every tile is read
        pred = reused.predict(frame)
        patches = np.stack([frame[t["y0"] : t["y0"] + 224, t["x0"] : t["x0"] + 224] for t in pred.tiles])
        np.testing.assert_allclose([t["defocus_um"] for t in pred.tiles], net_on(network, patches), atol=1e-4)


def test_predictions_from_several_threads_equal_sequential_ones(predictor: Predictor) -> None:
    """The service's routes and a focus lock may share one predictor: calls run one at a time."""
    frames = [busy_image(448 + 224 * (s % 2), 672, seed=20 + s) for s in range(4)]
    sequential = [predictor.predict(f).defocus_um for f in frames]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda f: predictor.predict(f).defocus_um, frames * 3))
    assert concurrent == sequential * 3


# -- threads ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_tiles", [None, 20])
def test_tiles_cut_filtered_and_scaled_in_shares_read_as_on_one_thread(network, max_tiles: int | None) -> None:
    """With ``threads`` > 1 the tiles are cut, filtered and scaled in shares on several threads:
    every tile keeps its own blank decision and estimate, whichever share it fell in."""
    frame = busy_image(896, 1344, seed=31)  # 4 x 6 = 24 tiles: three shares of 8 on 3 threads
    frame[:224, :448] = 180  # two featureless tiles in the first share ...
    frame[672:, 1120:] = 90  # ... and one in the last
    shared = Predictor.from_checkpoint(None, runtime="torch", threads=3, max_tiles=max_tiles)
    single = Predictor.from_checkpoint(None, runtime="torch", threads=1, max_tiles=max_tiles)
    assert len(shared._share(24)) == 3 and len(shared._share(20)) == 2 and len(shared._share(7)) == 1
    got, expected = shared.predict(frame), single.predict(frame)
    assert [(t["blank"], t["examined"]) for t in got.tiles] == [(t["blank"], t["examined"]) for t in expected.tiles]
    featureless = {(0, 0), (0, 1), (3, 5)}
    assert {(t["row"], t["col"]) for t in got.tiles if t["blank"]} == {
        (t["row"], t["col"]) for t in got.tiles if t["examined"] and (t["row"], t["col"]) in featureless
    }
    used = [t for t in got.tiles if t["defocus_um"] is not None]
    assert len(used) == (21 if max_tiles is None else 20)
    patches = np.stack([frame[t["y0"] : t["y0"] + 224, t["x0"] : t["x0"] + 224] for t in used])
    np.testing.assert_allclose([t["defocus_um"] for t in used], net_on(network, patches), atol=1e-4)
    assert got.defocus_um == pytest.approx(expected.defocus_um, abs=1e-4)


def test_shares_cover_every_tile_once_and_an_error_on_any_thread_reaches_the_caller() -> None:
    predictor = Predictor.from_checkpoint(None, runtime="torch", threads=4)
    for n in (1, 7, 8, 16, 17, 31, 88):
        shares = predictor._share(n)
        assert shares[0][0] == 0 and shares[-1][1] == n and len(shares) == max(1, min(4, n // 8))
        assert all(hi - lo >= min(n, 8) for lo, hi in shares)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(shares))

    def fail_on_the_third(item: int) -> int:
        if item == 2:
            raise ValueError(f"share {item} failed")
        return item * 10

    assert _map_on_threads(lambda item: item * 10, [0, 1, 2, 3]) == [0, 10, 20, 30]
    with pytest.raises(ValueError, match="share 2 failed"):
        _map_on_threads(fail_on_the_third, [0, 1, 2, 3])
    # in the predictor: a 12-bit frame with one value out of range, in the last tile (second share)
    frame = busy_image(896, 896, seed=5).astype(np.uint16) * 16  # 12-bit values
    frame[-1, -1, 0] = 5000
    two = Predictor.from_checkpoint(None, runtime="torch", threads=2)
    with pytest.raises(ModelInputError, match="12-bit maximum"):
        two.predict(frame, bit_depth=12)
