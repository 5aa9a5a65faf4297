"""Partially coherent brightfield image formation (Abbe's method), fast.

For each colour channel the specimen's complex transmittance ``t = 10^(-od/2) exp(i 2pi/lambda opd)``
is Fourier transformed once per window (cached by the caller). For a defocus ``z`` the image is

    I = sum_j w_j |IFFT[ T(f) * H(f + s_j; z) ]|^2

with ``H`` the objective's coherent transfer function (pupil of radius NA/lambda, defocus phase
``2pi z (sqrt(n^2/lambda^2 - f^2) - n/lambda)``, primary spherical aberration ``Z(4,0)``) and
``s_j`` the condenser source points (Koehler illumination, 1/7/19/37 points on rings).

``z > 0`` means the specimen lies beyond the focal plane (further from the objective): the
focal plane then sees the specimen's field propagated *forward* by ``z``, which is what the
transfer function above does (numpy's FFT sign, transmittance ``exp(+i k opd)``). A thicker
(optically denser) nucleus then acts as a weak converging lens and looks brighter at ``z > 0``.

Speed (``optics.md``): each source point is an integer shift of the spectrum under the pupil's
support box, so the pupil box is computed once per z; the field is computed on the smallest
grid that holds ``|E|^2`` without aliasing and its intensity spectrum is zero-padded back to
the camera grid, where the pixel MTF (sinc) and the ghost-filling blur are applied.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from scipy.special import j1

from drivers.simulated.objectives import WAVELENGTHS_UM
from drivers.simulated.specimen import SpecimenMaps

__all__ = ["SOURCE_POINT_COUNTS", "OpticsSettings", "SpecimenSpectrum", "form_image", "source_points"]

SOURCE_POINT_COUNTS: tuple[int, ...] = (1, 7, 19, 37)


def default_workers() -> int:
    """FFT threads for large transforms (small ones run on one thread: threads cost more there)."""
    return max(1, min(4, os.cpu_count() or 1))


def _workers(requested: int | None, shape: tuple[int, ...]) -> int:
    if int(np.prod(shape)) < 600 * 600:
        return 1
    return requested or default_workers()


@dataclass(frozen=True)
class OpticsSettings:
    """Everything about the light path except the specimen and the defocus."""

    na: float
    condenser_na: float
    pixel_um: float
    immersion_n: float = 1.0
    spherical_aberration_waves: float = 0.0  # RMS of Zernike Z(4,0), in waves
    source_points: int = 7
    wavelengths_um: tuple[float, float, float] = WAVELENGTHS_UM

    def __post_init__(self) -> None:
        if self.source_points not in SOURCE_POINT_COUNTS:
            raise ValueError(f"source_points must be one of {SOURCE_POINT_COUNTS}, got {self.source_points}")
        if not 0 <= self.condenser_na <= self.immersion_n:
            raise ValueError(f"condenser_na must be in [0, {self.immersion_n}], got {self.condenser_na}")
        if not 0 < self.na < self.immersion_n:
            raise ValueError(f"na must be in (0, {self.immersion_n}), got {self.na}")
        if not math.isfinite(self.spherical_aberration_waves) or abs(self.spherical_aberration_waves) > 2.0:
            raise ValueError(f"spherical_aberration_waves must be within +-2, got {self.spherical_aberration_waves}")


def source_points(condenser_na: float, count: int) -> tuple[np.ndarray, float]:
    """Condenser source points (count x 2, in NA units) on rings, and their spacing in NA."""
    rings = SOURCE_POINT_COUNTS.index(count)
    if rings == 0 or condenser_na <= 0:
        return np.zeros((1, 2)), 0.0
    ds = condenser_na / (rings + 0.5)
    pts = [(0.0, 0.0)]
    for k in range(1, rings + 1):
        for m in range(6 * k):
            a = 2 * math.pi * m / (6 * k) + 0.37 * k
            pts.append((k * ds * math.cos(a), k * ds * math.sin(a)))
    return np.array(pts), ds


class SpecimenSpectrum:
    """The 2-D FFT of one window's complex transmittance, per colour channel (complex64, fftshift-ed)."""

    def __init__(
        self,
        maps: SpecimenMaps,
        pixel_um: float,
        wavelengths_um: tuple[float, ...] = WAVELENGTHS_UM,
        workers: int | None = None,
    ) -> None:
        self.shape: tuple[int, int] = maps.opd_um.shape  # type: ignore[assignment]
        self.pixel_um = float(pixel_um)
        self.wavelengths_um = tuple(wavelengths_um)
        w = _workers(workers, self.shape)
        self.spectra: list[np.ndarray] = []
        for c, lam in enumerate(self.wavelengths_um):
            amp = np.exp(maps.od[c] * np.float32(-0.5 * math.log(10.0)))
            phase = maps.opd_um * np.float32(2 * math.pi / lam)
            t = np.empty(self.shape, dtype=np.complex64)
            t.real = amp * np.cos(phase)
            t.imag = amp * np.sin(phase)
            # stored fftshift-ed (zero frequency at (h//2, w//2)) so pupil boxes are plain slices
            self.spectra.append(sfft.fftshift(sfft.fft2(t, workers=w, overwrite_x=True)))

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.spectra)


