"""OpenCV camera driver through real OpenCV capture backends, without a physical camera.

OpenCV reads image sequences (``CAP_IMAGES``) and MJPG AVI files (FFMPEG) written by the
tests, through the same driver code as a V4L2 camera. A FIFO that stops delivering gives a
read that really blocks (the frame-timeout path).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from device_contracts import CameraContract

from drivers.errors import ConfigurationError, ConnectionLostError, DeviceTimeoutError
from drivers.opencv_camera import OpenCVCamera

W, H = 160, 120


def _frame(index: int, width: int = W, height: int = H) -> np.ndarray:
    """A textured BGR frame whose top-left 8x8 block encodes ``index``."""
    rng = np.random.default_rng(index)
    frame = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    frame[:8, :8] = (10 * index, 0, 255)  # B, G, R: distinct channels check the BGR->RGB swap
    return frame


def _write_sequence(folder: Path, count: int) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"frames_{i:04d}.png"), _frame(i))
    return str(folder / "frames_%04d.png")


def _write_avi(path: Path, count: int, width: int = W, height: int = H) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height))
    assert writer.isOpened()
    for i in range(count):
        writer.write(_frame(i, width, height))
    writer.release()
    return str(path)


def _index_of(rgb: np.ndarray) -> int:
    return round(float(rgb[:8, :8, 2].mean()) / 10)  # RGB: blue is channel 2


class TestOpenCVImageSequence(CameraContract):
    @pytest.fixture
    def camera(self, tmp_path: Path) -> Iterator[OpenCVCamera]:
        cam = OpenCVCamera(_write_sequence(tmp_path / "seq", 4), backend="images", width=W, height=H, pixel_size_um=0.5)
        cam.open()
        yield cam
        cam.close()


class TestOpenCVMjpgVideo(CameraContract):
    @pytest.fixture
    def camera(self, tmp_path: Path) -> Iterator[OpenCVCamera]:
        cam = OpenCVCamera(_write_avi(tmp_path / "v.avi", 4), backend="images", width=W, height=H, pixel_size_um=0.5)
        cam.open()
        yield cam
        cam.close()


def test_frames_are_the_files_in_rgb_order(tmp_path: Path) -> None:
    with OpenCVCamera(_write_sequence(tmp_path, 3), backend="images", width=W, height=H, pixel_size_um=1.0) as cam:
        frame = cam.snap()  # the open read frame 0 to check the size; this is frame 1
        expected = cv2.imread(str(tmp_path / "frames_0001.png"))[:, :, ::-1]
        np.testing.assert_array_equal(frame, expected)
        assert tuple(frame[0, 0]) == (255, 0, 10)


def test_flush_drops_stale_frames_and_sequences_loop(tmp_path: Path) -> None:
    pattern = _write_sequence(tmp_path, 6)
    with OpenCVCamera(pattern, backend="images", width=W, height=H, pixel_size_um=1.0, flush_frames=2) as cam:
        assert _index_of(cam.snap()) == 1
        cam.flush()  # drops 2 and 3
        assert _index_of(cam.snap()) == 4
        assert _index_of(cam.snap()) == 5
        assert _index_of(cam.snap()) == 0  # looped


def test_full_size_mjpg_at_2592x1944(tmp_path: Path) -> None:
    path = _write_avi(tmp_path / "full.avi", 2, 2592, 1944)
    with OpenCVCamera(path, backend="images", width=2592, height=1944, pixel_size_um=0.345) as cam:
        assert cam.sensor_shape == (1944, 2592)
        frame = cam.snap()
        assert frame.shape == (1944, 2592, 3) and frame.dtype == np.uint8


def test_wrong_size_is_refused(tmp_path: Path) -> None:
    cam = OpenCVCamera(_write_sequence(tmp_path, 2), backend="images", width=2592, height=1944, pixel_size_um=1.0)
    with pytest.raises(ConfigurationError, match=f"{W}x{H} but opencv_width x opencv_height = 2592x1944"):
        cam.open()
    assert not cam.is_open


@pytest.mark.parametrize("device", ["/dev/video99", "7"])
def test_missing_v4l2_device(device: str) -> None:
    cam = OpenCVCamera(device, backend="v4l2", pixel_size_um=1.0, timeout_s=2.0)
    with pytest.raises(ConnectionLostError, match="cannot open"):
        cam.open()
    assert not cam.is_open


def test_frame_that_never_comes_times_out(tmp_path: Path) -> None:
    """A FIFO delivers 4 frames and then nothing (still open): the 4th snap times out."""
    data = Path(_write_avi(tmp_path / "v.avi", 4)).read_bytes()
    fifo = tmp_path / "camera.avi"
    os.mkfifo(fifo)
    done = threading.Event()

    def feed() -> None:
        fd = os.open(fifo, os.O_WRONLY)
        os.write(fd, data)
        done.wait(30.0)
        os.close(fd)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    cam = OpenCVCamera(str(fifo), backend="any", width=W, height=H, pixel_size_um=1.0, timeout_s=0.5, loop=False)
    try:
        cam.open()  # reads frame 0
        for _ in range(3):
            assert cam.snap().shape == (H, W, 3)
        with pytest.raises(DeviceTimeoutError, match=r"within 0.50 s"):
            cam.snap()
    finally:
        done.set()
        feeder.join(5.0)
        cam.close()


def test_source_disappears_and_comes_back(tmp_path: Path) -> None:
    folder = tmp_path / "cam"
    pattern = _write_sequence(folder, 4)
    cam = OpenCVCamera(pattern, backend="images", width=W, height=H, pixel_size_um=1.0, timeout_s=0.3)
    cam.open()
    try:
        cam.snap()
        shutil.move(folder, tmp_path / "unplugged")
        with pytest.raises(ConnectionLostError, match="disappeared"):
            cam.snap()
        with pytest.raises(ConnectionLostError, match="cannot open"):
            cam.snap()  # still gone: the reconnect fails clearly
        shutil.move(tmp_path / "unplugged", folder)
        assert cam.snap().shape == (H, W, 3)
        assert cam.describe()["reconnects"] == 1
    finally:
        cam.close()


def test_settings_the_backend_refuses_are_reported(tmp_path: Path) -> None:
    pattern = _write_sequence(tmp_path, 2)
    with OpenCVCamera(pattern, backend="images", width=W, height=H, gain=2.0, pixel_size_um=1.0) as cam:
        cam.exposure_ms = 25.0
        info = cam.describe()
        assert set(info["not_applied"]) >= {"gain", "exposure_ms"}
        assert "nominal" in info["not_applied"]["exposure_ms"]
        assert cam.exposure_ms == 25.0


def test_bad_settings_name_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="opencv_backend"):
        OpenCVCamera("0", backend="dshow", pixel_size_um=1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="opencv_fourcc"):
        OpenCVCamera("0", fourcc="MJ", pixel_size_um=1.0)
    with pytest.raises(ConfigurationError, match="opencv_timeout_s"):
        OpenCVCamera("0", timeout_s=0.0, pixel_size_um=1.0)
