"""``autofocus devices`` and ``autofocus check`` on the simulated, Micro-Manager demo and serial backends."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulators.controllers import ASIEmulator

from autofocus.cli import main
from autofocus.cli.devices import cameras

SMALL_SIM = ["--hw", "sim_frame_width=256", "--hw", "sim_frame_height=224"]


def _run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.fixture
def listener() -> Iterator[int]:
    """Something listening on a free loopback port (stands in for Micro-Manager's server)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        yield server.getsockname()[1]


def test_devices_reports_micromanager_server_and_demo_adapters(capsys: pytest.CaptureFixture[str], listener: int):
    code, report = _run_json(capsys, ["devices", "--json", "--mm-port", str(listener)])
    assert code == 0
    assert report["micromanager"]["server_listening"] is True
    assert isinstance(report["serial_ports"], list) and isinstance(report["cameras"], list)
    mm_test_adapters = pytest.importorskip("mm_test_adapters")
    assert report["micromanager"]["demo_adapters"] == str(mm_test_adapters.device_adapter_path())


def test_devices_without_micromanager_and_as_table(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, report = _run_json(capsys, ["devices", "--json", "--mm-port", str(port)])
    assert code == 0 and report["micromanager"]["server_listening"] is False
    assert main(["devices", "--mm-port", str(port)]) == 0
    text = capsys.readouterr().out
    assert f"server on 127.0.0.1:{port}: nothing listening" in text
    assert "Serial ports" in text and "Cameras" in text


def test_camera_probe_reports_a_node_that_does_not_open(tmp_path: Path) -> None:
    (tmp_path / "video7").write_bytes(b"not a camera")
    found = cameras(open_them=True, timeout_s=3.0, pattern=str(tmp_path / "video*"))
    assert found == [{"device": str(tmp_path / "video7"), "opens": False}]
    assert cameras(open_them=False, timeout_s=3.0, pattern=str(tmp_path / "video*")) == [
        {"device": str(tmp_path / "video7")}
    ]


def test_check_on_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _run_json(capsys, ["check", "--json", *SMALL_SIM])
    assert code == 0 and report["ok"] is True
    steps = {s["step"]: s for s in report["steps"]}
    assert set(steps) == {
        "open devices",
        "camera snap",
        "stage position",
        "stage move and back",
        "camera flush + snap",
        "close",
    }
    assert "256x224" in steps["camera snap"]["detail"]
    assert "(step +2 um)" in steps["stage move and back"]["detail"]


def test_check_reads_toml_and_cli_wins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "scope.toml"
    config.write_text(
        'camera = "simulated"\nstage = "simulated"\nsim_frame_width = 320\nsim_frame_height = 240\n'
        'stage_limits_um = [-30.0, 30.0]\nhost = "127.0.0.1"\nport = 8000\n'
    )
    code, report = _run_json(capsys, ["check", "--json", "--config", str(config), "--hw", "sim_frame_width=256"])
    assert code == 0
    assert report["config"]["sim_frame_width"] == 256 and report["config"]["sim_frame_height"] == 240
    assert report["config"]["stage_limits_um"] == [-30.0, 30.0]
    assert report["ignored_settings"] == ["host", "port"]  # service settings in the same file


def test_check_table_and_wrong_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", *SMALL_SIM, "--no-move"]) == 0
    text = capsys.readouterr().out
    assert "PASS  camera snap" in text and "stage move and back" not in text and "all checks passed" in text
    assert main(["check", "--hw", "camera=opencv", "--hw", "stage=asi"]) == 2
    text = capsys.readouterr().out
    assert "FAIL  open devices" in text and "stage_limits_um is required" in text
    assert main(["check", "--hw", "camra=simulated"]) == 2  # a typo is refused, naming the setting
    assert "camra: unknown setting" in capsys.readouterr().err


@pytest.mark.micromanager
def test_check_on_the_micromanager_demo(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mm_test_adapters")
    argv = ["check", "--json", "--hw", "camera=micromanager", "--hw", "stage=micromanager"]
    code, report = _run_json(capsys, [*argv, "--hw", "stage_limits_um=[-100, 100]", "--step-um", "5"])
    assert code == 0, report
    steps = {s["step"]: s for s in report["steps"]}
    assert "512x512" in steps["camera snap"]["detail"]
    assert "0.000 -> 5.000 -> 0.000 um" in steps["stage move and back"]["detail"]


def test_check_finds_the_silent_stage_and_passes_when_it_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    import cv2
    import numpy as np

    for i in range(2):
        cv2.imwrite(str(tmp_path / f"f_{i}.png"), np.random.default_rng(i).integers(0, 255, (64, 96, 3), np.uint8))
    emulator = ASIEmulator(tmp_path / "tty-asi").start()
    try:
        hw = {
            "camera": "opencv",
            "opencv_backend": "images",
            "opencv_device": str(tmp_path / "f_%d.png"),
            "opencv_width": 96,
            "opencv_height": 64,
            "camera_pixel_size_um": 1.0,
            "stage": "asi",
            "serial_port": str(emulator.link_path),
            "stage_limits_um": [-50, 50],
            "serial_timeout_s": 0.2,
        }
        argv = ["check", "--json"]
        for name, value in hw.items():
            argv += ["--hw", f"{name}={json.dumps(value) if not isinstance(value, str) else value}"]
        code, report = _run_json(capsys, argv)
        assert code == 0, report
        emulator.mute = True
        code, report = _run_json(capsys, [*argv, "--no-move"])
        steps = {s["step"]: s for s in report["steps"]}
        assert code == 1
        assert steps["open devices"]["ok"] is False and "DeviceTimeoutError" in steps["open devices"]["detail"]
        # Each device alone: the camera works, the stage is the one at fault.
        assert steps["camera alone"]["ok"] is True and "96x64" in steps["camera alone"]["detail"]
        assert steps["focus stage alone"]["ok"] is False
        assert "no reply" in steps["focus stage alone"]["detail"]
        emulator.mute = False
        code, report = _run_json(capsys, argv)
        assert code == 0
    finally:
        emulator.close()
