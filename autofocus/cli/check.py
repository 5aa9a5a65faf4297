"""``autofocus check``: open the configured camera and focus stage, snap, move Z and back, report.

Settings come from a TOML file (``--config``, flat ``name = value`` lines with the names of
``autofocus.hardware.HardwareConfig``; the service's own config file works too, its service-only
names are listed as ignored) and from ``--hw NAME=VALUE`` options (``--hw serial_port=/dev/ttyUSB0``,
``--hw 'stage_limits_um=[-300, 300]'``), which win over the file.
Exit status: 0 all steps passed, 1 a step failed, 2 the settings are wrong (the report or the
error message names the setting).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

from autofocus.cli.hardware_options import add_hardware_arguments, load_settings

HELP = "commission a microscope: open camera and focus stage, snap, move Z a step and back, report what works"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_hardware_arguments(
        parser,
        "a hardware setting (autofocus.hardware.HardwareConfig field), wins over --config; e.g. "
        "--hw stage=asi --hw serial_port=/dev/ttyUSB0 --hw 'stage_limits_um=[-300,300]'",
    )
    parser.add_argument("--step-um", type=float, default=2.0, help="Z step for the move test (um; default 2)")
    parser.add_argument("--tolerance-um", type=float, default=0.5, help="allowed read-back error (um; default 0.5)")
    parser.add_argument("--no-move", action="store_true", help="do not move the focus stage")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


class _Report:
    """Collects one row per step: name, ok, detail, seconds."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def step(self, name: str, fn: Callable[[], str]) -> bool:
        t0 = time.perf_counter()
        error: str | None = None
        try:
            detail = fn()
        except Exception as exc:  # reported, not swallowed: the row carries the error, the exit status says it
            error = type(exc).__name__
            detail = f"{error}: {exc}"
        self.steps.append(
            {
                "step": name,
                "ok": error is None,
                "detail": detail,
                "error": error,
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        return error is None

    @property
    def ok(self) -> bool:
        return all(s["ok"] for s in self.steps)


def run(args: argparse.Namespace) -> int:
    from autofocus.hardware import config_from_mapping, open_hardware

    values, ignored = load_settings(args.config, dict(args.hw))
    config = config_from_mapping(values)  # ConfigurationError -> exit 2 with the message
    report = _Report()
    holder: dict[str, Any] = {}

    def do_open() -> str:
        holder["hw"] = open_hardware(config)
        return f"camera={config.camera}, stage={config.stage}"

    opened = report.step("open devices", do_open)
    if not opened and report.steps[0]["error"] != "ConfigurationError":
        _diagnose(report, config)
    if opened:
        hw = holder["hw"]

        def close() -> str:
            hw.close()
            return "stage stopped, devices closed"

        try:
            _check_devices(report, hw, args)
        finally:
            report.step("close", close)
    _print(report, config.model_dump(mode="json"), ignored, args.json)
    if report.steps[0]["error"] == "ConfigurationError":
        return 2
    return 0 if report.ok else 1


def _diagnose(report: _Report, config: Any) -> None:
    """Opening both failed: open each alone to tell which one is at fault."""
    from autofocus.hardware import open_one_device

    def camera_alone() -> str:
        camera, close = open_one_device(config, "camera")
        try:
            frame = camera.snap()
            return f"the camera works alone: {frame.shape[1]}x{frame.shape[0]} {frame.dtype}"
        finally:
            close()

    def stage_alone() -> str:
        stage, close = open_one_device(config, "focus_stage")
        try:
            return f"the focus stage works alone: z = {stage.z_um:.3f} um"
        finally:
            close()

    report.step("camera alone", camera_alone)
    report.step("focus stage alone", stage_alone)


def _check_devices(report: _Report, hw: Any, args: argparse.Namespace) -> None:
    camera, stage = hw.camera, hw.focus_stage

    def snap() -> str:
        frame = camera.snap()
        std = float(frame.std())
        if std == 0.0:
            raise ValueError(f"frame {frame.shape} is constant (value {int(frame.flat[0])}): lens cap, shutter?")
        h, w = camera.sensor_shape
        return (
            f"{w}x{h} {frame.dtype} ({camera.bit_depth} bit), mean {float(frame.mean()):.1f}, std {std:.1f}, "
            f"exposure {camera.exposure_ms:g} ms, pixel {camera.pixel_size_um:g} um"
        )

    report.step("camera snap", snap)

    def read_z() -> str:
        z = stage.z_um
        lo, hi = stage.limits_um
        return f"z = {z:.3f} um, soft limits [{lo:g}, {hi:g}] um, max step {stage.max_step_um:g} um"

    if not report.step("stage position", read_z) or args.no_move:
        return

    def move_and_back() -> str:
        z0 = stage.z_um
        lo, hi = stage.limits_um
        step = args.step_um if lo <= z0 + args.step_um <= hi else -args.step_um
        target = z0 + step
        got = stage.move_to(target)
        if not math.isclose(got, target, abs_tol=args.tolerance_um):
            raise ValueError(f"moved to {target:.3f} um but read back {got:.3f} um")
        back = stage.move_to(z0)
        if not math.isclose(back, z0, abs_tol=args.tolerance_um):
            raise ValueError(f"returned to {z0:.3f} um but read back {back:.3f} um")
        return f"{z0:.3f} -> {got:.3f} -> {back:.3f} um (step {step:+g} um)"

    report.step("stage move and back", move_and_back)

    def snap_after_move() -> str:
        camera.flush()
        frame = camera.snap()
        return f"fresh frame {frame.shape[1]}x{frame.shape[0]} after flush"

    report.step("camera flush + snap", snap_after_move)


def _print(report: _Report, config: dict[str, Any], ignored: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"ok": report.ok, "steps": report.steps, "config": config, "ignored_settings": ignored}))
        return
    width = max(len(s["step"]) for s in report.steps)
    for s in report.steps:
        mark = "PASS" if s["ok"] else "FAIL"
        print(f"{mark}  {s['step']:<{width}}  {s['seconds']:7.3f} s  {s['detail']}")
    if ignored:
        print(f"note: ignored settings from the config file (not hardware settings): {', '.join(ignored)}")
    print("all checks passed" if report.ok else "some checks FAILED")
