"""Dataset acquisition (autofocus.acquire) against the real simulated microscope, small frames."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autofocus.acquire import AcquisitionPlan, acquire_dataset, default_z_offsets, find_focus, grid_positions
from autofocus.cancel import CancelToken
from drivers.errors import CancelledError, DeviceTimeoutError, LimitError
from drivers.simulated import SimulatedMicroscope
from models.errors import DatasetError
from models.zstack import ZStackDataset

FRAME = (96, 128)


@pytest.fixture
def scope() -> Iterator[SimulatedMicroscope]:
    s = SimulatedMicroscope(seed=11, specimen="cells", frame_shape=FRAME, focus_offset_um=3.0, source_points=1)
    for device in (s.camera, s.focus_stage, s.xy_stage):
        device.open()
    yield s
    for device in (s.camera, s.focus_stage, s.xy_stage):
        device.close()


def _plan(**changes: Any) -> AcquisitionPlan:
    settings: dict[str, Any] = {
        "positions_um": grid_positions((0.0, 0.0), 2, 1, 500.0),
        "z_offsets_um": (-1.0, 0.0, 1.5),
        "random_planes": 1,
        "seed": 4,
        "z_reference": "physical_focal_plane",
    }
    settings.update(changes)
    return AcquisitionPlan(**settings)


def _acquire(scope: SimulatedMicroscope, out: Path, plan: AcquisitionPlan, **kw: Any) -> Any:
    return acquire_dataset(
        out,
        scope.camera,
        scope.focus_stage,
        plan,
        objective=scope.objective.name,
        xy_stage=scope.xy_stage,
        true_defocus=scope.true_defocus_um,
        clock=lambda: scope.time_s,
        **kw,
    )


def _keys(ds: ZStackDataset) -> list[str]:
    return [p.key for p in ds.planes]


def test_plan_helpers() -> None:
    z = default_z_offsets()
    assert len(z) == 41 and z[0] == -10.0 and z[-1] == 10.0 and z[20] == 0.0
    assert grid_positions((10.0, 0.0), 3, 2, 1000.0)[0] == (-990.0, -500.0)
    plan = _plan(random_planes=3)
    first, again = plan.planes_for(0), plan.planes_for(0)
    assert first == again and first != plan.planes_for(1)  # reproducible off-grid planes per position
    assert all(-1.0 <= d <= 1.5 for _, d in first[3:])
    with pytest.raises(ValueError, match="duplicates"):
        AcquisitionPlan(z_offsets_um=(0.0, 0.0))
    with pytest.raises(ValueError, match="z_reference must be"):
        AcquisitionPlan(z_reference="best")  # type: ignore[arg-type]


def test_physical_reference_records_every_plane_with_true_labels(scope: SimulatedMicroscope, tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    result = _acquire(scope, tmp_path / "ds", _plan(), progress=events.append)
    ds = ZStackDataset(tmp_path / "ds")
    assert result.planes_written == 8 and result.planes_skipped == 0 and ds.complete
    assert ds.z_reference == "physical_focal_plane" and ds.frame_shape == (*FRAME, 3)
    assert ds.objective == "20x/0.75" and ds.pixel_size_um == scope.camera.pixel_size_um
    assert sorted(ds.stacks) == ["p0000", "p0001"]
    assert ds.stacks["p0001"].x_um == 250.0 and ds.stacks["p0000"].focus_z_um == pytest.approx(3.0)
    planned = dict(_plan().planes_for(0))
    for p in ds.planes:
        suffix = p.key.split("/")[1]
        expected = planned[suffix] if p.stack == "p0000" else dict(_plan().planes_for(1))[suffix]
        assert p.defocus_um == pytest.approx(expected, abs=1e-3)
        assert p.z_um == pytest.approx(3.0 - expected, abs=1e-3)  # direction +1: z = focus - d
    # planes of a position are taken in ascending stage z (approach from below)
    for stack in ds.stacks:
        zs = [p.z_um for p in ds.planes if p.stack == stack]
        assert zs == sorted(zs)
    assert [e["event"] for e in events].count("plane") == 8 and events[-1]["event"] == "done"
    assert ds.read_plane(0).shape == (*FRAME, 3)


def test_camera_fault_mid_run_then_resume_has_every_plane_exactly_once(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    stops: list[float] = []
    original_stop = scope.focus_stage._do_stop

    def spy_stop() -> None:
        stops.append(scope.time_s)
        original_stop()

    scope.focus_stage._do_stop = spy_stop  # type: ignore[method-assign]

    def fault_after_five(event: dict[str, Any]) -> None:
        if event["event"] == "plane" and event["planes_written"] == 5:
            scope.faults.camera_timeout = True

    plan = _plan()
    with pytest.raises(DeviceTimeoutError):
        _acquire(scope, tmp_path / "ds", plan, progress=fault_after_five)
    assert stops, "the focus stage must be stopped after an error"
    ds = ZStackDataset(tmp_path / "ds")
    assert len(ds) == 5 and not ds.complete
    assert all(ds.read_plane(p).shape == (*FRAME, 3) for p in ds.planes)

    scope.faults.camera_timeout = False
    with pytest.raises(DatasetError, match="resume=True"):
        _acquire(scope, tmp_path / "ds", plan)
    result = _acquire(scope, tmp_path / "ds", plan, resume=True)
    assert result.planes_written == 3 and result.planes_skipped == 5
    ds = ZStackDataset(tmp_path / "ds")
    keys = _keys(ds)
    expected = sorted(f"p{i:04d}/{suffix}" for i in range(2) for suffix, _ in plan.planes_for(i))
    assert sorted(keys) == expected and len(set(keys)) == len(keys) and ds.complete
    assert sorted(p.index for p in ds.planes) == list(range(8))
    for p in ds.planes:
        assert p.defocus_um == pytest.approx(dict(plan.planes_for(int(p.stack[1:])))[p.key.split("/")[1]], abs=1e-3)


@pytest.mark.parametrize("kind", ["event", "token"])
def test_cancel_keeps_written_planes_and_resume_completes(
    scope: SimulatedMicroscope, tmp_path: Path, kind: str
) -> None:
    cancel: threading.Event | CancelToken = threading.Event() if kind == "event" else CancelToken()

    def cancel_after_three(event: dict[str, Any]) -> None:
        if event["event"] == "plane" and event["planes_written"] == 3:
            cancel.set() if isinstance(cancel, threading.Event) else cancel.cancel("stopped by the test")

    plan = _plan(positions_um=None, random_planes=0, z_offsets_um=(-2.0, -1.0, 0.0, 1.0, 2.0))
    with pytest.raises(CancelledError, match="before plane"):
        acquire_dataset(
            tmp_path / "ds",
            scope.camera,
            scope.focus_stage,
            plan,
            objective="20x/0.75",
            true_defocus=scope.true_defocus_um,
            cancel=cancel,
            progress=cancel_after_three,
        )
    assert len(ZStackDataset(tmp_path / "ds")) == 3
    acquire_dataset(
        tmp_path / "ds",
        scope.camera,
        scope.focus_stage,
        plan,
        objective="20x/0.75",
        true_defocus=scope.true_defocus_um,
        resume=True,
    )
    ds = ZStackDataset(tmp_path / "ds")
    assert sorted(p.defocus_um for p in ds.planes) == pytest.approx([-2.0, -1.0, 0.0, 1.0, 2.0], abs=1e-3)
    assert len(set(_keys(ds))) == 5 and ds.stacks["p0000"].x_um is None


def test_backlash_is_taken_up_from_the_same_side(tmp_path: Path) -> None:
    s = SimulatedMicroscope(seed=2, frame_shape=FRAME, backlash_um=0.6, z_direction=-1, source_points=1)
    for device in (s.camera, s.focus_stage):
        device.open()
    s.focus_stage.move_to(5.0)  # start above the planes: the first approach must overshoot below
    plan = _plan(positions_um=None, random_planes=2, z_offsets_um=(-1.0, 0.0, 1.0))
    acquire_dataset(
        tmp_path / "ds", s.camera, s.focus_stage, plan, objective="20x/0.75", true_defocus=s.true_defocus_um
    )
    ds = ZStackDataset(tmp_path / "ds")
    z = np.array([p.z_um for p in ds.planes])
    truth = np.array([p.defocus_um for p in ds.planes])
    # every plane sits on the same side of the backlash gap: truth = direction * (focus - z) + constant
    offset = truth - (-1) * (ds.stacks["p0000"].focus_z_um - z)
    assert np.ptp(offset) < 1e-6


def test_sharpness_peak_reference_uses_the_focus_scan(tmp_path: Path) -> None:
    s = SimulatedMicroscope(seed=5, frame_shape=(128, 128), focus_offset_um=2.0, source_points=1)
    for device in (s.camera, s.focus_stage):
        device.open()
    s.focus_stage.move_to(0.0)
    plan = AcquisitionPlan(
        z_offsets_um=(-1.0, 1.0),
        z_reference="sharpness_peak",
        focus_range_um=5.0,
        focus_coarse_step_um=1.0,
        focus_fine_step_um=0.25,
    )
    result = acquire_dataset(tmp_path / "ds", s.camera, s.focus_stage, plan, objective="20x/0.75")
    ds = ZStackDataset(tmp_path / "ds")
    assert ds.z_reference == "sharpness_peak:variance_of_laplacian"
    focus_z = ds.stacks["p0000"].focus_z_um
    assert focus_z == result.focus["p0000"]
    assert abs(focus_z - 2.0) < 1.5  # near the physical plane (phase specimens peak ~0.5 um off it)
    for p in ds.planes:
        assert p.defocus_um == pytest.approx(focus_z - p.z_um, abs=1e-3)  # direction +1


def test_find_focus_peak_beats_the_neighbours(scope: SimulatedMicroscope) -> None:
    scope.focus_stage.move_to(0.0)
    scan = find_focus(
        scope.camera, scope.focus_stage, center_um=0.0, range_um=6.0, coarse_step_um=1.5, fine_step_um=0.5
    )
    coarse_scores = [s for z, s in scan.samples if abs(z - scan.z_um) > 2.5]
    assert scan.score > max(coarse_scores)
    assert scope.focus_stage.z_um == pytest.approx(scan.z_um)


def test_refusals(scope: SimulatedMicroscope, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs true_defocus"):
        acquire_dataset(
            tmp_path / "a", scope.camera, scope.focus_stage, _plan(), objective="x", xy_stage=scope.xy_stage
        )
    with pytest.raises(ValueError, match="no xy_stage"):
        acquire_dataset(
            tmp_path / "b", scope.camera, scope.focus_stage, _plan(), objective="x", true_defocus=scope.true_defocus_um
        )
    lo, hi = scope.focus_stage.limits_um
    plan = _plan(positions_um=None, random_planes=0, z_offsets_um=(hi - lo + 10.0,))
    with pytest.raises(LimitError, match="outside the soft limits"):
        _acquire(scope, tmp_path / "c", plan)
    assert len(ZStackDataset(tmp_path / "c")) == 0


def test_cli_acquire_on_the_simulator_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autofocus.cli import main

    argv = [
        "acquire",
        str(tmp_path / "ds"),
        "--simulated",
        "--hw",
        "sim_frame_width=224",
        "--hw",
        "sim_frame_height=224",
        "--z-min",
        "-1",
        "--z-max",
        "1",
        "--z-step",
        "1",
        "--grid",
        "2",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert '"planes_written": 6' in out and '"z_reference": "physical_focal_plane"' in out
    ds = ZStackDataset(tmp_path / "ds")
    assert len(ds) == 6 and sorted(ds.stacks) == ["p0000", "p0001"] and ds.source["hardware"]["simulated"]
    assert main(argv) == 2  # exists: refuses without --resume
    assert "pass resume=True" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    assert '"planes_skipped": 6' in capsys.readouterr().out


def test_cli_acquire_refuses_unclear_hardware(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autofocus.cli import main

    assert main(["acquire", str(tmp_path / "a")]) == 2
    assert "say which microscope to use" in capsys.readouterr().err
    assert main(["acquire", str(tmp_path / "b"), "--simulated", "--hw", "camera=opencv"]) == 2
    assert "--simulated contradicts" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
