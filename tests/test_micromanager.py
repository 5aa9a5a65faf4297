"""Micro-Manager driver against REAL MMCore with Micro-Manager's demo device adapters.

The demo adapters come from the ``mm-test-adapters`` package (DemoCamera: camera ``Camera``,
focus stage ``Z``). pycromanager keeps one python-backend core per process, so this module
opens one session and every test resets the camera to a known small state.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from device_contracts import CameraContract, FocusStageContract

from drivers.errors import ConfigurationError, ConnectionLostError, DeviceError, LimitError
from drivers.micromanager import (
    CoreAdapter,
    MicroManagerCamera,
    MicroManagerFocusStage,
    MicroManagerSession,
    java_server_listening,
    mm_image_to_array,
)

mm_test_adapters = pytest.importorskip("mm_test_adapters")
pytestmark = pytest.mark.micromanager

ADAPTERS = str(mm_test_adapters.device_adapter_path())
DEMO_CFG = str(Path(ADAPTERS) / "MMConfig_demo.cfg")
SMALL = (192, 256)  # (height, width) for fast tests


@pytest.fixture(scope="module")
def session() -> Iterator[MicroManagerSession]:
    s = MicroManagerSession(backend="python", adapter_dir=ADAPTERS, config_file=DEMO_CFG)
    s.open()
    yield s
    s.close()


def _demo_camera_state(
    session: MicroManagerSession, *, pixel_type: str = "16bit", size: tuple[int, int] = SMALL, mode: str = "Noise"
) -> None:
    core = session.core
    core.call("set_property", "Camera", "PixelType", pixel_type)
    core.call("set_property", "Camera", "OnCameraCCDXSize", size[1])
    core.call("set_property", "Camera", "OnCameraCCDYSize", size[0])
    core.call("set_property", "Camera", "Mode", mode)
    core.call("set_exposure", 10.0)


@pytest.fixture
def mm_camera(session: MicroManagerSession) -> Iterator[MicroManagerCamera]:
    _demo_camera_state(session)
    cam = MicroManagerCamera(session)
    cam.open()
    yield cam
    cam.close()


@pytest.fixture
def mm_stage(session: MicroManagerSession) -> Iterator[MicroManagerFocusStage]:
    stage = MicroManagerFocusStage(session, limits_um=(-100.0, 100.0), max_step_um=50.0)
    stage.open()
    stage.move_to(0.0)
    yield stage
    if stage.is_open:
        stage.move_to(0.0)
    stage.close()


class TestMicroManagerCamera16bit(CameraContract):
    @pytest.fixture
    def camera(self, mm_camera: MicroManagerCamera) -> MicroManagerCamera:
        return mm_camera


class TestMicroManagerCameraRGB(CameraContract):
    @pytest.fixture
    def camera(self, session: MicroManagerSession) -> Iterator[MicroManagerCamera]:
        _demo_camera_state(session, pixel_type="32bitRGB")
        cam = MicroManagerCamera(session)
        cam.open()
        yield cam
        cam.close()


class TestMicroManagerFocusStage(FocusStageContract):
    @pytest.fixture
    def focus_stage(self, mm_stage: MicroManagerFocusStage) -> MicroManagerFocusStage:
        return mm_stage


def test_full_size_rgb_frame_matches_raw_core_pixels(session: MicroManagerSession) -> None:
    """2592x1944 32bitRGB: the driver's RGB equals the R, G, B bytes unpacked from the raw uint32."""
    _demo_camera_state(session, pixel_type="32bitRGB", size=(1944, 2592), mode="Color Test Pattern")
    cam = MicroManagerCamera(session)
    cam.open()
    try:
        assert cam.sensor_shape == (1944, 2592)
        frame = cam.snap()
        assert frame.shape == (1944, 2592, 3) and frame.dtype == np.uint8
        assert cam.bit_depth == 8
        # The demo pattern is deterministic: snap again through the core and unpack with shifts.
        session.core.call("snap_image")
        raw = np.asarray(session.core.call("get_image")).astype(np.uint32)
        expected = np.stack([(raw >> 16) & 255, (raw >> 8) & 255, raw & 255], axis=2).astype(np.uint8)
        np.testing.assert_array_equal(frame, expected)
        assert not np.array_equal(frame[..., 0], frame[..., 2]), "the colour test pattern is not grey"
    finally:
        cam.close()
        _demo_camera_state(session)


def test_8bit_mono_frames(session: MicroManagerSession) -> None:
    _demo_camera_state(session, pixel_type="8bit")
    cam = MicroManagerCamera(session)
    cam.open()
    try:
        frame = cam.snap()
        assert frame.dtype == np.uint8 and frame.shape == (*SMALL, 3)
        assert cam.bit_depth == 8
        np.testing.assert_array_equal(frame[..., 0], frame[..., 2])  # mono replicated
    finally:
        cam.close()
        _demo_camera_state(session)


