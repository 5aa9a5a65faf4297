"""Micro-Manager camera and focus stage through pycromanager's ``Core``.

Two backends sit behind one ``MicroManagerSession``:

- ``"java"``: a running Micro-Manager (GUI or headless Java) with its ZMQ server on
  ``port`` (Tools > Options > "Run server on port 4827"). pycromanager's ``Core(port=...)``.
  Images arrive as flat arrays and are reshaped with the core's image width and height.
- ``"python"``: no Java at all. ``pycromanager.start_headless(adapter_dir, config_file,
  python_backend=True)`` loads the device adapters into this process (pymmcore underneath),
  then ``Core()`` returns that core; ``get_image()`` is already 2-D. pycromanager keeps one
  such core per process, so only one python-backend session can be open at a time.

``CoreAdapter`` hides the naming difference (snake_case vs camelCase) and the image layout,
and turns the cores' exceptions into ``DeviceError``. Camera and focus stage share one
session (and so one core); the session is closed separately, after both devices.

Pixel types: ``8bit`` / ``16bit`` mono (replicated to RGB by ``Camera.snap``), ``32bitRGB``
(uint32 per pixel = BGRA bytes -> RGB uint8) and ``64bitRGB`` (4 x uint16 BGRA -> RGB uint16).
Others (``32bit`` float mono) are refused with a clear error.

Locking: every core call goes through the session's lock, except ``stop`` which calls the
core directly so that it never waits behind a move or a snap (MMCore locks per device
internally and ``stop`` is safe to call from another thread).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from drivers.base import Camera, FocusStage
from drivers.errors import ConfigurationError, ConnectionLostError, DeviceError, NotConnectedError

__all__ = [
    "CoreAdapter",
    "MicroManagerCamera",
    "MicroManagerFocusStage",
    "MicroManagerSession",
    "java_server_listening",
    "mm_image_to_array",
]

MMBackend = Literal["python", "java"]
DEFAULT_JAVA_PORT = 4827


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def java_server_listening(port: int = DEFAULT_JAVA_PORT, host: str = "127.0.0.1", timeout_s: float = 0.3) -> bool:
    """True if something accepts TCP connections on ``host:port`` (a running Micro-Manager server)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def mm_image_to_array(
    image: np.ndarray, *, height: int, width: int, bytes_per_pixel: int, components: int
) -> np.ndarray:
    """Turn what ``get_image()`` returned (flat or 2-D, any integer view) into ``HxW`` or ``HxWx3``.

    The raw bytes are re-read according to the core's pixel layout, so the Java backend's flat
    (possibly signed) arrays and the Python backend's 2-D arrays take the same path.
    """
    raw = np.ascontiguousarray(image).reshape(-1).view(np.uint8)
    expected = height * width * bytes_per_pixel
    if raw.size != expected:
        raise DeviceError(
            f"Micro-Manager image has {raw.size} bytes, expected {height}x{width}x{bytes_per_pixel} = {expected}"
        )
    if components == 1 and bytes_per_pixel == 1:
        return raw.reshape(height, width)
    if components == 1 and bytes_per_pixel == 2:
        return raw.view("<u2").reshape(height, width).astype(np.uint16, copy=False)
    if components == 4 and bytes_per_pixel == 4:  # 32bitRGB: B, G, R, A bytes
        return raw.reshape(height, width, 4)[:, :, 2::-1].copy()
    if components == 4 and bytes_per_pixel == 8:  # 64bitRGB: B, G, R, A as uint16
        return raw.view("<u2").reshape(height, width, 4)[:, :, 2::-1].astype(np.uint16)
    raise DeviceError(
        f"unsupported Micro-Manager pixel layout: {bytes_per_pixel} bytes x {components} components per pixel; "
        "use PixelType 8bit, 16bit, 32bitRGB or 64bitRGB"
    )


