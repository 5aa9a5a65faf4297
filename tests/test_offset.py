"""The focus offset: measuring what the model reads at focus, and routines that end there (library and CLI)."""

from __future__ import annotations

import json
from functools import partial

import pytest
from sim_scope import open_scope

from autofocus.cli import main
from autofocus.offset import measure_focus_offset
from autofocus.predictor import Predictor
from drivers.errors import UnreliableEstimateError

SIM = ["--hw", "sim_frame_width=448", "--hw", "sim_frame_height=448", "--hw", "sim_specimen=cells", "--threads", "1"]
make_scope = partial(open_scope, seed=7, specimen="cells", noise=False)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(None, runtime="torch", threads=1)


def test_the_reading_is_the_median_of_the_frames_estimates(predictor: Predictor) -> None:
    scope = make_scope()  # noiseless: every frame at this z is the same
    direct = predictor.predict(scope.camera.snap())
    reading = measure_focus_offset(scope.camera, predictor, frames=3, min_confidence=0.0)
    assert reading.focus_offset_um == pytest.approx(direct.defocus_um, abs=1e-5)
    assert reading.estimates_um == pytest.approx([direct.defocus_um] * 3, abs=1e-5)
    assert reading.spread_um == pytest.approx(0.0, abs=1e-5)
    assert (reading.frames, reading.reliable_frames) == (3, 3)
    assert scope.focus_stage.z_um == 0.0  # measuring never moves the stage


def test_a_blank_slide_or_a_bad_argument_is_refused(predictor: Predictor) -> None:
    empty = make_scope(stain_scale=0.0, phase_scale=0.0)
    with pytest.raises(UnreliableEstimateError, match="only 0 of 2 frames gave a reliable estimate"):
        measure_focus_offset(empty.camera, predictor, frames=2)
    with pytest.raises(ValueError, match="frames must be an integer >= 1"):
        measure_focus_offset(empty.camera, predictor, frames=0)
    with pytest.raises(ValueError, match="min_confidence"):
        measure_focus_offset(empty.camera, predictor, min_confidence=2.0)


def test_a_reading_outside_the_allowed_offset_is_refused(predictor: Predictor) -> None:
    scope = make_scope()
    scope.focus_stage.move_to(-scope.focus_stage.direction * 9.5)  # far out of focus
    reading = predictor.predict(scope.camera.snap()).defocus_um
    assert abs(reading) > 5.0  # the precondition of this test: the model sees the large defocus
    with pytest.raises(UnreliableEstimateError, match=r"outside the allowed focus offset -5\.\.\+5 um"):
        measure_focus_offset(scope.camera, predictor, frames=1, min_confidence=0.0)


def test_cli_offset_then_focus_with_that_offset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["offset", "--frames", "2", "--min-confidence", "0", "--json", *SIM]) == 0
    reading = json.loads(capsys.readouterr().out)
    assert reading["frames"] == 2 and reading["sim_true_defocus_um"] == pytest.approx(0.0, abs=1e-9)
    offset = round(reading["focus_offset_um"], 3)
    args = ["focus", "--routine", "oneshot", "--no-verify", "--approach", "none", "--min-confidence", "0"]
    assert main([*args, "--sim-start-defocus-um", "2", "--focus-offset-um", str(offset), "--json", *SIM]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["focus_offset_um"] == offset and len(record["moves"]) == 1
    estimate = record["estimates"][0]["defocus_um"]
    move = record["moves"][0]
    # direction +1 in the simulator's default configuration: the move is the estimate minus the offset
    assert move["to_z_um"] - move["from_z_um"] == pytest.approx(estimate - offset, abs=1e-6)


def test_cli_refuses_an_offset_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["focus", "--focus-offset-um", "9", *SIM]) == 2
    assert "focus_offset_um=+9.000 is outside the allowed -5..+5 um" in capsys.readouterr().err
    assert main(["offset", "--frames", "0", *SIM]) == 2
    assert "frames must be an integer >= 1" in capsys.readouterr().err
