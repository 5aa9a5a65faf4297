"""Focus calibration: the curve's maths, its file, the sweep on the simulator, and its use by the
routines and the focus lock (real bundled predictor, small frames)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sim_scope import open_scope

from autofocus.brightness import FIT_WINDOW_UM
from autofocus.calibration import FocusCalibration, calibration_from_table, measure_calibration, nearest_fields
from autofocus.calibration_settings import CALIBRATED_AIM_UM, DEFAULT_FIELDS, DEFAULT_RANGE_UM
from autofocus.cli import main
from autofocus.focuslock import FocusLock, FocusLockOptions
from autofocus.predictor import Predictor
from autofocus.routines import AutofocusOptions, CancelToken, run_autofocus
from drivers.errors import CancelledError, LimitError, UnreliableEstimateError

make_scope = partial(open_scope, seed=3, specimen="tissue", frame_shape=(448, 448))


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(None, runtime="torch", threads=1)


def curve(z: list[float], reading: list[float]) -> FocusCalibration:
    return FocusCalibration(z_um=z, reading_um=reading, spread_um=[0.0] * len(z), fields=1)


# -- the curve ----------------------------------------------------------------------------------------
def test_a_linear_curve_is_inverted_exactly_and_extended_with_slope_one() -> None:
    z = list(np.arange(-3.0, 3.01, 0.5))
    cal = curve(z, [1.5 * v + 0.5 for v in z])  # reads 0.5 um at focus, 1.5 um per um
    for true in (-2.7, -0.25, 0.0, 1.3, 2.9):
        assert cal.defocus_um(1.5 * true + 0.5) == pytest.approx(true, abs=1e-9)
    assert cal.reading_at_focus_um == pytest.approx(0.5)
    # beyond the measured ends: slope 1 from the last point
    assert cal.defocus_um(1.5 * 3.0 + 0.5 + 2.0) == pytest.approx(5.0)
    assert cal.defocus_um(1.5 * -3.0 + 0.5 - 1.0) == pytest.approx(-4.0)


def test_a_non_monotonic_stretch_is_fitted_and_maps_to_the_middle_of_its_run() -> None:
    # like unstained cells: just below focus the model reads too high, so -1, -0.5 and 0 tie
    z = [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0]
    reading = [-2.0, -1.4, 1.5, 0.9, 0.6, 1.2, 1.8]
    cal = curve(z, reading)
    tied = (1.5 + 0.9 + 0.6) / 3  # the isotonic fit pools the violators
    assert cal.defocus_um(tied) == pytest.approx(-0.5)  # the middle of -1.0, -0.5, 0.0
    assert cal.defocus_um(1.8) == pytest.approx(1.0)
    assert cal.defocus_um(-1.4) == pytest.approx(-1.5)
    readings = np.linspace(-3, 3, 61)
    mapped = [cal.defocus_um(r) for r in readings]
    assert np.all(np.diff(mapped) >= 0)  # the inverse is monotonic too
    assert cal.flat_at_focus_um == pytest.approx(1.0)  # -1.0..0.0 read alike: focus is somewhere in there
    z_linear = list(np.arange(-2.0, 2.01, 0.5))
    assert curve(z_linear, [1.2 * v for v in z_linear]).flat_at_focus_um == 0.0


def brightness_sweep(fields: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Readings 1.2 z + 0.3 plus a bias that follows each field's brightness at 0..+3 um, as on cells."""
    rng = np.random.default_rng(seed)
    planes = np.arange(-4.0, 4.01, 0.5)
    brightness = rng.uniform(0.78, 0.80, size=fields)
    slope = np.where((planes >= 0.0) & (planes <= 3.0), 30.0, 0.0)  # 0.6 um of reading across the fields
    bias = slope[None, :] * (brightness[:, None] - 0.79)
    table = 1.2 * planes[None, :] + 0.3 + bias + rng.normal(0.0, 0.03, size=(fields, planes.size))
    return planes, table, brightness


