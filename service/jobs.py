"""Long operations as jobs: one worker thread each, serialised by the device lock.

A job (autofocus, focus lock, dataset acquisition) takes the ``DeviceLock`` when it is
created; a second job while one holds it is refused with ``BusyError`` naming the running
job (HTTP 409). Cancelling sets the job's ``CancelToken`` (the routine stops at its next step
and stops the stage). Progress callbacks append events that ``GET /jobs/{id}/events``
streams as server-sent events.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from autofocus.cancel import CancelToken
from drivers.errors import BusyError, CancelledError
from service.errors import NotFoundError, problem_for_exception

__all__ = ["TERMINAL", "DeviceLock", "Job", "JobFailedError", "JobManager", "JobStatus"]

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["autofocus", "focus-lock", "acquire", "calibration"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
MAX_EVENTS = 2000  # per job; older events are dropped (the SSE stream starts from what is kept)


class DeviceLock:
    """Serialises everything that moves the stage or snaps the camera.

    Jobs hold it for their whole run; short requests hold it for one move or snap. A short
    request never waits behind a job (it gets ``BusyError`` with the job's id at once), but
    waits up to ``timeout_s`` behind another short request. ``stop`` never takes this lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._job_id: str | None = None
        self._holder = ""

    @property
    def job_id(self) -> str | None:
        """The job holding the device, if any."""
        return self._job_id

    @property
    def locked(self) -> bool:
        return self._lock.locked()

    @contextmanager
    def hold(self, purpose: str, timeout_s: float) -> Iterator[None]:
        """Hold the device for one short operation (``purpose`` shows in busy messages)."""
        job_id = self._job_id
        if job_id is not None:
            raise BusyError(f"cannot {purpose}: job {job_id} is using the device; wait or cancel it", job_id=job_id)
        if not self._lock.acquire(timeout=timeout_s):
            job_id = self._job_id
            raise BusyError(
                f"cannot {purpose}: the device stayed busy ({self._holder or 'another request'}) for {timeout_s:.1f} s",
                job_id=job_id,
            )
        self._holder = purpose
        try:
            yield
        finally:
            self._holder = ""
            self._lock.release()

    def try_hold(self, purpose: str) -> bool:
        """Take the device without waiting; ``release()`` afterwards. ``False`` if it is busy."""
        if not self._lock.acquire(blocking=False):
            return False
        self._holder = purpose
        return True

    def release(self) -> None:
        self._holder = ""
        self._lock.release()

    def acquire_for_job(self, job_id: str, kind: str, timeout_s: float) -> None:
        """Take the device for a job, or raise ``BusyError`` naming the job that has it.

        Refused at once while another job holds the device; a short request (a move, a
        live-view snap) is waited for up to ``timeout_s``.
        """
        holder = self._job_id
        if holder is not None or not self._lock.acquire(timeout=timeout_s):
            holder = self._job_id
            what = f"job {holder}" if holder else (self._holder or "another request")
            raise BusyError(f"cannot start {kind}: {what} is using the device; wait or cancel it", job_id=holder)
        self._job_id = job_id
        self._holder = f"job {job_id}"

    def release_job(self, job_id: str) -> None:
        if self._job_id != job_id:
            raise RuntimeError(f"job {job_id} released a device lock held by {self._job_id}")
        self._job_id = None
        self._holder = ""
        self._lock.release()


class JobFailedError(Exception):
    """Raised by a job's work to fail with ``error`` while still reporting ``result``.

    For example an autofocus run that was refused: the job fails (its ``error`` says why) and
    its ``result`` is the run record.
    """

    def __init__(self, error: BaseException, result: dict[str, Any]) -> None:
        super().__init__(str(error))
        self.error = error
        self.result = result


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Job:
    """One long operation. Fields change only under ``_cond``; read them through ``snapshot()``."""

    id: str
    kind: str
    params: dict[str, Any]
    cancel_token: CancelToken = field(default_factory=CancelToken)
    status: str = "queued"
    created_at: datetime = field(default_factory=_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def snapshot(self) -> dict[str, Any]:
        """JSON-friendly state (the body of ``GET /jobs/{id}``)."""
        with self._cond:
            return {
                "id": self.id,
                "kind": self.kind,
                "status": self.status,
                "params": self.params,
                "created_at": self.created_at.isoformat(),
                "started_at": self.started_at.isoformat() if self.started_at else None,
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "progress": self.progress,
                "result": self.result,
                "error": self.error,
                "cancel_requested": self.cancel_token.cancelled,
            }

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Append an event for SSE listeners and wake them."""
        with self._cond:
            self.events.append({"seq": next(self._seq), "event": event, "data": data, "time": time.time()})
            if len(self.events) > MAX_EVENTS:
                del self.events[: len(self.events) - MAX_EVENTS]
            self._cond.notify_all()

    def report(self, message: dict[str, Any]) -> None:
        """A progress message from the work: kept as ``progress`` and sent as a ``progress`` event."""
        with self._cond:
            self.progress = message
        self.emit("progress", message)

    def events_after(self, seq: int) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e["seq"] > seq]

    def wait_for_event(self, seq: int, timeout_s: float) -> bool:
        """Block until an event newer than ``seq`` exists or the job is done; ``True`` if so."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self.done or (bool(self.events) and self.events[-1]["seq"] > seq), timeout=timeout_s
            )

    def wait(self, timeout_s: float) -> bool:
        """Block until the job finished; ``True`` if it did."""
        with self._cond:
            return self._cond.wait_for(lambda: self.done, timeout=timeout_s)


# A job's work: gets the job (for its cancel token and progress), returns the result dict.
Work = Callable[[Job], dict[str, Any]]
# Called once in the worker thread after the work ended (any outcome), before the job is marked done.
Finisher = Callable[[Job, dict[str, Any] | None, BaseException | None], None]


class JobManager:
    """Creates, runs, finds and cancels jobs; keeps the last ``history`` finished ones."""

    def __init__(
        self,
        device_lock: DeviceLock,
        history: int,
        lock_timeout_s: float,
        on_job_done: Callable[[Job], None] | None = None,
    ) -> None:
        self.device_lock = device_lock
        self.history = history
        self.lock_timeout_s = lock_timeout_s
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self.on_job_done = on_job_done

    def start(self, kind: str, params: dict[str, Any], work: Work, finish: Finisher | None = None) -> Job:
        """Take the device, create the job and start its worker thread (``BusyError`` if busy)."""
        job = Job(id=uuid.uuid4().hex[:12], kind=kind, params=params)
        self.device_lock.acquire_for_job(job.id, kind, self.lock_timeout_s)
        try:
            with self._lock:
                self._jobs[job.id] = job
                self._trim()
            thread = threading.Thread(
                target=self._run, args=(job, work, finish), name=f"job-{kind}-{job.id}", daemon=True
            )
            self._threads[job.id] = thread
            job.emit("status", {"status": "queued"})
            thread.start()
        except BaseException:
            self.device_lock.release_job(job.id)
            raise
        return job

    def _run(self, job: Job, work: Work, finish: Finisher | None) -> None:
        with job._cond:
            job.status = "running"
            job.started_at = _now()
        job.emit("status", {"status": "running"})
        result: dict[str, Any] | None = None
        error: BaseException | None = None
        try:
            result = work(job)
        except JobFailedError as failure:
            error, result = failure.error, failure.result
        except BaseException as exc:
            error = exc
            if problem_for_exception(exc, "") is None:
                log.exception("job %s (%s) failed unexpectedly", job.id, job.kind)
            elif not isinstance(exc, CancelledError):
                log.warning("job %s (%s) failed: %s", job.id, job.kind, exc)
        try:
            if finish is not None:
                finish(job, result, error)
        except Exception as exc:
            log.exception("recording the end of job %s failed", job.id)
            error = error or exc
        finally:
            self.device_lock.release_job(job.id)
            self._mark_done(job, result, error)
            self._threads.pop(job.id, None)

    def _mark_done(self, job: Job, result: dict[str, Any] | None, error: BaseException | None) -> None:
        instance = f"/jobs/{job.id}"
        with job._cond:
            job.finished_at = _now()
            if error is None:
                job.status = "cancelled" if job.cancel_token.cancelled and result is None else "succeeded"
                job.result = result
            elif isinstance(error, CancelledError):
                job.status = "cancelled"
                job.result = result
                job.error = problem_for_exception(error, instance)
            else:
                job.status = "failed"
                job.result = result
                job.error = problem_for_exception(error, instance) or {
                    "type": "urn:ldse-autofocus:problem:internal",
                    "title": "Internal error",
                    "status": 500,
                    "detail": f"{type(error).__name__}: {error}",
                    "instance": instance,
                }
        job.emit("done", job.snapshot())
        if self.on_job_done is not None:
            self.on_job_done(job)

    def _trim(self) -> None:
        finished = [jid for jid, j in self._jobs.items() if j.done]
        for jid in finished[: max(0, len(finished) - self.history)]:
            del self._jobs[jid]

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no job with id {job_id!r} (finished jobs are kept for the last {self.history})")
        return job

    def list(self) -> list[Job]:
        with self._lock:
            return list(reversed(self._jobs.values()))

    def active(self) -> Job | None:
        """The job holding the device, if any."""
        job_id = self.device_lock.job_id
        if job_id is None:
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str, reason: str = "cancelled on request") -> Job:
        """Ask a job to stop at its next step (no effect on a finished job)."""
        job = self.get(job_id)
        if not job.done:
            job.cancel_token.cancel(reason)
            job.emit("status", {"status": job.status, "cancel_requested": True})
        return job

    def shutdown(self, timeout_s: float) -> None:
        """Cancel every running job and wait up to ``timeout_s`` for their threads."""
        for job in self.list():
            if not job.done:
                job.cancel_token.cancel("service shutting down")
        deadline = time.monotonic() + timeout_s
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
