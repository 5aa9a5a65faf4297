"""A USB camera (MD50-style, UVC) through OpenCV's ``VideoCapture``.

Backends:

- ``"v4l2"``: Linux V4L2 (``cv2.CAP_V4L2``); ``device`` is an index (``"0"``) or a path
  (``/dev/video2``).
- ``"any"``: OpenCV picks (DirectShow/MSMF on Windows, AVFoundation on macOS, FFMPEG for
  files and streams).
- ``"images"``: a file source: an image sequence pattern (``frames_%04d.png``, through
  ``cv2.CAP_IMAGES``) or a video file (an MJPG AVI, through FFMPEG / OpenCV's MJPEG reader).
  It loops at the end unless ``loop=False``. Used by the tests and for demos without a camera;
  the same code path as a real camera from ``open`` to ``snap``.

Open: FOURCC first (``MJPG`` by default, many 5 MP cameras need it for full resolution over
USB 2), then width and height, then a buffer of one frame. The size is read back, and the first
frame is read and checked: a camera that delivers another size than requested is refused
(``ConfigurationError``); it never runs at a size nobody asked for.

Frames: every ``read`` runs on one worker thread and is waited for with ``timeout_s``, so a
camera that stops delivering raises ``DeviceTimeoutError`` instead of hanging. After a failed
read the capture is released; if the source is gone (``/dev/videoN`` or the file vanished)
the error is ``ConnectionLostError``. The next ``snap`` reopens the source (reconnect) and
checks the size again.

Exposure and gain: set where the backend allows (V4L2: manual exposure, ``exposure_ms`` in
the driver's 100 us units). What could not be applied is listed in ``describe()["not_applied"]``
and logged; the exposure getter then returns the requested (nominal) value.

``flush()`` drops the frames buffered before now (``grab()`` ``flush_frames`` times): call it
after every stage move so the next frame shows the new position.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from drivers.base import Camera
from drivers.errors import ConfigurationError, ConnectionLostError, DeviceError, DeviceTimeoutError

__all__ = ["OpenCVBackend", "OpenCVCamera"]

OpenCVBackend = Literal["v4l2", "any", "images"]
_API: dict[str, int] = {"v4l2": cv2.CAP_V4L2, "any": cv2.CAP_ANY}
V4L2_EXPOSURE_UNITS_PER_MS = 10.0  # V4L2 exposure_time_absolute counts 100 us
V4L2_MANUAL_EXPOSURE = 1.0  # V4L2_EXPOSURE_MANUAL through CAP_PROP_AUTO_EXPOSURE
NOMINAL_EXPOSURE_MS = 10.0  # reported before anyone set an exposure the backend cannot report


class OpenCVCamera(Camera):
    """A camera (or a file source) read with ``cv2.VideoCapture``; RGB ``uint8`` frames."""

    def __init__(
        self,
        device: str | int,
        *,
        pixel_size_um: float,
        backend: OpenCVBackend = "v4l2",
        width: int = 2592,
        height: int = 1944,
        fourcc: str = "MJPG",
        gain: float | None = None,
        timeout_s: float = 2.0,
        flush_frames: int = 2,
        loop: bool = True,
        name: str = "opencv-camera",
    ) -> None:
        super().__init__(name, pixel_size_um=pixel_size_um)
        if backend not in ("v4l2", "any", "images"):
            raise ConfigurationError(f"opencv_backend={backend!r} is not allowed; use 'v4l2', 'any' or 'images'")
        if backend == "v4l2" and not sys.platform.startswith("linux"):
            raise ConfigurationError(
                f"opencv_backend='v4l2' exists only on Linux (this is {sys.platform}); use opencv_backend='any'"
            )
        if width <= 0 or height <= 0:
            raise ConfigurationError(f"opencv_width/opencv_height must be positive, got {width}x{height}")
        if len(fourcc) != 4:
            raise ConfigurationError(f"opencv_fourcc must be four characters such as 'MJPG', got {fourcc!r}")
        if not timeout_s > 0:
            raise ConfigurationError(f"opencv_timeout_s must be > 0, got {timeout_s!r}")
        if flush_frames < 0:
            raise ValueError(f"flush_frames must be >= 0, got {flush_frames!r}")
        self.device = device
        self.backend: OpenCVBackend = backend
        self.width = int(width)
        self.height = int(height)
        self.fourcc = fourcc
        self.gain = gain
        self.timeout_s = float(timeout_s)
        self.flush_frames = int(flush_frames)
        self.loop = loop
        self.reconnects = 0
        self.not_applied: dict[str, str] = {}
        self._cap: Any | None = None  # cv2.VideoCapture
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None
        self._exposure_request_ms: float | None = None  # what the user asked for, re-applied on reconnect
        self._exposure_live = False  # True: the backend set it and reads it back

    # -- source ----------------------------------------------------------------------------
    def _source(self) -> tuple[str | int, int]:
        """What to pass to ``cv2.VideoCapture`` and with which API."""
        if self.backend == "images":
            path = str(self.device)
            return path, cv2.CAP_IMAGES if "%" in path else cv2.CAP_ANY
        device = str(self.device)
        return (int(device) if device.isdigit() else device), _API[self.backend]

    def _source_exists(self) -> bool:
        """Whether the device node / file behind the source is still there."""
        source, _ = self._source()
        if isinstance(source, int):
            return Path(f"/dev/video{source}").exists() if os.name == "posix" else True
        if self.backend == "images" and "%" in source:
            first = _first_sequence_file(source)
            return first is not None and first.exists()
        return Path(source).exists() or "://" in source

    # -- open / close ----------------------------------------------------------------------
    def _do_open(self) -> None:
        self.not_applied = {}
        self._connect()

    def _connect(self) -> None:
        source, api = self._source()
        self._reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        cap = self._on_reader(lambda: cv2.VideoCapture(source, api), f"opening {source!r}")
        if not cap.isOpened():
            self._shutdown_reader()
            raise ConnectionLostError(
                f"{self.name}: cannot open {source!r} with the {self.backend} backend "
                "(is the camera plugged in? `autofocus devices` lists /dev/video* devices)"
            )
        self._cap = cap
        try:
            self._negotiate(cap)
            self._read_frame(first=True)
        except BaseException:
            self._release()
            raise

    def _negotiate(self, cap: Any) -> None:
        """FOURCC, then size, then a one-frame buffer; read back and refuse another size."""
        if self.backend != "images":
            if not cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc)):
                self._not_applied("fourcc", f"could not request {self.fourcc}")
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if not cap.set(cv2.CAP_PROP_BUFFERSIZE, 1):
                self._not_applied("buffersize", "could not set a one-frame buffer; flush() grabs more frames")
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._check_size(got, "reports")
        if self.gain is not None and not cap.set(cv2.CAP_PROP_GAIN, float(self.gain)):
            self._not_applied("gain", f"the {self.backend} backend refused gain={self.gain}")
        if self._exposure_request_ms is not None:
            self._apply_exposure(self._exposure_request_ms)
        else:
            self._exposure_live = self.backend == "v4l2" and float(cap.get(cv2.CAP_PROP_EXPOSURE)) > 0
            if not self._exposure_live:
                self._not_applied("exposure_ms", f"the {self.backend} backend does not report exposure")

    def _check_size(self, got: tuple[int, int], how: str) -> None:
        if got != (self.width, self.height):
            raise ConfigurationError(
                f"{self.name}: the camera {how} {got[0]}x{got[1]} but opencv_width x opencv_height = "
                f"{self.width}x{self.height} was requested; refusing to run at another size (check the "
                "modes with `v4l2-ctl --list-formats-ext`, or set opencv_width/opencv_height)"
            )

    def _not_applied(self, setting: str, why: str) -> None:
        self.not_applied[setting] = why
        self.log.warning("%s: %s not applied: %s", self.name, setting, why)

    def _do_close(self) -> None:
        self._release()

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
        self._shutdown_reader()

    def _shutdown_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.shutdown(wait=False, cancel_futures=True)

    # -- reading ---------------------------------------------------------------------------
    def _on_reader(self, fn: Any, doing: str) -> Any:
        """Run ``fn`` on the reader thread and wait at most ``timeout_s``."""
        assert self._reader is not None
        future = self._reader.submit(fn)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            # The read is stuck inside OpenCV; abandon this capture (it is released by nobody
            # until the stuck call returns) and reconnect on the next snap.
            self._cap = None
            self._shutdown_reader()
            raise DeviceTimeoutError(
                f"{self.name}: {doing} did not finish within {self.timeout_s:.2f} s; "
                "the capture will be reopened on the next snap"
            ) from None

    def _read_frame(self, *, first: bool = False) -> np.ndarray:
        cap = self._cap
        assert cap is not None
        deadline = time.monotonic() + self.timeout_s
        while True:
            ok, frame = self._on_reader(cap.read, "reading a frame")
            if ok and frame is not None:
                break
            if self.backend == "images" and self.loop and self._at_end(cap):
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            if time.monotonic() > deadline:
                self._release()
                if not self._source_exists():
                    raise ConnectionLostError(
                        f"{self.name}: the source {self.device!r} has disappeared; it will be reopened on the next snap"
                    )
                raise DeviceTimeoutError(
                    f"{self.name}: no frame within {self.timeout_s:.2f} s; "
                    "the capture will be reopened on the next snap"
                )
            self._sleep(0.01)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise DeviceError(f"{self.name}: OpenCV returned a {frame.dtype} frame of shape {frame.shape}")
        self._check_size((frame.shape[1], frame.shape[0]), "delivers frames of" if first else "delivered")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    @staticmethod
    def _at_end(cap: Any) -> bool:
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        return count > 0 and cap.get(cv2.CAP_PROP_POS_FRAMES) >= count

    def _ensure_connected(self) -> None:
        if self._cap is None:
            self.log.warning("%s: reconnecting to %r", self.name, self.device)
            self._connect()
            self.reconnects += 1

    def _do_snap(self) -> np.ndarray:
        self._ensure_connected()
        return self._read_frame()

    def _do_flush(self) -> None:
        self._ensure_connected()
        cap = self._cap
        assert cap is not None
        drops = self.flush_frames + (2 if "buffersize" in self.not_applied else 0)
        for _ in range(drops):
            if not self._on_reader(cap.grab, "dropping a stale frame"):
                if self.backend == "images" and self.loop and self._at_end(cap):
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                break

    # -- settings --------------------------------------------------------------------------
    def _apply_exposure(self, exposure_ms: float) -> None:
        cap = self._cap
        assert cap is not None
        applied = False
        if self.backend == "v4l2":
            cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_MANUAL_EXPOSURE)
            applied = bool(cap.set(cv2.CAP_PROP_EXPOSURE, exposure_ms * V4L2_EXPOSURE_UNITS_PER_MS))
        self._exposure_request_ms = float(exposure_ms)
        self._exposure_live = applied
        if applied:
            self.not_applied.pop("exposure_ms", None)
        else:
            self._not_applied(
                "exposure_ms", f"the {self.backend} backend does not set exposure; {exposure_ms} ms is nominal"
            )

    def _do_get_exposure_ms(self) -> float:
        """The camera's exposure where the backend reports it, else the requested (nominal) one."""
        if self._exposure_live and self._cap is not None:
            value = float(self._cap.get(cv2.CAP_PROP_EXPOSURE))
            if value > 0:
                return value / V4L2_EXPOSURE_UNITS_PER_MS
        return self._exposure_request_ms if self._exposure_request_ms is not None else NOMINAL_EXPOSURE_MS

    def _do_set_exposure_ms(self, exposure_ms: float) -> None:
        self._ensure_connected()
        self._apply_exposure(exposure_ms)

    def _do_get_sensor_shape(self) -> tuple[int, int]:
        return self.height, self.width

    def _do_get_bit_depth(self) -> int:
        return 8

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info.update(
            device=str(self.device),
            backend=self.backend,
            fourcc=self.fourcc,
            reconnects=self.reconnects,
            not_applied=dict(self.not_applied),
        )
        return info


def _first_sequence_file(pattern: str) -> Path | None:
    """``frames_%04d.png`` -> ``frames_0000.png`` (or the ``_0001`` file when numbering starts at 1)."""
    if not re.search(r"%0?\d*d", pattern):
        return None
    for index in (0, 1):
        candidate = Path(pattern % index)
        if candidate.exists():
            return candidate
    return Path(pattern % 0)
