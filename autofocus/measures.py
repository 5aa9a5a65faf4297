"""Classical image-sharpness ("focus") measures, as used by z-scan autofocus.

Every measure takes a frame (``H x W`` or ``H x W x 3``; ``uint8``, ``uint16`` or float) and an
optional ``roi=(x, y, width, height)`` in pixels, and returns one float that is larger when the
image is sharper. Colour frames are reduced to the mean of their channels; integer frames are
scaled to [0, 1] by their dtype's range so that scores of ``uint8`` and ``uint16`` frames are
comparable. All measures return a mean per pixel (not a sum), so a score does not grow with the
size of the region.

The set mirrors Micro-Manager's OughtaFocus scores: ``variance_of_laplacian`` (its "Edges" score
is a gradient/edge energy of the same family), ``tenengrad``, ``brenner``,
``normalized_variance`` and ``fft_bandpass``.

``spectral_centroid`` is not a z-scan score (it is not in ``MEASURES``): it says *how far* out of
focus a frame is on a scale that the frame's brightness and its amount of specimen hardly move,
where the models' readings flatten (``docs/autofocus.md``, "The far ends").
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

__all__ = [
    "MEASURES",
    "brenner",
    "fft_bandpass",
    "measure_by_name",
    "normalized_variance",
    "spectral_centroid",
    "tenengrad",
    "to_gray",
    "variance_of_laplacian",
]

Roi = tuple[int, int, int, int]


def to_gray(frame: np.ndarray, roi: Roi | None = None) -> np.ndarray:
    """The (cropped) frame as a ``float32`` grey image in [0, 1] for integer input.

    ``roi`` is ``(x, y, width, height)``; it must lie inside the frame and be at least 3x3.
    """
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.ndim == 3 and frame.shape[2] in (1, 3, 4):
        pass
    elif frame.ndim != 2:
        raise ValueError(f"frame must be HxW or HxWx3, got shape {frame.shape}")
    if roi is not None:
        x, y, w, h = (int(v) for v in roi)
        height, width = frame.shape[:2]
        if w < 3 or h < 3 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise ValueError(
                f"roi=(x, y, width, height)={tuple(roi)} must lie inside the {width}x{height} frame "
                "and be at least 3x3 pixels"
            )
        frame = frame[y : y + h, x : x + w]
    if frame.dtype == np.uint8:
        scale = 1.0 / 255.0
    elif frame.dtype == np.uint16:
        scale = 1.0 / 65535.0
    elif frame.dtype in (np.float32, np.float64):
        scale = 1.0
    else:
        raise ValueError(f"frame dtype must be uint8, uint16, float32 or float64, got {frame.dtype}")
    if frame.ndim == 3:
        channels = frame.shape[2] if frame.shape[2] != 4 else 3  # ignore alpha
        gray = frame[:, :, :channels].astype(np.float32).mean(axis=2)
    else:
        gray = frame.astype(np.float32)
    if scale != 1.0:
        gray *= np.float32(scale)
    return gray


def variance_of_laplacian(frame: np.ndarray, roi: Roi | None = None) -> float:
    """Variance of the 4-neighbour Laplacian (Pech-Pacheco et al. 2000): edge energy."""
    gray = to_gray(frame, roi)
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)
    return float(lap.astype(np.float64).var())


def tenengrad(frame: np.ndarray, roi: Roi | None = None) -> float:
    """Mean squared Sobel gradient magnitude (Tenenbaum 1970), no threshold."""
    gray = to_gray(frame, roi)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    return float(np.mean(gx.astype(np.float64) ** 2 + gy.astype(np.float64) ** 2))


def brenner(frame: np.ndarray, roi: Roi | None = None) -> float:
    """Brenner gradient (1971): mean squared difference of pixels two apart, both axes."""
    gray = to_gray(frame, roi).astype(np.float64)
    dx = gray[:, 2:] - gray[:, :-2]
    dy = gray[2:, :] - gray[:-2, :]
    return float(np.mean(dx * dx) + np.mean(dy * dy))


def normalized_variance(frame: np.ndarray, roi: Roi | None = None) -> float:
    """Grey-level variance divided by the mean intensity (Groen et al. 1985).

    Dividing by the mean makes it insensitive to illumination changes. A black region
    (mean 0) scores 0.
    """
    gray = to_gray(frame, roi).astype(np.float64)
    mean = float(gray.mean())
    if mean <= 0.0:
        return 0.0
    return float(gray.var() / mean)


def _check_band(name: str, low_cutoff_percent: float, high_cutoff_percent: float) -> None:
    """A radial band in percent of the sampling frequency: 0 <= low < high <= 70.7 (the corner)."""
    if not 0.0 <= low_cutoff_percent < high_cutoff_percent <= 50.0 * np.sqrt(2.0):
        raise ValueError(
            f"{name} needs 0 <= low_cutoff_percent < high_cutoff_percent <= 70.7, got "
            f"{low_cutoff_percent}, {high_cutoff_percent}"
        )


def _windowed_power(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The power spectrum (``rfft2``) of the mean-subtracted, Hann-windowed grey image, its row and
    column frequencies (cycles per pixel, broadcastable to it) and the window."""
    h, w = gray.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.rfft2((gray - gray.mean()) * window)) ** 2
    return power, np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :], window


