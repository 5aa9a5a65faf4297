"""``SimulatedMicroscope``: one simulated world shared by a camera, a focus stage and an XY stage.

Sign convention (``docs/contracts.md``): ``defocus > 0`` means the specimen lies beyond the focal
plane (further from the objective); the focus stage's ``direction`` is ``+1`` when positive Z
brings the objective towards the sample; the move ``direction * defocus`` corrects a defocus.

The slide's focal surface, in focus-stage coordinates, is

    z_focus(x, y, t) = focus_offset_um + (tilt_x * x + tilt_y * y) / 1000 + drift(t)

(x, y slide positions in um, tilts in um per mm), and the ground truth at a slide position is
``direction * (z_focus(x, y, t) - z_physical)``, with ``z_physical`` the objective's real
position (backlash included, see ``SimulatedFocusStage``). Image columns run along +x and rows
along +y of the slide; the frame is centred on the XY stage position.

Frames are rendered at most ``MAX_RENDER_DEFOCUS_UM`` (50 um) out of focus: further out the blur
disc (57 um in radius on the 20x/0.75) washes the specimen out to a few percent of contrast,
while the padding against wrap-around grows with it (672x504 frames took 4 s at 100 um, 57 s at
500 um, and ran out of memory at 1000 um, which the default soft limits allow). The truth
(``true_defocus_um``) is never capped.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from drivers.simulated.devices import SimulatedCamera, SimulatedFocusStage, SimulatedXYStage
from drivers.simulated.objectives import Objective, get_objective
from drivers.simulated.optics import OpticsSettings, SpecimenSpectrum, default_workers, form_image
from drivers.simulated.sensor import SensorSettings, expose
from drivers.simulated.specimen import SPECIMEN_KINDS, lattice_coords, render_specimen

__all__ = ["MAX_RENDER_DEFOCUS_UM", "DriftModel", "Faults", "SimulatedMicroscope"]

SCOPE_DEFAULT: Literal["scope"] = "scope"
MAX_RENDER_DEFOCUS_UM = 50.0  # frames further out look like this far out (see the module docstring)


@dataclass(frozen=True)
class DriftModel:
    """Focus drift over time (um, in focus-stage coordinates; + raises ``z_focus``).

    ``drift(t) = thermal_um * (1 - exp(-t / thermal_tau_s)) + rate_um_per_min * t / 60
    + oscillation_um * sin(2 pi t / oscillation_period_s)``: a thermal ramp that settles, a
    steady creep and a slow oscillation (room air conditioning).
    """

    thermal_um: float = 0.0
    thermal_tau_s: float = 600.0
    rate_um_per_min: float = 0.0
    oscillation_um: float = 0.0
    oscillation_period_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("thermal_um", "thermal_tau_s", "rate_um_per_min", "oscillation_um", "oscillation_period_s"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"DriftModel.{name} must be finite")
        if self.thermal_tau_s <= 0 or self.oscillation_period_s <= 0:
            raise ValueError("DriftModel.thermal_tau_s and oscillation_period_s must be > 0")

    @classmethod
    def typical(cls) -> DriftModel:
        """A warming-up microscope: 4 um thermal ramp (tau 10 min) plus 0.5 um oscillation (4 min)."""
        return cls(thermal_um=4.0, thermal_tau_s=600.0, oscillation_um=0.5, oscillation_period_s=240.0)

    def drift_um(self, t_s: float) -> float:
        return (
            self.thermal_um * (1.0 - math.exp(-t_s / self.thermal_tau_s))
            + self.rate_um_per_min * t_s / 60.0
            + self.oscillation_um * math.sin(2 * math.pi * t_s / self.oscillation_period_s)
        )


@dataclass
class Faults:
    """Switches for reliability tests; each raises a ``drivers.errors`` class while on.

    - ``camera_timeout``: ``snap()`` waits the camera's timeout, then ``DeviceTimeoutError``;
    - ``stage_stall``: moves started while on never progress; the move ends in
      ``DeviceTimeoutError`` after the move timeout and the stage stays where it was;
    - ``connection_lost``: every device call raises ``ConnectionLostError``.
    """

    camera_timeout: bool = False
    stage_stall: bool = False
    connection_lost: bool = False


class _SpectrumCache:
    """LRU of specimen spectra, bounded in bytes (full frames are ~150 MB each)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._items: OrderedDict[tuple[object, ...], SpecimenSpectrum] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> SpecimenSpectrum | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[object, ...], value: SpecimenSpectrum) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            total = sum(v.nbytes for v in self._items.values())
            while total > self.budget and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                total -= old.nbytes


