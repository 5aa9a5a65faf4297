"""Objective presets of the simulated microscope (``docs/simulator.md``, ``optics.md``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["OBJECTIVES", "WAVELENGTHS_UM", "Objective", "get_objective"]

# Centre wavelengths of the camera's R, G, B channels (um).
WAVELENGTHS_UM: tuple[float, float, float] = (0.61, 0.54, 0.47)


@dataclass(frozen=True)
class Objective:
    """A dry objective with the camera behind it.

    ``camera_pixel_um`` is the sensor pixel pitch; ``pixel_um`` the pitch at the sample.
    ``condenser_na`` is the typical condenser setting used with this objective.
    """

    name: str
    magnification: float
    na: float
    camera_pixel_um: float
    condenser_na: float
    immersion_n: float = 1.0
    # residual primary spherical aberration (waves RMS) typical of the class: dry high-NA objectives
    # are sensitive to coverslip and mounting errors (it grows like NA^4), low-NA ones hardly at all
    spherical_aberration_waves: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.na < self.immersion_n:
            raise ValueError(f"objective {self.name}: NA must be in (0, n={self.immersion_n}), got {self.na}")
        if not 0 <= self.condenser_na <= self.immersion_n:
            raise ValueError(f"objective {self.name}: condenser_na must be in [0, n], got {self.condenser_na}")
        if self.magnification <= 0 or self.camera_pixel_um <= 0:
            raise ValueError(f"objective {self.name}: magnification and camera_pixel_um must be > 0")

    @property
    def pixel_um(self) -> float:
        """Pixel pitch at the sample (um)."""
        return self.camera_pixel_um / self.magnification

    def depth_of_field_um(self, wavelength_um: float = 0.54) -> float:
        """Shillaber / Inoue depth of field: ``lambda*n/NA^2 + n*e/(M*NA)``."""
        n = self.immersion_n
        return wavelength_um * n / self.na**2 + n * self.camera_pixel_um / (self.magnification * self.na)

    def blur_radius_um(self, defocus_um: float) -> float:
        """Geometric radius of the defocus blur disc: ``|z| * tan(asin(NA/n))``."""
        return abs(defocus_um) * math.tan(math.asin(self.na / self.immersion_n))


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("10x/0.25", 10.0, 0.25, 2.2, 0.15, spherical_aberration_waves=0.03),
        Objective("20x/0.75", 20.0, 0.75, 3.45, 0.40, spherical_aberration_waves=0.1),
        Objective("20x/0.40", 20.0, 0.40, 2.2, 0.30, spherical_aberration_waves=0.05),
        Objective("40x/0.65", 40.0, 0.65, 2.2, 0.40, spherical_aberration_waves=0.08),
    )
}


def get_objective(objective: str | Objective) -> Objective:
    """Look a preset up by name (or pass an ``Objective`` through)."""
    if isinstance(objective, Objective):
        return objective
    try:
        return OBJECTIVES[objective]
    except KeyError:
        raise ValueError(f"unknown objective {objective!r}; presets: {', '.join(OBJECTIVES)}") from None
