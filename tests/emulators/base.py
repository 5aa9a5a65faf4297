"""Controller emulators on a pseudo-terminal, for driving the real drivers through real pyserial.

``PtyEmulator`` opens a pty pair (``os.openpty``, both ends raw), runs a thread on the master
end and publishes the slave's name through a symlink (``link_path``). The driver opens the
symlink with ``serial.Serial``. ``vanish()`` closes the pty and removes the symlink (the
driver sees EIO, as when a USB adapter is pulled); ``reappear()`` makes a new pty and points
the same symlink at it, so "the same port name" comes back with the motion state kept.

Fault switches: ``mute`` (stop answering), ``stall`` (moves never finish), ``garbage``
(bytes written before the next reply). ``received`` records every command line.

The motion model: a move goes from the current position to the target at ``speed_um_s``;
``position_um`` follows the clock; ``halt()`` freezes it where it is.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from pathlib import Path


class Motion:
    """A one-axis move in um with constant speed, evaluated against the monotonic clock."""

    def __init__(self, start_um: float, speed_um_s: float, travel_um: tuple[float, float]) -> None:
        self._from_um = start_um
        self._to_um = start_um
        self._t0 = time.monotonic()
        self._speed_um_s = speed_um_s
        self.travel_um = travel_um
        self.stall = False
        self._lock = threading.Lock()

    @property
    def speed_um_s(self) -> float:
        return self._speed_um_s

    @speed_um_s.setter
    def speed_um_s(self, value: float) -> None:
        """Change speed from now on (the distance already travelled is kept)."""
        with self._lock:
            self._from_um = self._now_um()
            self._t0 = time.monotonic()
            self._speed_um_s = value

    def _now_um(self) -> float:
        if self.stall:
            return self._from_um
        dt = time.monotonic() - self._t0
        span = self._to_um - self._from_um
        travelled = dt * self._speed_um_s
        if travelled >= abs(span):
            return self._to_um
        return self._from_um + (travelled if span >= 0 else -travelled)

    @property
    def position_um(self) -> float:
        with self._lock:
            return self._now_um()

    @property
    def moving(self) -> bool:
        with self._lock:
            return self._now_um() != self._to_um

    def in_travel(self, target_um: float) -> bool:
        lo, hi = self.travel_um
        return lo <= target_um <= hi

    def move_to(self, target_um: float) -> None:
        with self._lock:
            self._from_um = self._now_um()
            self._to_um = target_um
            self._t0 = time.monotonic()

    def halt(self) -> None:
        with self._lock:
            here = self._now_um()
            self._from_um = self._to_um = here
            self._t0 = time.monotonic()


class PtyEmulator:
    """Base of the controller emulators: framing, pty life cycle and fault switches."""

    EOL_IN: bytes = b"\r"  # what ends a command from the driver
    EOL_OUT: bytes = b"\r"  # what the emulator puts after each reply
    REALTIME: frozenset[int] = frozenset()  # single bytes handled at once (GRBL '?', 0x85)

    def __init__(
        self,
        link_path: Path,
        *,
        start_um: float = 0.0,
        speed_um_s: float = 2000.0,
        travel_um: tuple[float, float] = (-10_000.0, 10_000.0),
    ) -> None:
        self.link_path = Path(link_path)
        self.motion = Motion(start_um, speed_um_s, travel_um)
        self.mute = False
        self.garbage = b""
        self.received: list[str] = []
        self.received_realtime: list[int] = []
        self._master = -1
        self._slave = -1
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._write_lock = threading.Lock()

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> PtyEmulator:
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        self._master, self._slave = master, slave
        if self.link_path.is_symlink() or self.link_path.exists():
            self.link_path.unlink()
        self.link_path.symlink_to(os.ttyname(slave))
        self._running.set()
        self._thread = threading.Thread(target=self._serve, name=f"emulator-{type(self).__name__}", daemon=True)
        self._thread.start()
        self.on_connect()
        return self

    def vanish(self) -> None:
        """Close the pty and remove the symlink: the port is gone."""
        self._running.clear()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        if self.link_path.is_symlink():
            self.link_path.unlink()

    def reappear(self) -> None:
        """A new pty under the same symlink name, motion state kept."""
        self.start()

    def close(self) -> None:
        if self._running.is_set() or self._master >= 0:
            self.vanish()

    # -- I/O -------------------------------------------------------------------------------
    def write(self, text: str) -> None:
        """Send one reply line (after any pending garbage)."""
        data = text.encode("ascii") + self.EOL_OUT
        with self._write_lock:
            if self.garbage:
                data, self.garbage = self.garbage + data, b""
            if self._master >= 0:
                os.write(self._master, data)

    def _serve(self) -> None:
        buffer = bytearray()
        while self._running.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.01)
                chunk = os.read(self._master, 4096) if ready else b""
            except OSError:
                return
            self.tick()
            for byte in chunk:
                if byte in self.REALTIME:
                    self.received_realtime.append(byte)
                    if not self.mute:
                        self.realtime(byte)
                    continue
                buffer.append(byte)
            while (cut := buffer.find(self.EOL_IN)) >= 0:
                line = bytes(buffer[:cut]).decode("ascii", errors="replace").strip()
                del buffer[: cut + len(self.EOL_IN)]
                if not line:
                    continue
                self.received.append(line)
                if not self.mute:
                    self.handle(line)

    # -- protocol hooks ----------------------------------------------------------------------
    def on_connect(self) -> None:
        """Called after (re)start; GRBL greets here."""

    def tick(self) -> None:
        """Called every loop (about every 10 ms); emits unsolicited messages."""

    def realtime(self, byte: int) -> None:
        """A real-time byte arrived."""

    def handle(self, line: str) -> None:
        raise NotImplementedError
