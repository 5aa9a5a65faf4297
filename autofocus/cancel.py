"""``CancelToken``: a thread-safe flag that long routines check between their steps.

A routine never stops a device in the middle of a command because of a cancel request; it
checks the token between steps (before each move, snap or prediction) and raises
``drivers.errors.CancelledError`` there, after which the routine stops the stage.
"""

from __future__ import annotations

import threading

from drivers.errors import CancelledError

__all__ = ["CancelToken"]


class CancelToken:
    """Set once by ``cancel()`` (from any thread); read by the routine between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason = "cancelled"

    def cancel(self, reason: str = "cancelled on request") -> None:
        """Ask the routine to stop at its next step; the first reason given is kept."""
        if not self._event.is_set():
            self._reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str | None:
        """Why the token was cancelled, or ``None`` while it is not."""
        return self._reason if self._event.is_set() else None

    def raise_if_cancelled(self, step: str | None = None) -> None:
        """Raise ``CancelledError`` (naming ``step`` when given) if ``cancel()`` was called."""
        if self._event.is_set():
            where = f" before {step}" if step else ""
            raise CancelledError(f"{self._reason}{where}")

    def wait(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` (real time) or until cancelled; return ``cancelled``."""
        return self._event.wait(timeout_s)
