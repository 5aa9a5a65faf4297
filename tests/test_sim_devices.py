"""The simulated camera and stages pass the shared device contracts; faults raise the right errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drivers.base import Camera, FocusStage, XYStage
from drivers.errors import ConnectionLostError, DeviceTimeoutError, LimitError
from drivers.simulated import SimulatedMicroscope
from tests.device_contracts import CameraContract, FocusStageContract, XYStageContract


def _scope(**options: object) -> SimulatedMicroscope:
    return SimulatedMicroscope(seed=3, frame_shape=(96, 128), **options)  # type: ignore[arg-type]


class TestSimulatedCamera(CameraContract):
    @pytest.fixture
    def camera(self) -> Iterator[Camera]:
        scope = _scope()
        with scope.camera as cam:
            yield cam


class TestSimulatedCamera12Bit(CameraContract):
    @pytest.fixture
    def camera(self) -> Iterator[Camera]:
        scope = _scope(bit_depth=12)
        with scope.camera as cam:
            yield cam


class TestSimulatedFocusStage(FocusStageContract):
    @pytest.fixture
    def focus_stage(self) -> Iterator[FocusStage]:
        scope = _scope(z_limits_um=(-30.0, 30.0), z_max_step_um=15.0)
        with scope.focus_stage as stage:
            yield stage


class TestSimulatedFocusStageReversed(FocusStageContract):
    @pytest.fixture
    def focus_stage(self) -> Iterator[FocusStage]:
        scope = _scope(z_direction=-1, backlash_um=0.5, focus_offset_um=20.0)
        with scope.focus_stage as stage:
            yield stage


class TestSimulatedXYStage(XYStageContract):
    @pytest.fixture
    def xy_stage(self) -> Iterator[XYStage]:
        scope = _scope()
        with scope.xy_stage as stage:
            yield stage


def test_refused_moves_leave_truth_unchanged() -> None:
    scope = _scope(z_limits_um=(-20.0, 20.0), z_max_step_um=10.0)
    with scope.focus_stage as stage:
        stage.move_to(3.0)
        truth = scope.true_defocus_um()
        for bad in (25.0, -25.0, 14.0):
            with pytest.raises(LimitError):
                stage.move_to(bad)
        assert stage.z_um == pytest.approx(3.0)
        assert scope.true_defocus_um() == pytest.approx(truth)


def test_moves_take_simulated_time() -> None:
    scope = _scope(z_speed_um_s=100.0, z_settle_ms=20.0)
    with scope.focus_stage as stage:
        t0 = scope.time_s
        stage.move_by(10.0)
        elapsed = scope.time_s - t0
        assert elapsed >= 0.1 + 0.02
        assert elapsed < 0.2


def test_no_wait_move_can_be_stopped_midway() -> None:
    scope = _scope(z_speed_um_s=100.0)
    with scope.focus_stage as stage:
        z0 = stage.z_um
        stage.move_to(z0 + 10.0, wait=False)
        assert stage.is_busy()
        scope.advance(0.05)  # half-way
        stage.stop()
        assert not stage.is_busy()
        assert stage.z_um == pytest.approx(z0 + 5.0, abs=0.01)
        scope.advance(1.0)
        assert stage.z_um == pytest.approx(z0 + 5.0, abs=0.01)


def test_camera_timeout_fault() -> None:
    scope = _scope()
    with scope.camera as cam:
        scope.faults.camera_timeout = True
        t0 = scope.time_s
        with pytest.raises(DeviceTimeoutError, match="no frame"):
            cam.snap()
        assert scope.time_s - t0 >= cam.timeout_s  # type: ignore[attr-defined]
        scope.faults.camera_timeout = False
        assert cam.snap().shape == (96, 128, 3)


def test_stage_stall_fault_keeps_position() -> None:
    scope = _scope()
    with scope.focus_stage as stage:
        stage.move_to(2.0)
        truth = scope.true_defocus_um()
        scope.faults.stage_stall = True
        with pytest.raises(DeviceTimeoutError, match="stalled"):
            stage.move_by(5.0)
        assert stage.z_um == pytest.approx(2.0)
        assert not stage.is_busy()
        assert scope.true_defocus_um() == pytest.approx(truth)
        scope.faults.stage_stall = False
        assert stage.move_by(5.0) == pytest.approx(7.0)


def test_xy_stall_fault_keeps_position() -> None:
    scope = _scope()
    with scope.xy_stage as xy:
        xy.move_to(100.0, 100.0)
        scope.faults.stage_stall = True
        with pytest.raises(DeviceTimeoutError, match="stalled"):
            xy.move_to(500.0, 100.0)
        assert xy.xy_um == pytest.approx((100.0, 100.0))


def test_connection_lost_fault() -> None:
    scope = _scope()
    with scope.camera as cam, scope.focus_stage as stage, scope.xy_stage as xy:
        stage.move_to(1.0)
        truth = scope.true_defocus_um()
        scope.faults.connection_lost = True
        with pytest.raises(ConnectionLostError):
            cam.snap()
        with pytest.raises(ConnectionLostError):
            stage.move_by(1.0)
        with pytest.raises(ConnectionLostError):
            _ = stage.z_um
        with pytest.raises(ConnectionLostError):
            xy.move_by(10.0, 0.0)
        assert scope.true_defocus_um() == pytest.approx(truth)
        scope.faults.connection_lost = False
        assert stage.z_um == pytest.approx(1.0)


def test_realtime_mode_really_waits() -> None:
    import time

    scope = _scope(realtime=True, z_speed_um_s=100.0, z_settle_ms=10.0)
    with scope.focus_stage as stage:
        t0_wall, t0_sim = time.monotonic(), scope.time_s
        stage.move_by(3.0)  # 30 ms of motion plus 10 ms settle
        assert time.monotonic() - t0_wall >= 0.04
        assert scope.time_s - t0_sim >= 0.04
        assert stage.z_um == pytest.approx(3.0)


def test_camera_pixel_size_is_at_the_sample() -> None:
    scope = _scope(objective="20x/0.75")
    assert scope.camera.pixel_size_um == pytest.approx(3.45 / 20)
    assert scope.camera.pixel_size_um == pytest.approx(scope.objective.pixel_um)
