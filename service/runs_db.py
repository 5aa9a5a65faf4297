"""A record of every autofocus run in an embedded SQLite database (stdlib ``sqlite3``).

One row per run, whatever its outcome (converged, refused, failed, cancelled), written when the
run ends. The file survives restarts; ``GET /runs`` pages through it newest first.
Every call opens its own short-lived connection, so worker threads and request threads never
share one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["RunRow", "RunsDB"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    time         TEXT    NOT NULL,
    routine      TEXT    NOT NULL,
    job_id       TEXT,
    start_z_um   REAL,
    estimate_um  REAL,
    confidence   REAL,
    final_z_um   REAL,
    frames_used  INTEGER,
    duration_s   REAL,
    outcome      TEXT    NOT NULL,
    message      TEXT,
    record_json  TEXT
);
CREATE INDEX IF NOT EXISTS runs_time ON runs (time);
CREATE INDEX IF NOT EXISTS runs_outcome ON runs (outcome);
"""

_COLUMNS = (
    "id",
    "time",
    "routine",
    "job_id",
    "start_z_um",
    "estimate_um",
    "confidence",
    "final_z_um",
    "frames_used",
    "duration_s",
    "outcome",
    "message",
)


@dataclass(frozen=True)
class RunRow:
    """One autofocus run as stored."""

    id: int
    time: str
    routine: str
    job_id: str | None
    start_z_um: float | None
    estimate_um: float | None
    confidence: float | None
    final_z_um: float | None
    frames_used: int | None
    duration_s: float | None
    outcome: str
    message: str | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COLUMNS}


def _float_or_none(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


class RunsDB:
    """The runs table in ``path`` (created with its folder if missing)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        with self._connect() as db:
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()

    def add(
        self,
        *,
        routine: str,
        outcome: str,
        job_id: str | None = None,
        time: datetime | None = None,
        start_z_um: float | None = None,
        estimate_um: float | None = None,
        confidence: float | None = None,
        final_z_um: float | None = None,
        frames_used: int | None = None,
        duration_s: float | None = None,
        message: str | None = None,
        record: dict[str, Any] | None = None,
    ) -> int:
        """Store one run; returns its id."""
        when = (time or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")
        with self._write_lock, self._connect() as db:
            cursor = db.execute(
                "INSERT INTO runs (time, routine, job_id, start_z_um, estimate_um, confidence, final_z_um, "
                "frames_used, duration_s, outcome, message, record_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    when,
                    routine,
                    job_id,
                    _float_or_none(start_z_um),
                    _float_or_none(estimate_um),
                    _float_or_none(confidence),
                    _float_or_none(final_z_um),
                    int(frames_used) if frames_used is not None else None,
                    _float_or_none(duration_s),
                    outcome,
                    message,
                    json.dumps(record, default=str) if record is not None else None,
                ),
            )
            return int(cursor.lastrowid or 0)

    def query(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        routine: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[list[RunRow], int]:
        """Rows newest first matching every filter given, and the total count of matches."""
        where: list[str] = []
        params: list[Any] = []
        if routine is not None:
            where.append("routine = ?")
            params.append(routine)
        if outcome is not None:
            where.append("outcome = ?")
            params.append(outcome)
        if since is not None:
            where.append("time >= ?")
            params.append(since.astimezone(UTC).isoformat(timespec="milliseconds"))
        if until is not None:
            where.append("time < ?")
            params.append(until.astimezone(UTC).isoformat(timespec="milliseconds"))
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self._connect() as db:
            total = int(db.execute(f"SELECT COUNT(*) FROM runs{clause}", params).fetchone()[0])
            rows = db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM runs{clause} ORDER BY id DESC LIMIT ? OFFSET ?",
                [*params, int(limit), int(offset)],
            ).fetchall()
        return [RunRow(*row) for row in rows], total

    def get(self, run_id: int) -> tuple[RunRow, dict[str, Any] | None] | None:
        """One run and its full record (as the routine returned it), or ``None``."""
        with self._connect() as db:
            row = db.execute(
                f"SELECT {', '.join(_COLUMNS)}, record_json FROM runs WHERE id = ?", (int(run_id),)
            ).fetchone()
        if row is None:
            return None
        record = json.loads(row[-1]) if row[-1] else None
        return RunRow(*row[:-1]), record
