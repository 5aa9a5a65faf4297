"""Camera sensor model: exposure, shot and read noise, quantisation, optional JPEG (MJPG cameras)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["BIT_DEPTHS", "SensorSettings", "expose"]

BIT_DEPTHS: tuple[int, ...] = (8, 10, 12, 14, 16)
REFERENCE_EXPOSURE_MS = 20.0  # at this exposure blank glass fills BACKGROUND_LEVEL of full scale
BACKGROUND_LEVEL = 0.8


@dataclass(frozen=True)
class SensorSettings:
    """Sensor and read-out settings. ``white_balance`` is the per-channel gain after the lamp."""

    bit_depth: int = 8
    full_well_e: float = 10_000.0
    read_noise_e: float = 6.0
    noise: bool = True
    jpeg_quality: int | None = None
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bayer: bool = False  # a colour sensor with an RGGB mosaic, demosaiced bilinearly (OpenCV)

    def __post_init__(self) -> None:
        if self.bit_depth not in BIT_DEPTHS:
            raise ValueError(f"bit_depth must be one of {BIT_DEPTHS}, got {self.bit_depth}")
        if not (math.isfinite(self.full_well_e) and self.full_well_e > 0):
            raise ValueError(f"full_well_e must be > 0, got {self.full_well_e}")
        if not (math.isfinite(self.read_noise_e) and self.read_noise_e >= 0):
            raise ValueError(f"read_noise_e must be >= 0, got {self.read_noise_e}")
        if self.jpeg_quality is not None:
            if self.bit_depth != 8:
                raise ValueError("jpeg_quality needs bit_depth=8 (MJPG cameras deliver 8-bit frames)")
            if not 1 <= int(self.jpeg_quality) <= 100:
                raise ValueError(f"jpeg_quality must be 1..100 or None, got {self.jpeg_quality}")


def expose(
    intensity: np.ndarray, exposure_ms: float, sensor: SensorSettings, rng: np.random.Generator | None
) -> np.ndarray:
    """Turn an intensity image (3, H, W; blank glass = 1) into a camera frame H x W x 3.

    Blank glass fills ``BACKGROUND_LEVEL * exposure_ms / REFERENCE_EXPOSURE_MS`` of full scale;
    brighter pixels saturate. Shot noise is Poisson (Gaussian approximation, the counts are
    large), read noise Gaussian; ``rng`` is needed when ``sensor.noise`` is on.
    """
    if not (math.isfinite(exposure_ms) and exposure_ms > 0):
        raise ValueError(f"exposure_ms must be > 0, got {exposure_ms!r}")
    level = BACKGROUND_LEVEL * exposure_ms / REFERENCE_EXPOSURE_MS
    gain = np.asarray(sensor.white_balance, dtype=np.float32)[:, None, None] * np.float32(level * sensor.full_well_e)
    electrons = np.multiply(intensity, gain, dtype=np.float32)  # a new array: the input is left alone
    np.maximum(electrons, 0.0, out=electrons)
    if sensor.bayer:  # each photosite sees one colour: R G / G B
        mosaic = np.empty(electrons.shape[1:], dtype=np.float32)
        mosaic[0::2, 0::2] = electrons[0, 0::2, 0::2]
        mosaic[0::2, 1::2] = electrons[1, 0::2, 1::2]
        mosaic[1::2, 0::2] = electrons[1, 1::2, 0::2]
        mosaic[1::2, 1::2] = electrons[2, 1::2, 1::2]
        electrons = mosaic
    if sensor.noise:
        if rng is None:
            raise ValueError("noise is on but no random generator was given")
        sigma = electrons + np.float32(sensor.read_noise_e**2)
        np.sqrt(sigma, out=sigma)
        sigma *= rng.standard_normal(electrons.shape, dtype=np.float32)
        electrons += sigma
    full = (1 << sensor.bit_depth) - 1
    electrons *= np.float32(full / sensor.full_well_e)
    np.rint(electrons, out=electrons)
    np.clip(electrons, 0, full, out=electrons)
    dtype = np.uint8 if sensor.bit_depth == 8 else np.uint16
    if sensor.bayer:
        # OpenCV names Bayer patterns from the second row: an RGGB sensor is its "BG" code
        frame = cv2.cvtColor(electrons.astype(dtype), cv2.COLOR_BayerBG2RGB)
    else:
        frame = np.empty((*electrons.shape[1:], 3), dtype=dtype)
        np.copyto(frame, np.moveaxis(electrons, 0, -1), casting="unsafe")
    if sensor.jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(sensor.jpeg_quality)])
        if not ok:
            raise RuntimeError("OpenCV failed to JPEG-encode a simulated frame")
        frame = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])
    return frame
