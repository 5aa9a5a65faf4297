"""Far frames' distance from focus from their spectral centroid, through a calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autofocus.calibration import FocusCalibration, calibration_from_table
from autofocus.far_distance import (
    MIN_CENTROID_FIELDS,
    READING_MARGIN_UM,
    centroid_curve,
    centroid_planes,
    far_defocus_um,
)
from autofocus.predictor import Predictor
from tests.sim_scope import open_scope

PLANES = np.arange(-10.0, 10.0 + 1e-9, 0.5)


def blur_centroid(z: np.ndarray) -> np.ndarray:
    """A centroid that falls as 1/|z|, as defocus blur makes it; NaN within 5 um (no far frame there)."""
    with np.errstate(divide="ignore"):
        return np.where(np.abs(z) >= 5.0, 20.0 / np.abs(z), np.nan)


def test_the_distance_is_read_off_the_curve_on_the_readings_side() -> None:
    curve = [None if np.isnan(c) else float(c) for c in blur_centroid(PLANES)]
    for z in (-9.5, -8.0, -6.25, 6.0, 7.75, 10.0):
        assert far_defocus_um(PLANES, curve, 20.0 / abs(z), side=np.sign(z)) == pytest.approx(z, abs=0.02)
    # beyond the last plane the fit's mean slope carries on; nearer than the first it stops at focus
    assert far_defocus_um(PLANES, curve, 1.9, side=1.0) > 10.0
    assert far_defocus_um(PLANES, curve, 100.0, side=-1.0) == pytest.approx(0.0)
    # a frame the reading places more than READING_MARGIN_UM nearer focus than the curve's planes is not
    assert far_defocus_um(PLANES, curve, 2.0, side=1.0, reading_defocus_um=5.0 - READING_MARGIN_UM - 0.1) is None
    assert far_defocus_um(PLANES, curve, 2.0, side=1.0, reading_defocus_um=5.0 - READING_MARGIN_UM + 0.1) == 10.0
    # a side with fewer than 3 far planes is not read
    one_sided = [c if z < 0 or z >= 9.5 else None for z, c in zip(PLANES, curve, strict=True)]
    assert far_defocus_um(PLANES, one_sided, 2.0, side=1.0) is None
    assert far_defocus_um(PLANES, one_sided, 2.0, side=-1.0) == pytest.approx(-10.0, abs=0.02)


def test_planes_the_centroid_cannot_tell_apart_map_to_the_middle_of_their_run() -> None:
    z = np.array([-1.0, 0.0, 1.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    curve = [None, None, None, 3.0, 2.5, 2.0, 2.0, 1.5]  # 8 and 9 um look alike
    assert far_defocus_um(z, curve, 2.0, side=1.0) == pytest.approx(8.5)
    curve[4] = 3.2  # a rise where the centroid should fall is pooled with its neighbour
    assert far_defocus_um(z, curve, 3.1, side=1.0) == pytest.approx(6.5)


def test_the_sweeps_curve_is_the_median_where_half_of_the_fields_were_far() -> None:
    table = np.array([[np.nan, 3.0, 2.0], [np.nan, np.nan, 2.2], [4.0, 3.4, 1.8], [np.nan, 3.2, np.nan]])
    assert centroid_curve(table) == [None, pytest.approx(3.2), pytest.approx(2.0)]


def far_sweep(fields: int, reading_bias_um: float, centroid_bias: float) -> tuple[np.ndarray, np.ndarray]:
    """Fields whose reading flattens beyond +-8 um (as the wide model's does), each reading biased by
    up to ``reading_bias_um`` and its centroid scaled by up to ``centroid_bias``; centroids where the
    reading is beyond +-6 um only, as the predictor gives them."""
    reading = np.clip(PLANES, -8.0, 8.0) + 0.02 * PLANES  # still increasing, but barely, out there
    spread = np.linspace(-1.0, 1.0, fields)
    table = np.vstack([reading + reading_bias_um * b for b in spread])
    centroids = np.vstack([blur_centroid(PLANES) * (1.0 + centroid_bias * b) for b in spread])
    centroids[np.abs(table) <= 6.0] = np.nan
    return table, centroids


def synthetic_calibration(far: bool) -> FocusCalibration:
    table, centroids = far_sweep(MIN_CENTROID_FIELDS, 0.2, 0.03)
    return calibration_from_table(PLANES, table, centroids=centroids if far else None)


def test_the_centroid_is_kept_only_on_the_outer_planes_where_it_reads_the_sweeps_own_fields_better() -> None:
    # cells-like: the reading is good to +-8 um and flat beyond, the centroid a few percent off everywhere
    table, centroids = far_sweep(9, reading_bias_um=0.2, centroid_bias=0.03)
    for side in (-1.0, 1.0):
        kept = np.abs(PLANES[centroid_planes(PLANES, table, centroids, side)])
        assert kept.size >= 3 and kept.max() == 10.0 and kept.min() > 7.0, kept
        assert np.all(np.diff(np.sort(kept)) == 0.5)  # one run, from the far end inwards
    # tissue-like: the centroid scatters, the reading does not
    table, centroids = far_sweep(9, reading_bias_um=0.01, centroid_bias=0.4)
    assert not centroid_planes(PLANES, table, centroids, 1.0).any()
    assert calibration_from_table(PLANES, table, centroids=centroids).centroid_percent is None
    table, centroids = far_sweep(MIN_CENTROID_FIELDS - 1, reading_bias_um=0.2, centroid_bias=0.03)
    assert not centroid_planes(PLANES, table, centroids, 1.0).any()  # too few fields to judge
    assert calibration_from_table(PLANES, table, centroids=centroids).centroid_percent is None


def test_a_calibration_reads_far_frames_from_the_centroid_and_the_rest_as_before() -> None:
    cal, plain = synthetic_calibration(far=True), synthetic_calibration(far=False)
    assert plain.centroid_percent is None and cal.summary()["far_distance_from_spectrum"]
    # a field at -9 um that reads 0.2 um high (-7.98): on the flat reading that bias is microns; its
    # centroid, 3 % off, is a few tenths; the reading still gives the side (the sweep's fields are
    # biased as much, so the calibration kept the centroid on both sides)
    reading, centroid = -8.0 - 0.18 + 0.2, 20.0 / 9.0 * 1.03
    assert abs(plain.defocus_um(reading) - -9.0) > 1.0
    assert cal.defocus_um(reading, centroid_percent=centroid) == pytest.approx(-9.0, abs=0.3)
    assert cal.defocus_um(-reading, centroid_percent=centroid) == pytest.approx(9.0, abs=0.3)
    # frames with no centroid (not far) are read through the reading curve, the same as without one
    assert cal.defocus_um(1.5) == plain.defocus_um(1.5)
    assert cal.defocus_um(reading) == plain.defocus_um(reading)


def test_the_centroid_curve_is_kept_in_the_file_and_checked(tmp_path: Path) -> None:
    cal = synthetic_calibration(far=True)
    data = cal.to_dict()
    assert data["format_version"] == 4 and len(data["centroid_percent"]) == len(data["z_um"])
    assert data["centroid_percent"][len(PLANES) // 2] is None  # no far frames at focus
    again = FocusCalibration.load(cal.save(tmp_path / "cal.json"))
    assert again == cal and again.defocus_um(-8.1, None, 2.5) == cal.defocus_um(-8.1, None, 2.5)
    # a version 3 file (before the centroid) still loads, without one
    old = {k: v for k, v in data.items() if k != "centroid_percent"} | {"format_version": 3}
    assert FocusCalibration.from_dict(old).centroid_percent is None
    for change, message in [
        ({"format_version": 3}, "centroid_percent needs format_version 4"),
        ({"centroid_percent": data["centroid_percent"][:-1]}, "one per plane"),
        ({"centroid_percent": [None] * (len(PLANES) - 1) + [-1.0]}, "positive numbers or null"),
        ({"centroid_percent": "blurry"}, "centroid_percent must be lists"),
    ]:
        with pytest.raises(ValueError, match=message):
            FocusCalibration.from_dict(data | change)


def test_the_predictor_measures_the_centroid_of_far_frames_only() -> None:
    predictor = Predictor.from_checkpoint(None, runtime="onnx", threads=1, near_model=None)
    scope = open_scope(seed=4, specimen="cells", frame_shape=(672, 896))
    centroids = {}
    for z in (-9.0, -1.0, 9.0):
        scope.focus_stage.move_to(-scope.focus_stage.direction * z)
        pred = predictor.predict(scope.camera.snap())
        assert (pred.spectral_centroid_percent is not None) == (abs(pred.wide_defocus_um or pred.defocus_um) > 6.0)
        centroids[z] = pred.spectral_centroid_percent
        assert pred.to_dict()["spectral_centroid_percent"] == pred.spectral_centroid_percent
    assert centroids[-1.0] is None
    assert centroids[-9.0] is not None and centroids[9.0] is not None
