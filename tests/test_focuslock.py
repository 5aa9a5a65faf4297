"""Focus lock on the simulated microscope, driven by the simulator's clock."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
from model_quality import expect_failure_below_target
from sim_scope import open_scope
from test_calibration import curve

from autofocus.calibration_settings import LOCK_CURVE_RANGE_UM, LOCK_INTEGRAL_GAIN
from autofocus.cancel import CancelToken
from autofocus.focuslock import (
    MAX_FLAT_AT_FOCUS_UM,
    OUT_OF_FOCUS_READING_UM,
    FocusLock,
    FocusLockOptions,
    held_focus_warning,
)
from autofocus.predictor import Predictor
from drivers.errors import CancelledError, ConnectionLostError, LimitError, UnreliableEstimateError
from drivers.simulated import DriftModel, SimulatedMicroscope

make_scope = partial(open_scope, seed=5, specimen="tissue")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(None, runtime="torch", threads=1)


@pytest.fixture(scope="module")
def near_predictor() -> Predictor:
    """With the bundled near-focus model, as the service runs it: what a curve around focus reads."""
    return Predictor.from_checkpoint(None, runtime="torch", threads=1, near_model="auto")


def make_lock(scope: SimulatedMicroscope, predictor: Predictor, **options: Any) -> FocusLock:
    return FocusLock(
        scope.camera,
        scope.focus_stage,
        predictor,
        FocusLockOptions(**options),
        clock=lambda: scope.time_s,
        sleep=scope.advance,
    )


def test_step_needs_start(predictor: Predictor) -> None:
    lock = make_lock(make_scope(), predictor)
    assert lock.state == "stopped" and lock.reason == "not started"
    with pytest.raises(RuntimeError, match="start"):
        lock.step()


def test_pauses_on_unreliable_estimates_and_resumes(predictor: Predictor) -> None:
    scope = make_scope()
    lock = make_lock(scope, predictor, min_confidence=1.0, pause_after=2, resume_after=2, dead_band_um=1000.0)
    lock.start()
    first = lock.step()
    assert first["reliable"] is False and lock.state == "running"  # one bad estimate is tolerated
    lock.step()
    assert lock.state == "paused_unreliable" and "confidence" in lock.reason
    lock.options.min_confidence = 0.0  # estimates become acceptable again
    lock.step()
    assert lock.state == "paused_unreliable"
    lock.step()
    assert lock.state == "running" and "resumed" in lock.reason
    assert lock.corrections == 0 and lock.frames_snapped == 4


def test_blank_frames_pause_the_lock(predictor: Predictor) -> None:
    scope = make_scope(stain_scale=0.0, phase_scale=0.0)
    lock = make_lock(scope, predictor, pause_after=1)
    lock.start()
    update = lock.step()
    assert update["tiles_used"] == 0 and lock.state == "paused_unreliable" and "blank" in lock.reason
    assert scope.focus_stage.z_um == 0.0


def test_dead_band_and_rate_limit(predictor: Predictor) -> None:
    scope = make_scope()
    scope.focus_stage.move_to(3.0)
    lock = make_lock(scope, predictor, min_confidence=0.0, dead_band_um=1000.0)
    lock.start()
    update = lock.step()
    assert update["correction_um"] == 0.0 and scope.focus_stage.z_um == 3.0

    lock = make_lock(scope, predictor, min_confidence=0.0, dead_band_um=0.0, max_correction_um=0.01)
    lock.start()
    for _ in range(3):
        z_before = scope.focus_stage.z_um
        update = lock.step()
        estimate = update["defocus_um"]
        expected = float(np.clip(lock.options.gain * estimate, -0.01, 0.01))
        assert update["correction_um"] == pytest.approx(expected)
        assert update["rate_limited"] is (abs(lock.options.gain * estimate) > 0.01)
        assert scope.focus_stage.z_um == pytest.approx(z_before + scope.focus_stage.direction * expected)


def test_the_lock_holds_the_focus_offset(predictor: Predictor) -> None:
    scope = make_scope(noise=False)  # the same frame, and so the same estimate, at the same z
    scope.focus_stage.move_to(2.0)
    options = {"min_confidence": 0.0, "gain": 1.0, "max_correction_um": 10.0}
    probe = make_lock(scope, predictor, dead_band_um=1000.0, **options)
    probe.start()
    estimate = probe.step()["defocus_um"]
    # an estimate at the offset is inside the dead band: nothing moves
    held = make_lock(scope, predictor, dead_band_um=0.05, focus_offset_um=estimate, **options)
    held.start()
    update = held.step()
    assert update["defocus_um"] == pytest.approx(estimate, abs=1e-4)
    assert update["correction_um"] == 0.0 and scope.focus_stage.z_um == 2.0
    # 1 um away from the offset: the lock corrects the difference, not the whole estimate
    lock = make_lock(scope, predictor, dead_band_um=0.05, focus_offset_um=estimate - 1.0, **options)
    lock.start()
    update = lock.step()
    assert update["correction_um"] == pytest.approx(1.0, abs=1e-4)
    assert scope.focus_stage.z_um == pytest.approx(2.0 + scope.focus_stage.direction * 1.0, abs=1e-4)
    with pytest.raises(ValueError, match="focus_offset_um"):
        FocusLockOptions(focus_offset_um=9.0)


def test_a_correction_outside_the_limits_stops_the_lock(predictor: Predictor) -> None:
    scope = make_scope(z_limits_um=(-0.001, 0.001))
    lock = make_lock(scope, predictor, min_confidence=0.0, dead_band_um=0.0, max_correction_um=5.0)
    lock.start()
    update = lock.step()
    if abs(update["defocus_um"]) <= 0.001:
        pytest.skip("the estimate happened to fit inside the 2 nm limits")
    assert lock.state == "stopped" and "correction refused" in lock.reason and "soft limits" in lock.reason
    assert scope.focus_stage.z_um == 0.0


def test_run_loop_uses_the_injected_clock_and_can_be_cancelled(predictor: Predictor) -> None:
    scope = make_scope()
    lock = make_lock(scope, predictor, interval_s=60.0, min_confidence=0.0, dead_band_um=1000.0)
    status = lock.run(duration_s=300.0)
    assert status["state"] == "stopped" and status["reason"] == "duration reached"
    assert status["steps"] == 6  # t = 0, 60, ..., 300 s
    assert 300.0 <= scope.time_s < 400.0

    token = CancelToken()
    seen: list[dict[str, Any]] = []

    def on_update(update: dict[str, Any]) -> None:
        seen.append(update)
        if len(seen) == 3:
            token.cancel("enough")

    status = lock.run(token, on_update)
    assert len(seen) == 3 and status["state"] == "stopped" and "enough" in status["reason"]


def test_a_device_error_stops_stage_and_lock_and_is_raised(predictor: Predictor) -> None:
    scope = make_scope()
    lock = make_lock(scope, predictor)
    lock.start()
    scope.faults.connection_lost = True
    with pytest.raises(ConnectionLostError):
        lock.step()
    assert lock.state == "stopped" and "ConnectionLostError" in lock.reason
    scope.faults.connection_lost = False
    assert not scope.focus_stage.is_busy()


@pytest.mark.slow
def test_lock_follows_an_injected_drift(predictor: Predictor, request: pytest.FixtureRequest) -> None:
    expect_failure_below_target(request)
    drift = DriftModel(rate_um_per_min=1.0, oscillation_um=0.5, oscillation_period_s=600.0)
    scope = make_scope(seed=21, specimen="cells", frame_shape=(672, 672), drift=drift)
    lock = make_lock(scope, predictor, interval_s=30.0, dead_band_um=0.1, max_correction_um=3.0)
    truths: list[float] = []
    lock.run(on_update=lambda _u: truths.append(scope.true_defocus_um()), duration_s=20 * 60.0)
    # without the lock the drift would reach 20 um; with it the error after each correction stays small
    assert scope.true_defocus_um() == pytest.approx(0.0, abs=1.0)
    assert max(abs(t) for t in truths[2:]) < 1.5
    assert lock.corrections >= 10


def test_the_integral_term_learns_the_drift_and_moves_by_it_inside_the_dead_band(predictor: Predictor) -> None:
    scope = make_scope(noise=False)  # the same frame, and so the same estimate, at the same z
    scope.focus_stage.move_to(2.0)
    lock = make_lock(scope, predictor, min_confidence=0.0, dead_band_um=1000.0, integral_gain=0.25)
    lock.start()
    first = lock.step()
    error = first["focus_error_um"]
    # inside the dead band the proportional part is 0, but the learned drift is still corrected
    assert lock.drift_per_step_um == pytest.approx(0.25 * error)
    assert first["correction_um"] == pytest.approx(0.25 * error)
    assert scope.focus_stage.z_um == pytest.approx(2.0 + scope.focus_stage.direction * 0.25 * error)
    learned = lock.drift_per_step_um
    second = lock.step()
    # it aims half a learned step ahead: the error it learns from is the reading less half the drift
    assert lock.drift_per_step_um == pytest.approx(learned + 0.25 * (second["focus_error_um"] - 0.5 * learned))
    assert second["correction_um"] == pytest.approx(lock.drift_per_step_um)  # still inside the dead band
    assert lock.status()["drift_per_step_um"] == lock.drift_per_step_um
    lock.start()  # a restart forgets the drift
    assert lock.drift_per_step_um == 0.0
    # the learned drift stays within the rate limit (no wind-up while corrections are capped)
    capped = make_lock(
        scope, predictor, min_confidence=0.0, dead_band_um=0.0, integral_gain=1.0, max_correction_um=0.01
    )
    capped.start()
    assert abs(capped.step()["focus_error_um"]) > 0.01
    assert abs(capped.drift_per_step_um) == pytest.approx(0.01)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="integral_gain"):
            FocusLockOptions(integral_gain=bad)


@pytest.mark.slow
def test_the_integral_term_removes_the_lag_behind_a_steady_drift(near_predictor: Predictor) -> None:
    """A proportional lock trails a drift of d per step by about d / gain in its reading; with
    the integral term the reading's mean error goes to half the learned drift per step (the lock
    aims that far ahead, so focus is crossed halfway between frames)."""
    mean_error: dict[float, float] = {}
    learned: dict[float, float] = {}
    for integral_gain in (0.0, 0.2):
        drift = DriftModel(rate_um_per_min=1.0, oscillation_um=0.0)
        scope = make_scope(seed=21, specimen="cells", frame_shape=(448, 448), drift=drift)
        lock = make_lock(
            scope, near_predictor, interval_s=30.0, dead_band_um=0.1, max_correction_um=3.0, integral_gain=integral_gain
        )
        updates: list[dict[str, Any]] = []
        lock.run(on_update=updates.append, duration_s=30 * 60.0)
        errors = [u["focus_error_um"] for u in updates[30:]]
        mean_error[integral_gain], learned[integral_gain] = float(np.mean(errors)), lock.drift_per_step_um
    # 0.5 um of drift per 30 s step and gain 0.5: the proportional lock reads about +1 um
    assert mean_error[0.0] > 0.6 and learned[0.0] == 0.0
    assert learned[0.2] == pytest.approx(0.5, abs=0.15)
    assert abs(mean_error[0.2] - 0.5 * learned[0.2]) < 0.3


def test_step_with_the_time_lapse_frame_snaps_nothing(predictor: Predictor) -> None:
    scope = make_scope()
    lock = make_lock(scope, predictor, min_confidence=0.0, dead_band_um=1000.0)
    lock.start()
    frame = scope.camera.snap()  # the caller's own time-lapse frame
    update = lock.step(frame)
    assert update["frame"] == "given" and lock.frames_snapped == 0 and lock.steps == 1
    assert update["defocus_um"] == pytest.approx(predictor.predict(frame).defocus_um, abs=1e-6)
    assert lock.status()["last"] == update


def test_calibrate_here_measures_this_field_and_returns_the_stage(predictor: Predictor) -> None:
    scope = make_scope()
    z0 = scope.focus_stage.z_um
    lock = make_lock(scope, predictor, min_confidence=0.0)
    planes: list[dict[str, Any]] = []
    cal = lock.calibrate_here(2.0, progress=planes.append)
    assert lock.calibration is cal and cal.fields == 1 and cal.z_um[0] == -2.0 and cal.z_um[-1] == 2.0
    assert len(planes) == len(cal.z_um) == 9 and planes[-1]["planes_total"] == 9
    assert scope.focus_stage.z_um == pytest.approx(z0)  # the sweep leaves the stage where it was
    lock.start()
    update = lock.step()  # read through the curve just measured
    assert update["focus_error_um"] == pytest.approx(cal.defocus_um(update["defocus_um"], None))


def test_a_lock_calibrated_here_holds_the_reading_it_had_where_focus_lies_in_a_flat_run(
    near_predictor: Predictor,
) -> None:
    # on this cells field the near model's fit reads 0 and -0.5 um alike (of the first eight cells
    # and eight tissue fields, the only one that does), so the curve maps the reading at focus to
    # the middle of that run; the lock counts errors from there, i.e. holds the reading it had
    scope = make_scope(seed=4, specimen="cells", noise=False)  # the same frame at the same z
    lock = make_lock(scope, near_predictor, min_confidence=0.0, dead_band_um=0.0, integral_gain=0.2)
    cal = lock.calibrate_here(2.0)
    assert 0.0 < cal.flat_at_focus_um <= MAX_FLAT_AT_FOCUS_UM
    assert lock.curve_zero_um == pytest.approx(cal.defocus_um(cal.reading_at_focus_um)) and lock.curve_zero_um < -0.1
    lock.start()
    update = lock.step()  # at the Z the sweep started from: nothing to correct
    assert update["focus_error_um"] == pytest.approx(0.0, abs=1e-6) and update["correction_um"] == 0.0


def test_calibrate_here_refuses_what_would_say_twice_where_focus_is(predictor: Predictor) -> None:
    scope = make_scope()
    with pytest.raises(ValueError, match=r"focus_offset_um=\+0.500"):
        make_lock(scope, predictor, focus_offset_um=0.5).calibrate_here()
    lock = make_lock(scope, predictor, min_confidence=0.0)
    for bad in (0.0, -1.0, 10.5, float("nan")):
        with pytest.raises(ValueError, match="range_um must be in"):
            lock.calibrate_here(bad)
    lock.start()
    with pytest.raises(RuntimeError, match="before starting"):
        lock.calibrate_here()
    lock.stop()
    lock.calibrate_here(1.0)
    with pytest.raises(ValueError, match="already reads through a calibration"):
        lock.calibrate_here(1.0)


def test_calibrate_here_outside_the_limits_or_cancelled_leaves_the_lock_as_it_was(predictor: Predictor) -> None:
    scope = make_scope(z_limits_um=(-1000.0, 2.0))
    lock = make_lock(scope, predictor, min_confidence=0.0)
    with pytest.raises(LimitError, match="nothing moved"):
        lock.calibrate_here(4.0)
    assert lock.calibration is None and scope.focus_stage.z_um == 0.0
    cancel = CancelToken()

    def cancel_after_three(message: dict[str, Any]) -> None:
        if message["planes_done"] == 3:
            cancel.cancel("operator")

    with pytest.raises(CancelledError):
        lock.calibrate_here(1.5, cancel=cancel, progress=cancel_after_three)
    assert lock.calibration is None and not scope.focus_stage.is_busy()


@pytest.mark.slow
def test_a_lock_calibrated_here_holds_this_focus_not_the_models_zero(near_predictor: Predictor) -> None:
    """On this cells field the models' zero lies about 0.4 um from focus: an integral lock without
    a curve holds it there; with the curve swept on this field it holds the focus the sample was
    at. The truth is sampled every 5 s, between lock frames too (the drift builds up between them)."""
    rms: dict[bool, float] = {}
    mean: dict[bool, float] = {}
    for here in (False, True):
        drift = DriftModel(rate_um_per_min=1.0, oscillation_um=0.0)
        scope = make_scope(seed=1, specimen="cells", frame_shape=(448, 448), drift=drift)
        truths: list[float] = []

        def sleep(seconds: float, scope: SimulatedMicroscope = scope, truths: list[float] = truths) -> None:
            while seconds > 1e-9:
                scope.advance(min(seconds, 5.0))
                seconds -= min(seconds, 5.0)
                truths.append(scope.true_defocus_um())

        options = FocusLockOptions(
            interval_s=30.0, dead_band_um=0.1, max_correction_um=3.0, integral_gain=LOCK_INTEGRAL_GAIN
        )
        lock = FocusLock(
            scope.camera, scope.focus_stage, near_predictor, options, clock=lambda s=scope: s.time_s, sleep=sleep
        )
        if here:
            lock.calibrate_here(LOCK_CURVE_RANGE_UM)
        lock.run(duration_s=30 * 60.0, poll_s=5.0)
        settled = np.array(truths[len(truths) // 3 :])
        rms[here], mean[here] = float(np.sqrt(np.mean(settled**2))), float(np.mean(settled))
    assert abs(mean[True]) < 0.25 and rms[True] < 0.3, (rms, mean)
    assert abs(mean[False]) > 0.3 and rms[False] > rms[True] + 0.15, (rms, mean)


def test_calibrate_here_refuses_a_field_the_model_reads_alike_around_focus(near_predictor: Predictor) -> None:
    # on this cells field the models read about +0.6 um from -1.5 to 0 um of defocus (contrast inversion)
    scope = make_scope(seed=2, specimen="cells")
    lock = make_lock(scope, near_predictor)
    with pytest.raises(UnreliableEstimateError, match="cannot see where focus is"):
        lock.calibrate_here(LOCK_CURVE_RANGE_UM)
    assert lock.calibration is None and scope.focus_stage.z_um == pytest.approx(0.0)
    assert MAX_FLAT_AT_FOCUS_UM < 1.5


def test_a_lock_started_out_of_focus_holds_that_plane_and_warns(
    near_predictor: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    scope = make_scope(seed=1, specimen="cells")
    scope.focus_stage.move_by(-scope.focus_stage.direction * 3.0)  # 3 um of defocus: not focused
    z_start = scope.focus_stage.z_um
    lock = make_lock(scope, near_predictor, min_confidence=0.0, integral_gain=0.2)
    with caplog.at_level("WARNING", logger="autofocus.focuslock"):
        cal = lock.calibrate_here(2.0)
    warning = held_focus_warning(cal)
    assert warning is not None and abs(cal.reading_at_focus_um) > OUT_OF_FOCUS_READING_UM
    assert [r.getMessage() for r in caplog.records] == [f"focus lock: {warning}"]
    lock.start()
    lock.step()
    assert scope.focus_stage.z_um == pytest.approx(z_start, abs=0.5)  # it holds the plane it was given
    assert lock.warning == warning  # the service reports it from here
    z = [-1.0, 0.0, 1.0]  # linear curves, 1.5 um of reading per um, reading 0.4 / 3.0 um at focus
    assert held_focus_warning(curve(z, [0.4 + 1.5 * v for v in z])) is None
    assert "+3.00 um" in str(held_focus_warning(curve(z, [3.0 + 1.5 * v for v in z])))
