"""POST /autofocus: run a routine as a job and record the run."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Response

from autofocus.routines import AutofocusRecord, run_autofocus
from drivers.errors import LimitError, UnreliableEstimateError
from service.deps import State, WriteAccess
from service.errors import problem_responses
from service.jobs import Job, JobFailedError
from service.schemas import AutofocusRequest, JobOut, check_bit_depth
from service.state import ServiceState, finite

__all__ = ["JOB_CREATED_DOCS", "accepted", "router"]

router = APIRouter(tags=["autofocus"])
log = logging.getLogger(__name__)

JOB_CREATED_DOCS: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "job created; poll the Location (GET /jobs/{id}) or stream GET /jobs/{id}/events",
        "headers": {"Location": {"description": "/jobs/{id}", "schema": {"type": "string"}}},
    },
}


def accepted(response: Response, job: Job) -> dict[str, Any]:
    """202 with ``Location: /jobs/{id}`` and the job's snapshot."""
    response.status_code = 202
    response.headers["Location"] = f"/jobs/{job.id}"
    return finite(job.snapshot())


def _residual_um(record: dict[str, Any]) -> float | None:
    """The model's last estimate of the run (what it still saw after its moves)."""
    estimates = record.get("estimates") or []
    if not estimates:
        return None
    value = estimates[-1].get("defocus_um")
    return float(value) if isinstance(value, int | float) else None


def _record_run(state: ServiceState, job: Job, record: dict[str, Any] | None, error: BaseException | None) -> None:
    """Store the run in the database and count it in the metrics, whatever its outcome."""
    routine = str(job.params["routine"])
    if record is None:  # the routine raised before its first progress message
        record = {"routine": routine, "outcome": "cancelled" if job.cancel_token.cancelled else "failed"}
    outcome = str(record.get("outcome") or ("failed" if error else "unknown"))
    message = record.get("message") or (f"{type(error).__name__}: {error}" if error else None)
    state.runs.add(
        routine=routine,
        outcome=outcome,
        job_id=job.id,
        start_z_um=record.get("start_z_um"),
        estimate_um=record.get("estimate_um"),
        confidence=record.get("confidence"),
        final_z_um=record.get("final_z_um"),
        frames_used=record.get("frames_used"),
        duration_s=record.get("duration_s"),
        message=message,
        record=finite(record),
    )
    state.metrics.record_autofocus(
        routine, outcome, record.get("duration_s"), record.get("frames_used"), _residual_um(record)
    )


@router.post(
    "/autofocus",
    status_code=202,
    response_model=JobOut,
    summary="Start an autofocus run (oneshot | hybrid | zscan) as a job",
    dependencies=[WriteAccess],
    responses={**JOB_CREATED_DOCS, **problem_responses(401, 409, 422, 503)},
)
def autofocus(request: AutofocusRequest, response: Response, state: State) -> dict[str, Any]:
    scope = state.simulator
    sim_clock = (lambda: float(scope.time_s)) if scope is not None else None
    routine = request.routine
    options = request.options
    check_bit_depth(options.bit_depth, state.camera.bit_depth)
    calibration = state.calibration_for(request.use_calibration and routine != "zscan", options.focus_offset_um)
    last_record: dict[str, Any] = {}

    def work(job: Job) -> dict[str, Any]:
        def progress(message: dict[str, Any]) -> None:
            if "record" in message:
                last_record.clear()
                last_record.update(message["record"])
            job.report(finite(message))

        record: AutofocusRecord = run_autofocus(
            routine,
            state.camera,
            state.hardware.focus_stage,
            state.predictor,
            options,
            cancel=job.cancel_token,
            progress=progress,
            calibration=calibration,
            sim_clock=sim_clock,
        )
        result = finite(record.to_dict())
        last_record.clear()
        last_record.update(result)
        truth = state.simulated_truth()
        if truth is not None:
            result["simulated_truth_defocus_um"] = truth["defocus_um"]
        if record.outcome == "refused":
            # A refusal fails the job; its error says why (422: limits or unreliable estimate).
            try:
                record.raise_for_outcome()
            except (LimitError, UnreliableEstimateError) as exc:
                raise JobFailedError(exc, result) from exc
        return result

    def finish(job: Job, result: dict[str, Any] | None, error: BaseException | None) -> None:
        _record_run(state, job, dict(last_record) or result, error)

    params = {
        "routine": routine,
        "options": finite(_options_dict(options)),
        "calibration": calibration.summary() if calibration is not None else None,
    }
    job = state.jobs.start("autofocus", params, work, finish)
    return accepted(response, job)


def _options_dict(options: Any) -> dict[str, Any]:
    return asdict(options)
