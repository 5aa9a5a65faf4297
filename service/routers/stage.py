"""The focus stage: read Z, move (absolute or relative, within the soft limits), stop."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter

from drivers.errors import AutofocusError
from service.deps import ReadAccess, State, WriteAccess
from service.errors import problem_responses
from service.routers.system import stage_info
from service.schemas import MoveZRequest, StageZ, StopOut
from service.state import finite

__all__ = ["router"]

router = APIRouter(prefix="/stage", tags=["stage"])
log = logging.getLogger(__name__)


@router.get(
    "/z",
    response_model=StageZ,
    summary="Current Z, soft limits and max step",
    dependencies=[ReadAccess],
    responses=problem_responses(401, 503),
)
def get_z(state: State) -> dict[str, Any]:
    return finite(stage_info(state))


@router.post(
    "/z",
    response_model=StageZ,
    summary="Move Z to an absolute position or by a relative step (refused outside the limits, never clamped)",
    dependencies=[WriteAccess],
    responses=problem_responses(401, 409, 422, 503),
)
def move_z(request: MoveZRequest, state: State) -> dict[str, Any]:
    stage = state.hardware.focus_stage
    with state.device_lock.hold("move the stage", state.settings.device_lock_timeout_s):
        if request.z_um is not None:
            stage.move_to(request.z_um)
        else:
            assert request.dz_um is not None
            stage.move_by(request.dz_um)
        state.camera.flush()
    return finite(stage_info(state))


@router.post(
    "/stop",
    response_model=StopOut,
    summary="Stop the stage now and cancel the running job (never waits behind the device lock)",
    dependencies=[WriteAccess],
    responses=problem_responses(401, 503),
)
def stop(state: State) -> dict[str, Any]:
    stage = state.hardware.focus_stage
    stage.stop()
    active = state.jobs.active()
    cancelled = None
    if active is not None:
        state.jobs.cancel(active.id, "stopped by POST /stage/stop")
        cancelled = active.id
    try:
        z: float | None = stage.z_um
    except AutofocusError as exc:
        log.warning("stop: could not read the stage back: %s", exc)
        z = None
    return finite({"stopped": True, "z_um": z, "cancelled_job_id": cancelled})
