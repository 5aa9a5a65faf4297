"""A locked serial link: one command/reply exchange at a time, urgent writes beside it.

``SerialLink`` owns a ``serial.Serial`` (a member of the stage driver, not its parent class).

- ``query(command, parse)`` sends one line and reads reply lines until ``parse`` accepts one.
  ``parse(line)`` returns the value, ``None`` for a line that is not a reply to this command
  (noise, a late acknowledgement), or raises ``DeviceError`` for a controller error reply.
  Exchanges are serialised by ``_lock``.
- ``write_urgent(data)`` writes bytes (a halt) without taking ``_lock``: it takes only the small
  ``_write_lock`` that guards every single ``write`` call, so a stop never waits for a move's
  or a query's exchange to end. The controller's reply to the urgent command (if any) is read
  and dropped before the next exchange.
- Any ``SerialException`` / ``OSError`` marks the link lost, closes the port and raises
  ``ConnectionLostError``; ``reopen()`` opens the same port name again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import serial

from drivers.errors import ConnectionLostError, DeviceError, DeviceTimeoutError, NotConnectedError

__all__ = ["SerialLink"]

T = TypeVar("T")

_POLL_S = 0.02  # pyserial read timeout; bounds how long a read blocks between deadline checks
_TERMINATORS = (b"\r", b"\n")


class SerialLink:
    """A serial port guarded by a lock, with line framing, reply timeouts and loss detection."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int,
        eol_out: bytes,
        timeout_s: float = 1.0,
        name: str = "serial",
    ) -> None:
        if not port:
            raise ValueError("port must name a serial device, e.g. /dev/ttyUSB0")
        if baudrate <= 0:
            raise ValueError(f"baudrate must be positive, got {baudrate!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.port = port
        self.baudrate = int(baudrate)
        self.eol_out = eol_out
        self.timeout_s = float(timeout_s)
        self.log = logging.getLogger(f"drivers.serial.link.{name}")
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._serial: serial.Serial | None = None
        self._rx = bytearray()
        self._lost = False
        self._urgent_pending = 0
        self.reconnects = 0

    # -- connection ------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._serial is not None

    @property
    def is_lost(self) -> bool:
        """True after a fault closed the port; ``reopen()`` tries again."""
        return self._lost

    def open(self) -> None:
        """Open the port (8N1, the configured baud rate). ``ConnectionLostError`` if it cannot."""
        with self._lock:
            self._open_locked()

    def _open_locked(self) -> None:
        if self._serial is not None:
            return
        try:
            port = serial.Serial(
                port=self.port,
                baudrate=self.baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                timeout=_POLL_S,
                write_timeout=self.timeout_s,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            self._lost = True
            raise ConnectionLostError(f"cannot open serial port {self.port!r}: {exc}") from exc
        self._serial = port
        self._rx.clear()
        self._lost = False
        self._urgent_pending = 0
        port.reset_input_buffer()
        self.log.info("opened %s at %d baud", self.port, self.baudrate)

    def reopen(self) -> None:
        """Close whatever is left and open the same port name again."""
        with self._lock:
            self._close_locked()
            self._open_locked()
            self.reconnects += 1

    def close(self) -> None:
        with self._lock:
            self._close_locked()
            self._lost = False

    def _close_locked(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as exc:  # closing a vanished device
                self.log.warning("closing %s: %s", self.port, exc)

    def _lose(self, exc: BaseException, doing: str) -> ConnectionLostError:
        self._lost = True
        self._close_locked()
        self.log.error("link to %s lost while %s: %s", self.port, doing, exc)
        return ConnectionLostError(f"serial link {self.port!r} lost while {doing}: {exc}")

    def _port(self) -> serial.Serial:
        if self._serial is None:
            if self._lost:
                raise ConnectionLostError(f"serial link {self.port!r} is lost; reconnect first")
            raise NotConnectedError(f"serial link {self.port!r} is not open")
        return self._serial

    # -- writing ---------------------------------------------------------------------------
    def _write(self, data: bytes, doing: str) -> None:
        port = self._port()
        try:
            with self._write_lock:
                port.write(data)
                port.flush()
        except (serial.SerialException, OSError) as exc:
            raise self._lose(exc, doing) from exc

    def write_urgent(self, data: bytes, *, expects_reply: bool) -> None:
        """Write ``data`` now, without waiting for an exchange in progress (halt, e-stop)."""
        port = self._serial
        if port is None:
            raise ConnectionLostError(f"serial link {self.port!r} is not connected; cannot send {data!r}")
        try:
            with self._write_lock:
                port.write(data)
                port.flush()
        except (serial.SerialException, OSError) as exc:
            self._lost = True
            raise ConnectionLostError(f"serial link {self.port!r} lost while sending {data!r}: {exc}") from exc
        if expects_reply:
            self._urgent_pending += 1

    # -- reading ---------------------------------------------------------------------------
    def _read_line(self, deadline: float, doing: str) -> str | None:
        """The next non-empty line before ``deadline`` (``None`` if none came)."""
        port = self._port()
        while True:
            cut = min((i for i in (self._rx.find(t) for t in _TERMINATORS) if i >= 0), default=-1)
            if cut >= 0:
                raw = bytes(self._rx[:cut])
                del self._rx[: cut + 1]
                if raw.strip():
                    return raw.decode("ascii", errors="replace").strip()
                continue
            if time.monotonic() > deadline:
                return None
            try:
                chunk = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError) as exc:
                raise self._lose(exc, doing) from exc
            self._rx.extend(chunk)

    def _discard_input(self) -> None:
        """Drop unread input; wait briefly for replies to urgent commands first."""
        if self._urgent_pending:
            deadline = time.monotonic() + min(0.2, self.timeout_s)
            while self._urgent_pending and (line := self._read_line(deadline, "draining")) is not None:
                self.log.debug("dropped reply to urgent command: %r", line)
                self._urgent_pending -= 1
            self._urgent_pending = 0
        port = self._port()
        try:
            waiting = port.in_waiting
            stale = bytes(self._rx) + (port.read(waiting) if waiting else b"")
        except (serial.SerialException, OSError) as exc:
            raise self._lose(exc, "draining input") from exc
        self._rx.clear()
        if stale.strip():
            self.log.debug("dropped stale input %r", stale)

    # -- exchanges -------------------------------------------------------------------------
    def send(self, command: str | bytes) -> None:
        """Send one command that has no reply (its end of line is added for ``str``)."""
        data = command if isinstance(command, bytes) else command.encode("ascii") + self.eol_out
        with self._lock:
            self._discard_input()
            self._write(data, f"sending {data!r}")

    def query(
        self,
        command: str | bytes,
        parse: Callable[[str], T | None],
        *,
        timeout_s: float | None = None,
        retries: int = 0,
        drop_stale: bool = True,
    ) -> T:
        """Send ``command`` and return ``parse`` of the first reply line it accepts.

        Lines ``parse`` rejects (``None``) are logged and skipped. With ``retries`` (only for
        idempotent queries) the command is sent again after a timeout or unparseable reply.
        ``drop_stale=False`` keeps input that arrived before (a late error reply to a command
        that has no immediate acknowledgement), so ``parse`` sees it first.
        """
        data = command if isinstance(command, bytes) else command.encode("ascii") + self.eol_out
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            skipped: list[str] = []
            for attempt in range(retries + 1):
                if drop_stale or attempt > 0:
                    self._discard_input()
                self._write(data, f"sending {data!r}")
                deadline = time.monotonic() + wait_s
                while (line := self._read_line(deadline, f"waiting for the reply to {data!r}")) is not None:
                    value = parse(line)
                    if value is not None:
                        return value
                    skipped.append(line)
                    self.log.warning("ignored unexpected line %r (reply to %r expected)", line, data)
            if skipped:
                raise DeviceError(
                    f"no valid reply to {data!r} on {self.port!r} within {wait_s:.2f} s; got {skipped[-3:]!r}"
                )
            raise DeviceTimeoutError(f"no reply to {data!r} on {self.port!r} within {wait_s:.2f} s")