def test_the_brightness_correction_takes_out_a_bias_that_follows_the_fields_brightness() -> None:
    planes, table, brightness = brightness_sweep(9, seed=1)
    plain = calibration_from_table(planes, table)
    corrected = calibration_from_table(planes, table, brightness)
    assert plain.brightness_slope_um is None and corrected.brightness_slope_um is not None
    assert corrected.brightness_range == (pytest.approx(brightness.min()), pytest.approx(brightness.max()))
    # slopes only in the window where verify frames land (-2..+3 um), none beyond it
    z, slope = np.array(corrected.z_um), np.array(corrected.brightness_slope_um)
    assert np.all(slope[(z < FIT_WINDOW_UM[0]) | (z > FIT_WINDOW_UM[1])] == 0.0)
    assert np.all(slope[(z >= 0.5) & (z <= 2.5)] > 15.0)
    # other fields of the same slide, read at 0..+3 um
    _, others, other_brightness = brightness_sweep(40, seed=2)
    verify = (planes >= 0.0) & (planes <= 3.0)
    errors = {"plain": [], "corrected": []}
    for row, b in zip(others, other_brightness, strict=True):
        for z, reading in zip(planes[verify], row[verify], strict=True):
            errors["plain"].append(plain.defocus_um(reading, b) - z)  # no correction fitted: b is not used
            errors["corrected"].append(corrected.defocus_um(reading, b) - z)
    plain_err, corrected_err = np.abs(errors["plain"]), np.abs(errors["corrected"])
    assert np.percentile(plain_err, 95) > 0.2  # the fields' brightness bias, unread
    assert np.percentile(corrected_err, 95) < 0.1 and corrected_err.max() < 0.2
    # without a brightness the reading is inverted as it is; far outside the calibrated range the
    # brightness is held to that range widened by its own width
    lo, hi = corrected.brightness_range
    reading = 1.2 * 1.5 + 0.3
    assert corrected.defocus_um(reading) != corrected.defocus_um(reading, hi)
    assert corrected.defocus_um(reading, 0.95) == pytest.approx(corrected.defocus_um(reading, 2 * hi - lo))
    assert corrected.defocus_um(reading, 0.05) == pytest.approx(corrected.defocus_um(reading, 2 * lo - hi))


def test_the_brightness_correction_is_kept_in_the_file_and_checked(tmp_path: Path) -> None:
    planes, table, brightness = brightness_sweep(9, seed=1)
    cal = calibration_from_table(planes, table, brightness, source="bundled")
    data = cal.to_dict()
    assert data["format_version"] == 3 and len(data["brightness_slope_um"]) == len(data["z_um"])
    again = FocusCalibration.load(cal.save(tmp_path / "cal.json"))
    assert again == cal and again.defocus_um(2.1, 0.785) == cal.defocus_um(2.1, 0.785)
    # a version 2 file (before the correction) still loads, without one
    old = {k: v for k, v in data.items() if not k.startswith("brightness_")} | {"format_version": 2}
    assert FocusCalibration.from_dict(old).brightness_slope_um is None
    for change, message in [
        ({"format_version": 2}, "need.s. format_version 3"),
        ({"brightness_mean": None}, "must be given together"),
        ({"brightness_slope_um": data["brightness_slope_um"][:-1]}, "one per plane"),
        ({"brightness_slope_um": "steep"}, "brightness_slope_um must be lists"),
        ({"brightness_range": [0.8, 0.7]}, "lo <= mean <= hi"),
        ({"brightness_mean": 0.9}, "lo <= mean <= hi"),
    ]:
        with pytest.raises(ValueError, match=message):
            FocusCalibration.from_dict(data | change)