class SimulatedMicroscope:
    """A brightfield microscope with a procedural slide; see ``docs/simulator.md``.

    The devices (``camera``, ``focus_stage``, ``xy_stage``) are created unopened. The focus
    stage starts on the slide's focal plane at the XY origin (``z = focus_offset_um``).
    """

    def __init__(
        self,
        seed: int = 0,
        objective: str | Objective = "20x/0.75",
        specimen: str = "cells",
        frame_shape: tuple[int, int] = (1944, 2592),
        bit_depth: int = 8,
        jpeg_quality: int | None = None,
        noise: bool = True,
        focus_offset_um: float = 0.0,
        tilt_um_per_mm: tuple[float, float] = (0.0, 0.0),
        drift: DriftModel | None = None,
        realtime: bool = False,
        *,
        condenser_na: float | None = None,
        spherical_aberration_waves: float | None = None,
        source_points: int = 7,
        phase_scale: float = 1.0,
        stain_scale: float = 1.0,
        exposure_ms: float = 20.0,
        full_well_e: float = 10_000.0,
        read_noise_e: float = 6.0,
        bayer: bool = False,
        z_direction: int = 1,
        z_limits_um: tuple[float, float] | None = None,
        z_max_step_um: float = 100.0,
        z_speed_um_s: float = 200.0,
        z_settle_ms: float = 10.0,
        backlash_um: float = 0.0,
        xy_limits_um: tuple[tuple[float, float], tuple[float, float]] = ((-37_500.0, 37_500.0), (-12_500.0, 12_500.0)),
        xy_speed_um_s: float = 5_000.0,
        max_tilt_step_um: float | None = None,
        cache_mb: float = 600.0,
        fft_workers: int | None = None,
    ) -> None:
        if specimen not in SPECIMEN_KINDS:
            raise ValueError(f"unknown specimen {specimen!r}; allowed: {', '.join(SPECIMEN_KINDS)}")
        if len(frame_shape) != 2 or min(frame_shape) < 16:
            raise ValueError(f"frame_shape must be (height, width) with both >= 16, got {frame_shape!r}")
        for name, value in (
            ("focus_offset_um", focus_offset_um),
            ("tilt x", tilt_um_per_mm[0]),
            ("tilt y", tilt_um_per_mm[1]),
        ):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if drift is not None and not isinstance(drift, DriftModel):
            raise ValueError(f"drift must be a DriftModel or None, got {type(drift).__name__}")
        if phase_scale < 0 or stain_scale < 0:
            raise ValueError("phase_scale and stain_scale must be >= 0")
        self.seed = int(seed)
        self.objective = get_objective(objective)
        self.specimen = specimen
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.focus_offset_um = float(focus_offset_um)
        self.tilt_um_per_mm = (float(tilt_um_per_mm[0]), float(tilt_um_per_mm[1]))
        self.drift = drift
        self.realtime = bool(realtime)
        self.phase_scale = float(phase_scale)
        self.stain_scale = float(stain_scale)
        self.optics = OpticsSettings(
            na=self.objective.na,
            condenser_na=self.objective.condenser_na if condenser_na is None else float(condenser_na),
            pixel_um=self.objective.pixel_um,
            immersion_n=self.objective.immersion_n,
            spherical_aberration_waves=(
                self.objective.spherical_aberration_waves
                if spherical_aberration_waves is None
                else float(spherical_aberration_waves)
            ),
            source_points=int(source_points),
        )
        self.sensor = SensorSettings(
            bit_depth=int(bit_depth),
            full_well_e=float(full_well_e),
            read_noise_e=float(read_noise_e),
            noise=bool(noise),
            jpeg_quality=jpeg_quality,
            bayer=bool(bayer),
        )
        self.max_tilt_step_um = (
            self.objective.depth_of_field_um() / 2 if max_tilt_step_um is None else float(max_tilt_step_um)
        )
        if not (math.isfinite(self.max_tilt_step_um) and self.max_tilt_step_um > 0):
            raise ValueError(f"max_tilt_step_um must be > 0, got {max_tilt_step_um!r}")
        self.fft_workers = fft_workers or default_workers()
        self.faults = Faults()
        self._clock_s = 0.0
        self._wall_t0 = time.monotonic()
        self._clock_lock = threading.Lock()
        self._noise_rng = np.random.default_rng([self.seed, 0xC0FFEE])
        self._cache = _SpectrumCache(int(cache_mb * 1e6))
        # the last few optical images: repeated snaps at an unchanged focus skip the optics
        self._images: OrderedDict[tuple[object, ...], np.ndarray] = OrderedDict()
        self._images_lock = threading.Lock()
        start_z = self.focus_offset_um
        if z_limits_um is None:
            z_limits_um = (start_z - 1000.0, start_z + 1000.0)
        self.camera = SimulatedCamera(self, exposure_ms=exposure_ms)
        self.focus_stage = SimulatedFocusStage(
            self,
            start_z_um=start_z,
            limits_um=z_limits_um,
            max_step_um=z_max_step_um,
            direction=z_direction,
            speed_um_s=z_speed_um_s,
            settle_ms=z_settle_ms,
            backlash_um=backlash_um,
        )
        self.xy_stage = SimulatedXYStage(self, limits_um=xy_limits_um, speed_um_s=xy_speed_um_s)

    # -- time ------------------------------------------------------------------------------------
    @property
    def time_s(self) -> float:
        """The simulated clock (s). In real-time mode it follows the wall clock (plus ``advance``)."""
        if self.realtime:
            return time.monotonic() - self._wall_t0 + self._clock_s
        return self._clock_s

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass at once (drift, moves in progress)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        with self._clock_lock:
            self._clock_s += seconds

    def sleep(self, seconds: float) -> None:
        """A device wait: advances the simulated clock, or really sleeps in real-time mode."""
        if self.realtime:
            time.sleep(max(0.0, seconds))
        else:
            self.advance(max(0.0, seconds))

    # -- ground truth --------------------------------------------------------------------------
    def focal_plane_z_um(self, x_um: float, y_um: float) -> float:
        """The stage position that focuses slide point (x_um, y_um) now."""
        tx, ty = self.tilt_um_per_mm
        z = self.focus_offset_um + (tx * x_um + ty * y_um) / 1000.0
        if self.drift is not None:
            z += self.drift.drift_um(self.time_s)
        return z

    def pixel_to_slide_um(self, x_px: float, y_px: float) -> tuple[float, float]:
        """Slide position of a frame pixel (column x_px, row y_px) at the current XY."""
        h, w = self.frame_shape
        cx, cy = self.xy_stage.position_um()
        p = self.objective.pixel_um
        # the frame is rendered on the slide's pixel lattice (first pixel at round(c / p) - n // 2)
        return (round(cx / p) - w // 2 + x_px) * p, (round(cy / p) - h // 2 + y_px) * p

    def true_defocus_um(self, x_px: float | None = None, y_px: float | None = None) -> float:
        """The defocus now at the frame centre, or at frame pixel (x_px = column, y_px = row)."""
        h, w = self.frame_shape
        x_px = (w - 1) / 2 if x_px is None else float(x_px)
        y_px = (h - 1) / 2 if y_px is None else float(y_px)
        x_um, y_um = self.pixel_to_slide_um(x_px, y_px)
        z_phys = self.focus_stage.physical_z_um()
        return self.focus_stage.direction * (self.focal_plane_z_um(x_um, y_um) - z_phys)

    # -- rendering -------------------------------------------------------------------------------
    def snap_frame(self, exposure_ms: float) -> np.ndarray:
        """What the camera sees now (used by ``camera.snap()``; no fault checks here)."""
        h, w = self.frame_shape
        cx, cy = self.xy_stage.position_um()
        d0 = self.true_defocus_um()
        tx, ty = self.tilt_um_per_mm
        p = self.objective.pixel_um
        grad = (self.focus_stage.direction * tx / 1000.0 * p, self.focus_stage.direction * ty / 1000.0 * p)
        return self.render_frame(cx, cy, d0, (h, w), defocus_gradient_um_per_px=grad, exposure_ms=exposure_ms)

    def render_patch(
        self,
        x_um: float,
        y_um: float,
        defocus_um: float,
        size: int = 224,
        *,
        condenser_na: float | None = None,
        spherical_aberration_waves: float | None = None,
        source_points: int | None = None,
        exposure_ms: float | None = None,
        noise: bool | None = None,
        read_noise_e: float | None = None,
        jpeg_quality: int | Literal["scope"] | None = SCOPE_DEFAULT,
        bit_depth: int | None = None,
        bayer: bool | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        """A ``size x size x 3`` camera patch centred on slide point (x_um, y_um) at a fixed defocus.

        Independent of the stages. Every optics / sensor option defaults to the microscope's
        setting; pass values to randomise a training set (``docs/simulator.md``). ``rng``: a
        generator or an integer seed for the noise (None: the microscope's own stream).
        """
        return self.render_frame(
            x_um,
            y_um,
            defocus_um,
            (size, size),
            condenser_na=condenser_na,
            spherical_aberration_waves=spherical_aberration_waves,
            source_points=source_points,
            exposure_ms=exposure_ms,
            noise=noise,
            read_noise_e=read_noise_e,
            jpeg_quality=jpeg_quality,
            bit_depth=bit_depth,
            bayer=bayer,
            rng=rng,
        )

    def render_frame(
        self,
        x_um: float,
        y_um: float,
        defocus_um: float,
        shape: tuple[int, int],
        *,
        defocus_gradient_um_per_px: tuple[float, float] = (0.0, 0.0),
        condenser_na: float | None = None,
        spherical_aberration_waves: float | None = None,
        source_points: int | None = None,
        exposure_ms: float | None = None,
        noise: bool | None = None,
        read_noise_e: float | None = None,
        jpeg_quality: int | Literal["scope"] | None = SCOPE_DEFAULT,
        bit_depth: int | None = None,
        bayer: bool | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        """A camera frame of ``shape`` (rows, cols) centred on (x_um, y_um).

        The defocus is ``defocus_um`` at the centre and changes by ``defocus_gradient_um_per_px``
        (per column, per row) across it: the frame is then rendered per region (each region at
        its own defocus, regions small enough that the defocus changes by at most
        ``max_tilt_step_um`` within one) and the regions are blended over their overlaps.
        """
        intensity = self.render_intensity(
            x_um,
            y_um,
            defocus_um,
            shape,
            defocus_gradient_um_per_px=defocus_gradient_um_per_px,
            condenser_na=condenser_na,
            spherical_aberration_waves=spherical_aberration_waves,
            source_points=source_points,
        )
        sensor = self.sensor
        changes: dict[str, object] = {}
        if noise is not None:
            changes["noise"] = bool(noise)
        if read_noise_e is not None:
            changes["read_noise_e"] = float(read_noise_e)
        if bit_depth is not None:
            changes["bit_depth"] = int(bit_depth)
            if jpeg_quality == SCOPE_DEFAULT and int(bit_depth) != 8:
                changes["jpeg_quality"] = None
        if jpeg_quality != SCOPE_DEFAULT:
            changes["jpeg_quality"] = jpeg_quality
        if bayer is not None:
            changes["bayer"] = bool(bayer)
        if changes:
            sensor = replace(sensor, **changes)  # type: ignore[arg-type]
        if isinstance(rng, int):
            rng = np.random.default_rng(rng)
        exposure = self.camera.exposure_setting_ms if exposure_ms is None else float(exposure_ms)
        return expose(intensity, exposure, sensor, rng if rng is not None else self._noise_rng)

    def render_intensity(
        self,
        x_um: float,
        y_um: float,
        defocus_um: float,
        shape: tuple[int, int],
        *,
        defocus_gradient_um_per_px: tuple[float, float] = (0.0, 0.0),
        condenser_na: float | None = None,
        spherical_aberration_waves: float | None = None,
        source_points: int | None = None,
    ) -> np.ndarray:
        """The noiseless intensity image (3, H, W) float32 (blank glass = 1) before the camera."""
        for name, value in (("x_um", x_um), ("y_um", y_um), ("defocus_um", defocus_um)):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        h, w = int(shape[0]), int(shape[1])
        if h < 8 or w < 8:
            raise ValueError(f"shape must be at least 8 x 8, got {shape!r}")
        optics = self.optics
        changes: dict[str, object] = {}
        if condenser_na is not None:
            changes["condenser_na"] = float(condenser_na)
        if spherical_aberration_waves is not None:
            changes["spherical_aberration_waves"] = float(spherical_aberration_waves)
        if source_points is not None:
            changes["source_points"] = int(source_points)
        if changes:
            optics = replace(optics, **changes)  # type: ignore[arg-type]
        gx, gy = defocus_gradient_um_per_px
        p = self.objective.pixel_um
        nx = max(1, min(16, math.ceil(abs(gx) * w / self.max_tilt_step_um)))
        ny = max(1, min(16, math.ceil(abs(gy) * h / self.max_tilt_step_um)))
        coarse = h * w > 512 * 512
        # integer slide-lattice index of the frame's first pixel (see specimen.lattice_coords)
        ix_first = round(x_um / p) - w // 2
        iy_first = round(y_um / p) - h // 2
        if nx == 1 and ny == 1:
            return self._render_window(ix_first, iy_first, defocus_um, (h, w), optics, coarse_pad=coarse)
        # per region, blended: partition of unity with linear ramps over the overlaps
        overlap = 16
        xb = np.linspace(0, w, nx + 1).round().astype(int)
        yb = np.linspace(0, h, ny + 1).round().astype(int)
        out = np.zeros((3, h, w), dtype=np.float32)
        cols = np.arange(w) + 0.5
        rows = np.arange(h) + 0.5
        for iy in range(ny):
            r0, r1 = max(0, yb[iy] - overlap), min(h, yb[iy + 1] + overlap)
            wy = _ramp(rows[r0:r1], yb[iy], yb[iy + 1], overlap, iy > 0, iy < ny - 1)
            for ix in range(nx):
                c0, c1 = max(0, xb[ix] - overlap), min(w, xb[ix + 1] + overlap)
                wx = _ramp(cols[c0:c1], xb[ix], xb[ix + 1], overlap, ix > 0, ix < nx - 1)
                # region centre in frame pixels relative to the frame centre ((w - 1) / 2, (h - 1) / 2)
                dcx = (c0 + c1 - w) / 2
                dcy = (r0 + r1 - h) / 2
                d = defocus_um + gx * dcx + gy * dcy
                sub = self._render_window(
                    ix_first + c0, iy_first + r0, d, (r1 - r0, c1 - c0), optics, coarse_pad=coarse
                )
                out[:, r0:r1, c0:c1] += sub * (wy[:, None] * wx[None, :])
        return out

    def _render_window(
        self,
        ix_first: int,
        iy_first: int,
        defocus_um: float,
        shape: tuple[int, int],
        optics: OpticsSettings,
        *,
        coarse_pad: bool,
    ) -> np.ndarray:
        """One window (first pixel at slide-lattice index ``(ix_first, iy_first)``) at one defocus:
        the specimen spectrum (cached) through the optics, cropped."""
        h, w = shape
        p = self.objective.pixel_um
        defocus_um = max(-MAX_RENDER_DEFOCUS_UM, min(MAX_RENDER_DEFOCUS_UM, defocus_um))
        # pad against wrap-around: the defocus blur radius, in buckets so the cache is reused
        # (coarse ones for large frames, whose specimen is expensive; fine ones for patches)
        if coarse_pad:
            z_cap = 10.0
            while z_cap < abs(defocus_um):
                z_cap *= 2
        else:
            z_cap = 2.5 * max(1, math.ceil(abs(defocus_um) / 2.5))
        pad = math.ceil((self.objective.blur_radius_um(z_cap) + 2.0) / p)
        pad = 8 * math.ceil(pad / 8)
        hp, wp = h + 2 * pad, w + 2 * pad
        key = (self.specimen, self.seed, self.phase_scale, self.stain_scale, p, ix_first, iy_first, hp, wp)
        spec = self._cache.get(key)
        if spec is None:
            xs = (np.arange(wp) + (ix_first - pad)) * p
            ys = (np.arange(hp) + (iy_first - pad)) * p
            maps = render_specimen(
                self.specimen, self.seed, xs, ys, phase_scale=self.phase_scale, stain_scale=self.stain_scale
            )
            spec = SpecimenSpectrum(maps, p, workers=self.fft_workers)
            self._cache.put(key, spec)
        image_key = (*key, float(defocus_um), optics)
        with self._images_lock:
            img = self._images.get(image_key)
        if img is None:
            img = form_image(spec, defocus_um, optics, workers=self.fft_workers)[:, pad : pad + h, pad : pad + w]
            img.setflags(write=False)
            with self._images_lock:
                self._images[image_key] = img
                while len(self._images) > 8 or (
                    len(self._images) > 1 and sum(v.nbytes for v in self._images.values()) > 200e6
                ):
                    self._images.popitem(last=False)
        return img

    def content_fraction(self, x_um: float, y_um: float, size: int = 224) -> float:
        """Share of a ``size`` x ``size`` patch's pixels that hold specimen (not blank glass).

        A pixel counts when its optical density exceeds 0.03 or its optical path 0.02 um. Cheap
        (no optics): for choosing fields in tests, demos and dataset generators.
        """
        if int(size) < 1:
            raise ValueError(f"size must be >= 1 pixel, got {size!r}")
        p = self.objective.pixel_um
        xs = lattice_coords(x_um, int(size), p)
        ys = lattice_coords(y_um, int(size), p)
        maps = render_specimen(self.specimen, self.seed, xs, ys, phase_scale=1.0, stain_scale=1.0)
        filled = (maps.od.max(axis=0) > 0.03) | (np.abs(maps.opd_um) > 0.02)
        return float(filled.mean())

    def find_content(
        self,
        min_fraction: float = 0.3,
        size: int = 224,
        start_um: tuple[float, float] = (0.0, 0.0),
        step_um: float | None = None,
        max_tries: int = 400,
    ) -> tuple[float, float]:
        """The first slide position (x_um, y_um) on a square spiral from ``start_um`` whose patch
        holds at least ``min_fraction`` specimen. ``ValueError`` if none within ``max_tries``."""
        if not 0 <= min_fraction <= 1:
            raise ValueError(f"min_fraction must be within 0..1, got {min_fraction}")
        step = size * self.objective.pixel_um if step_um is None else float(step_um)
        x, y = start_um
        dx, dy, leg, done = 1, 0, 1, 0
        for _ in range(max_tries):
            if self.content_fraction(x, y, size) >= min_fraction:
                return x, y
            x, y = x + dx * step, y + dy * step
            done += 1
            if done == leg:  # square spiral: legs of 1, 1, 2, 2, 3, 3, ... steps
                done = 0
                dx, dy = -dy, dx
                if dy == 0:
                    leg += 1
        raise ValueError(f"no patch with >= {min_fraction:.0%} specimen within {max_tries} tries of {start_um}")

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary of the simulated set-up (for status pages and dataset manifests)."""
        return {
            "seed": self.seed,
            "objective": self.objective.name,
            "pixel_um": self.objective.pixel_um,
            "specimen": self.specimen,
            "frame_shape": list(self.frame_shape),
            "condenser_na": self.optics.condenser_na,
            "spherical_aberration_waves": self.optics.spherical_aberration_waves,
            "source_points": self.optics.source_points,
            "phase_scale": self.phase_scale,
            "stain_scale": self.stain_scale,
            "bit_depth": self.sensor.bit_depth,
            "noise": self.sensor.noise,
            "read_noise_e": self.sensor.read_noise_e,
            "jpeg_quality": self.sensor.jpeg_quality,
            "bayer": self.sensor.bayer,
            "focus_offset_um": self.focus_offset_um,
            "tilt_um_per_mm": list(self.tilt_um_per_mm),
            "drift": None if self.drift is None else vars(self.drift).copy(),
            "time_s": self.time_s,
            "realtime": self.realtime,
        }


def _ramp(coords: np.ndarray, lo: int, hi: int, overlap: int, ramp_lo: bool, ramp_hi: bool) -> np.ndarray:
    """Blend weights of one region along one axis (they sum to 1 across neighbouring regions)."""
    wgt = np.ones(coords.size, dtype=np.float32)
    if ramp_lo:
        wgt *= np.clip((coords - (lo - overlap)) / (2 * overlap), 0.0, 1.0).astype(np.float32)
    if ramp_hi:
        wgt *= np.clip(((hi + overlap) - coords) / (2 * overlap), 0.0, 1.0).astype(np.float32)
    return wgt
