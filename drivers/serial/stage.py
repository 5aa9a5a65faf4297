"""``SerialFocusStage``: what every serial focus drive shares (link, reconnect, halt).

A protocol driver fills four hooks: ``_handshake`` (set units/modes after every (re)connect),
``_read_z_um``, ``_start_move`` (absolute target in um) and ``_query_busy``, plus the class
constants ``DEFAULT_BAUDRATE``, ``EOL_OUT``, ``HALT`` and ``HALT_HAS_REPLY``.

Reconnect rule (docs/hardware.md): after the link was lost, the next call reopens the same
port name, redoes the handshake and re-reads the position; only then are moves accepted.
If the port is still gone, the call raises ``ConnectionLostError`` and the next one retries.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from drivers.base import FocusStage
from drivers.errors import ConnectionLostError
from drivers.serial.link import SerialLink

__all__ = ["SerialFocusStage"]


class SerialFocusStage(FocusStage):
    """A focus drive on a serial port. The port is a member (``self.link``), guarded by its lock."""

    DEFAULT_BAUDRATE: ClassVar[int] = 9600
    EOL_OUT: ClassVar[bytes] = b"\r"
    HALT: ClassVar[bytes] = b""
    HALT_HAS_REPLY: ClassVar[bool] = True

    def __init__(
        self,
        port: str,
        *,
        baudrate: int | None = None,
        timeout_s: float = 1.0,
        limits_um: tuple[float, float],
        max_step_um: float,
        direction: int = 1,
        speed_um_s: float = 1000.0,
        settle_ms: float = 0.0,
        name: str | None = None,
    ) -> None:
        label = name or f"{type(self).__name__}:{port}"
        super().__init__(
            label,
            limits_um=limits_um,
            max_step_um=max_step_um,
            direction=direction,
            speed_um_s=speed_um_s,
            settle_ms=settle_ms,
        )
        self.link = SerialLink(
            port,
            baudrate=baudrate if baudrate is not None else self.DEFAULT_BAUDRATE,
            eol_out=self.EOL_OUT,
            timeout_s=timeout_s,
            name=label,
        )
        self._position_verified = False

    # -- connection ------------------------------------------------------------------------
    def _do_open(self) -> None:
        self.link.open()
        try:
            self._connect_sequence()
        except BaseException:
            self.link.close()
            raise

    def _connect_sequence(self) -> None:
        self._position_verified = False
        self._handshake()
        z = self._read_z_um()
        self._position_verified = True
        self.log.info("connected on %s; position %.3f um", self.link.port, z)

    def _do_close(self) -> None:
        self._position_verified = False
        self.link.close()

    def _ensure_link(self) -> None:
        """Reconnect after a lost link: reopen, handshake, re-read the position."""
        if not self.link.is_lost and self.link.is_open:
            return
        self._position_verified = False
        self.log.warning("reconnecting to %s", self.link.port)
        self.link.reopen()
        self._connect_sequence()

    # -- FocusStage hooks ------------------------------------------------------------------
    def _do_get_z_um(self) -> float:
        self._ensure_link()
        return self._read_z_um()

    def _do_move_to(self, z_um: float) -> None:
        self._ensure_link()
        if not self._position_verified:
            raise ConnectionLostError(f"{self.name}: position not re-read after a reconnect; move refused")
        self._start_move(z_um)

    def _do_is_busy(self) -> bool:
        self._ensure_link()
        return self._query_busy()

    def _do_stop(self) -> None:
        """Write the halt bytes straight away (no exchange lock); see ``SerialLink.write_urgent``."""
        self.link.write_urgent(self.HALT, expects_reply=self.HALT_HAS_REPLY)

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info.update(port=self.link.port, baudrate=self.link.baudrate, reconnects=self.link.reconnects)
        return info

    # -- protocol hooks --------------------------------------------------------------------
    @abstractmethod
    def _handshake(self) -> None:
        """Put the controller into the mode this driver speaks (units, no auto-status, ...)."""

    @abstractmethod
    def _read_z_um(self) -> float: ...

    @abstractmethod
    def _start_move(self, z_um: float) -> None:
        """Start an absolute move to ``z_um`` (the base class polls busy afterwards)."""

    @abstractmethod
    def _query_busy(self) -> bool: ...
