"""Serial focus drives: ASI MS-2000/Tiger, Prior ProScan III, Marzhauser Tango, GRBL 1.1.

Each driver is a ``FocusStage`` holding a ``SerialLink`` (port + locks) as a member.
Imports pyserial, so import this package only when a serial stage is configured.
"""

from __future__ import annotations

from drivers.errors import ConfigurationError
from drivers.serial.asi import ASIStage
from drivers.serial.grbl import GrblStage
from drivers.serial.link import SerialLink
from drivers.serial.prior import PriorStage
from drivers.serial.stage import SerialFocusStage
from drivers.serial.tango import TangoStage

__all__ = [
    "SERIAL_STAGE_CLASSES",
    "ASIStage",
    "GrblStage",
    "PriorStage",
    "SerialFocusStage",
    "SerialLink",
    "TangoStage",
    "make_serial_stage",
]

SERIAL_STAGE_CLASSES: dict[str, type[SerialFocusStage]] = {
    "asi": ASIStage,
    "prior": PriorStage,
    "tango": TangoStage,
    "grbl": GrblStage,
}


def make_serial_stage(
    kind: str,
    *,
    port: str,
    baudrate: int | None,
    timeout_s: float,
    limits_um: tuple[float, float],
    max_step_um: float,
    direction: int,
    speed_um_s: float,
    settle_ms: float,
) -> SerialFocusStage:
    """An unopened serial stage of ``kind`` (``asi`` | ``prior`` | ``tango`` | ``grbl``)."""
    try:
        cls = SERIAL_STAGE_CLASSES[kind]
    except KeyError:
        allowed = ", ".join(SERIAL_STAGE_CLASSES)
        raise ConfigurationError(f"stage={kind!r} is not a serial stage; allowed: {allowed}") from None
    return cls(
        port,
        baudrate=baudrate,
        timeout_s=timeout_s,
        limits_um=limits_um,
        max_step_um=max_step_um,
        direction=direction,
        speed_um_s=speed_um_s,
        settle_ms=settle_ms,
    )
