"""Synthetic datasets (autofocus.synth) from the real simulated microscope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autofocus.synth import SLIDE_SEED_STRIDE, SynthConfig, plan_slides, synthesize
from models.patches import PatchDataset
from models.zstack import ZStackDataset, open_datasets


def _config(**changes: Any) -> SynthConfig:
    settings: dict[str, Any] = {
        "slides": 3,
        "positions": 1,
        "z_offsets_um": (-2.0, 0.0, 2.0),
        "random_planes": 1,
        "seed": 7,
        "objectives": ("20x/0.75", "40x/0.65"),
        "jpeg_fraction": 0.5,
    }
    settings.update(changes)
    return SynthConfig(**settings)


def test_plan_is_reproducible_and_seeds_hold_out_specimens() -> None:
    a, b = plan_slides(_config()), plan_slides(_config())
    assert a == b
    assert [s.specimen for s in a] == ["cells", "tissue", "sparse"]
    other = plan_slides(_config(seed=8))
    assert not {s.slide_seed for s in a} & {s.slide_seed for s in other}
    assert all(s.slide_seed // SLIDE_SEED_STRIDE == 7 for s in a)
    many = plan_slides(_config(slides=40))
    assert len({s.objective for s in many}) == 2 and len({s.condenser_na for s in many}) > 30
    assert {s.jpeg_quality is None for s in many} == {True, False}
    assert all(0.0 <= s.spherical_aberration_waves <= 0.15 for s in many)


def test_synth_writes_labelled_stacks_and_resumes(tmp_path: Path) -> None:
    config = _config()

    class StopError(Exception):
        pass

    def stop_after_first_stack(event: dict[str, Any]) -> None:
        if event["event"] == "planes" and event["planes_done"] >= 4:
            raise StopError

    with pytest.raises(StopError):
        synthesize(tmp_path / "out", config, workers=1, progress=stop_after_first_stack)
    result = synthesize(tmp_path / "out", config, workers=1)
    assert result.planes_written == 8 and result.planes_skipped == 4
    datasets = open_datasets(tmp_path / "out")
    assert len(datasets) == 3 and all(d.complete for d in datasets)
    for ds, spec in zip(sorted(datasets, key=lambda d: d.path.name), plan_slides(config), strict=True):
        assert ds.z_reference == "physical_focal_plane" and ds.objective == spec.objective
        assert ds.frame_shape == (224, 224, 3)
        keys = [p.key for p in ds.planes]
        assert len(keys) == len(set(keys)) == 4
        assert sorted(p.defocus_um for p in ds.planes) == sorted(d for _, d in spec.planes[0])
        assert ds.source["synth"]["condenser_na"] == spec.condenser_na
        assert ds.source["synth"]["jpeg_quality"] == spec.jpeg_quality
    patches = PatchDataset(tmp_path / "out", drop_blank=False)
    assert len(patches) == 12 and patches.z_reference == "physical_focal_plane"
    again = synthesize(tmp_path / "out", config, workers=1)
    assert again.planes_written == 0 and again.planes_skipped == 12


@pytest.mark.slow
def test_parallel_workers_give_the_same_pixels(tmp_path: Path) -> None:
    config = _config(slides=2, z_offsets_um=(-1.0, 1.0), random_planes=0)
    synthesize(tmp_path / "serial", config, workers=1)
    events: list[dict[str, Any]] = []
    synthesize(tmp_path / "parallel", config, workers=2, progress=events.append)
    assert events[-1]["event"] == "done" and max(e.get("planes_done", 0) for e in events) == 4
    for spec in plan_slides(config):
        a, b = ZStackDataset(tmp_path / "serial" / spec.name), ZStackDataset(tmp_path / "parallel" / spec.name)
        assert [p.key for p in a.planes] == [p.key for p in b.planes]
        for i in range(len(a)):
            np.testing.assert_array_equal(a.read_plane(i), b.read_plane(i))


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="frame_size must be >= 224"):
        _config(frame_size=100)
    with pytest.raises(ValueError, match="specimens must be some of cells, tissue, sparse"):
        _config(specimens=("bacteria",))
    with pytest.raises(ValueError, match="JPEG needs bit_depth 8"):
        _config(bit_depth=12)
    with pytest.raises(ValueError, match=r"unknown objective .63x/1\.4."):
        plan_slides(_config(objectives=("63x/1.4",)))
    with pytest.raises(ValueError, match="workers must be >= 1"):
        synthesize("/nonexistent-never-created", _config(), workers=0)


def test_cli_synth_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autofocus.cli import main

    out = tmp_path / "synth"
    assert (
        main(
            [
                "dataset",
                "synth",
                str(out),
                "--slides",
                "2",
                "--positions",
                "1",
                "--z-min",
                "-1",
                "--z-max",
                "1",
                "--z-step",
                "2",
                "--specimens",
                "cells",
                "--seed",
                "3",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert '"planes_written": 4' in printed and '"cells 20x/0.75": 4' in printed
    assert main(["dataset", "info", str(out), "--patches"]) == 0
    text = capsys.readouterr().out
    assert "total: 2 datasets, 2 stacks, 4 planes" in text and "patches kept" in text
    assert main(["dataset", "synth", str(out), "--slides", "0"]) == 2
    assert "slides and positions must be >= 1" in capsys.readouterr().err
