"""ASI MS-2000 / Tiger focus axis (Z).

Protocol (docs/hardware.md): 115200 8N1 (MS-2000 also 9600/19200/28800), commands end with
``\\r``, replies with ``\\r\\n``. Positions in units of 0.1 um. ``M Z=<n>`` absolute move,
``R Z=<n>`` relative, ``W Z`` where (``:A 1234.5``), ``/`` status (``B`` busy, ``N`` idle),
``HALT`` stop. ``:A`` acknowledges, ``:N-<code>`` is an error.
"""

from __future__ import annotations

import re

from drivers.errors import DeviceError
from drivers.serial.stage import SerialFocusStage

__all__ = ["ASI_ERRORS", "ASIStage"]

UNITS_PER_UM = 10.0  # ASI positions are in tenths of a micrometre

ASI_ERRORS: dict[int, str] = {
    1: "unknown command",
    2: "unrecognised axis parameter",
    3: "missing parameters",
    4: "parameter out of range",
    5: "operation failed",
    6: "undefined error",
    7: "invalid card address",
}

_NUMBER = re.compile(r"^[+-]?\d+(\.\d*)?$")


def _error(line: str) -> DeviceError | None:
    if not line.startswith(":N"):
        return None
    match = re.match(r"^:N-?(\d+)", line)
    code = int(match.group(1)) if match else -1
    return DeviceError(f"ASI controller error {line!r}: {ASI_ERRORS.get(code, 'unknown error code')}")


def parse_ack(line: str) -> bool | None:
    """``:A`` -> True; ``:N-<code>`` -> DeviceError; anything else is not our reply."""
    if (err := _error(line)) is not None:
        raise err
    return True if line == ":A" or line.startswith(":A ") else None


def parse_position(line: str) -> float | None:
    """``:A 1234.5`` -> 123.45 um."""
    if (err := _error(line)) is not None:
        raise err
    if not line.startswith(":A"):
        return None
    value = line[2:].strip()
    return float(value) / UNITS_PER_UM if _NUMBER.match(value) else None


def parse_status(line: str) -> bool | None:
    """``B`` -> busy, ``N`` -> idle."""
    if (err := _error(line)) is not None:
        raise err
    return {"B": True, "N": False}.get(line)


class ASIStage(SerialFocusStage):
    """Z axis of an ASI MS-2000 or Tiger controller."""

    DEFAULT_BAUDRATE = 115200
    EOL_OUT = b"\r"
    HALT = b"HALT\r"
    HALT_HAS_REPLY = True

    def _handshake(self) -> None:
        """ASI needs no mode setting; the position read that follows proves the link."""

    def _read_z_um(self) -> float:
        return self.link.query("W Z", parse_position, retries=1)

    def _start_move(self, z_um: float) -> None:
        self.link.query(f"M Z={z_um * UNITS_PER_UM:.1f}", parse_ack)

    def _query_busy(self) -> bool:
        return self.link.query("/", parse_status, retries=1)