class CoreAdapter:
    """One surface over both pycromanager cores: snake_case names, numpy images, DeviceError."""

    def __init__(self, core: Any, lock: threading.RLock) -> None:
        self._core = core
        self._lock = lock

    def _method(self, snake: str) -> Callable[..., Any]:
        fn = getattr(self._core, snake, None)
        if fn is None:
            fn = getattr(self._core, _camel(snake), None)
        if fn is None:
            raise DeviceError(f"this Micro-Manager core has no method {snake} / {_camel(snake)}")
        return fn

    def call(self, snake: str, *args: Any) -> Any:
        """Call a core method under the session lock; core exceptions become ``DeviceError``."""
        fn = self._method(snake)
        with self._lock:
            return self._invoke(snake, fn, args)

    def call_unlocked(self, snake: str, *args: Any) -> Any:
        """Call a core method without the session lock (for ``stop``)."""
        return self._invoke(snake, self._method(snake), args)

    @staticmethod
    def _invoke(snake: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            return fn(*args)
        except (TimeoutError, ConnectionError, BrokenPipeError) as exc:
            raise ConnectionLostError(f"Micro-Manager: {snake}{args!r} lost the connection: {exc}") from exc
        except Exception as exc:  # the cores raise RuntimeError (pymmcore) or plain Exception (Java bridge)
            raise DeviceError(f"Micro-Manager: {snake}{args!r} failed: {exc}") from exc

    # -- typed helpers ---------------------------------------------------------------------
    def snap(self) -> np.ndarray:
        """Snap one image with the current camera and return it as ``HxW`` or ``HxWx3``."""
        with self._lock:
            self.call("snap_image")
            image = np.asarray(self.call("get_image"))
            return mm_image_to_array(
                image,
                height=int(self.call("get_image_height")),
                width=int(self.call("get_image_width")),
                bytes_per_pixel=int(self.call("get_bytes_per_pixel")),
                components=int(self.call("get_number_of_components")),
            )

    def loaded_devices(self) -> list[str]:
        return [str(name) for name in _as_list(self.call("get_loaded_devices"))]


def _as_list(value: Any) -> list[Any]:
    """StrVector (pymmcore) / Java list proxies / tuples -> list."""
    if hasattr(value, "size") and hasattr(value, "get") and not isinstance(value, list | tuple):
        return [value.get(i) for i in range(int(value.size()))]
    return list(value)


class MicroManagerSession:
    """One Micro-Manager core shared by the camera and the focus stage."""

    def __init__(
        self,
        *,
        backend: MMBackend = "python",
        adapter_dir: str | None = None,
        config_file: str | None = None,
        port: int = DEFAULT_JAVA_PORT,
        timeout_s: float = 5.0,
    ) -> None:
        if backend not in ("python", "java"):
            raise ConfigurationError(f"mm_backend={backend!r} is not allowed; use 'python' or 'java'")
        if backend == "python" and not adapter_dir:
            raise ConfigurationError("mm_adapter_dir is required for mm_backend='python'")
        if not timeout_s > 0:
            raise ConfigurationError(f"mm_timeout_s must be > 0, got {timeout_s!r}")
        self.backend: MMBackend = backend
        self.adapter_dir = adapter_dir
        self.config_file = config_file
        self.port = int(port)
        self.timeout_s = float(timeout_s)
        self.lock = threading.RLock()
        self._core: CoreAdapter | None = None
        self._started_headless = False

    @property
    def is_open(self) -> bool:
        return self._core is not None

    @property
    def core(self) -> CoreAdapter:
        if self._core is None:
            raise NotConnectedError("the Micro-Manager session is not open")
        return self._core

    def open(self) -> None:
        """Start (python) or connect to (java) the core. Opening an open session does nothing."""
        if self._core is not None:
            return
        with self.lock:
            raw = self._start_python() if self.backend == "python" else self._connect_java()
            core = CoreAdapter(raw, self.lock)
            core.call("set_timeout_ms", round(self.timeout_s * 1000))
            self._core = core

    def _start_python(self) -> Any:
        from mmpycorex import is_pymmcore_active
        from pycromanager import Core, start_headless

        if is_pymmcore_active():
            raise DeviceError(
                "a python-backend Micro-Manager core is already running in this process (pycromanager keeps "
                "one); close the other MicroManagerSession first"
            )
        try:
            start_headless(self.adapter_dir, self.config_file, python_backend=True)
        except Exception as exc:  # pymmcore raises RuntimeError for a bad adapter folder or config
            self._stop_python()
            raise DeviceError(
                f"could not start Micro-Manager (python backend) with adapters in {self.adapter_dir!r} and "
                f"config {self.config_file!r}: {exc}"
            ) from exc
        self._started_headless = True
        return Core()

    def _connect_java(self) -> Any:
        if not java_server_listening(self.port):
            raise ConnectionLostError(
                f"no Micro-Manager server on 127.0.0.1:{self.port}: start Micro-Manager and enable "
                f'Tools > Options > "Run server on port {self.port}" (mm_port)'
            )
        from pycromanager import Core

        try:
            return Core(port=self.port)
        except Exception as exc:  # pycromanager raises a plain Exception("Couldn't create Core...")
            raise ConnectionLostError(f"could not connect to Micro-Manager on port {self.port}: {exc}") from exc

    def _stop_python(self) -> None:
        from pycromanager import stop_headless

        stop_headless()
        self._started_headless = False

    def close(self) -> None:
        """Release the core: stop the headless python core; leave a user's Java Micro-Manager running."""
        with self.lock:
            self._core = None
            if self._started_headless:
                self._stop_python()

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "adapter_dir": self.adapter_dir,
            "config_file": self.config_file,
            "port": self.port if self.backend == "java" else None,
            "open": self.is_open,
        }


