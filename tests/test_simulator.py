"""Physics and behaviour of the simulated microscope (``docs/simulator.md``).

Small frames and noiseless renders keep this file fast; no figure here is hard-coded from a
previous run: every expectation comes from the optics (depth of field, tilt geometry, drift).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from autofocus.cli import main as cli_main
from drivers.simulated import OBJECTIVES, SPECIMEN_KINDS, DriftModel, SimulatedMicroscope
from drivers.simulated.microscope import MAX_RENDER_DEFOCUS_UM
from drivers.simulated.specimen import lattice_coords, render_specimen


def variance_of_laplacian(image: np.ndarray) -> float:
    """A classical sharpness measure on the grey image (kept local: no autofocus.measures)."""
    grey = image.astype(np.float64).mean(axis=2)
    return float(ndimage.laplace(grey).var())


def _peak_z(scope: SimulatedMicroscope, x_um: float, y_um: float, zs: np.ndarray, size: int = 192) -> float:
    scores = [variance_of_laplacian(scope.render_patch(x_um, y_um, float(z), size=size, bit_depth=16)) for z in zs]
    return float(zs[int(np.argmax(scores))])


# -- sharpness peaks at the true focal plane --------------------------------------------------
@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("kind", SPECIMEN_KINDS)
def test_sharpness_peaks_within_depth_of_field(kind: str, objective: str) -> None:
    scope = SimulatedMicroscope(seed=11, objective=objective, specimen=kind, noise=False)
    x, y = scope.find_content(0.25, 160, step_um=25.0)
    dof = scope.objective.depth_of_field_um()
    zs = np.linspace(-3 * dof, 3 * dof, 13)
    peak = _peak_z(scope, x, y, zs, size=160)
    assert abs(peak) <= dof, f"{kind} {objective}: sharpness peaks at {peak:+.2f} um, DOF {dof:.2f} um"
    # and the peak stands out: far from focus the image is much less sharp
    far = variance_of_laplacian(scope.render_patch(x, y, 4 * dof, size=160, bit_depth=16))
    best = variance_of_laplacian(scope.render_patch(x, y, peak, size=160, bit_depth=16))
    assert best > 2.0 * far


def _stage_scan_peaks(scope: SimulatedMicroscope, zs: np.ndarray, columns: list[slice]) -> list[float]:
    """Scan the focus stage through ``zs``; the stage z of the sharpest frame, per column band."""
    scores = []
    for z in zs:
        scope.focus_stage.move_to(float(z))
        frame = scope.camera.snap()
        scores.append([variance_of_laplacian(frame[:, band]) for band in columns])
    return [float(zs[int(i)]) for i in np.argmax(np.array(scores), axis=0)]


def _stage_scan_peak(scope: SimulatedMicroscope, zs: np.ndarray) -> float:
    return _stage_scan_peaks(scope, zs, [slice(None)])[0]


def _opened(scope: SimulatedMicroscope) -> SimulatedMicroscope:
    scope.camera.open()
    scope.focus_stage.open()
    scope.xy_stage.open()
    return scope


@pytest.mark.parametrize("direction", [1, -1])
def test_stage_scan_peak_follows_focus_offset(direction: int) -> None:
    offset = 7.0
    scope = _opened(
        SimulatedMicroscope(
            seed=5,
            specimen="tissue",
            frame_shape=(160, 160),
            noise=False,
            bit_depth=16,
            focus_offset_um=offset,
            z_direction=direction,
        )
    )
    scope.xy_stage.move_to(*scope.find_content(0.4, 160))
    dof = scope.objective.depth_of_field_um()
    zs = np.arange(offset - 4.0, offset + 4.01, 0.5)
    peak = _stage_scan_peak(scope, zs)
    assert abs(peak - offset) <= dof
    # the stage reports the truth: at the peak the ground truth is within the DOF of zero
    scope.focus_stage.move_to(peak)
    assert abs(scope.true_defocus_um()) <= dof


def test_tilt_moves_the_focal_plane_across_the_frame() -> None:
    tilt = 40.0  # um per mm along x
    scope = _opened(
        SimulatedMicroscope(
            seed=6, specimen="tissue", frame_shape=(96, 384), noise=False, bit_depth=16, tilt_um_per_mm=(tilt, 0.0)
        )
    )
    scope.xy_stage.move_to(*scope.find_content(0.4, 384))
    h, w = scope.frame_shape
    left, right = slice(0, w // 3), slice(2 * w // 3, w)
    # the truth differs between the thirds as the tilt says
    d_left = scope.true_defocus_um(w / 6, h / 2)
    d_right = scope.true_defocus_um(5 * w / 6, h / 2)
    span_um = (5 * w / 6 - w / 6) * scope.objective.pixel_um
    assert d_right - d_left == pytest.approx(tilt * span_um / 1000.0)
    zs = np.arange(-2.5, 2.51, 0.25)
    peak_left, peak_right = _stage_scan_peaks(scope, zs, [left, right])
    expected = tilt * span_um / 1000.0  # the right side's focal plane sits higher by this much
    assert peak_right - peak_left == pytest.approx(expected, abs=0.6)


def test_drift_moves_the_focal_plane_over_time() -> None:
    rate = 3.0  # um per minute
    scope = _opened(
        SimulatedMicroscope(
            seed=7,
            specimen="tissue",
            frame_shape=(160, 160),
            noise=False,
            bit_depth=16,
            drift=DriftModel(rate_um_per_min=rate),
        )
    )
    scope.xy_stage.move_to(*scope.find_content(0.4, 160))
    zs = np.arange(-3.0, 6.01, 0.5)
    before = _stage_scan_peak(scope, zs)
    t0 = scope.time_s
    scope.advance(60.0)
    after = _stage_scan_peak(scope, zs)
    moved = rate * (scope.time_s - t0) / 60.0
    assert after - before == pytest.approx(moved, abs=0.6)


def test_drift_model_shapes() -> None:
    assert DriftModel().drift_um(1000.0) == 0.0
    thermal = DriftModel(thermal_um=4.0, thermal_tau_s=100.0)
    assert thermal.drift_um(0.0) == 0.0
    assert thermal.drift_um(1e6) == pytest.approx(4.0)
    osc = DriftModel(oscillation_um=0.5, oscillation_period_s=40.0)
    assert osc.drift_um(10.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        DriftModel(thermal_tau_s=0.0)


# -- the sign of defocus ------------------------------------------------------------------------
def _nucleus_contrast(kind: str, phase_scale: float, sa_waves: float, z: float, fields: int = 3) -> list[float]:
    """Mean intensity over the optically densest pixels at +z minus at -z, per field."""
    scope = SimulatedMicroscope(seed=4, specimen=kind, phase_scale=phase_scale, spherical_aberration_waves=sa_waves)
    p = scope.objective.pixel_um
    out = []
    x = 0.0
    for _ in range(fields):
        x, y = scope.find_content(0.3, 160, start_um=(x + 300.0, 0.0))
        maps = render_specimen(kind, scope.seed, lattice_coords(x, 160, p), lattice_coords(y, 160, p))
        dense = maps.opd_um > np.quantile(maps.opd_um, 0.9)
        plus = scope.render_intensity(x, y, z, (160, 160)).mean(axis=0)
        minus = scope.render_intensity(x, y, -z, (160, 160)).mean(axis=0)
        out.append(float(plus[dense].mean() - minus[dense].mean()))
    return out


@pytest.mark.parametrize("z", [1.0, 2.0, 5.0])
def test_phase_objects_are_brighter_beyond_focus(z: float) -> None:
    """Cells (phase objects) reverse contrast across focus: nuclei are brighter at +z than at -z."""
    diffs = _nucleus_contrast("cells", 1.0, 0.0, z)
    assert all(d > 0.01 for d in diffs), diffs


def test_amplitude_specimen_without_aberration_is_symmetric() -> None:
    """The physics control: a pure amplitude object gives the same image at +z and -z."""
    diffs = _nucleus_contrast("tissue", 0.0, 0.0, 2.0, fields=2)
    assert all(abs(d) < 1e-4 for d in diffs), diffs
    scope = SimulatedMicroscope(seed=4, specimen="tissue", phase_scale=0.0, spherical_aberration_waves=0.0)
    x, y = scope.find_content(0.3, 128)
    plus = scope.render_intensity(x, y, 3.0, (128, 128))
    minus = scope.render_intensity(x, y, -3.0, (128, 128))
    assert float(np.abs(plus - minus).max()) < 1e-3


def test_spherical_aberration_and_phase_break_the_symmetry_of_tissue() -> None:
    """Measured against the image's own change with defocus: |I(+z) - I(-z)| / |I(+z) - I(0)|
    is essentially zero for the control and a sizeable fraction with aberration or phase."""

    def asymmetry(**options: float) -> float:
        scope = SimulatedMicroscope(seed=4, specimen="tissue", **options)  # type: ignore[arg-type]
        x, y = scope.find_content(0.3, 128)
        plus = scope.render_intensity(x, y, 2.0, (128, 128))
        minus = scope.render_intensity(x, y, -2.0, (128, 128))
        focus = scope.render_intensity(x, y, 0.0, (128, 128))
        return float(np.abs(plus - minus).mean() / np.abs(plus - focus).mean())

    control = asymmetry(phase_scale=0.0, spherical_aberration_waves=0.0)
    assert control < 1e-3
    assert asymmetry(phase_scale=0.0, spherical_aberration_waves=0.1) > 0.1
    assert asymmetry(phase_scale=1.0, spherical_aberration_waves=0.0) > 0.1


# -- ground truth, sign convention, backlash -----------------------------------------------------
@pytest.mark.parametrize("direction", [1, -1])
def test_correcting_move_zeroes_the_truth(direction: int) -> None:
    scope = _opened(SimulatedMicroscope(seed=1, frame_shape=(64, 64), z_direction=direction, focus_offset_um=2.0))
    stage = scope.focus_stage
    stage.move_to(-3.5)
    truth = scope.true_defocus_um()
    assert truth == pytest.approx(direction * (2.0 - -3.5))
    stage.move_by(stage.direction * truth)
    assert scope.true_defocus_um() == pytest.approx(0.0, abs=1e-9)


def test_positive_defocus_means_specimen_beyond_focus() -> None:
    """With direction +1 a positive move brings the objective closer: the specimen, beyond the
    focal plane before, is reached, so the defocus before that move was positive."""
    scope = _opened(SimulatedMicroscope(seed=1, frame_shape=(64, 64), z_direction=1))
    scope.focus_stage.move_by(-2.0)  # objective backs away: focal plane now short of the specimen
    assert scope.true_defocus_um() == pytest.approx(2.0)


def test_backlash_truth_is_physical_position() -> None:
    backlash = 1.0
    scope = _opened(SimulatedMicroscope(seed=1, frame_shape=(64, 64), backlash_um=backlash))
    stage = scope.focus_stage
    stage.move_to(5.0)  # approached from below: the objective lags half the play
    assert stage.z_um == pytest.approx(5.0)
    assert scope.true_defocus_um() == pytest.approx(-(5.0 - backlash / 2))
    stage.move_to(4.0)  # reversal: the first half-play... then the objective follows from above
    assert scope.true_defocus_um() == pytest.approx(-(4.0 + backlash / 2))
    stage.move_to(4.3)  # a reversal smaller than the play: the objective does not move
    assert scope.true_defocus_um() == pytest.approx(-(4.0 + backlash / 2))


def test_truth_at_frame_pixels_follows_tilt() -> None:
    scope = _opened(SimulatedMicroscope(seed=1, frame_shape=(100, 200), tilt_um_per_mm=(10.0, -20.0)))
    p = scope.objective.pixel_um
    centre = scope.true_defocus_um()
    assert scope.true_defocus_um(99.5 + 100, 49.5) - centre == pytest.approx(10.0 * 100 * p / 1000)
    assert scope.true_defocus_um(99.5, 49.5 + 40) - centre == pytest.approx(-20.0 * 40 * p / 1000)


# -- determinism and the unbounded slide ------------------------------------------------------------
def test_same_seed_same_images() -> None:
    a = SimulatedMicroscope(seed=21, specimen="tissue")
    b = SimulatedMicroscope(seed=21, specimen="tissue")
    pa = a.render_patch(1234.5, -987.0, 1.5, size=96, rng=7)
    pb = b.render_patch(1234.5, -987.0, 1.5, size=96, rng=7)
    assert np.array_equal(pa, pb)
    c = SimulatedMicroscope(seed=22, specimen="tissue")
    assert not np.array_equal(pa, c.render_patch(1234.5, -987.0, 1.5, size=96, rng=7))
    # the camera's own noise stream is seeded by the slide seed too
    fa = _opened(SimulatedMicroscope(seed=21, frame_shape=(64, 80))).camera.snap()
    fb = _opened(SimulatedMicroscope(seed=21, frame_shape=(64, 80))).camera.snap()
    assert np.array_equal(fa, fb)


@pytest.mark.parametrize("kind", SPECIMEN_KINDS)
def test_same_xy_same_field_whatever_the_window(kind: str) -> None:
    p = 0.1725
    scope = SimulatedMicroscope(seed=3, specimen=kind)
    rng = np.random.default_rng(5)
    starts = [(0.0, 0.0), *(tuple(rng.uniform(-30_000, 30_000, 2)) for _ in range(3))]
    for start in starts:
        x, y = scope.find_content(0.05, 128, start_um=start, step_um=30.0)
        xb, yb = lattice_coords(x, 200, p), lattice_coords(y, 160, p)
        big = render_specimen(kind, 3, xb, yb)
        # a window shifted by (37, -23) pixels: its overlap with the first shows the same specimen
        xs, ys = lattice_coords(x + 37 * p, 120, p), lattice_coords(y - 23 * p, 100, p)
        small = render_specimen(kind, 3, xs, ys)
        j0 = int(np.argmin(np.abs(xb - xs[0])))
        i0 = int(np.argmin(np.abs(yb - ys[0])))
        np.testing.assert_allclose(small.opd_um, big.opd_um[i0 : i0 + 100, j0 : j0 + 120], atol=1e-5)
        np.testing.assert_allclose(small.od, big.od[:, i0 : i0 + 100, j0 : j0 + 120], atol=1e-5)


def test_xy_moves_show_other_fields() -> None:
    scope = _opened(SimulatedMicroscope(seed=8, specimen="tissue", frame_shape=(96, 96), noise=False))
    first = scope.camera.snap()
    scope.xy_stage.move_by(500.0, 0.0)
    other = scope.camera.snap()
    scope.xy_stage.move_by(-500.0, 0.0)
    again = scope.camera.snap()
    assert not np.array_equal(first, other)
    assert np.array_equal(first, again)


def test_sparse_fields_are_mostly_blank_and_cells_are_not() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(-20_000, 20_000, size=(30, 2))
    blank = {}
    for kind in ("sparse", "cells", "tissue"):
        scope = SimulatedMicroscope(seed=9, specimen=kind)
        blank[kind] = float(np.mean([scope.content_fraction(x, y, 224) < 0.01 for x, y in points]))
    assert blank["sparse"] >= 0.5
    assert blank["cells"] < blank["sparse"]
    assert blank["tissue"] <= 0.25


# -- render options -------------------------------------------------------------------------------
def test_render_patch_options() -> None:
    scope = SimulatedMicroscope(seed=2, specimen="cells")
    x, y = scope.find_content(0.3, 128)
    p8 = scope.render_patch(x, y, 2.0, size=128, rng=1)
    assert p8.shape == (128, 128, 3) and p8.dtype == np.uint8
    p12 = scope.render_patch(x, y, 2.0, size=128, bit_depth=12, rng=1)
    assert p12.dtype == np.uint16 and int(p12.max()) < 4096
    clean = scope.render_patch(x, y, 2.0, size=128, noise=False)
    jpeg = scope.render_patch(x, y, 2.0, size=128, noise=False, jpeg_quality=30)
    assert not np.array_equal(clean, jpeg)
    dim = scope.render_patch(x, y, 2.0, size=128, noise=False, exposure_ms=10.0)
    assert dim.mean() == pytest.approx(clean.mean() / 2, rel=0.02)
    wide = scope.render_patch(x, y, 2.0, size=128, noise=False, condenser_na=0.7, source_points=19)
    narrow = scope.render_patch(x, y, 2.0, size=128, noise=False, condenser_na=0.1)
    # a wider condenser washes out phase contrast
    assert wide.astype(float).std() < narrow.astype(float).std()
    mosaic = scope.render_patch(x, y, 2.0, size=128, noise=False, bayer=True)
    assert mosaic.shape == clean.shape and mosaic.dtype == clean.dtype
    assert not np.array_equal(mosaic, clean)
    # demosaicing keeps the colours (a swapped pattern would turn pink tissue green)
    tissue = SimulatedMicroscope(seed=2, specimen="tissue")
    tx, ty = tissue.find_content(0.8, 128)
    rgb = tissue.render_patch(tx, ty, 0.0, size=128, noise=False).astype(float).mean(axis=(0, 1))
    rgb_bayer = tissue.render_patch(tx, ty, 0.0, size=128, noise=False, bayer=True).astype(float).mean(axis=(0, 1))
    assert np.abs(rgb_bayer - rgb).max() < 3.0
    assert rgb_bayer[0] > rgb_bayer[1] + 20  # eosin: red passes, green is absorbed
    with pytest.raises(ValueError, match="source_points"):
        scope.render_patch(x, y, 0.0, source_points=5)
    with pytest.raises(ValueError, match="jpeg_quality"):
        scope.render_patch(x, y, 0.0, bit_depth=12, jpeg_quality=80)
    with pytest.raises(ValueError, match="defocus_um"):
        scope.render_patch(x, y, float("nan"))


def test_noise_level_follows_exposure() -> None:
    scope = SimulatedMicroscope(seed=2, specimen="sparse")
    x, y = 5.0, 5.0
    while scope.content_fraction(x, y, 64) > 0:
        x += 200.0
    dim = scope.render_patch(x, y, 0.0, size=64, exposure_ms=2.0, bit_depth=16, rng=3).astype(float)
    bright = scope.render_patch(x, y, 0.0, size=64, exposure_ms=20.0, bit_depth=16, rng=3).astype(float)
    # shot noise: relative noise falls like 1 / sqrt(signal)
    assert dim.std() / dim.mean() > 2.0 * bright.std() / bright.mean()


def test_tilted_frame_blends_regions_at_their_own_defocus() -> None:
    scope = SimulatedMicroscope(seed=6, specimen="tissue", noise=False)
    x, y = scope.find_content(0.4, 256)
    grad = 4.0 / 256  # 4 um across the frame
    tilted = scope.render_intensity(x, y, 0.0, (128, 256), defocus_gradient_um_per_px=(grad, 0.0))
    p = scope.objective.pixel_um
    # the left edge region looks like a flat render at the left edge's defocus
    d_left = grad * (16 - 128)
    flat_left = scope.render_intensity(x + (16 - 128) * p, y, d_left, (128, 32))
    flat_right = scope.render_intensity(x + (16 - 128) * p, y, -d_left, (128, 32))
    region = tilted[:, :, 0:32]
    err_same = float(np.abs(region - flat_left).mean())
    err_other = float(np.abs(region - flat_right).mean())
    assert err_same < 0.5 * err_other


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="specimen"):
        SimulatedMicroscope(specimen="bacteria")
    with pytest.raises(ValueError, match="objective"):
        SimulatedMicroscope(objective="100x/1.4")
    with pytest.raises(ValueError, match="bit_depth"):
        SimulatedMicroscope(bit_depth=9)
    with pytest.raises(ValueError, match="drift"):
        SimulatedMicroscope(drift=2.0)  # type: ignore[arg-type]


def test_cli_simulate_writes_a_montage(tmp_path: object) -> None:
    import cv2

    out = tmp_path / "stack.png"  # type: ignore[operator]
    code = cli_main(
        [
            "simulate",
            "--objective",
            "20x/0.40",
            "--z",
            "-2,0,2",
            "--size",
            "64",
            "--specimen",
            "tissue",
            "--seed",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] == 3 * 64 + 2 * 4


def test_region_blending_is_seamless() -> None:
    """Regions of a tilted frame line up on the slide lattice: with a negligible tilt the blended
    frame equals the flat one (a misaligned region would show as a shifted copy)."""
    scope = SimulatedMicroscope(seed=6, specimen="tissue", noise=False, max_tilt_step_um=0.001)
    x, y = scope.find_content(0.4, 160)
    flat = scope.render_intensity(x, y, 1.0, (97, 161))
    blended = scope.render_intensity(x, y, 1.0, (97, 161), defocus_gradient_um_per_px=(1e-5, 1e-5))
    # (what remains is the FFT wrap-around of far PSF tails at the regions' own edges: < 1 %)
    assert float(np.abs(blended - flat).max()) < 0.02
    shifted = scope.render_intensity(x + scope.objective.pixel_um, y, 1.0, (97, 161))
    assert float(np.abs(shifted - flat).max()) > 0.05  # what a one-pixel misalignment would look like


def test_find_content_reports_failure() -> None:
    scope = SimulatedMicroscope(seed=1, specimen="sparse")
    with pytest.raises(ValueError, match="no patch"):
        scope.find_content(1.0, 64, max_tries=3)
    with pytest.raises(ValueError, match="min_fraction"):
        scope.find_content(1.5)
    x, y = scope.find_content(0.2, 64, step_um=20.0)
    assert scope.content_fraction(x, y, 64) >= 0.2


def test_describe_is_json_and_complete() -> None:
    import json

    scope = SimulatedMicroscope(
        seed=4,
        objective="40x/0.65",
        specimen="sparse",
        drift=DriftModel.typical(),
        bayer=True,
        spherical_aberration_waves=0.02,
    )
    info = json.loads(json.dumps(scope.describe()))
    assert info["objective"] == "40x/0.65" and info["specimen"] == "sparse" and info["bayer"] is True
    assert info["spherical_aberration_waves"] == 0.02
    assert info["drift"]["thermal_um"] == DriftModel.typical().thermal_um


def test_far_out_of_focus_frames_are_rendered_at_the_cap_and_the_truth_is_not_capped() -> None:
    """The soft limits allow 1000 um of defocus; rendering that far would need a padding the size
    of the blur disc (out of memory). Beyond MAX_RENDER_DEFOCUS_UM a frame is that far out's."""
    scope = _opened(SimulatedMicroscope(seed=1, frame_shape=(96, 128), noise=False))
    stage = scope.focus_stage

    def go(z: float) -> None:
        while abs(stage.z_um - z) > 1e-9:
            stage.move_to(stage.z_um + max(-stage.max_step_um, min(stage.max_step_um, z - stage.z_um)))

    frames = []
    for z in (-MAX_RENDER_DEFOCUS_UM, -2 * MAX_RENDER_DEFOCUS_UM, -1000.0 + MAX_RENDER_DEFOCUS_UM / 2):
        go(z)
        assert scope.true_defocus_um() == pytest.approx(-stage.direction * z)
        frames.append(scope.camera.snap())
    for other in frames[1:]:
        np.testing.assert_array_equal(other, frames[0])
    go(-MAX_RENDER_DEFOCUS_UM / 2)  # closer in, the frame still changes with defocus
    assert not np.array_equal(scope.camera.snap(), frames[0])
