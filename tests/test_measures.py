"""Classical focus measures: independent reference values, sharp > blurred, ROI, dtypes, errors."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from scipy import ndimage

from autofocus.measures import (
    MEASURES,
    brenner,
    fft_bandpass,
    measure_by_name,
    normalized_variance,
    spectral_centroid,
    tenengrad,
    to_gray,
    variance_of_laplacian,
)


def textured(height: int = 160, width: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 1.5)
    base = (base - base.min()) / (base.max() - base.min())
    rgb = np.stack([base, 0.8 * base + 0.1, 0.6 * base + 0.2], axis=2)
    return np.clip(rgb * 255, 0, 255).astype(np.uint8)


def test_gray_conversion_scales_by_dtype() -> None:
    img = textured()
    g8 = to_gray(img)
    g16 = to_gray(img.astype(np.uint16) * 257)
    np.testing.assert_allclose(g8, g16, atol=1e-6)
    np.testing.assert_allclose(g8, img.astype(np.float64).mean(axis=2) / 255.0, atol=1e-6)


def test_reference_values() -> None:
    img = textured(seed=1)
    g = img.astype(np.float64).mean(axis=2) / 255.0
    assert variance_of_laplacian(img) == pytest.approx(ndimage.laplace(g, mode="reflect").var(), rel=1e-4)
    gx, gy = ndimage.sobel(g, axis=1, mode="reflect"), ndimage.sobel(g, axis=0, mode="reflect")
    assert tenengrad(img) == pytest.approx(np.mean(gx**2 + gy**2), rel=1e-4)
    ref_brenner = np.mean((g[:, 2:] - g[:, :-2]) ** 2) + np.mean((g[2:, :] - g[:-2, :]) ** 2)
    assert brenner(img) == pytest.approx(ref_brenner, rel=1e-5)
    assert normalized_variance(img) == pytest.approx(g.var() / g.mean(), rel=1e-5)


def test_fft_bandpass_selects_its_band() -> None:
    y, x = np.mgrid[0:128, 0:128]
    in_band = 0.5 + 0.4 * np.sin(2 * np.pi * 0.08 * x)  # 8 % of the sampling frequency
    above = 0.5 + 0.4 * np.sin(2 * np.pi * 0.30 * y)  # 30 %: above the 14 % cut-off
    # a windowed sinusoid of amplitude 0.4 around 0.5 has variance ~0.4^2 / 2: score ~0.32
    assert fft_bandpass(in_band) == pytest.approx(0.4**2 / 2 / 0.5**2, rel=0.1)
    assert fft_bandpass(above) < 0.01 * fft_bandpass(in_band)
    assert fft_bandpass(textured()) > 0.0
    with pytest.raises(ValueError, match="cutoff"):
        fft_bandpass(in_band, low_cutoff_percent=20, high_cutoff_percent=10)


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_sharp_scores_higher_than_blurred(name: str) -> None:
    sharp = textured(seed=2)
    scores = [measure_by_name(name)(cv2.GaussianBlur(sharp, (0, 0), s) if s else sharp) for s in (0, 1.5, 3.0, 6.0)]
    assert all(a > b for a, b in itertools.pairwise(scores)), scores


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_roi_equals_crop_and_bad_roi_refused(name: str) -> None:
    img = textured(seed=3)
    fn = MEASURES[name]
    assert fn(img, roi=(20, 30, 100, 80)) == pytest.approx(fn(img[30:110, 20:120]), rel=1e-6)
    for bad in ((-1, 0, 10, 10), (150, 0, 100, 10), (0, 0, 2, 2)):
        with pytest.raises(ValueError, match="roi"):
            fn(img, roi=bad)


def test_blank_and_bad_inputs() -> None:
    flat = np.full((64, 64, 3), 128, np.uint8)
    for fn in MEASURES.values():
        assert fn(flat) == pytest.approx(0.0, abs=1e-9)
    assert normalized_variance(np.zeros((16, 16), np.uint8)) == 0.0
    with pytest.raises(ValueError, match="dtype"):
        brenner(np.zeros((16, 16), np.int64))
    with pytest.raises(ValueError, match="shape"):
        tenengrad(np.zeros((4, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown focus measure"):
        measure_by_name("vollath")


def test_spectral_centroid_finds_a_sinusoids_frequency() -> None:
    y, x = np.mgrid[0:256, 0:320]
    for percent in (1.0, 3.0, 4.5):
        stripes = 0.5 + 0.4 * np.sin(2 * np.pi * percent / 100 * x)
        assert spectral_centroid(stripes) == pytest.approx(percent, abs=0.3)
    # two lines of equal power at 1 % and 4 %: each ring's power is averaged over the ring, whose
    # length grows with its radius, so the centroid is their harmonic mean, 1.6 %; a third line far
    # above the band (20 %) does not count
    pair = 0.5 + 0.2 * np.sin(2 * np.pi * 0.01 * x) + 0.2 * np.sin(2 * np.pi * 0.04 * y)
    assert spectral_centroid(pair) == pytest.approx(1.6, abs=0.3)
    assert spectral_centroid(pair + 0.2 * np.sin(2 * np.pi * 0.2 * x)) == pytest.approx(spectral_centroid(pair))


def test_spectral_centroid_falls_with_blur_and_ignores_brightness() -> None:
    rng = np.random.default_rng(4)
    scene = cv2.GaussianBlur(rng.random((384, 512)).astype(np.float32), (0, 0), 2.0)
    scores = [spectral_centroid(cv2.GaussianBlur(scene, (0, 0), s)) for s in (2.0, 4.0, 8.0, 16.0)]
    assert all(a > b for a, b in itertools.pairwise(scores)), scores
    frame = np.clip(0.3 + scene, 0, 1)
    assert spectral_centroid(0.5 * frame) == pytest.approx(spectral_centroid(frame), rel=1e-6)
    assert spectral_centroid(frame + 0.2) == pytest.approx(spectral_centroid(frame), rel=1e-6)


def test_spectral_centroid_roi_flat_and_bad_band() -> None:
    img = textured(seed=5)
    assert spectral_centroid(img, roi=(20, 30, 100, 80)) == pytest.approx(spectral_centroid(img[30:110, 20:120]))
    assert spectral_centroid(np.full((64, 64, 3), 90, np.uint8)) == 0.0
    with pytest.raises(ValueError, match="cutoff"):
        spectral_centroid(img, low_cutoff_percent=5, high_cutoff_percent=1)