@pytest.mark.parametrize(
    ("z", "reading", "message"),
    [
        ([-1.0, 0.0, 1.0], [0.2, 0.3, 0.35], "changes by only"),
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], "include focus"),
        ([-1.0, 0.0], [-1.0, 0.0], "at least 3 planes"),
        ([-1.0, 1.0, 0.0], [-1.0, 1.0, 0.0], "strictly increasing"),
        ([-1.0, 0.0, 1.0], [-1.0, float("nan"), 1.0], "finite"),
    ],
)
def test_a_curve_that_cannot_be_inverted_is_refused(z: list[float], reading: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        curve(z, reading)


def test_the_file_round_trips_and_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    cal = FocusCalibration(
        z_um=[-1.0, 0.0, 1.0], reading_um=[-0.5, 0.4, 1.6], spread_um=[0.1, 0.2, 0.1], fields=3, source="bundled"
    )
    path = cal.save(tmp_path / "cal.json")
    again = FocusCalibration.load(path)
    assert again.to_dict() == cal.to_dict() and again.defocus_um(1.0) == cal.defocus_um(1.0)
    assert [p.name for p in tmp_path.iterdir()] == ["cal.json"]  # no temporary file left behind
    # a version 1 file (before the tilt was stored) still loads
    old = {k: v for k, v in cal.to_dict().items() if k != "tilt_um_per_mm"} | {"format_version": 1}
    assert FocusCalibration.from_dict(old) == cal
    bad = tmp_path / "bad.json"
    for content, message in [
        ("{not json", "not JSON"),
        (json.dumps({"format": "something-else"}), "not a focus calibration"),
        (json.dumps({**cal.to_dict(), "format_version": 99}), "format_version 99"),
        (json.dumps({**cal.to_dict(), "z_mu": [1]}), "unknown field"),
        (json.dumps({k: v for k, v in cal.to_dict().items() if k != "reading_um"}), "missing reading_um"),
        (json.dumps({**cal.to_dict(), "fields": 0}), "fields must be"),
        (json.dumps({**cal.to_dict(), "tilt_um_per_mm": [1.0]}), "tilt_um_per_mm must be two finite numbers"),
        (json.dumps({**cal.to_dict(), "tilt_um_per_mm": "level"}), "tilt_um_per_mm must be lists"),
        (json.dumps({**cal.to_dict(), "tilt_um_per_mm": [True, False]}), "two finite numbers"),
        (json.dumps({**cal.to_dict(), "tilt_um_per_mm": ["1", "2"]}), "two finite numbers"),
        (json.dumps({**cal.to_dict(), "format_version": 1, "tilt_um_per_mm": [1, 2]}), "needs format_version 2"),
    ]:
        bad.write_text(content)
        with pytest.raises(ValueError, match=message):
            FocusCalibration.load(bad)


# -- the sweep on the simulator ----------------------------------------------------------------------------
def test_the_sweep_reads_every_plane_and_returns_the_stage(predictor: Predictor) -> None:
    scope = make_scope(backlash_um=0.3)
    scope.xy_stage.open()
    assert scope.true_defocus_um() == pytest.approx(0.0, abs=1e-6)
    z0, xy0 = scope.focus_stage.z_um, scope.xy_stage.xy_um
    events: list[dict[str, Any]] = []
    cal = measure_calibration(
        scope.camera,
        scope.focus_stage,
        predictor,
        range_um=2.0,
        step_um=1.0,
        xy_stage=scope.xy_stage,
        positions=[(0.0, 0.0), (600.0, 0.0)],
        progress=events.append,
        source="bundled",
    )
    assert cal.z_um == [-2.0, -1.0, 0.0, 1.0, 2.0] and cal.fields == 2
    assert len(events) == 10 and events[-1]["planes_done"] == 10
    # every plane's reading is the median of what the model read there on the two fields
    at_focus = [e["reading_um"] for e in events if e["defocus_um"] == 0.0]
    assert cal.reading_um[2] == pytest.approx(float(np.median(at_focus)))
    # the model reads further out as the specimen goes further out: the curve rises overall
    assert cal.reading_um[-1] - cal.reading_um[0] > 2.0
    assert scope.focus_stage.z_um == pytest.approx(z0, abs=1e-9) and scope.xy_stage.xy_um == pytest.approx(xy0)


def test_a_tilted_slide_is_fitted_and_gives_the_level_slides_curve(predictor: Predictor) -> None:
    """Nine fields on a slide tilted 2 um/mm in X and -1 um/mm in Y: each field is read against its
    own focus, so the curve is the one the same fields give on a level slide, where no tilt is found."""
    curves: dict[tuple[float, float], FocusCalibration] = {}
    for tilt in ((0.0, 0.0), (2.0, -1.0)):
        scope = open_scope(seed=11, specimen="cells", frame_shape=(504, 672), tilt_um_per_mm=tilt)
        scope.xy_stage.open()
        assert scope.true_defocus_um() == pytest.approx(0.0, abs=1e-3)  # focused at the start, (0, 0)
        curves[tilt] = measure_calibration(
            scope.camera,
            scope.focus_stage,
            predictor,
            range_um=4.0,
            xy_stage=scope.xy_stage,
            positions=nearest_fields((0.0, 0.0), DEFAULT_FIELDS, 500.0),
            brightness_correction=False,  # the tilt alone: its slopes are fitted per sweep and add their own scatter
        )
    level, tilted = curves[(0.0, 0.0)], curves[(2.0, -1.0)]
    assert level.fields == tilted.fields == DEFAULT_FIELDS
    assert level.tilt_um_per_mm is None  # the fields' scatter, not a tilt: read as measured
    assert tilted.tilt_um_per_mm == pytest.approx((2.0, -1.0), abs=0.4)
    near_focus = np.arange(-1.0, 2.01, 0.5)
    gap = np.interp(near_focus, tilted.z_um, tilted.reading_um) - np.interp(near_focus, level.z_um, level.reading_um)
    assert np.max(np.abs(gap)) <= 0.3  # read as measured, the tilted fields' curve is up to 1.7 um off here
    assert FocusCalibration.from_dict(json.loads(json.dumps(tilted.to_dict()))) == tilted  # the tilt is kept


@pytest.mark.slow
def test_on_cells_the_brightness_correction_brings_other_fields_verify_readings_closer(predictor: Predictor) -> None:
    """Nine fields of unstained cells: the sweep fits how the reading follows the fields' brightness,
    and other fields read at +1.5..+2.5 um (where verify frames land short of the aim) come closer
    to the truth than through the same sweep's curve without the correction."""
    scope = open_scope(seed=11, specimen="cells", frame_shape=(672, 896))
    scope.xy_stage.open()
    events: list[dict[str, Any]] = []
    corrected = measure_calibration(
        scope.camera,
        scope.focus_stage,
        predictor,
        range_um=3.0,
        xy_stage=scope.xy_stage,
        positions=nearest_fields((0.0, 0.0), DEFAULT_FIELDS, 500.0),
        progress=events.append,
    )
    assert corrected.brightness_slope_um is not None and corrected.tilt_um_per_mm is None
    planes = np.array(corrected.z_um)
    table = np.full((DEFAULT_FIELDS, planes.size), np.nan)
    for e in events:
        if e["reliable"]:
            table[e["field"], int(np.argmin(np.abs(planes - e["defocus_um"])))] = e["reading_um"]
    plain = calibration_from_table(planes, table)  # the same readings, no correction
    errors: dict[str, list[float]] = {"plain": [], "corrected": []}
    rng = np.random.default_rng(3)
    for x, y in rng.uniform(-4000.0, 4000.0, size=(8, 2)):
        scope.xy_stage.move_to(float(x), float(y))
        for defocus in (1.5, 2.0, 2.5):
            scope.focus_stage.move_to(-scope.focus_stage.direction * defocus)
            scope.camera.flush()
            pred = predictor.predict(scope.camera.snap())
            truth = scope.true_defocus_um()
            errors["plain"].append(abs(plain.defocus_um(pred.defocus_um) - truth))
            errors["corrected"].append(abs(corrected.defocus_um(pred.defocus_um, pred.brightness) - truth))
    plain_err, corrected_err = np.array(errors["plain"]), np.array(errors["corrected"])
    assert np.median(corrected_err) < 0.8 * np.median(plain_err), (np.median(corrected_err), np.median(plain_err))
    assert np.percentile(corrected_err, 90) < 0.7 * np.percentile(plain_err, 90)


def test_a_sweep_outside_the_soft_limits_moves_nothing(predictor: Predictor) -> None:
    scope = make_scope(z_limits_um=(-3.0, 3.0))
    scope.xy_stage.open()
    with pytest.raises(LimitError, match="soft limits"):
        measure_calibration(scope.camera, scope.focus_stage, predictor, range_um=4.0, step_um=1.0)
    (_, xhi), _ = scope.xy_stage.limits_um
    with pytest.raises(LimitError, match=r"field \(.*outside the soft limits"):
        measure_calibration(
            scope.camera,
            scope.focus_stage,
            predictor,
            range_um=1.0,
            step_um=1.0,
            xy_stage=scope.xy_stage,
            positions=[(0.0, 0.0), (xhi + 100.0, 0.0)],
        )
    assert scope.focus_stage.z_um == 0.0 and scope.xy_stage.xy_um == (0.0, 0.0)
    with pytest.raises(ValueError, match="range_um"):
        measure_calibration(scope.camera, scope.focus_stage, predictor, range_um=12.0)
    with pytest.raises(ValueError, match="xy_stage"):
        measure_calibration(scope.camera, scope.focus_stage, predictor, positions=[(0.0, 0.0)])


def test_a_reversed_stage_sweeps_the_same_defocus_planes(predictor: Predictor) -> None:
    """With direction -1 a positive defocus is a smaller stage Z: the planes and their readings match."""
    readings: dict[int, dict[float, float]] = {}
    for direction in (1, -1):
        scope = make_scope(z_direction=direction)
        events: list[dict[str, Any]] = []
        measure_calibration(
            scope.camera,
            scope.focus_stage,
            predictor,
            range_um=2.0,
            step_um=1.0,
            progress=events.append,
            min_confidence=0.0,
        )
        truths = {e["defocus_um"]: e["reading_um"] for e in events}
        readings[direction] = truths
        assert scope.focus_stage.z_um == pytest.approx(0.0, abs=1e-9)
    assert readings[1].keys() == readings[-1].keys() == {-2.0, -1.0, 0.0, 1.0, 2.0}
    for d in readings[1]:  # the same specimen at the same true defocus reads the same
        assert readings[-1][d] == pytest.approx(readings[1][d], abs=0.05)


def test_a_cancelled_sweep_stops_the_stage_and_says_where(predictor: Predictor) -> None:
    scope = make_scope()
    cancel = CancelToken()

    def cancel_after_two(event: dict[str, Any]) -> None:
        if event["planes_done"] == 2:
            cancel.cancel("operator")

    with pytest.raises(CancelledError) as info:
        measure_calibration(
            scope.camera,
            scope.focus_stage,
            predictor,
            range_um=2.0,
            step_um=1.0,
            cancel=cancel,
            progress=cancel_after_two,
        )
    assert any("after 2 of 5 planes" in note for note in info.value.__notes__)
    assert not scope.focus_stage.is_busy()


def test_a_blank_slide_gives_no_calibration(predictor: Predictor) -> None:
    scope = make_scope(stain_scale=0.0, phase_scale=0.0)
    with pytest.raises(UnreliableEstimateError, match="planes gave reliable readings"):
        measure_calibration(scope.camera, scope.focus_stage, predictor, range_um=1.0, step_um=0.5)


# -- use by the routines and the focus lock -----------------------------------------------------------------
CAL = FocusCalibration(
    z_um=[-4.0, -2.0, 0.0, 2.0, 4.0], reading_um=[-3.0, -1.2, 0.5, 3.1, 6.0], spread_um=[0.0] * 5, fields=1
)


def test_a_calibration_with_an_offset_or_an_aim_without_verify_is_refused(predictor: Predictor) -> None:
    scope = make_scope()
    with pytest.raises(ValueError, match="not both"):
        offset = AutofocusOptions(focus_offset_um=0.4)
        run_autofocus("oneshot", scope.camera, scope.focus_stage, predictor, offset, calibration=CAL)
    with pytest.raises(ValueError, match="not both"):
        FocusLock(scope.camera, scope.focus_stage, predictor, FocusLockOptions(focus_offset_um=0.4), calibration=CAL)
    assert scope.focus_stage.z_um == 0.0
    with pytest.raises(ValueError, match="needs verify"):
        AutofocusOptions(aim_um=2.0, verify=False)
    with pytest.raises(ValueError, match=r"aim_um must be .*-5\.\.\+5 um"):
        AutofocusOptions(aim_um=6.0)


@pytest.mark.parametrize("routine", ["oneshot", "hybrid"])
def test_the_first_move_aims_through_the_calibration(predictor: Predictor, routine: str) -> None:
    scope = make_scope()
    scope.focus_stage.move_to(-scope.focus_stage.direction * 3.0)  # true defocus +3 um
    options = AutofocusOptions(min_confidence=0.0, min_move_um=0.0, approach="none", aim_um=1.5)
    record = run_autofocus(routine, scope.camera, scope.focus_stage, predictor, options, calibration=CAL)
    first, verify = record.estimates
    direction = scope.focus_stage.direction
    expected_first = record.start_z_um + direction * (CAL.defocus_um(first["defocus_um"]) - 1.5)
    assert record.moves[0]["to_z_um"] == pytest.approx(expected_first, abs=1e-9)
    expected_last = expected_first + direction * CAL.defocus_um(verify["defocus_um"])
    assert record.moves[-1]["to_z_um"] == pytest.approx(expected_last, abs=1e-9)
    assert first["focus_error_um"] == pytest.approx(CAL.defocus_um(first["defocus_um"]))
    assert record.aim_um == 1.5 and record.calibration == CAL.summary()


@pytest.mark.parametrize("routine", ["oneshot", "hybrid"])
def test_with_an_aim_an_unreliable_verify_frame_still_ends_at_the_first_estimate(
    predictor: Predictor, routine: str
) -> None:
    scope = make_scope()
    scope.focus_stage.move_to(-scope.focus_stage.direction * 3.0)

    def specimen_leaves_the_view(event: dict[str, Any]) -> None:
        if event["event"] == "move":  # after the first correction the frame goes blank
            scope.stain_scale = scope.phase_scale = 0.0

    options = AutofocusOptions(min_confidence=0.0, min_move_um=0.0, approach="none", aim_um=2.0)
    record = run_autofocus(
        routine, scope.camera, scope.focus_stage, predictor, options, progress=specimen_leaves_the_view
    )
    assert record.outcome == "not_converged" and "verify frame unreliable" in record.message
    assert [m["reason"] for m in record.moves] == ["one-shot correction", "aim to focus (verify frame unreliable)"]
    expected = record.start_z_um + scope.focus_stage.direction * record.estimates[0]["defocus_um"]
    assert record.final_z_um == pytest.approx(expected, abs=1e-9)  # where the first estimate put focus


def test_the_focus_lock_corrects_through_the_calibration(predictor: Predictor) -> None:
    scope = make_scope()
    scope.focus_stage.move_to(-scope.focus_stage.direction * 2.5)
    options = FocusLockOptions(dead_band_um=0.0, gain=1.0, max_correction_um=10.0, min_confidence=0.0)
    lock = FocusLock(scope.camera, scope.focus_stage, predictor, options, calibration=CAL)
    lock.start()
    z_before = scope.focus_stage.z_um
    update = lock.step()
    assert update["focus_error_um"] == pytest.approx(CAL.defocus_um(update["defocus_um"]))
    assert update["correction_um"] == pytest.approx(update["focus_error_um"])
    assert scope.focus_stage.z_um == pytest.approx(z_before + scope.focus_stage.direction * update["correction_um"])


# -- the command line ---------------------------------------------------------------------------------------
SIM = ["--hw", "sim_frame_width=448", "--hw", "sim_frame_height=448", "--threads", "1"]


def test_cli_calibrate_then_focus_through_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cal.json"
    args = ["calibrate", str(path), "--range-um", "3", "--step-um", "1", "--fields", "2", "--min-confidence", "0"]
    assert main([*args, "--json", *SIM]) == 0
    printed = json.loads(capsys.readouterr().out)
    cal = FocusCalibration.load(path)
    assert printed == cal.to_dict() and cal.z_um == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0] and cal.fields == 2
    focus = ["focus", "--routine", "oneshot", "--approach", "none", "--min-confidence", "0", "--sim-start-defocus-um"]
    assert main([*focus, "3", "--calibration", str(path), "--aim-um", "1.5", "--json", *SIM]) in (0, 1)
    record = json.loads(capsys.readouterr().out)
    assert record["aim_um"] == 1.5 and record["calibration"] == cal.summary()
    first = record["estimates"][0]
    move = record["moves"][0]
    # direction +1 in the simulator's default configuration: the move is the calibrated defocus minus the aim
    assert move["to_z_um"] - move["from_z_um"] == pytest.approx(cal.defocus_um(first["defocus_um"]) - 1.5, abs=1e-6)
    # as a table: two fields are too few to fit a tilt, and it says that none was applied
    assert main([*args, *SIM]) == 0
    assert "no slide tilt applied: the fields were read as on a level slide" in capsys.readouterr().out


