"""Focus lock: a job that keeps correcting drift until DELETE /focus-lock (or any cancel).

With ``calibrate_range_um`` the job first measures a curve on the current field around the
current Z (``FocusLock.calibrate_here``; its planes are reported as ``"event": "plane"``
progress) and then holds that Z's focus; the job's result carries the curve's summary, and a
``warning`` (also an ``"event": "warning"`` progress message) where that Z does not look focused.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import pydantic.dataclasses as pdc
from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from autofocus.calibration_settings import DEFAULT_STEP_UM, LOCK_CURVE_RANGE_UM, LOCK_INTEGRAL_GAIN, MAX_RANGE_UM
from autofocus.focuslock import MAX_FLAT_AT_FOCUS_UM, FocusLock, FocusLockOptions
from drivers.errors import CancelledError
from service.deps import ReadAccess, State, WriteAccess
from service.errors import problem_responses
from service.jobs import Job, JobFailedError
from service.routers.autofocus import JOB_CREATED_DOCS, accepted
from service.routers.system import focus_lock_state
from service.schemas import FocusLockState, JobOut, check_bit_depth
from service.state import ServiceState, finite

__all__ = ["FocusLockOptionsIn", "FocusLockRequest", "router"]

router = APIRouter(prefix="/focus-lock", tags=["focus lock"])


@pdc.dataclass(config=ConfigDict(extra="forbid"))
class FocusLockOptionsIn(FocusLockOptions):
    """``autofocus.focuslock.FocusLockOptions``; unknown option names are refused (422)."""


class FocusLockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    options: FocusLockOptionsIn = Field(default_factory=FocusLockOptionsIn, description="lock options")
    use_calibration: bool = Field(
        default=False,
        description="read defocus through the stored calibration (GET /calibration). Off by default: a curve from "
        "other fields carries their difference from the locked one (simulated 8 h with options.integral_gain 0.2: "
        "RMS 0.81 um). To hold the focus the sample is at, give calibrate_range_um instead (docs/autofocus.md)",
    )
    calibrate_range_um: Annotated[float | None, Field(gt=0, le=MAX_RANGE_UM)] = Field(
        default=None,
        description="hold the focus the sample is at now: first sweep -this..+this um around the current Z on this "
        f"field (one frame per {DEFAULT_STEP_UM} um plane, the stage then returns) and lock through that curve "
        f"(it is not stored). With options.integral_gain {LOCK_INTEGRAL_GAIN} and {LOCK_CURVE_RANGE_UM:g} um this "
        "held best in simulation (docs/autofocus.md); a field the model reads alike over more than "
        f"{MAX_FLAT_AT_FOCUS_UM} um around focus fails the job (422). Not with use_calibration or "
        "options.focus_offset_um; null: no sweep",
    )
    duration_s: Annotated[float | None, Field(gt=0, le=7 * 24 * 3600)] = Field(
        default=None,
        description="end the lock after this long (counted from its first frame, after any calibrate_range_um "
        "sweep); None: until DELETE /focus-lock",
    )

    @model_validator(mode="after")
    def _one_focus(self) -> FocusLockRequest:
        """A curve measured here says where focus is: neither the stored calibration nor an offset may too."""
        if self.calibrate_range_um is not None:
            if self.use_calibration:
                raise ValueError("give calibrate_range_um (a curve measured here) or use_calibration, not both")
            if self.options.focus_offset_um != 0.0:
                raise ValueError(
                    f"calibrate_range_um holds the focus the sample is at now; options.focus_offset_um="
                    f"{self.options.focus_offset_um:+.3f} would move it: send focus_offset_um 0"
                )
        return self


def _sleeper(state: ServiceState, job: Job) -> Any:
    """Wall-clock waits that end early on cancel; simulated time passes along (drift)."""
    scope = state.simulator

    def sleep(seconds: float) -> None:
        t0 = time.monotonic()
        job.cancel_token.wait(seconds)
        if scope is not None and not scope.realtime:
            scope.advance(time.monotonic() - t0)

    return sleep


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    summary="Start the focus lock as a job (corrects drift every interval_s)",
    dependencies=[WriteAccess],
    responses={**JOB_CREATED_DOCS, **problem_responses(401, 409, 422)},
)
def start_focus_lock(request: FocusLockRequest, response: Response, state: State) -> dict[str, Any]:
    options = request.options
    duration_s = request.duration_s
    check_bit_depth(options.bit_depth, state.camera.bit_depth)
    calibration = state.calibration_for(request.use_calibration, options.focus_offset_um)

    def work(job: Job) -> dict[str, Any]:
        lock = FocusLock(
            state.camera,
            state.hardware.focus_stage,
            state.predictor,
            options,
            calibration=calibration,
            clock=time.monotonic,
            sleep=_sleeper(state, job),
        )

        def on_update(update: dict[str, Any]) -> None:
            job.report(finite(update))

        if request.calibrate_range_um is not None:
            lock.calibrate_here(request.calibrate_range_um, cancel=job.cancel_token, progress=on_update)
            if lock.warning is not None:
                job.report({"event": "warning", "message": lock.warning})
        result = finite(lock.run(job.cancel_token, on_update, duration_s=duration_s))
        result["calibration"] = lock.calibration.summary() if lock.calibration is not None else None
        result["warning"] = lock.warning
        if job.cancel_token.cancelled:
            raise JobFailedError(CancelledError(f"focus lock ended: {job.cancel_token.reason}"), result)
        return result

    def finish(job: Job, result: dict[str, Any] | None, error: BaseException | None) -> None:
        if state.focus_lock_job_id == job.id:
            state.focus_lock_job_id = None

    params = {
        "options": finite(vars(options)),
        "duration_s": duration_s,
        "calibrate_range_um": request.calibrate_range_um,
        "calibration": calibration.summary() if calibration is not None else None,
    }
    job = state.jobs.start("focus-lock", params, work, finish)
    state.focus_lock_job_id = job.id
    return accepted(response, job)


@router.get(
    "",
    response_model=FocusLockState,
    summary="Whether the focus lock runs, and its job",
    dependencies=[ReadAccess],
    responses=problem_responses(401),
)
def get_focus_lock(state: State) -> dict[str, Any]:
    return focus_lock_state(state)


@router.delete(
    "",
    response_model=FocusLockState,
    summary="Stop the focus lock (no effect when it is not running)",
    dependencies=[WriteAccess],
    responses=problem_responses(401),
)
def stop_focus_lock(state: State) -> dict[str, Any]:
    job_id = state.focus_lock_job_id
    if job_id is not None:
        job = state.jobs.cancel(job_id, "stopped by DELETE /focus-lock")
        job.wait(5.0)
    return focus_lock_state(state)