@lru_cache(maxsize=64)
def _pupil_geometry(
    lam: float, by: int, bx: int, dfy: float, dfx: float, na: float, n: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pupil support (flat indices), axial wavenumber offset and Zernike Z(4,0) on the support box."""
    fy = np.arange(-by, by + 1) * dfy
    fx = np.arange(-bx, bx + 1) * dfx
    f2 = (fy[:, None] ** 2 + fx[None, :] ** 2).ravel()
    fc = na / lam
    inside = np.flatnonzero(f2 <= fc * fc)
    f2 = f2[inside]
    kz = (np.sqrt((n / lam) ** 2 - f2) - n / lam).astype(np.float32)
    rho2 = f2 / (fc * fc)
    z40 = (math.sqrt(5.0) * (6 * rho2 * rho2 - 6 * rho2 + 1)).astype(np.float32)
    for a in (inside, kz, z40):
        a.setflags(write=False)
    return inside, kz, z40


@lru_cache(maxsize=256)
def _pupil_box(
    lam: float, by: int, bx: int, dfy: float, dfx: float, na: float, n: float, z_um: float, sa_waves: float
) -> np.ndarray:
    """The coherent transfer function on its (2by+1, 2bx+1) support box, complex64."""
    inside, kz, z40 = _pupil_geometry(lam, by, bx, dfy, dfx, na, n)
    phase = kz * np.float32(2 * math.pi * z_um)
    if sa_waves:
        phase += z40 * np.float32(2 * math.pi * sa_waves)
    box = np.zeros((2 * by + 1) * (2 * bx + 1), dtype=np.complex64)
    vals = np.empty(inside.size, dtype=np.complex64)
    vals.real = np.cos(phase)
    vals.imag = np.sin(phase)
    box[inside] = vals
    box = box.reshape(2 * by + 1, 2 * bx + 1)
    box.setflags(write=False)
    return box


@lru_cache(maxsize=64)
def _mtf_rfft(shape: tuple[int, int], pixel_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-aperture MTF (sinc, 100% fill factor) and the radial frequency, on the rfft2 grid."""
    h, w = shape
    fy = sfft.fftfreq(h, pixel_um)[:, None]
    fx = sfft.rfftfreq(w, pixel_um)[None, :]
    mtf = (np.sinc(fy * pixel_um) * np.sinc(fx * pixel_um)).astype(np.float32)
    fr = np.sqrt(fy**2 + fx**2).astype(np.float32)
    mtf.setflags(write=False)
    fr.setflags(write=False)
    return mtf, fr


_JINC_X = np.linspace(0.0, 400.0, 40001)
_JINC_Y = np.where(_JINC_X > 0, 2 * j1(np.maximum(_JINC_X, 1e-9)) / np.maximum(_JINC_X, 1e-9), 1.0)


def _transfer_rfft(shape: tuple[int, int], pixel_um: float, blur_radius_um: float) -> np.ndarray:
    """Pixel MTF times the ghost-filling disc blur (OTF ``2 J1(x)/x``, ``x = 2 pi r f``)."""
    mtf, fr = _mtf_rfft(shape, pixel_um)
    if blur_radius_um <= 0:
        return mtf
    x = fr * np.float32(2 * math.pi * blur_radius_um)
    disc = np.interp(x.ravel(), _JINC_X, _JINC_Y, right=0.0).astype(np.float32).reshape(x.shape)
    return mtf * disc


def _field_grid(b: int, n: int) -> int:
    """Smallest fast grid holding the intensity of a field of half-width b bins (<= n)."""
    k = sfft.next_fast_len(4 * b + 2)
    return n if k >= n else k


def form_image(
    spec: SpecimenSpectrum, defocus_um: float, optics: OpticsSettings, workers: int | None = None
) -> np.ndarray:
    """Intensity image (3, H, W) float32 of the window at defocus ``defocus_um`` (blank glass = 1)."""
    if not math.isfinite(defocus_um):
        raise ValueError(f"defocus_um must be finite, got {defocus_um!r}")
    h, wd = spec.shape
    w = _workers(workers, spec.shape)
    p = spec.pixel_um
    dfy, dfx = 1.0 / (h * p), 1.0 / (wd * p)
    pts, ds = source_points(optics.condenser_na, optics.source_points)
    weight = 1.0 / len(pts)
    blur_um = abs(defocus_um) * math.tan(math.asin(min(ds / optics.immersion_n, 0.99))) / 2 if ds > 0 else 0.0
    transfer = _transfer_rfft((h, wd), p, blur_um)
    out = np.empty((3, h, wd), dtype=np.float32)
    for c, lam in enumerate(spec.wavelengths_um):
        fc = optics.na / lam
        by = min(math.ceil(fc / dfy), (h - 1) // 2)
        bx = min(math.ceil(fc / dfx), (wd - 1) // 2)
        pupil = _pupil_box(
            lam,
            by,
            bx,
            dfy,
            dfx,
            optics.na,
            optics.immersion_n,
            float(defocus_um),
            float(optics.spherical_aberration_waves),
        )
        ky_n, kx_n = _field_grid(by, h), _field_grid(bx, wd)
        T = spec.spectra[c]
        inten = np.zeros((ky_n, kx_n), dtype=np.float32)
        # the box sits in the field grid's corner, not at its frequency: that only multiplies the
        # field by a phase ramp, which |E|^2 removes. The inverse FFT runs axis by axis with
        # implicit zero padding, so the all-zero rows below the box are never transformed.
        box = np.empty((2 * by + 1, 2 * bx + 1), dtype=np.complex64)
        tmp = np.empty((ky_n, kx_n), dtype=np.float32)
        for sx, sy in pts:
            r0 = h // 2 - round(sy / lam / dfy) - by
            c0 = wd // 2 - round(sx / lam / dfx) - bx
            if r0 >= 0 and r0 + 2 * by + 1 <= h and c0 >= 0 and c0 + 2 * bx + 1 <= wd:
                np.multiply(T[r0 : r0 + 2 * by + 1, c0 : c0 + 2 * bx + 1], pupil, out=box)
            else:  # illumination plus pupil beyond the sampled band: wrap (aliases, as a sensor would)
                rows = np.arange(r0, r0 + 2 * by + 1) % h
                cols = np.arange(c0, c0 + 2 * bx + 1) % wd
                np.multiply(T[np.ix_(rows, cols)], pupil, out=box)
            e = sfft.ifft(sfft.ifft(box, n=kx_n, axis=1, workers=w), n=ky_n, axis=0, workers=w, overwrite_x=True)
            np.multiply(e.real, e.real, out=tmp)
            inten += tmp
            np.multiply(e.imag, e.imag, out=tmp)
            inten += tmp
        # ifft normalises by the small grid's size: rescale so that blank glass gives 1
        inten *= np.float32(weight * (ky_n * kx_n / (h * wd)) ** 2)
        spec_i = sfft.rfft2(inten, workers=w)
        if (ky_n, kx_n) != (h, wd):
            big = np.zeros((h, wd // 2 + 1), dtype=np.complex64)
            rows = np.arange(ky_n)
            rows = np.where(rows <= ky_n // 2, rows, rows - ky_n) % h
            big[rows, : kx_n // 2 + 1] = spec_i
            spec_i = big * np.float32(h * wd / (ky_n * kx_n))
        spec_i *= transfer
        out[c] = sfft.irfft2(spec_i, s=(h, wd), workers=w)
    return out