class MicroManagerCamera(Camera):
    """The core's camera (or ``device``). Pixel size from the core unless given."""

    def __init__(
        self,
        session: MicroManagerSession,
        *,
        device: str | None = None,
        pixel_size_um: float | None = None,
        name: str = "micromanager-camera",
    ) -> None:
        super().__init__(name, pixel_size_um=pixel_size_um if pixel_size_um is not None else 1.0)
        self.session = session
        self.device = device
        self._pixel_size_from_core = pixel_size_um is None

    def _do_open(self) -> None:
        self.session.open()
        core = self.session.core
        if self.device is not None:
            if self.device not in core.loaded_devices():
                raise ConfigurationError(
                    f"mm_camera_device={self.device!r} is not loaded in Micro-Manager; loaded: "
                    f"{', '.join(core.loaded_devices())}"
                )
            core.call("set_camera_device", self.device)
        else:
            self.device = str(core.call("get_camera_device"))
            if not self.device:
                raise ConfigurationError("Micro-Manager has no camera device set; set mm_camera_device")
        if self._pixel_size_from_core:
            size = float(core.call("get_pixel_size_um"))
            if not size > 0:
                raise ConfigurationError(
                    "Micro-Manager has no pixel size calibration for the current objective; set "
                    "camera_pixel_size_um (um at the sample) or add a pixel size configuration"
                )
            self.pixel_size_um = size

    def _do_close(self) -> None:
        """The session (shared with the focus stage) stays open; it is closed by its owner."""

    def _do_snap(self) -> np.ndarray:
        frame = self.session.core.snap()
        h, w = self._do_get_sensor_shape()
        if frame.shape[:2] != (h, w):
            raise DeviceError(f"{self.name}: snapped {frame.shape[:2]}, the core reports {(h, w)}")
        return frame

    def _do_get_exposure_ms(self) -> float:
        return float(self.session.core.call("get_exposure"))

    def _do_set_exposure_ms(self, exposure_ms: float) -> None:
        self.session.core.call("set_exposure", float(exposure_ms))

    def _do_get_sensor_shape(self) -> tuple[int, int]:
        core = self.session.core
        return int(core.call("get_image_height")), int(core.call("get_image_width"))

    def _do_get_bit_depth(self) -> int:
        return int(self.session.core.call("get_image_bit_depth"))

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info["device"] = self.device
        info["session"] = self.session.describe()
        return info


class MicroManagerFocusStage(FocusStage):
    """The core's focus device (or ``device``), positions in um as Micro-Manager reports them."""

    def __init__(
        self,
        session: MicroManagerSession,
        *,
        device: str | None = None,
        limits_um: tuple[float, float],
        max_step_um: float,
        direction: int = 1,
        speed_um_s: float = 1000.0,
        settle_ms: float = 0.0,
        name: str = "micromanager-focus",
    ) -> None:
        super().__init__(
            name,
            limits_um=limits_um,
            max_step_um=max_step_um,
            direction=direction,
            speed_um_s=speed_um_s,
            settle_ms=settle_ms,
        )
        self.session = session
        self.device = device

    def _do_open(self) -> None:
        self.session.open()
        core = self.session.core
        if self.device is not None:
            if self.device not in core.loaded_devices():
                raise ConfigurationError(
                    f"mm_focus_device={self.device!r} is not loaded in Micro-Manager; loaded: "
                    f"{', '.join(core.loaded_devices())}"
                )
        else:
            self.device = str(core.call("get_focus_device"))
            if not self.device:
                raise ConfigurationError("Micro-Manager has no focus device set; set mm_focus_device")
        core.call("wait_for_device", self.device)

    def _do_close(self) -> None:
        """The shared session stays open; its owner closes it."""

    def _dev(self) -> str:
        assert self.device is not None
        return self.device

    def _do_get_z_um(self) -> float:
        return float(self.session.core.call("get_position", self._dev()))

    def _do_move_to(self, z_um: float) -> None:
        self.session.core.call("set_position", self._dev(), float(z_um))

    def _do_is_busy(self) -> bool:
        return bool(self.session.core.call("device_busy", self._dev()))

    def _do_stop(self) -> None:
        self.session.core.call_unlocked("stop", self._dev())

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info["device"] = self.device
        return info
