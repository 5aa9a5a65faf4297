"""Prior ProScan III focus axis.

Protocol (docs/hardware.md): 9600 8N1, ``\\r`` both ways. ``COMP 0`` (standard mode, reply
``0``), ``RES,Z`` (um per step), ``PZ`` (position in steps), ``U,<steps>`` / ``D,<steps>``
(relative up / down; ``R`` arrives when the move ends), ``$`` (status bitmask, ``& 4``: Z
busy), ``K`` (halt, reply ``R``), ``E,<n>`` error. ``U`` is taken to increase ``PZ``.
There is no absolute Z move in this command set: an absolute target becomes the relative
move from the position read just before it.
"""

from __future__ import annotations

import re

from drivers.errors import DeviceError
from drivers.serial.stage import SerialFocusStage

__all__ = ["PRIOR_ERRORS", "PriorStage"]

# ProScan error codes as listed in the ProScan III manual (unverified against a unit).
PRIOR_ERRORS: dict[int, str] = {
    1: "no stage",
    2: "not idle",
    3: "no drive",
    4: "string parse error",
    5: "command not found",
    7: "no focus drive",
    8: "value out of range",
}

Z_BUSY_BIT = 4
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?\d+(\.\d*)?([eE][+-]?\d+)?$")


def _error(line: str) -> DeviceError | None:
    match = re.match(r"^E,(\d+)$", line)
    if match is None:
        return None
    code = int(match.group(1))
    return DeviceError(f"Prior controller error {line!r}: {PRIOR_ERRORS.get(code, 'unknown error code')}")


def parse_int(line: str) -> int | None:
    """An integer reply; ``R`` (end-of-move notice) and noise are skipped; ``E,n`` raises."""
    if (err := _error(line)) is not None:
        raise err
    return int(line) if _INT.match(line) else None


def parse_float(line: str) -> float | None:
    if (err := _error(line)) is not None:
        raise err
    return float(line) if _FLOAT.match(line) else None


def parse_zero(line: str) -> bool | None:
    if (err := _error(line)) is not None:
        raise err
    return True if line == "0" else None


class PriorStage(SerialFocusStage):
    """Focus drive on a Prior ProScan III controller."""

    DEFAULT_BAUDRATE = 9600
    EOL_OUT = b"\r"
    HALT = b"K\r"
    HALT_HAS_REPLY = True

    um_per_step: float = 0.1

    def _handshake(self) -> None:
        self.link.query("COMP 0", parse_zero)
        resolution = self.link.query("RES,Z", parse_float, retries=1)
        if not resolution > 0:
            raise DeviceError(f"{self.name}: controller reports Z resolution {resolution!r} um/step")
        self.um_per_step = float(resolution)

    def _read_steps(self) -> int:
        return self.link.query("PZ", parse_int, retries=1)

    def _read_z_um(self) -> float:
        return self._read_steps() * self.um_per_step

    def _start_move(self, z_um: float) -> None:
        delta = round(z_um / self.um_per_step) - self._read_steps()
        if delta == 0:
            return
        command = f"U,{delta}" if delta > 0 else f"D,{-delta}"
        # A move has no immediate acknowledgement (R comes when it ends). The controller answers
        # in order, so a status query right behind it meets an error reply (E,n) first and its
        # parser raises it; an early R (short move) is skipped.
        self.link.send(command)
        self.link.query("$", parse_int, drop_stale=False)

    def _query_busy(self) -> bool:
        return bool(self.link.query("$", parse_int, retries=1) & Z_BUSY_BIT)
