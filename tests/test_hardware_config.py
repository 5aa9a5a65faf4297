"""The device factory: settings validation and real opening of every backend combination.

Real devices throughout: the simulated microscope, Micro-Manager's demo adapters, an ASI
emulator on a pty through pyserial, and OpenCV reading an image sequence.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from emulators.controllers import ASIEmulator
from pydantic import ValidationError

from autofocus.hardware import Hardware, HardwareConfig, config_from_mapping, open_hardware, open_one_device
from drivers.errors import ConfigurationError
from drivers.serial import ASIStage

SMALL_SIM = {"sim_frame_width": 256, "sim_frame_height": 224}


def _sequence(folder: Path, width: int = 96, height: int = 64) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"f_{i:03d}.png"), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return str(folder / "f_%03d.png")


@pytest.fixture
def asi(tmp_path: Path) -> Iterator[ASIEmulator]:
    emulator = ASIEmulator(tmp_path / "tty-asi").start()
    yield emulator
    emulator.close()


# -- validation ---------------------------------------------------------------------------------
def test_defaults_are_the_simulator() -> None:
    cfg = HardwareConfig()
    assert (cfg.camera, cfg.stage) == ("simulated", "simulated")


def test_unknown_setting_is_named_with_the_allowed_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"camra: unknown setting \(allowed: camera, stage, "):
        config_from_mapping({"camra": "simulated"})


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"camera": "webcam", "stage": "simulated"}, "camera"),
        ({"stage": "ludl"}, "stage"),
        ({"camera": "opencv", "stage": "asi", "stage_limits_um": (5.0, -5.0)}, "stage_limits_um"),
        ({"stage_direction": 2}, "stage_direction"),
        ({"opencv_fourcc": "MJ\x00G"}, "opencv_fourcc"),
        ({"mm_backend": "matlab"}, "mm_backend"),
        ({"sim_frame_width": 100}, "sim_frame_width"),
        ({"serial_timeout_s": 0}, "serial_timeout_s"),
    ],
)
def test_bad_values_name_the_setting(values: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        config_from_mapping(values)
    with pytest.raises(ValidationError, match=field):
        HardwareConfig(**values)  # type: ignore[arg-type]


def test_simulated_camera_needs_the_simulated_stage() -> None:
    for camera, stage in (("simulated", "asi"), ("opencv", "simulated")):
        with pytest.raises(ConfigurationError, match="must both be 'simulated'"):
            config_from_mapping({"camera": camera, "stage": stage})


def test_real_stage_needs_limits_and_port(tmp_path: Path) -> None:
    base = {"camera": "opencv", "camera_pixel_size_um": 1.0, "opencv_backend": "images"}
    with pytest.raises(ConfigurationError, match="stage_limits_um is required for stage='asi'"):
        open_hardware(HardwareConfig(**base, stage="asi", serial_port="/dev/null"))
    with pytest.raises(ConfigurationError, match="serial_port is required for stage='prior'"):
        open_hardware(HardwareConfig(**base, stage="prior", stage_limits_um=(-1.0, 1.0)))


def test_opencv_needs_a_pixel_size(tmp_path: Path, asi: ASIEmulator) -> None:
    cfg = HardwareConfig(camera="opencv", stage="asi", serial_port=str(asi.link_path), stage_limits_um=(-10.0, 10.0))
    with pytest.raises(ConfigurationError, match="camera_pixel_size_um is required for camera='opencv'"):
        open_hardware(cfg)


def test_simulated_settings_checked_against_the_simulator() -> None:
    with pytest.raises(ConfigurationError, match=r"sim_objective='3x/0.1'.*allowed: "):
        open_hardware(HardwareConfig(sim_objective="3x/0.1", **SMALL_SIM))
    with pytest.raises(ConfigurationError, match="camera_pixel_size_um cannot be set"):
        open_hardware(HardwareConfig(camera_pixel_size_um=0.5, **SMALL_SIM))


# -- simulated ----------------------------------------------------------------------------------
def test_simulated_hardware_shares_one_microscope() -> None:
    cfg = HardwareConfig(stage_limits_um=(-40.0, 40.0), stage_max_step_um=25.0, camera_exposure_ms=15.0, **SMALL_SIM)
    with open_hardware(cfg) as hw:
        assert isinstance(hw, Hardware)
        assert hw.simulator is not None and hw.xy_stage is not None
        assert hw.camera.snap().shape == (224, 256, 3)
        assert hw.camera.exposure_ms == pytest.approx(15.0)
        assert hw.focus_stage.limits_um == (-40.0, 40.0) and hw.focus_stage.max_step_um == 25.0
        before = hw.simulator.true_defocus_um()
        hw.focus_stage.move_by(4.0)
        # The camera's microscope is the stage's: the truth moved with the stage.
        assert hw.simulator.true_defocus_um() == pytest.approx(before - hw.focus_stage.direction * 4.0, abs=0.05)
        info = hw.describe()
        json.dumps(info)
        assert info["simulated"] is True and info["camera_backend"] == "simulated"
    assert not hw.camera.is_open and not hw.focus_stage.is_open
    hw.close()  # idempotent


# -- real backends ------------------------------------------------------------------------------
def test_opencv_camera_with_asi_stage(tmp_path: Path, asi: ASIEmulator) -> None:
    cfg = HardwareConfig(
        camera="opencv",
        opencv_backend="images",
        opencv_device=_sequence(tmp_path / "cam"),
        opencv_width=96,
        opencv_height=64,
        camera_pixel_size_um=0.8,
        stage="asi",
        serial_port=str(asi.link_path),
        stage_limits_um=(-100.0, 100.0),
        stage_max_step_um=50.0,
        serial_timeout_s=0.3,
    )
    hw = open_hardware(cfg)
    try:
        assert hw.simulator is None and hw.xy_stage is None
        assert hw.camera.snap().shape == (64, 96, 3)
        assert hw.focus_stage.move_to(20.0) == pytest.approx(20.0, abs=0.011)
        asi.motion.speed_um_s = 20.0
        hw.focus_stage.move_to(60.0, wait=False)  # takes 2 s
        assert hw.focus_stage.is_busy()
    finally:
        hw.close()
    # close() stopped the stage before closing: the controller got HALT, the move ended early.
    deadline = time.monotonic() + 5.0
    while "HALT" not in asi.received and time.monotonic() < deadline:
        time.sleep(0.01)  # the emulator thread reads what was written just before the port closed
    assert "HALT" in asi.received
    assert not asi.motion.moving and asi.motion.position_um < 59.0


def test_failed_open_leaves_nothing_open(tmp_path: Path, asi: ASIEmulator) -> None:
    cfg = HardwareConfig(
        camera="opencv",
        opencv_backend="images",
        opencv_device=_sequence(tmp_path / "cam", width=96, height=64),
        opencv_width=2592,
        opencv_height=1944,
        camera_pixel_size_um=0.8,
        stage="asi",
        serial_port=str(asi.link_path),
        stage_limits_um=(-100.0, 100.0),
    )
    with pytest.raises(ConfigurationError, match="refusing to run at another size"):
        open_hardware(cfg)
    # The stage opened first and was closed again: the port (opened exclusively) is free.
    stage = ASIStage(str(asi.link_path), limits_um=(-1.0, 1.0), max_step_um=1.0, timeout_s=0.3)
    with stage:
        assert stage.z_um == pytest.approx(0.0)


@pytest.mark.micromanager
def test_micromanager_camera_and_stage_share_one_core() -> None:
    pytest.importorskip("mm_test_adapters")
    from mmpycorex import is_pymmcore_active

    cfg = HardwareConfig(camera="micromanager", stage="micromanager", stage_limits_um=(-100.0, 100.0))
    hw = open_hardware(cfg)
    try:
        info = hw.describe()
        assert info["camera"]["device"] == "Camera" and info["focus_stage"]["device"] == "Z"
        assert hw.camera.snap().ndim == 3
        assert hw.focus_stage.move_to(7.5) == pytest.approx(7.5)
        assert hw.focus_stage.session is hw.camera.session  # type: ignore[attr-defined]
    finally:
        hw.close()
    assert not is_pymmcore_active()


@pytest.mark.micromanager
def test_one_device_alone_for_diagnosis() -> None:
    pytest.importorskip("mm_test_adapters")
    from mmpycorex import is_pymmcore_active

    cfg = HardwareConfig(camera="micromanager", stage="micromanager", stage_limits_um=(-100.0, 100.0))
    camera, close = open_one_device(cfg, "camera")
    try:
        assert camera.snap().ndim == 3
    finally:
        close()
    assert not camera.is_open and not is_pymmcore_active()
    stage, close = open_one_device(cfg, "focus_stage")
    try:
        assert stage.z_um == pytest.approx(0.0, abs=300.0)
    finally:
        close()
    assert not is_pymmcore_active()
    with pytest.raises(ValueError, match="which"):
        open_one_device(cfg, "xy_stage")  # type: ignore[arg-type]


@pytest.mark.micromanager
def test_micromanager_bad_paths_are_configuration_errors(tmp_path: Path) -> None:
    pytest.importorskip("mm_test_adapters")
    base = {"camera": "micromanager", "stage": "micromanager", "stage_limits_um": (-1.0, 1.0)}
    with pytest.raises(ConfigurationError, match="mm_adapter_dir="):
        open_hardware(HardwareConfig(**base, mm_adapter_dir=str(tmp_path / "nope")))
    with pytest.raises(ConfigurationError, match="mm_config="):
        open_hardware(HardwareConfig(**base, mm_config=str(tmp_path / "missing.cfg")))
    with pytest.raises(ConfigurationError, match="mm_focus_device='Zeta'"):
        open_hardware(HardwareConfig(**base, mm_focus_device="Zeta"))
    from mmpycorex import is_pymmcore_active

    assert not is_pymmcore_active()  # the failed open shut the core down again
