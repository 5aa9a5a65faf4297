"""The device factory: one flat configuration in, opened camera and focus stage out.

Shared by the service (``service.hardware``) and ``autofocus check`` so that both open the
same devices from the same settings. Every setting is a flat field (the service exposes each
one as ``AUTOFOCUS_<NAME>``). A wrong value raises ``ConfigurationError`` naming the setting;
the factory never falls back to the simulator on its own.

Backends: camera ``simulated | micromanager | opencv``; stage ``simulated | micromanager |
asi | prior | tango | grbl``. Driver modules are imported only inside ``open_hardware`` so
importing this module never loads pymmcore, OpenCV, pyserial or the simulator.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from drivers.base import Camera, FocusStage, XYStage
from drivers.errors import ConfigurationError, LimitError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from drivers.micromanager import MicroManagerSession

__all__ = [
    "CAMERA_BACKENDS",
    "SERIAL_STAGES",
    "STAGE_BACKENDS",
    "Hardware",
    "HardwareConfig",
    "config_from_mapping",
    "open_hardware",
    "open_one_device",
]

log = logging.getLogger(__name__)

CameraBackend = Literal["simulated", "micromanager", "opencv"]
StageBackend = Literal["simulated", "micromanager", "asi", "prior", "tango", "grbl"]
CAMERA_BACKENDS: tuple[str, ...] = ("simulated", "micromanager", "opencv")
STAGE_BACKENDS: tuple[str, ...] = ("simulated", "micromanager", "asi", "prior", "tango", "grbl")
SERIAL_STAGES: tuple[str, ...] = ("asi", "prior", "tango", "grbl")

# Defaults for real focus drives when the setting is left empty.
DEFAULT_MAX_STEP_UM = 100.0
DEFAULT_SPEED_UM_S: dict[str, float] = {
    "micromanager": 1000.0,
    "asi": 1000.0,
    "prior": 1000.0,
    "tango": 1000.0,
    "grbl": 500.0,
}


class HardwareConfig(BaseModel):
    """Which devices to open and how. Flat fields; unknown fields are refused (typos fail)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    camera: CameraBackend = "simulated"
    stage: StageBackend = "simulated"

    # Camera settings shared by every backend.
    camera_pixel_size_um: float | None = Field(
        default=None, gt=0, description="pixel size at the sample (um); None: the backend's own value"
    )
    camera_exposure_ms: float | None = Field(default=None, gt=0, description="exposure set on open; None: leave")

    # Simulated microscope (camera=simulated, stage=simulated).
    sim_seed: int = 0
    sim_objective: str = "20x/0.75"
    sim_specimen: Literal["cells", "tissue", "sparse"] = "cells"
    sim_frame_width: int = Field(default=2592, ge=224, le=16384)
    sim_frame_height: int = Field(default=1944, ge=224, le=16384)
    sim_bit_depth: Literal[8, 10, 12, 14, 16] = 8
    sim_jpeg_quality: int | None = Field(default=None, ge=1, le=100)
    sim_noise: bool = True
    sim_realtime: bool = False
    sim_focus_offset_um: float = 0.0
    sim_tilt_x_um_per_mm: float = Field(default=0.0, ge=-50, le=50, description="slide tilt: focus change per mm of X")
    sim_tilt_y_um_per_mm: float = Field(default=0.0, ge=-50, le=50, description="slide tilt: focus change per mm of Y")

    # Micro-Manager (camera=micromanager and/or stage=micromanager).
    mm_backend: Literal["python", "java"] = "python"
    mm_adapter_dir: str | None = Field(
        default=None, description="device adapter folder (python backend); None: the mm-test-adapters demo folder"
    )
    mm_config: str | None = Field(
        default=None, description="Micro-Manager .cfg to load (python backend); None: MMConfig_demo.cfg"
    )
    mm_port: int = Field(default=4827, ge=1, le=65535)
    mm_camera_device: str | None = Field(default=None, description="None: the core's current camera")
    mm_focus_device: str | None = Field(default=None, description="None: the core's current focus device")
    mm_timeout_s: float = Field(default=5.0, gt=0, description="wait_for_device timeout")

    # USB camera through OpenCV (camera=opencv).
    opencv_device: str = Field(default="0", description="index, /dev/videoN, or a file / pattern (backend=images)")
    opencv_backend: Literal["v4l2", "any", "images"] = "v4l2"
    opencv_width: int = Field(default=2592, ge=1)
    opencv_height: int = Field(default=1944, ge=1)
    opencv_fourcc: str = Field(default="MJPG", min_length=4, max_length=4)
    opencv_gain: float | None = None
    opencv_timeout_s: float = Field(default=2.0, gt=0)

    # Serial focus drives (stage=asi|prior|tango|grbl).
    serial_port: str | None = None
    serial_baudrate: int | None = Field(default=None, gt=0, description="None: the controller's default")
    serial_timeout_s: float = Field(default=1.0, gt=0, description="reply timeout per command")

    # Focus-stage safety settings (every stage backend).
    stage_limits_um: tuple[float, float] | None = Field(
        default=None, description="soft limits (lo, hi) in the stage's coordinates; required for real stages"
    )
    stage_max_step_um: float | None = Field(default=None, gt=0, description="largest single move; None: 100 um")
    stage_direction: Literal[1, -1] | None = Field(
        default=None, description="+1: a positive move brings the objective towards the sample; None: +1"
    )
    # (simulated stage: None keeps the simulator's own defaults for each stage_* setting)
    stage_speed_um_s: float | None = Field(default=None, gt=0, description="sizes move timeouts")
    stage_settle_ms: float | None = Field(default=None, ge=0, description="wait after each move; None: backend's")

    @field_validator("stage_limits_um")
    @classmethod
    def _limits_ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is None:
            return None
        lo, hi = value
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"stage_limits_um must be two finite numbers (lo, hi) with lo < hi, got {value!r}")
        return value

    @field_validator("opencv_fourcc")
    @classmethod
    def _fourcc_printable(cls, value: str) -> str:
        if not value.isascii() or not value.isprintable():
            raise ValueError(f"opencv_fourcc must be four printable ASCII characters such as 'MJPG', got {value!r}")
        return value

    @model_validator(mode="after")
    def _simulator_pairs(self) -> HardwareConfig:
        if (self.camera == "simulated") != (self.stage == "simulated"):
            raise ValueError(
                f"camera={self.camera!r} with stage={self.stage!r}: the simulated camera renders what the "
                "simulated focus stage's position makes it see, so camera and stage must both be 'simulated' "
                "or both be real backends"
            )
        return self


