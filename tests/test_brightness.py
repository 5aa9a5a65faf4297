"""Mean brightness (a property of the field, not of focus) and the per-plane fit of the reading against it."""

from __future__ import annotations

import numpy as np
import pytest
from sim_scope import open_scope

from autofocus.brightness import (
    MAX_CORRECTION_UM,
    MIN_BRIGHTNESS_FIELDS,
    correction_um,
    fit_brightness_slopes,
    mean_brightness,
)


def test_mean_brightness_is_a_fraction_of_full_scale_at_the_cameras_bit_depth() -> None:
    assert mean_brightness(np.full((300, 400), 255, dtype=np.uint8)) == pytest.approx(1.0)
    assert mean_brightness(np.full((300, 400, 3), 51, dtype=np.uint8)) == pytest.approx(0.2)
    half_12bit = np.full((1944, 2592), 2047, dtype=np.uint16)
    assert mean_brightness(half_12bit, bit_depth=12) == pytest.approx(2047 / 4095)
    assert mean_brightness(half_12bit) == pytest.approx(2047 / 65535)  # no bit depth: the dtype's range
    assert mean_brightness(np.full((224, 224), 0.25, dtype=np.float32)) == pytest.approx(0.25)
    # the subsample of a large frame gives the frame's mean
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, size=(1944, 2592), dtype=np.uint8)
    assert mean_brightness(noisy) == pytest.approx(noisy.mean() / 255, abs=0.002)


def test_on_the_simulator_brightness_is_a_property_of_the_field_not_of_focus() -> None:
    """Brightfield conserves the mean intensity through focus; fields of cells differ in how much light
    they take out."""
    scope = open_scope(seed=4, specimen="cells", frame_shape=(448, 448))
    scope.xy_stage.open()
    per_field = []
    for x in (-3000.0, 0.0, 2500.0, 4000.0):
        scope.xy_stage.move_to(x, 1000.0)
        through_focus = []
        for dz in (-3.0, 0.0, 3.0):
            scope.focus_stage.move_to(-scope.focus_stage.direction * dz)
            scope.camera.flush()
            through_focus.append(mean_brightness(scope.camera.snap()))
        per_field.append(through_focus)
    values = np.array(per_field)
    assert np.all((values > 0.5) & (values < 0.95))
    focus_change = float(np.max(np.ptp(values, axis=1)))
    field_change = float(np.ptp(values.mean(axis=1)))
    assert field_change > 5 * focus_change, (field_change, focus_change)


def synthetic_sweep(slopes: np.ndarray, noise_um: float, fields: int = 9, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Readings = a curve + slope(plane) * (brightness - mean) + noise, for random fields."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.80, 0.86, size=fields)
    planes = np.arange(slopes.size) * 0.5
    table = planes[None, :] + slopes[None, :] * (t[:, None] - t.mean()) + rng.normal(0, noise_um, (fields, slopes.size))
    return table, t


def test_the_fit_finds_the_slope_where_the_reading_follows_brightness_and_none_elsewhere() -> None:
    true = np.r_[np.zeros(6), np.full(8, 40.0), np.zeros(6)]  # 40 um per unit: 2.4 um across the fields
    table, t = synthetic_sweep(true, noise_um=0.05)
    fitted = fit_brightness_slopes(table, t)
    assert fitted is not None
    middle = slice(7, 13)  # the planes whose pooled neighbours all follow brightness
    assert fitted[middle] == pytest.approx(true[middle], rel=0.15)
    # where the reading does not follow brightness, the t-test keeps no slope, or a small one by chance
    assert np.all(np.abs(np.r_[fitted[:5], fitted[-5:]]) < 5.0)
    assert np.count_nonzero(np.r_[fitted[:5], fitted[-5:]]) <= 3


def test_no_slope_is_fitted_from_too_few_alike_or_unrelated_fields() -> None:
    table, t = synthetic_sweep(np.full(10, 40.0), noise_um=0.05, fields=MIN_BRIGHTNESS_FIELDS - 1)
    assert fit_brightness_slopes(table, t) is None  # too few fields
    table, t = synthetic_sweep(np.full(10, 40.0), noise_um=0.05)
    assert fit_brightness_slopes(table, np.full(t.size, 0.83)) is None  # all alike
    unrelated = [fit_brightness_slopes(*synthetic_sweep(np.zeros(10), 0.2, seed=s)) for s in range(20)]
    assert sum(u is not None for u in unrelated) <= 8  # at p < 0.05 per plane, most sweeps keep none
    with pytest.raises(ValueError, match="one value per field"):
        fit_brightness_slopes(table, t[:3])


def test_a_correction_is_held_to_half_a_micrometre() -> None:
    assert correction_um(10.0, 0.01) == pytest.approx(0.1)
    assert correction_um(-30.0, 0.1) == pytest.approx(-MAX_CORRECTION_UM)
    assert np.all(np.abs(correction_um(np.array([40.0, -40.0, 5.0]), 0.05)) <= MAX_CORRECTION_UM)