def test_unsupported_float_pixel_type_is_refused(mm_camera: MicroManagerCamera, session: MicroManagerSession) -> None:
    session.core.call("set_property", "Camera", "PixelType", "32bit")
    try:
        with pytest.raises(DeviceError, match="PixelType 8bit, 16bit, 32bitRGB or 64bitRGB"):
            mm_camera.snap()
    finally:
        _demo_camera_state(session)


def test_java_style_flat_signed_arrays_decode_like_2d(session: MicroManagerSession) -> None:
    """The Java bridge hands out flat (and for 16 bit, signed short) arrays: same result."""
    for pixel_type in ("16bit", "32bitRGB"):
        _demo_camera_state(session, pixel_type=pixel_type)
        core = session.core
        core.call("snap_image")
        image = np.asarray(core.call("get_image"))
        layout = {
            "height": int(core.call("get_image_height")),
            "width": int(core.call("get_image_width")),
            "bytes_per_pixel": int(core.call("get_bytes_per_pixel")),
            "components": int(core.call("get_number_of_components")),
        }
        from_2d = mm_image_to_array(image, **layout)
        signed = image.view(np.int16) if image.dtype == np.uint16 else image.view(np.int32)
        from_flat = mm_image_to_array(signed.reshape(-1), **layout)
        np.testing.assert_array_equal(from_2d, from_flat)
    with pytest.raises(DeviceError, match="bytes"):
        mm_image_to_array(np.zeros(10, np.uint8), height=4, width=4, bytes_per_pixel=1, components=1)
    _demo_camera_state(session)


def test_demo_stage_moves_and_snaps_follow(mm_stage: MicroManagerFocusStage, mm_camera: MicroManagerCamera) -> None:
    assert mm_stage.device == "Z"
    assert mm_stage.move_to(12.5) == pytest.approx(12.5)
    assert mm_stage.move_by(-2.5) == pytest.approx(10.0)
    assert mm_camera.snap().shape == (*SMALL, 3)
    mm_camera.flush()


def test_demo_stage_refusal_becomes_device_error_and_position_is_kept(session: MicroManagerSession) -> None:
    """DemoStage refuses |z| > 300 um itself; wide soft limits let the request reach it."""
    stage = MicroManagerFocusStage(session, limits_um=(-1000.0, 1000.0), max_step_um=1000.0)
    stage.open()
    try:
        stage.move_to(0.0)
        with pytest.raises(DeviceError, match="out of range"):
            stage.move_to(400.0)
        assert stage.z_um == pytest.approx(0.0)
        with pytest.raises(LimitError, match="soft limits"):
            stage.move_to(1001.0)
    finally:
        stage.close()


def test_named_devices_and_unknown_device(session: MicroManagerSession) -> None:
    stage = MicroManagerFocusStage(session, device="Z", limits_um=(-50.0, 50.0), max_step_um=10.0)
    stage.open()
    assert stage.describe()["device"] == "Z"
    stage.close()
    bad = MicroManagerFocusStage(session, device="NoSuchZ", limits_um=(-50.0, 50.0), max_step_um=10.0)
    with pytest.raises(ConfigurationError, match=r"mm_focus_device='NoSuchZ'.*loaded: .*Z"):
        bad.open()
    badcam = MicroManagerCamera(session, device="NoSuchCam")
    with pytest.raises(ConfigurationError, match="mm_camera_device"):
        badcam.open()


def test_stop_does_not_wait_for_session_lock(mm_stage: MicroManagerFocusStage, session: MicroManagerSession) -> None:
    """A thread holding the session lock (a long snap, a move) must not block stop()."""
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with session.lock:
            held.set()
            release.wait(10.0)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5.0)
    done = threading.Event()
    stopper = threading.Thread(target=lambda: (mm_stage.stop(), done.set()))
    stopper.start()
    stopped_while_held = done.wait(5.0)
    release.set()
    t.join()
    stopper.join()
    assert stopped_while_held


def test_second_python_session_in_one_process_is_refused(session: MicroManagerSession) -> None:
    other = MicroManagerSession(backend="python", adapter_dir=ADAPTERS, config_file=DEMO_CFG)
    with pytest.raises(DeviceError, match="already running"):
        other.open()
    assert session.is_open


