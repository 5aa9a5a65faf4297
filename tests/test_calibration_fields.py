"""Merging a multi-field sweep: each field read against its own focus on a tilted slide."""

from __future__ import annotations

import numpy as np
import pytest

from autofocus.calibration import nearest_fields
from autofocus.calibration_fields import (
    MIN_TILT_FIELDS,
    MIN_TILT_PLANES,
    SHIFT_SEARCH_UM,
    TILT_P_VALUE,
    median_curve,
    merge_fields,
)
from drivers.errors import UnreliableEstimateError

PLANES = np.arange(-6.0, 6.0 + 1e-9, 0.5)


def curve(z: np.ndarray) -> np.ndarray:
    """A reading curve like the model's: steeper above focus, reads +0.3 um at focus."""
    return 0.3 + 1.2 * z + 0.25 * np.sin(z) + 0.03 * z**2


def sweep(offsets_um: np.ndarray, tilt_um_per_mm: tuple[float, float], bias_sd_um: float, seed: int = 0) -> np.ndarray:
    """Readings of fields at ``offsets_um`` from the focused start: each field's curve shifted by the tilt,
    plus a reading bias of its own."""
    rng = np.random.default_rng(seed)
    shifts = offsets_um @ np.asarray(tilt_um_per_mm) / 1000.0
    bias = rng.normal(0.0, bias_sd_um, size=len(offsets_um))
    return np.array([curve(PLANES + s) + b for s, b in zip(shifts, bias, strict=True)])


def grid(count: int, spacing_um: float = 500.0) -> np.ndarray:
    return np.array(nearest_fields((0.0, 0.0), count, spacing_um))


@pytest.mark.parametrize("tilt", [(2.0, -1.0), (-4.0, 3.0), (0.5, 0.0)])
def test_the_tilt_is_fitted_and_each_field_is_read_at_its_own_focus(tilt: tuple[float, float]) -> None:
    offsets = grid(9) + np.array([500.0, 0.0])  # the focused start is a field on the grid's left edge
    table = sweep(offsets, tilt, bias_sd_um=0.08)
    merged, fitted, unfit, p_value = merge_fields(PLANES, table, offsets)
    assert fitted is not None and unfit is None and p_value is not None and p_value < TILT_P_VALUE
    assert np.allclose(fitted, tilt, atol=0.25)
    inner = np.abs(PLANES) <= 4.0  # the corner fields' shifts push the ends out of range
    err_merged = np.abs(median_curve(merged)[inner] - curve(PLANES[inner]))
    assert np.nanmax(err_merged) <= 0.15  # the fields' biases average out
    err_raw = np.abs(median_curve(table)[inner] - curve(PLANES[inner]))  # read as measured, the tilt smears it
    assert np.nanmax(err_raw) > 2 * np.nanmax(err_merged)


@pytest.mark.parametrize("bias_sd_um", [0.08, 0.6])
def test_a_level_slide_is_read_as_measured_and_says_it_found_no_tilt(bias_sd_um: float) -> None:
    """Fields whose focus scatters (tissue) fit some plane on a level slide too; the F-test keeps it out."""
    offsets = grid(9)
    table = sweep(offsets, (0.0, 0.0), bias_sd_um=bias_sd_um, seed=3)
    merged, fitted, unfit, p_value = merge_fields(PLANES, table, offsets)
    assert fitted is None and merged is table and p_value is not None and p_value >= TILT_P_VALUE
    assert unfit is not None and unfit.startswith("no tilt beyond the fields' own scatter")
    assert f"p = {p_value:.2f}" in unfit
    assert not np.isnan(median_curve(merged)).any()  # every plane kept, the sweep's ends too


def test_a_tilt_is_told_from_the_fields_scatter_at_the_tests_rate() -> None:
    """On level slides the plane passes the test in about TILT_P_VALUE of sweeps (the test's false-alarm
    rate), while a 2 um/mm tilt under the same scatter passes in nearly all."""
    offsets = grid(9)
    level = [merge_fields(PLANES, sweep(offsets, (0.0, 0.0), 0.4, seed=s), offsets) for s in range(60)]
    tilted = [merge_fields(PLANES, sweep(offsets, (2.0, 1.0), 0.4, seed=s), offsets) for s in range(20)]
    false_alarms = sum(r.tilt_um_per_mm is not None for r in level)
    assert false_alarms <= 9  # binomial(60, 0.05): 9 or more has p < 0.01
    assert sum(r.tilt_um_per_mm is not None for r in tilted) >= 18


def test_a_field_with_no_reading_at_some_planes_still_merges_and_its_gap_stays_a_gap() -> None:
    offsets = grid(9)
    table = sweep(offsets, (2.0, 1.0), bias_sd_um=0.05)
    table[3, :6] = np.nan  # blank frames far below focus on one field
    table[:5, 11:14] = np.nan  # five fields of nine could not read -0.5..+0.5 um
    merged, fitted, *_ = merge_fields(PLANES, table, offsets)
    assert fitted is not None and np.allclose(fitted, (2.0, 1.0), atol=0.25)
    assert np.all(np.isnan(merged[3, :5]))
    # a plane most fields could not read is not filled in from the planes around it
    assert np.isnan(median_curve(merged)[12]) and not np.isnan(median_curve(merged)[[9, 15]]).any()


def test_a_tilt_beyond_what_a_sweep_can_follow_is_refused() -> None:
    offsets = grid(9, spacing_um=2000.0)  # fields 2 mm apart on a slide tilted 4 um/mm: 8 um off focus
    table = sweep(offsets, (4.0, 0.0), bias_sd_um=0.05)
    with pytest.raises(UnreliableEstimateError, match=f"{SHIFT_SEARCH_UM:g} um or more away.*space the fields closer"):
        merge_fields(PLANES, table, offsets)


@pytest.mark.parametrize(
    ("offsets", "why"),
    [
        (None, "a tilt needs at least 5"),  # one field
        (grid(MIN_TILT_FIELDS - 1), "a tilt needs at least 5"),  # too few to tell tilt from the fields' own bias
        (np.array([[x, 0.0] for x in (-1000.0, -500.0, 0.0, 500.0, 1000.0, 1500.0)]), "on one line"),
        (np.array([[x, x * 1e-5] for x in (-1000.0, -500.0, 0.0, 500.0, 1000.0, 1500.0)]), "on one line"),
    ],
)
def test_fields_that_cannot_pin_a_plane_are_read_as_measured_and_say_why(offsets: np.ndarray | None, why: str) -> None:
    n = 1 if offsets is None else len(offsets)
    table = sweep(np.zeros((n, 2)) if offsets is None else offsets, (2.0, -1.0), bias_sd_um=0.05)
    merged, fitted, unfit, p_value = merge_fields(PLANES, table, offsets)
    assert fitted is None and merged is table and unfit is not None and why in unfit and p_value is None


def test_a_sweep_too_short_to_compare_shifts_is_read_as_measured() -> None:
    offsets = grid(9)
    table = sweep(offsets, (2.0, -1.0), bias_sd_um=0.05)[:, : MIN_TILT_PLANES - 1]
    merged, fitted, unfit, _ = merge_fields(PLANES[: MIN_TILT_PLANES - 1], table, offsets)
    assert fitted is None and merged is table and unfit == f"{MIN_TILT_PLANES - 1} planes; a tilt needs at least 11"


def test_median_curve_leaves_out_planes_most_fields_could_not_read() -> None:
    table = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, np.nan], [5.0, 4.0, 7.0]])
    out = median_curve(table)
    assert out[0] == 3.0 and out[1] == 3.0 and np.isnan(out[2])
