"""Jobs: list, read, cancel, and stream progress as server-sent events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from service.deps import QueryKeyReadAccess, ReadAccess, State, WriteAccess
from service.errors import problem_responses
from service.jobs import Job
from service.schemas import JobOut
from service.state import ServiceState, finite

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[str, Path(description="the job id from POST /autofocus, /focus-lock or /datasets/acquire")]
KEEPALIVE_S = 15.0
POLL_S = 0.1


@router.get(
    "",
    response_model=list[JobOut],
    summary="Jobs, newest first (running and the last finished ones)",
    dependencies=[ReadAccess],
    responses=problem_responses(401),
)
def list_jobs(state: State) -> list[dict[str, Any]]:
    return [finite(job.snapshot()) for job in state.jobs.list()]


@router.get(
    "/{job_id}",
    response_model=JobOut,
    summary="A job's status, progress, result or error",
    dependencies=[ReadAccess],
    responses=problem_responses(401, 404),
)
def get_job(job_id: JobId, state: State) -> dict[str, Any]:
    return finite(state.jobs.get(job_id).snapshot())


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    summary="Cancel a job: it stops at its next step and stops the stage",
    dependencies=[WriteAccess],
    responses=problem_responses(401, 404),
)
def cancel_job(
    job_id: JobId,
    state: State,
    wait_s: Annotated[float, Query(ge=0, le=60, description="wait up to this long for the job to end")] = 0.0,
) -> dict[str, Any]:
    job = state.jobs.cancel(job_id, "cancelled by DELETE /jobs/{id}")
    if wait_s > 0:
        job.wait(wait_s)
    return finite(job.snapshot())


def _sse(event: dict[str, Any]) -> str:
    data = json.dumps(finite(event["data"]), separators=(",", ":"))
    return f"id: {event['seq']}\nevent: {event['event']}\ndata: {data}\n\n"


async def _event_stream(request: Request, state: ServiceState, job: Job, after: int) -> AsyncIterator[str]:
    seq = after
    last_sent = time.monotonic()
    yield "retry: 2000\n\n"
    while not state.shutting_down.is_set():
        for event in job.events_after(seq):
            seq = event["seq"]
            last_sent = time.monotonic()
            yield _sse(event)
        if job.done and not job.events_after(seq):
            return
        if await request.is_disconnected():
            return
        if time.monotonic() - last_sent > KEEPALIVE_S:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)


_EVENTS_DOCS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "server-sent events: `status`, `progress` (the routine's messages) and a final `done` "
        "carrying the job (as GET /jobs/{id}); the stream ends after `done`",
    },
    **problem_responses(401, 404),
}


@router.get(
    "/{job_id}/events",
    summary="Progress of a job as server-sent events (text/event-stream)",
    dependencies=[QueryKeyReadAccess],
    response_class=StreamingResponse,
    responses=_EVENTS_DOCS,
)
async def job_events(
    job_id: JobId,
    request: Request,
    state: State,
    last_event_id: Annotated[
        int | None, Header(ge=0, description="resume after this event id (sent by EventSource on reconnect)")
    ] = None,
) -> StreamingResponse:
    job = await run_in_threadpool(state.jobs.get, job_id)
    return StreamingResponse(
        _event_stream(request, state, job, last_event_id or 0),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