def test_adapter_over_camelcase_pymmcore_core() -> None:
    """``CoreAdapter`` also drives a plain camelCase core (pymmcore.CMMCore, as MMCoreJ names methods)."""
    import pymmcore

    core = pymmcore.CMMCore()
    core.setDeviceAdapterSearchPaths([ADAPTERS])
    core.loadSystemConfiguration(DEMO_CFG)
    try:
        adapter = CoreAdapter(core, threading.RLock())
        core.setProperty("Camera", "OnCameraCCDXSize", 64)
        core.setProperty("Camera", "OnCameraCCDYSize", 48)
        assert adapter.snap().shape == (48, 64)
        assert adapter.call("get_focus_device") == "Z"
        adapter.call("set_position", "Z", 3.0)
        assert adapter.call("get_position", "Z") == pytest.approx(3.0)
        with pytest.raises(DeviceError, match="no method"):
            adapter.call("no_such_method")
    finally:
        core.unloadAllDevices()


def test_java_backend_without_server_fails_fast_and_clearly() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not java_server_listening(port)
    session = MicroManagerSession(backend="java", port=port)
    with pytest.raises(ConnectionLostError, match=f"no Micro-Manager server on 127.0.0.1:{port}"):
        session.open()


def test_bad_python_backend_settings() -> None:
    with pytest.raises(ConfigurationError, match="mm_backend"):
        MicroManagerSession(backend="matlab")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="mm_adapter_dir"):
        MicroManagerSession(backend="python", adapter_dir=None)


@pytest.mark.slow
def test_zscan_autofocus_on_fluorescent_beads(session: MicroManagerSession) -> None:
    """End to end: the demo camera's bead mode is sharpest at Z = 0; a z-scan from Z = 6 finds it."""
    routines = pytest.importorskip("autofocus.routines")
    _demo_camera_state(session, pixel_type="16bit", size=(240, 320), mode="Fluorescent Beads")
    core = session.core
    core.call("set_property", "Camera", "BeadBlurRate", 0.5)
    cam = MicroManagerCamera(session)
    stage = MicroManagerFocusStage(session, limits_um=(-100.0, 100.0), max_step_um=50.0)
    cam.open()
    stage.open()
    try:
        stage.move_to(6.0)
        options = routines.AutofocusOptions(
            measure="normalized_variance", search_range_um=20.0, tolerance_um=0.3, approach="none"
        )
        record = routines.run_autofocus("zscan", cam, stage, None, options)
        assert record.outcome == "converged", record.message
        assert abs(stage.z_um) <= 1.0, f"z-scan ended at {stage.z_um:.2f} um, best focus is 0"
        assert record.frames_used >= 3
    finally:
        stage.move_to(0.0)
        cam.close()
        stage.close()
        _demo_camera_state(session)


@pytest.mark.slow
def test_service_with_micromanager(session: MicroManagerSession, tmp_path: Path) -> None:
    """The service on the Micro-Manager demo backend: move Z and autofocus through the HTTP API."""
    fastapi_testclient = pytest.importorskip("fastapi.testclient")
    from service.app import create_app
    from service.settings import Settings

    session.close()  # pycromanager holds one python core per process: the service opens its own
    try:
        settings = Settings(
            camera="micromanager",
            stage="micromanager",
            stage_limits_um=(-100.0, 100.0),
            stage_max_step_um=50.0,
            api_key="mm-test-key-123",
            runs_db=tmp_path / "runs.sqlite3",
            data_root=tmp_path / "data",
            predictor_threads=1,
        )
        headers = {"X-API-Key": "mm-test-key-123"}
        with fastapi_testclient.TestClient(create_app(settings)) as client:
            hw = client.app.state.service.hardware
            core = hw.camera.session.core  # the service's own core: put the demo camera into bead mode
            for prop, value in (("PixelType", "16bit"), ("OnCameraCCDXSize", 320), ("OnCameraCCDYSize", 240)):
                core.call("set_property", "Camera", prop, value)
            core.call("set_property", "Camera", "Mode", "Fluorescent Beads")
            core.call("set_property", "Camera", "BeadBlurRate", 0.5)

            moved = client.post("/stage/z", json={"z_um": 6.0}, headers=headers)
            assert moved.status_code == 200, moved.text
            assert moved.json()["z_um"] == pytest.approx(6.0)

            options = {"measure": "normalized_variance", "search_range_um": 20.0, "approach": "none"}
            started = client.post("/autofocus", json={"routine": "zscan", "options": options}, headers=headers)
            assert started.status_code == 202, started.text
            job_url = started.headers["Location"]
            for _ in range(600):
                job = client.get(job_url, headers=headers).json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.05)
            assert job["status"] == "succeeded", job
            assert abs(job["result"]["final_z_um"]) <= 1.0
            z = client.get("/stage/z", headers=headers).json()["z_um"]
            assert abs(z) <= 1.0
    finally:
        session.open()
        _demo_camera_state(session)