def fft_bandpass(
    frame: np.ndarray,
    roi: Roi | None = None,
    *,
    low_cutoff_percent: float = 2.5,
    high_cutoff_percent: float = 14.0,
) -> float:
    """Mid-frequency contrast energy, after OughtaFocus's "FFTBandpass" score.

    The cut-offs are radial spatial frequencies in percent of the sampling frequency
    (cycles per pixel x 100; Nyquist is 50 %), Micro-Manager's defaults 2.5 % and 14 %. The
    grey image is mean-subtracted and Hann-windowed (so the frame border adds no false
    edges); the score is the variance of the band-passed image divided by the squared mean
    intensity (Parseval), so it does not depend on illumination and falls as blur removes
    the band. (A ratio band / total power would *rise* under slight blur, because blur removes
    the frequencies above the band first.)
    """
    _check_band("fft_bandpass", low_cutoff_percent, high_cutoff_percent)
    gray = to_gray(frame, roi).astype(np.float64)
    h, w = gray.shape
    mean = float(gray.mean())
    if mean <= 0.0:
        return 0.0
    power, fy, fx, window = _windowed_power(gray)
    radius_percent = 100.0 * np.sqrt(fy * fy + fx * fx)
    # rfft2 stores columns 1..(w-1)//2 once for both signs: weight them twice for the true sum.
    weight = np.full(power.shape[1], 2.0)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    band = (radius_percent >= low_cutoff_percent) & (radius_percent <= high_cutoff_percent)
    band_power = float((power * weight[None, :])[band].sum())
    # Parseval: sum |F|^2 = N * sum |x|^2, so this is the band's windowed variance / mean^2.
    variance = band_power / (h * w * float((window**2).sum()))
    return variance / (mean * mean)


def spectral_centroid(
    frame: np.ndarray,
    roi: Roi | None = None,
    *,
    low_cutoff_percent: float = 0.2,
    high_cutoff_percent: float = 5.0,
) -> float:
    """Mean radial frequency of the frame's radial power spectrum within a band, in percent of the
    sampling frequency (cycles per pixel x 100).

    Defocus blur (in partially coherent brightfield, a disc that grows with |z|) cuts the spectrum
    off at a frequency that falls as 1/|z|, whatever the specimen, so the centroid falls as the
    frame leaves focus and keeps falling where a network's reading has flattened. The grey image is
    mean-subtracted and Hann-windowed; the power is averaged over rings one frequency step wide
    (the radial spectrum, so that wide outer rings do not outweigh inner ones), and the centroid
    is taken over the rings in the band. A flat image scores 0. The defaults (0.2-5 %) suit a frame
    several microns out of focus at 20x/0.75, where nothing above 5 % is left.
    """
    _check_band("spectral_centroid", low_cutoff_percent, high_cutoff_percent)
    gray = to_gray(frame, roi).astype(np.float64)
    h, w = gray.shape
    power, fy, fx, _ = _windowed_power(gray)
    step = 1.0 / max(h, w)  # the spectrum's frequency resolution, cycles per pixel
    ring = np.rint(np.sqrt(fy * fy + fx * fx) / step).astype(np.int64).ravel()
    counts = np.bincount(ring)
    profile = np.bincount(ring, weights=power.ravel()) / np.maximum(counts, 1)
    freq_percent = 100.0 * step * np.arange(profile.size)
    band = (freq_percent >= low_cutoff_percent) & (freq_percent <= high_cutoff_percent) & (counts > 0)
    total = float(profile[band].sum())
    if total <= 0.0:
        return 0.0
    return float((freq_percent[band] * profile[band]).sum() / total)


Measure = Callable[..., float]

MEASURES: dict[str, Measure] = {
    "variance_of_laplacian": variance_of_laplacian,
    "tenengrad": tenengrad,
    "brenner": brenner,
    "normalized_variance": normalized_variance,
    "fft_bandpass": fft_bandpass,
}


def measure_by_name(name: str) -> Measure:
    """Look a measure up by name; an unknown name raises ``ValueError`` listing the choices."""
    try:
        return MEASURES[name]
    except KeyError:
        raise ValueError(f"unknown focus measure {name!r}; choose one of {sorted(MEASURES)}") from None