def test_cli_calibrate_sweeps_a_grid_of_fields_by_default_and_fits_the_tilt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cal.json"
    tilted = ["--hw", "sim_tilt_x_um_per_mm=3", "--hw", "sim_specimen=tissue"]
    assert main(["calibrate", str(path), "--range-um", "3", "--min-confidence", "0", *tilted, *SIM]) == 0
    printed = capsys.readouterr().out
    cal = FocusCalibration.load(path)
    assert cal.fields == DEFAULT_FIELDS and cal.tilt_um_per_mm is not None
    assert cal.tilt_um_per_mm[0] == pytest.approx(3.0, abs=1.0) and cal.tilt_um_per_mm[1] == pytest.approx(0, abs=1.0)
    assert f"on {DEFAULT_FIELDS} field(s)" in printed and "slide tilt fitted over the fields: defocus +" in printed
    # the brightness correction is fitted where the fields show one, and the output says so
    assert (cal.brightness_slope_um is not None) == ("corrected for the fields' mean brightness" in printed)
    args = ["calibrate", str(path), "--range-um", "2", "--fields", "5", "--no-brightness-correction", *SIM]
    assert main(args) == 0
    assert FocusCalibration.load(path).brightness_slope_um is None
    assert "mean brightness" not in capsys.readouterr().out


