"""The shared interface suites every Camera / FocusStage / XYStage implementation must pass.

Use: subclass the contract in a ``test_*.py`` file as ``class TestMyCamera(CameraContract)``
and provide the fixture it names (an opened device, closed again after the test). The
contract classes are not collected by themselves (their names do not start with ``Test``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from drivers.base import Camera, FocusStage, XYStage
from drivers.errors import LimitError, NotConnectedError


class CameraContract:
    """What every ``Camera`` does. Provide a ``camera`` fixture yielding an opened camera."""

    exposure_tolerance_ms: float = 0.5

    @pytest.fixture
    def camera(self) -> Camera:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_snap_shape_and_dtype(self, camera: Camera) -> None:
        frame = camera.snap()
        h, w = camera.sensor_shape
        assert frame.shape == (h, w, 3)
        assert frame.dtype in (np.uint8, np.uint16)
        if frame.dtype == np.uint8:
            assert camera.bit_depth == 8
        else:
            assert 8 < camera.bit_depth <= 16
            assert int(frame.max()) < 2**camera.bit_depth

    def test_frames_are_not_constant(self, camera: Camera) -> None:
        frame = camera.snap()
        assert float(frame.std()) > 0.0

    def test_flush_then_snap(self, camera: Camera) -> None:
        camera.flush()
        assert camera.snap().shape[:2] == camera.sensor_shape

    def test_exposure_roundtrip(self, camera: Camera) -> None:
        lo, hi = camera.exposure_range_ms
        target = min(max(20.0, lo), hi)
        camera.exposure_ms = target
        assert math.isclose(camera.exposure_ms, target, abs_tol=self.exposure_tolerance_ms)

    def test_exposure_out_of_range_refused(self, camera: Camera) -> None:
        before = camera.exposure_ms
        _, hi = camera.exposure_range_ms
        for bad in (hi * 10 + 1.0, -1.0, float("nan")):
            with pytest.raises(LimitError, match="exposure_ms"):
                camera.exposure_ms = bad
        assert math.isclose(camera.exposure_ms, before, abs_tol=self.exposure_tolerance_ms)

    def test_closed_camera_refuses(self, camera: Camera) -> None:
        camera.close()
        with pytest.raises(NotConnectedError):
            camera.snap()
        camera.open()
        assert camera.snap().ndim == 3

    def test_describe_is_json(self, camera: Camera) -> None:
        info = camera.describe()
        json.dumps(info)
        assert info["open"] is True
        assert info["pixel_size_um"] > 0


class FocusStageContract:
    """What every ``FocusStage`` does. Provide a ``focus_stage`` fixture (opened, idle, with at
    least 20 um of travel inside its soft limits around its position and max_step >= 10 um)."""

    z_tolerance_um: float = 0.05

    @pytest.fixture
    def focus_stage(self) -> FocusStage:  # pragma: no cover - overridden
        raise NotImplementedError

    def _safe_target(self, stage: FocusStage, offset: float) -> float:
        lo, hi = stage.limits_um
        z = stage.z_um
        target = z + offset
        if not lo <= target <= hi:
            target = z - offset
        assert lo <= target <= hi, "fixture must leave room to move"
        return target

    def test_move_to_reads_back(self, focus_stage: FocusStage) -> None:
        target = self._safe_target(focus_stage, 5.0)
        got = focus_stage.move_to(target)
        assert got == pytest.approx(target, abs=self.z_tolerance_um)
        assert focus_stage.z_um == pytest.approx(target, abs=self.z_tolerance_um)
        assert not focus_stage.is_busy()

    def test_move_by(self, focus_stage: FocusStage) -> None:
        z0 = focus_stage.z_um
        step = 2.5 if self._safe_target(focus_stage, 2.5) > z0 else -2.5
        got = focus_stage.move_by(step)
        assert got == pytest.approx(z0 + step, abs=self.z_tolerance_um)

    def test_small_moves_both_ways(self, focus_stage: FocusStage) -> None:
        z0 = focus_stage.z_um
        up = self._safe_target(focus_stage, 1.0)
        focus_stage.move_to(up)
        back = focus_stage.move_to(z0)
        assert back == pytest.approx(z0, abs=self.z_tolerance_um)

    def test_outside_soft_limits_refused_and_not_moved(self, focus_stage: FocusStage) -> None:
        z0 = focus_stage.z_um
        lo, hi = focus_stage.limits_um
        for bad in (hi + 1.0, lo - 1.0):
            with pytest.raises(LimitError, match="soft limits"):
                focus_stage.move_to(bad)
            assert focus_stage.z_um == pytest.approx(z0, abs=self.z_tolerance_um)

    def test_above_max_step_refused_and_not_moved(self, focus_stage: FocusStage) -> None:
        z0 = focus_stage.z_um
        lo, hi = focus_stage.limits_um
        big = focus_stage.max_step_um + 1.0
        target = z0 + big if z0 + big <= hi else z0 - big
        if not lo <= target <= hi:
            pytest.skip("soft limits narrower than max_step: nothing to test")
        with pytest.raises(LimitError, match="max_step_um"):
            focus_stage.move_to(target)
        assert focus_stage.z_um == pytest.approx(z0, abs=self.z_tolerance_um)

    def test_non_finite_refused(self, focus_stage: FocusStage) -> None:
        for bad in (float("nan"), float("inf")):
            with pytest.raises(LimitError, match="finite"):
                focus_stage.move_to(bad)
            with pytest.raises(LimitError, match="finite"):
                focus_stage.move_by(bad)

    def test_stop_when_idle_is_harmless(self, focus_stage: FocusStage) -> None:
        z0 = focus_stage.z_um
        focus_stage.stop()
        assert not focus_stage.is_busy()
        assert focus_stage.z_um == pytest.approx(z0, abs=self.z_tolerance_um)

    def test_closed_stage_refuses(self, focus_stage: FocusStage) -> None:
        focus_stage.close()
        with pytest.raises(NotConnectedError):
            focus_stage.move_by(1.0)
        with pytest.raises(NotConnectedError):
            _ = focus_stage.z_um
        focus_stage.open()
        assert math.isfinite(focus_stage.z_um)

    def test_describe_is_json(self, focus_stage: FocusStage) -> None:
        info = focus_stage.describe()
        json.dumps(info)
        assert info["limits_um"][0] < info["limits_um"][1]


class XYStageContract:
    """What every ``XYStage`` does. Provide an ``xy_stage`` fixture (opened)."""

    xy_tolerance_um: float = 0.5

    @pytest.fixture
    def xy_stage(self) -> XYStage:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_move_and_read_back(self, xy_stage: XYStage) -> None:
        (xlo, xhi), (ylo, yhi) = xy_stage.limits_um
        target = ((xlo + xhi) / 2 + 100.0, (ylo + yhi) / 2 - 50.0)
        got = xy_stage.move_to(*target)
        assert got == pytest.approx(target, abs=self.xy_tolerance_um)
        got = xy_stage.move_by(-100.0, 50.0)
        assert got == pytest.approx(((xlo + xhi) / 2, (ylo + yhi) / 2), abs=self.xy_tolerance_um)

    def test_outside_limits_refused(self, xy_stage: XYStage) -> None:
        before = xy_stage.xy_um
        (_, xhi), (ylo, _) = xy_stage.limits_um
        with pytest.raises(LimitError):
            xy_stage.move_to(xhi + 1.0, ylo)
        assert xy_stage.xy_um == pytest.approx(before, abs=self.xy_tolerance_um)
