"""GRBL 1.1 as a hobby Z drive.

Protocol (docs/hardware.md): 115200 8N1, ``\\n`` terminated lines, ``ok`` / ``error:N`` /
``ALARM:N`` replies. Positions in mm. Moves are absolute jogs ``$J=G90 G21 Z<mm> F<mm/min>``
so that the real-time *jog cancel* byte ``0x85`` stops them cleanly (a feed hold ``!`` would
leave the machine in Hold and a reset ``Ctrl-X`` during motion loses position). Status is
the real-time ``?`` (no end of line): ``<Idle|MPos:x,y,z|...>``.
"""

from __future__ import annotations

import re

from drivers.errors import DeviceError
from drivers.serial.stage import SerialFocusStage

__all__ = ["GRBL_ERRORS", "GrblStage"]

GRBL_ERRORS: dict[int, str] = {
    1: "G-code words consist of a letter and a value; letter was not found",
    2: "numeric value format is not valid or missing an expected value",
    3: "grbl '$' system command was not recognized or supported",
    8: "grbl '$' command cannot be used unless grbl is idle",
    9: "G-code locked out during alarm or jog state",
    15: "jog target exceeds machine travel; command ignored",
    16: "jog command has no '=' or contains prohibited g-code",
}

BUSY_STATES = ("Run", "Jog", "Home", "Hold")
_STATUS = re.compile(r"^<([A-Za-z]+)(?::\d+)?\|(?:MPos|WPos):([-+\d.]+),([-+\d.]+),([-+\d.]+)")


def parse_ok(line: str) -> bool | None:
    if line == "ok":
        return True
    if match := re.match(r"^error:(\d+)$", line):
        code = int(match.group(1))
        raise DeviceError(f"GRBL error {code}: {GRBL_ERRORS.get(code, 'see the GRBL error list')}")
    if line.startswith("ALARM:"):
        raise DeviceError(f"GRBL {line}: the machine is in alarm; home or unlock ($X) it first")
    return None


def parse_status(line: str) -> tuple[str, float] | None:
    """``<Idle|MPos:0.000,0.000,1.250|...>`` -> ("Idle", 1.25 mm)."""
    match = _STATUS.match(line)
    if match is None:
        return None
    return match.group(1), float(match.group(4))


class GrblStage(SerialFocusStage):
    """The Z axis of a GRBL 1.1 controller."""

    DEFAULT_BAUDRATE = 115200
    EOL_OUT = b"\n"
    HALT = b"\x85"  # real-time jog cancel
    HALT_HAS_REPLY = False

    def _status(self) -> tuple[str, float]:
        return self.link.query(b"?", parse_status, retries=1)

    def _handshake(self) -> None:
        state, _ = self._status()
        if state == "Alarm":
            raise DeviceError(f"{self.name}: GRBL is in Alarm state; home it or unlock with $X, then reconnect")

    def _read_z_um(self) -> float:
        return self._status()[1] * 1000.0

    def _start_move(self, z_um: float) -> None:
        feed_mm_min = self.speed_um_s * 60.0 / 1000.0
        self.link.query(f"$J=G90 G21 Z{z_um / 1000.0:.5f} F{feed_mm_min:.1f}", parse_ok)

    def _query_busy(self) -> bool:
        state, _ = self._status()
        if state in BUSY_STATES:
            return True
        if state == "Idle":
            return False
        raise DeviceError(f"{self.name}: GRBL state {state!r} (neither Idle nor moving)")
