"""Health, readiness, status and Prometheus metrics."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from drivers.errors import AutofocusError
from service.deps import ReadAccess, State
from service.errors import NotFoundError, problem_responses
from service.metrics import CONTENT_TYPE
from service.schemas import Health, Readiness, StatusOut
from service.state import ServiceState, finite

__all__ = ["focus_lock_state", "router", "stage_info"]

router = APIRouter(tags=["system"])
log = logging.getLogger(__name__)


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _readiness(state: ServiceState) -> dict[str, bool]:
    hw = state.hardware
    return {
        "camera_open": hw.camera.is_open,
        "focus_stage_open": hw.focus_stage.is_open,
        "model_loaded": state.predictor is not None,
        "accepting_work": not state.shutting_down.is_set(),
    }


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: devices open and the model loaded",
    responses={503: {"model": Readiness, "description": "not ready (see checks)"}},
)
def readyz(state: State) -> Any:
    checks = _readiness(state)
    body = {"ready": all(checks.values()), "checks": checks}
    return body if body["ready"] else JSONResponse(body, status_code=503)


def stage_info(state: ServiceState) -> dict[str, Any]:
    stage = state.hardware.focus_stage
    return {
        "z_um": stage.z_um,
        "limits_um": list(stage.limits_um),
        "max_step_um": stage.max_step_um,
        "direction": stage.direction,
        "busy": stage.is_busy(),
    }


def focus_lock_state(state: ServiceState) -> dict[str, Any]:
    job_id = state.focus_lock_job_id
    job = None
    if job_id is not None:
        try:
            job = state.jobs.get(job_id).snapshot()
        except NotFoundError:  # dropped from the job history
            job = None
    active = job is not None and job["status"] in ("queued", "running")
    return {"active": active, "job_id": job_id if active else None, "job": finite(job) if job else None}


@router.get(
    "/status",
    response_model=StatusOut,
    summary="Devices, Z and limits, the busy job, the model (and on the simulator the ground truth)",
    dependencies=[ReadAccess],
    responses=problem_responses(401),
)
def status(state: State) -> dict[str, Any]:
    try:
        stage: dict[str, Any] | None = stage_info(state)
    except AutofocusError as exc:
        log.warning("status: could not read the stage: %s", exc)
        stage = None
    busy = state.jobs.active()
    checks = _readiness(state)
    return finite(
        {
            "ready": all(checks.values()),
            "uptime_s": time.monotonic() - state.started_monotonic_s,
            "devices": state.hardware.describe(),
            "stage": stage,
            "busy_job": busy.snapshot() if busy is not None else None,
            "focus_lock": focus_lock_state(state),
            "model": state.model_info(),
            "calibration": state.calibration.summary() if state.calibration is not None else None,
            "last_prediction": state.last_prediction,
            "last_device_error": state.last_device_error,
            "read_requires_key": state.settings.read_requires_key,
            "simulated_truth": state.simulated_truth(),
        }
    )


_METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format 0.0.4"},
    **problem_responses(401),
}


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics (text format)",
    dependencies=[ReadAccess],
    responses=_METRICS_RESPONSES,
)
def metrics(state: State) -> PlainTextResponse:
    live: list[tuple[str, str, list[tuple[tuple[tuple[str, str], ...], float]]]] = []
    try:
        live.append(("autofocus_stage_z_um", "Focus stage position (um)", [((), state.hardware.focus_stage.z_um)]))
    except AutofocusError as exc:
        log.warning("metrics: could not read the stage: %s", exc)
    busy = state.jobs.active()
    live.append(("autofocus_job_running", "1 while a job holds the device", [((), 1.0 if busy else 0.0)]))
    locked = 1.0 if focus_lock_state(state)["active"] else 0.0
    live.append(("autofocus_focus_lock_active", "1 while the focus lock runs", [((), locked)]))
    live.append(("autofocus_streams_active", "MJPEG live streams being served", [((), float(state.streams))]))
    live.append(
        ("autofocus_uptime_seconds", "Seconds since start-up", [((), time.monotonic() - state.started_monotonic_s)])
    )
    return PlainTextResponse(state.metrics.render(live), media_type=CONTENT_TYPE)