def test_cli_calibrate_and_focus_refuse_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", str(tmp_path / "no" / "cal.json"), *SIM]) == 2
    assert "folder" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "c.json"), "--range-um", "20", *SIM]) == 2
    assert "range_um must be in" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "c.json"), "--fields", "0", *SIM]) == 2
    assert "--fields must be >= 1" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert main(["focus", "--calibration", str(tmp_path / "bad.json"), *SIM]) == 2
    assert "not a focus calibration" in capsys.readouterr().err
    CAL.save(tmp_path / "good.json")
    assert main(["focus", "--calibration", str(tmp_path / "good.json"), "--focus-offset-um", "0.5", *SIM]) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


# -- the recommended set-up, end to end --------------------------------------------------------------------
# 4 x 4 tiles. The frame's reading averages its tiles' errors, so a crop spreads more from field to
# field than a full frame's 80 tiles (one-shot + verify within 0.3 um in 99.3 % of 1,000 full-frame
# runs): on 3 x 3 tiles (672 x 672) the tissue run from -6 um ended 0.303 um out.
RECOMMENDED_FRAME = (896, 896)


@pytest.fixture(scope="module")
def calibrated_near() -> tuple[Predictor, dict[str, FocusCalibration]]:
    """The defaults a user gets: wide + near-focus model, one default sweep per specimen on a field of its own."""
    near = Predictor.from_checkpoint(None, runtime="onnx", threads=1, near_model="auto")
    curves = {}
    for specimen in ("cells", "tissue"):
        scope = open_scope(seed=5, specimen=specimen, frame_shape=RECOMMENDED_FRAME, backlash_um=0.3)
        scope.xy_stage.open()
        curves[specimen] = measure_calibration(
            scope.camera, scope.focus_stage, near, xy_stage=scope.xy_stage, positions=[(0.0, 0.0)]
        )
    return near, curves


