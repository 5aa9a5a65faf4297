"""Emulators of the ASI, Prior, Tango and GRBL focus controllers (protocol: docs/hardware.md).

Each keeps its native units (ASI 0.1 um, Prior steps, Tango um, GRBL mm) so the tests can
check the drivers' unit conversion against what the controller was told.
"""

from __future__ import annotations

import re

from emulators.base import PtyEmulator


class ASIEmulator(PtyEmulator):
    """MS-2000 / Tiger: ``M Z=``, ``R Z=``, ``W Z``, ``/``, ``HALT``; ``:A`` / ``:N-<code>``."""

    EOL_IN = b"\r"
    EOL_OUT = b"\r\n"

    def handle(self, line: str) -> None:
        if line == "W Z":
            self.write(f":A {self.motion.position_um * 10:.1f}")
        elif line == "/":
            self.write("B" if self.motion.moving else "N")
        elif line == "HALT":
            self.motion.halt()
            self.write(":A")
        elif m := re.fullmatch(r"([MR]) Z=([-+]?\d+(?:\.\d*)?)", line):
            value_um = float(m.group(2)) / 10.0
            target = value_um if m.group(1) == "M" else self.motion.position_um + value_um
            if not self.motion.in_travel(target):
                self.write(":N-4")
                return
            self.motion.move_to(target)
            self.write(":A")
        elif re.fullmatch(r"[MR] .*", line):
            self.write(":N-3")
        else:
            self.write(":N-1")


class PriorEmulator(PtyEmulator):
    """ProScan III: ``COMP 0``, ``RES,Z``, ``PZ``, ``U,n``, ``D,n``, ``$``, ``K``; ``R`` at move end."""

    EOL_IN = b"\r"
    EOL_OUT = b"\r"

    def __init__(self, *args: object, um_per_step: float = 0.02, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.um_per_step = um_per_step
        self._move_pending = False

    @property
    def steps(self) -> int:
        return round(self.motion.position_um / self.um_per_step)

    def tick(self) -> None:
        if self._move_pending and not self.motion.moving:
            self._move_pending = False
            if not self.mute:
                self.write("R")

    def handle(self, line: str) -> None:
        if line == "COMP 0":
            self.write("0")
        elif line == "RES,Z":
            self.write(f"{self.um_per_step}")
        elif line == "PZ":
            self.write(str(self.steps))
        elif line == "$":
            self.write(str(4 if self.motion.moving else 0))
        elif line == "K":
            self.motion.halt()
            self._move_pending = False
            self.write("R")
        elif m := re.fullmatch(r"([UD]),(\d+)", line):
            delta = int(m.group(2)) * (1 if m.group(1) == "U" else -1)
            target = (self.steps + delta) * self.um_per_step
            if not self.motion.in_travel(target):
                self.write("E,8")
                return
            self.motion.move_to(target)
            self._move_pending = True
        else:
            self.write("E,5")


class TangoEmulator(PtyEmulator):
    """Tango: ``!autostatus 0``, ``!dim z 1``, ``!moa``/``!mor z``, ``?pos z``, ``?statusaxis``, ``?err``, ``a z``."""

    EOL_IN = b"\r"
    EOL_OUT = b"\r"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.error = 0
        self.dim_um = False
        self.autostatus = True

    def handle(self, line: str) -> None:
        if line == "?err":
            self.write(str(self.error))
            self.error = 0
        elif line == "?pos z":
            value = self.motion.position_um if self.dim_um else self.motion.position_um / 1000.0  # dim 2 = mm
            self.write(f"{value:.4f}")
        elif line == "?statusaxis":
            self.write("@@" + ("M" if self.motion.moving else "@") + "-")
        elif line == "a z":
            self.motion.halt()
        elif line == "!autostatus 0":
            self.autostatus = False
        elif line == "!dim z 1":
            self.dim_um = True
        elif m := re.fullmatch(r"!mo([ar]) z ([-+]?\d+(?:\.\d*)?)", line):
            value = float(m.group(2)) if self.dim_um else float(m.group(2)) * 1000.0
            target = value if m.group(1) == "a" else self.motion.position_um + value
            if not self.motion.in_travel(target):
                self.error = 4
                return
            self.motion.move_to(target)
        else:
            self.error = 20


class GrblEmulator(PtyEmulator):
    """GRBL 1.1: ``$J=G90 G21 Z<mm> F<mm/min>``, real-time ``?`` and jog cancel ``0x85``."""

    EOL_IN = b"\n"
    EOL_OUT = b"\r\n"
    REALTIME = frozenset({ord("?"), 0x85})

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.alarm = False
        self.last_feed_mm_min: float | None = None

    def on_connect(self) -> None:
        self.write("")
        self.write("Grbl 1.1h ['$' for help]")

    def realtime(self, byte: int) -> None:
        if byte == ord("?"):
            state = "Alarm" if self.alarm else ("Jog" if self.motion.moving else "Idle")
            z_mm = self.motion.position_um / 1000.0
            self.write(f"<{state}|MPos:0.000,0.000,{z_mm:.3f}|FS:0,0>")  # GRBL reports 3 decimals
        elif byte == 0x85:
            self.motion.halt()

    def handle(self, line: str) -> None:
        if self.alarm:
            self.write("error:9")
            return
        m = re.fullmatch(r"\$J=G90 G21 Z([-+]?\d+(?:\.\d*)?) F(\d+(?:\.\d*)?)", line)
        if m is None:
            self.write("error:16" if line.startswith("$J=") else "error:1")
            return
        target = float(m.group(1)) * 1000.0
        if not self.motion.in_travel(target):
            self.write("error:15")
            return
        self.last_feed_mm_min = float(m.group(2))
        self.motion.move_to(target)
        self.write("ok")
