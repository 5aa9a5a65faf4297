"""The service's view of the hardware: a camera that remembers its last frame, and the live view.

``open_hardware`` (``autofocus.hardware``) opens the configured devices in the app's lifespan.
The camera handed to routines is wrapped in ``TappedCamera`` so that every frame a routine
snaps also feeds the live view: while a job holds the device lock the live view shows the
job's frames instead of competing for the camera.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from drivers.base import Camera
from drivers.errors import BusyError
from service.jobs import DeviceLock

__all__ = ["FrameSource", "LatestFrame", "TappedCamera", "encode_frame", "to_display_uint8"]


@dataclass(frozen=True)
class LatestFrame:
    """A snapped frame with when it was taken (``monotonic_s``) and a running number."""

    image: np.ndarray
    seq: int
    monotonic_s: float
    wall_time_s: float


class TappedCamera(Camera):
    """Delegates to an opened camera and keeps the newest frame it returned."""

    def __init__(self, inner: Camera) -> None:
        super().__init__(inner.name, pixel_size_um=inner.pixel_size_um, exposure_range_ms=inner.exposure_range_ms)
        self.inner = inner
        self._latest: LatestFrame | None = None
        self._seq = 0
        self._cond = threading.Condition()
        self.open()

    @property
    def latest(self) -> LatestFrame | None:
        return self._latest

    def wait_for_frame(self, after_seq: int, timeout_s: float) -> LatestFrame | None:
        """Block until a frame newer than ``after_seq`` was snapped (by anyone); ``None`` on timeout."""
        with self._cond:
            self._cond.wait_for(lambda: self._latest is not None and self._latest.seq > after_seq, timeout=timeout_s)
            latest = self._latest
        return latest if latest is not None and latest.seq > after_seq else None

    def describe(self) -> dict[str, object]:
        return self.inner.describe()

    def _do_open(self) -> None:
        self.inner.open()

    def _do_close(self) -> None:
        """Nothing: the ``Hardware`` object closes the real camera."""

    def _do_snap(self) -> np.ndarray:
        frame = self.inner.snap()
        with self._cond:
            self._seq += 1
            self._latest = LatestFrame(frame, self._seq, time.monotonic(), time.time())
            self._cond.notify_all()
        return frame

    def _do_flush(self) -> None:
        self.inner.flush()

    def _do_get_exposure_ms(self) -> float:
        return self.inner.exposure_ms

    def _do_set_exposure_ms(self, exposure_ms: float) -> None:
        self.inner.exposure_ms = exposure_ms

    def _do_get_sensor_shape(self) -> tuple[int, int]:
        return self.inner.sensor_shape

    def _do_get_bit_depth(self) -> int:
        return self.inner.bit_depth


class FrameSource:
    """The newest frame for ``/frame``, ``/estimate`` and the MJPEG stream.

    A frame younger than ``max_age_s`` is reused; otherwise a new one is snapped if the device
    is free. While a job holds the device, the job's own newest frame is served (waiting up to
    ``wait_s`` for its first one). One caller snaps at a time; the others reuse its frame.
    """

    def __init__(self, camera: TappedCamera, device_lock: DeviceLock, wait_s: float = 5.0) -> None:
        self.camera = camera
        self.device_lock = device_lock
        self.wait_s = wait_s
        self._snap_guard = threading.Lock()

    def latest(self, max_age_s: float) -> LatestFrame:
        with self._snap_guard:
            current = self.camera.latest
            if current is not None and time.monotonic() - current.monotonic_s <= max_age_s:
                return current
            if self.device_lock.try_hold("snap a live-view frame"):
                try:
                    self.camera.snap()
                finally:
                    self.device_lock.release()
                latest = self.camera.latest
                assert latest is not None
                return latest
            if current is not None:
                return current
            seq = current.seq if current is not None else 0
            waited = self.camera.wait_for_frame(seq, self.wait_s)
            if waited is None:
                raise BusyError(
                    f"no frame within {self.wait_s:.1f} s: the device is busy and the running job has not snapped yet",
                    job_id=self.device_lock.job_id,
                )
            return waited


def to_display_uint8(frame: np.ndarray, bit_depth: int) -> np.ndarray:
    """An 8-bit copy for display: ``uint16`` frames are scaled from their significant ``bit_depth`` bits."""
    if frame.dtype == np.uint8:
        return frame
    shift = max(0, int(bit_depth) - 8)
    return np.clip(frame.astype(np.uint32) >> shift, 0, 255).astype(np.uint8)


def encode_frame(frame_rgb8: np.ndarray, fmt: str, max_width: int | None, jpeg_quality: int) -> bytes:
    """Downscale to ``max_width`` (keeping the aspect ratio) and encode as ``png`` or ``jpeg``."""
    image = frame_rgb8
    h, w = image.shape[:2]
    if max_width is not None and w > max_width:
        new_h = max(1, round(h * max_width / w))
        image = cv2.resize(image, (max_width, new_h), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        raise ValueError(f"format must be 'png' or 'jpeg', got {fmt!r}")
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {w}x{h} frame as {fmt}")
    return buf.tobytes()
