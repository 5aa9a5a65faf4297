"""The simulated brightfield microscope (``docs/simulator.md``).

``SimulatedMicroscope`` owns a procedural slide and three ``drivers.base`` devices
(``camera``, ``focus_stage``, ``xy_stage``) that share its simulated clock and ground truth.
"""

from drivers.simulated.microscope import DriftModel, Faults, SimulatedMicroscope
from drivers.simulated.objectives import OBJECTIVES, WAVELENGTHS_UM, Objective
from drivers.simulated.specimen import SPECIMEN_KINDS

__all__ = ["OBJECTIVES", "SPECIMEN_KINDS", "WAVELENGTHS_UM", "DriftModel", "Faults", "Objective", "SimulatedMicroscope"]