@pytest.mark.slow
@pytest.mark.parametrize("routine", ["oneshot", "hybrid"])
@pytest.mark.parametrize("start_defocus_um", [-6.0, 5.0])
@pytest.mark.parametrize("specimen", ["cells", "tissue"])
def test_the_default_sweep_and_aim_focus_within_0_3_um_from_both_sides(
    calibrated_near: tuple[Predictor, dict[str, FocusCalibration]], specimen: str, start_defocus_um: float, routine: str
) -> None:
    """Calibrated with the default sweep, aimed at the recommended first-move aim: two frames end within 0.3 um."""
    near, curves = calibrated_near
    assert curves[specimen].z_um[0] == -DEFAULT_RANGE_UM and curves[specimen].z_um[-1] == DEFAULT_RANGE_UM
    scope = open_scope(seed=5, specimen=specimen, frame_shape=RECOMMENDED_FRAME, backlash_um=0.3)
    scope.xy_stage.open()
    scope.xy_stage.move_to(-700.0, 500.0)  # another field than the calibration's, with sample in it
    scope.focus_stage.move_to(-scope.focus_stage.direction * start_defocus_um)
    record = run_autofocus(
        routine,
        scope.camera,
        scope.focus_stage,
        near,
        AutofocusOptions(aim_um=CALIBRATED_AIM_UM),
        calibration=curves[specimen],
    )
    assert record.outcome == "converged", record.message
    assert record.frames_used == 2 and [e["model"] for e in record.estimates][-1] == "near"
    assert abs(scope.true_defocus_um()) <= 0.3, (record.estimates, scope.true_defocus_um())