def config_from_mapping(values: Mapping[str, Any]) -> HardwareConfig:
    """Build a ``HardwareConfig`` from a dict (TOML table, CLI options), as ``ConfigurationError``."""
    try:
        return HardwareConfig(**dict(values))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "configuration"
            if err["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown setting (allowed: {', '.join(HardwareConfig.model_fields)})")
            else:
                problems.append(f"{where}: {err['msg']}")
        raise ConfigurationError("invalid hardware settings: " + "; ".join(problems)) from exc


@dataclass
class Hardware:
    """Opened devices. ``close()`` stops the focus stage first, then closes everything."""

    config: HardwareConfig
    camera: Camera
    focus_stage: FocusStage
    xy_stage: XYStage | None = None
    simulator: Any | None = None  # drivers.simulated.SimulatedMicroscope (not imported here)
    _finalizers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _closed: bool = field(default=False, repr=False)

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary of the configured backends and the opened devices."""
        return {
            "camera_backend": self.config.camera,
            "stage_backend": self.config.stage,
            "camera": self.camera.describe(),
            "focus_stage": self.focus_stage.describe(),
            "xy_stage": self.xy_stage.describe() if self.xy_stage is not None else None,
            "simulated": self.simulator is not None,
        }

    def close(self) -> None:
        """Stop the stage, close stage, XY stage and camera, then shared sessions. Idempotent.

        Every step runs even if an earlier one fails; the first failure is re-raised at the end.
        """
        if self._closed:
            return
        self._closed = True
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.focus_stage.is_open:
            steps.append(("stop focus stage", self.focus_stage.stop))
        steps.append(("close focus stage", self.focus_stage.close))
        if self.xy_stage is not None:
            steps.append(("close xy stage", self.xy_stage.close))
        steps.append(("close camera", self.camera.close))
        steps.extend(("finalize", fn) for fn in self._finalizers)
        _run_all(steps)

    def __enter__(self) -> Hardware:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _run_all(steps: list[tuple[str, Callable[[], None]]]) -> None:
    """Run every step; log each failure and re-raise the first one after all ran."""
    first: BaseException | None = None
    for label, step in steps:
        try:
            step()
        except Exception as exc:
            log.error("%s failed: %s", label, exc)
            if first is None:
                first = exc
    if first is not None:
        raise first


def open_hardware(cfg: HardwareConfig) -> Hardware:
    """Open the configured camera and focus stage (and XY stage where the backend has one).

    If any device fails to open, the ones already opened are closed again and the error is
    raised; nothing is left half-open.
    """
    if cfg.camera == "simulated":
        return _open_simulated(cfg)

    opened: list[tuple[str, Callable[[], None]]] = []
    finalizers: list[Callable[[], None]] = []
    try:
        session = None
        if "micromanager" in (cfg.camera, cfg.stage):
            session = _mm_session(cfg)
            session.open()
            finalizers.append(session.close)
            opened.append(("close micromanager session", session.close))
        stage = _make_stage(cfg, session)
        stage.open()
        opened.insert(0, ("close focus stage", stage.close))
        camera = _make_camera(cfg, session)
        camera.open()
        opened.insert(0, ("close camera", camera.close))
        _apply_camera_settings(cfg, camera)
    except BaseException:
        _run_all_after_failure(opened)
        raise
    return Hardware(config=cfg, camera=camera, focus_stage=stage, _finalizers=finalizers)


def open_one_device(cfg: HardwareConfig, which: Literal["camera", "focus_stage"]) -> tuple[Any, Callable[[], None]]:
    """Open only the camera or only the focus stage; return it and a function that closes it.

    For commissioning (``autofocus check``): when ``open_hardware`` fails, this tells which of
    the two devices is at fault. The simulated backend opens its whole microscope.
    """
    if which not in ("camera", "focus_stage"):
        raise ValueError(f"which must be 'camera' or 'focus_stage', got {which!r}")
    if cfg.camera == "simulated":
        hw = _open_simulated(cfg)
        return getattr(hw, which), hw.close
    opened: list[tuple[str, Callable[[], None]]] = []
    try:
        backend = cfg.camera if which == "camera" else cfg.stage
        session = None
        if backend == "micromanager":
            session = _mm_session(cfg)
            session.open()
            opened.append(("close micromanager session", session.close))
        device: Camera | FocusStage = _make_camera(cfg, session) if which == "camera" else _make_stage(cfg, session)
        device.open()
        opened.insert(0, (f"close {which}", device.close))
        if isinstance(device, Camera):
            _apply_camera_settings(cfg, device)
    except BaseException:
        _run_all_after_failure(opened)
        raise
    return device, lambda: _run_all(opened)


def _run_all_after_failure(steps: list[tuple[str, Callable[[], None]]]) -> None:
    """Undo a half-finished open; the original error wins, so failures here are only logged."""
    for label, step in steps:
        try:
            step()
        except Exception as exc:
            log.error("while undoing a failed open: %s failed: %s", label, exc)


def _apply_camera_settings(cfg: HardwareConfig, camera: Camera) -> None:
    if cfg.camera_exposure_ms is not None:
        try:
            camera.exposure_ms = cfg.camera_exposure_ms
        except LimitError as exc:
            raise ConfigurationError(f"camera_exposure_ms={cfg.camera_exposure_ms}: {exc}") from exc


# -- simulated ----------------------------------------------------------------------------------
def _open_simulated(cfg: HardwareConfig) -> Hardware:
    from drivers.simulated import OBJECTIVES, SimulatedMicroscope

    if cfg.sim_objective not in OBJECTIVES:
        raise ConfigurationError(
            f"sim_objective={cfg.sim_objective!r} is not a simulated objective; allowed: {', '.join(OBJECTIVES)}"
        )
    if cfg.camera_pixel_size_um is not None:
        raise ConfigurationError(
            "camera_pixel_size_um cannot be set for camera='simulated': the simulated pixel size follows "
            "from sim_objective; leave camera_pixel_size_um empty"
        )
    stage_options: dict[str, Any] = {}
    if cfg.stage_limits_um is not None:
        stage_options["z_limits_um"] = (float(cfg.stage_limits_um[0]), float(cfg.stage_limits_um[1]))
    if cfg.stage_max_step_um is not None:
        stage_options["z_max_step_um"] = float(cfg.stage_max_step_um)
    if cfg.stage_direction is not None:
        stage_options["z_direction"] = int(cfg.stage_direction)
    if cfg.stage_speed_um_s is not None:
        stage_options["z_speed_um_s"] = float(cfg.stage_speed_um_s)
    if cfg.stage_settle_ms is not None:
        stage_options["z_settle_ms"] = float(cfg.stage_settle_ms)
    try:
        scope = _build_simulator(SimulatedMicroscope, cfg, stage_options)
    except ValueError as exc:  # the simulator validates its own arguments
        raise ConfigurationError(f"simulated microscope settings (sim_*, stage_*): {exc}") from exc
    stage: FocusStage = scope.focus_stage

    camera: Camera = scope.camera
    xy: XYStage | None = scope.xy_stage
    opened: list[tuple[str, Callable[[], None]]] = []
    try:
        stage.open()
        opened.insert(0, ("close focus stage", stage.close))
        camera.open()
        opened.insert(0, ("close camera", camera.close))
        if xy is not None:
            xy.open()
            opened.insert(0, ("close xy stage", xy.close))
        _apply_camera_settings(cfg, camera)
    except BaseException:
        _run_all_after_failure(opened)
        raise
    return Hardware(config=cfg, camera=camera, focus_stage=stage, xy_stage=xy, simulator=scope)


def _build_simulator(factory: Any, cfg: HardwareConfig, stage_options: dict[str, Any]) -> Any:
    return factory(
        seed=cfg.sim_seed,
        objective=cfg.sim_objective,
        specimen=cfg.sim_specimen,
        frame_shape=(cfg.sim_frame_height, cfg.sim_frame_width),
        bit_depth=cfg.sim_bit_depth,
        jpeg_quality=cfg.sim_jpeg_quality,
        noise=cfg.sim_noise,
        focus_offset_um=cfg.sim_focus_offset_um,
        tilt_um_per_mm=(cfg.sim_tilt_x_um_per_mm, cfg.sim_tilt_y_um_per_mm),
        realtime=cfg.sim_realtime,
        **stage_options,
    )


# -- real backends ------------------------------------------------------------------------------
def _stage_safety(cfg: HardwareConfig) -> dict[str, Any]:
    """Keyword arguments every real FocusStage takes; limits are required (no guessing)."""
    if cfg.stage_limits_um is None:
        raise ConfigurationError(
            f"stage_limits_um is required for stage={cfg.stage!r}: set the soft limits (lo, hi) in um in the "
            "stage's own coordinates, e.g. stage_limits_um = [-300, 300]; moves outside them are refused"
        )
    return {
        "limits_um": (float(cfg.stage_limits_um[0]), float(cfg.stage_limits_um[1])),
        "max_step_um": float(cfg.stage_max_step_um if cfg.stage_max_step_um is not None else DEFAULT_MAX_STEP_UM),
        "direction": int(cfg.stage_direction if cfg.stage_direction is not None else 1),
        "speed_um_s": float(
            cfg.stage_speed_um_s if cfg.stage_speed_um_s is not None else DEFAULT_SPEED_UM_S[cfg.stage]
        ),
        "settle_ms": float(cfg.stage_settle_ms if cfg.stage_settle_ms is not None else 0.0),
    }


def _mm_session(cfg: HardwareConfig) -> MicroManagerSession:
    from drivers.micromanager import MicroManagerSession

    adapter_dir: str | None = cfg.mm_adapter_dir
    config_file: str | None = cfg.mm_config
    if cfg.mm_backend == "python":
        if adapter_dir is None:
            try:
                import mm_test_adapters
            except ImportError as exc:
                raise ConfigurationError(
                    "mm_adapter_dir is required for mm_backend='python' (the folder holding Micro-Manager's "
                    "libmmgr_dal_* device adapters); the mm-test-adapters demo package is not installed"
                ) from exc
            adapter_dir = str(mm_test_adapters.device_adapter_path())
        if not Path(adapter_dir).is_dir():
            raise ConfigurationError(f"mm_adapter_dir={adapter_dir!r} is not a folder")
        if config_file is None:
            config_file = str(Path(adapter_dir) / "MMConfig_demo.cfg")
        if not Path(config_file).is_file():
            raise ConfigurationError(f"mm_config={config_file!r} does not exist (a Micro-Manager .cfg file)")
    return MicroManagerSession(
        backend=cfg.mm_backend,
        adapter_dir=adapter_dir,
        config_file=config_file,
        port=cfg.mm_port,
        timeout_s=cfg.mm_timeout_s,
    )


def _make_stage(cfg: HardwareConfig, session: MicroManagerSession | None) -> FocusStage:
    safety = _stage_safety(cfg)
    if cfg.stage == "micromanager":
        from drivers.micromanager import MicroManagerFocusStage

        assert session is not None
        return MicroManagerFocusStage(session, device=cfg.mm_focus_device, **safety)
    if cfg.stage in SERIAL_STAGES:
        from drivers.serial import make_serial_stage

        if not cfg.serial_port:
            raise ConfigurationError(
                f"serial_port is required for stage={cfg.stage!r} (e.g. /dev/ttyUSB0 or COM3; "
                "`autofocus devices` lists the ports it can see)"
            )
        return make_serial_stage(
            cfg.stage,
            port=cfg.serial_port,
            baudrate=cfg.serial_baudrate,
            timeout_s=cfg.serial_timeout_s,
            **safety,
        )
    raise ConfigurationError(f"stage={cfg.stage!r} is not a stage backend; allowed: {', '.join(STAGE_BACKENDS)}")


def _make_camera(cfg: HardwareConfig, session: MicroManagerSession | None) -> Camera:
    if cfg.camera == "micromanager":
        from drivers.micromanager import MicroManagerCamera

        assert session is not None
        return MicroManagerCamera(session, device=cfg.mm_camera_device, pixel_size_um=cfg.camera_pixel_size_um)
    if cfg.camera == "opencv":
        from drivers.opencv_camera import OpenCVCamera

        if cfg.camera_pixel_size_um is None:
            raise ConfigurationError(
                "camera_pixel_size_um is required for camera='opencv': a USB camera does not know the "
                "magnification; set the pixel size at the sample in um (sensor pixel / magnification)"
            )
        return OpenCVCamera(
            cfg.opencv_device,
            backend=cfg.opencv_backend,
            width=cfg.opencv_width,
            height=cfg.opencv_height,
            fourcc=cfg.opencv_fourcc,
            gain=cfg.opencv_gain,
            timeout_s=cfg.opencv_timeout_s,
            pixel_size_um=cfg.camera_pixel_size_um,
        )
    raise ConfigurationError(f"camera={cfg.camera!r} is not a camera backend; allowed: {', '.join(CAMERA_BACKENDS)}")
