"""/calibration: the focus calibration that /autofocus and /focus-lock use (``autofocus.calibration``).

GET shows it; PUT stores one made elsewhere (``autofocus calibrate``'s file); POST /calibration/measure
sweeps Z on the service's own hardware as a job (the sample must be in focus); DELETE drops it.
A stored calibration is written atomically to ``settings.calibration_file`` and survives restarts.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from autofocus.calibration import (
    FORMAT,
    FORMAT_VERSION,
    FocusCalibration,
    measure_calibration,
    nearest_fields,
)
from autofocus.calibration_settings import (
    CALIBRATED_AIM_UM,
    DEFAULT_FIELD_SPACING_UM,
    DEFAULT_FIELDS,
    DEFAULT_RANGE_UM,
    DEFAULT_STEP_UM,
    MAX_RANGE_UM,
    default_fields,
)
from drivers.errors import BusyError
from service.deps import ReadAccess, State, WriteAccess
from service.errors import BadRequestError, problem_responses
from service.jobs import Job
from service.routers.autofocus import JOB_CREATED_DOCS, accepted
from service.schemas import JobOut
from service.state import ServiceState, finite

__all__ = ["CalibrationIn", "CalibrationOut", "MeasureCalibrationRequest", "router"]

router = APIRouter(prefix="/calibration", tags=["calibration"])
log = logging.getLogger(__name__)


class CalibrationIn(BaseModel):
    """A calibration file's content (``FocusCalibration.to_dict()``)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["ldse-focus-calibration"] = Field(description=f"always {FORMAT!r}")
    format_version: Literal[1, 2, 3] = Field(description=f"{FORMAT_VERSION} (files of versions 1 and 2 are read too)")
    z_um: list[float] = Field(description="defocus of each plane relative to the calibrated focus, increasing")
    reading_um: list[float] = Field(description="median model reading at each plane")
    spread_um: list[float] = Field(description="standard deviation of the readings at each plane")
    fields: StrictInt = Field(ge=1, description="fields of view swept")
    tilt_um_per_mm: list[StrictFloat | StrictInt] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="defocus change per mm of X and Y travel fitted over the fields (null: not fitted)",
    )
    brightness_slope_um: list[float] | None = Field(
        default=None,
        description="reading change (um) per unit of brightness at each plane (null: no brightness correction)",
    )
    brightness_mean: float | None = Field(
        default=None, description="the calibrated fields' mean brightness (0..1 of full scale)"
    )
    brightness_range: list[float] | None = Field(
        default=None, min_length=2, max_length=2, description="the calibrated fields' lowest and highest brightness"
    )
    source: str = Field(default="", description="the model that was read")
    created_at: str = Field(default="")


class CalibrationOut(BaseModel):
    active: bool = Field(description="a calibration is stored and used by /autofocus and /focus-lock")
    calibration: CalibrationIn | None
    summary: dict[str, Any] | None = Field(description="range, planes, fields, the reading at focus")
    suggested_aim_um: float = Field(
        description="the first-move aim (options.aim_um) measured best with a calibration; the web page proposes it"
    )


class MeasureCalibrationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    range_um: float = Field(
        default=DEFAULT_RANGE_UM, gt=0, le=MAX_RANGE_UM, description="sweep -range..+range um of defocus"
    )
    step_um: float = Field(default=DEFAULT_STEP_UM, gt=0, le=MAX_RANGE_UM, description="plane spacing (um)")
    fields: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description=f"fields of view, on a grid around the current one (default {DEFAULT_FIELDS} with an XY stage, "
        "1 without; a tilted slide is fitted with 5 or more)",
    )
    field_spacing_um: float = Field(
        default=DEFAULT_FIELD_SPACING_UM, gt=0, description="grid spacing of the fields (um)"
    )
    min_confidence: float = Field(default=0.3, ge=0, le=1, description="frames below this confidence are ignored")
    brightness_correction: bool = Field(
        default=True,
        description="with 5 or more fields, fit how the reading changes with the fields' brightness and correct it",
    )


def _out(state: ServiceState) -> dict[str, Any]:
    cal = state.calibration
    stored = {"active": False, "calibration": None, "summary": None}
    if cal is not None:
        stored = finite({"active": True, "calibration": cal.to_dict(), "summary": cal.summary()})
    return stored | {"suggested_aim_um": CALIBRATED_AIM_UM}


def _not_while_measuring(state: ServiceState, what: str) -> None:
    """409 while a calibration job runs: its result would silently replace what this request does."""
    job = state.jobs.active()
    if job is not None and job.kind == "calibration":
        raise BusyError(f"cannot {what} while calibration job {job.id} runs; wait for it or cancel it", job.id)


def _store(state: ServiceState, cal: FocusCalibration) -> None:
    """Write the file first (atomically), then use it: a failed write leaves the old one in force."""
    if cal.source and cal.source != state.predictor.description:
        log.warning("calibration measured with %s, the service runs %s", cal.source, state.predictor.description)
    with state.calibration_lock:
        state.settings.calibration_file.parent.mkdir(parents=True, exist_ok=True)
        cal.save(state.settings.calibration_file)
        state.calibration = cal


@router.get(
    "",
    response_model=CalibrationOut,
    summary="The focus calibration in use, if any",
    dependencies=[ReadAccess],
    responses=problem_responses(401),
)
def get_calibration(state: State) -> dict[str, Any]:
    return _out(state)


@router.put(
    "",
    response_model=CalibrationOut,
    summary="Store a calibration (the file `autofocus calibrate` writes); used from the next run on",
    dependencies=[WriteAccess],
    responses=problem_responses(401, 409, 422),
)
def put_calibration(body: CalibrationIn, state: State) -> dict[str, Any]:
    try:
        cal = FocusCalibration.from_dict(body.model_dump(), where="calibration")
    except ValueError as exc:
        raise BadRequestError(str(exc)) from exc
    _not_while_measuring(state, "store a calibration")
    _store(state, cal)
    return _out(state)


@router.delete(
    "",
    response_model=CalibrationOut,
    summary="Stop using the calibration (runs go back to options.focus_offset_um)",
    dependencies=[WriteAccess],
    responses=problem_responses(401, 409),
)
def delete_calibration(state: State) -> dict[str, Any]:
    _not_while_measuring(state, "drop the calibration")
    with state.calibration_lock:
        state.settings.calibration_file.unlink(missing_ok=True)
        state.calibration = None
    return _out(state)


@router.post(
    "/measure",
    status_code=202,
    response_model=JobOut,
    summary="Measure a calibration as a job: sweep Z around the current, focused position",
    dependencies=[WriteAccess],
    responses={**JOB_CREATED_DOCS, **problem_responses(401, 409, 422)},
)
def measure(request: MeasureCalibrationRequest, response: Response, state: State) -> dict[str, Any]:
    if request.step_um > request.range_um:
        raise BadRequestError(f"step_um={request.step_um} is larger than range_um={request.range_um}")
    xy_stage = state.hardware.xy_stage
    fields = default_fields(xy_stage is not None) if request.fields is None else request.fields
    if fields > 1 and xy_stage is None:
        raise BadRequestError(f"fields={fields} needs an XY stage and this microscope has none; give fields=1")

    def work(job: Job) -> dict[str, Any]:
        positions = None
        if fields > 1 and xy_stage is not None:
            positions = nearest_fields(xy_stage.xy_um, fields, request.field_spacing_um)
        cal = measure_calibration(
            state.camera,
            state.hardware.focus_stage,
            state.predictor,
            range_um=request.range_um,
            step_um=request.step_um,
            xy_stage=xy_stage,
            positions=positions,
            min_confidence=request.min_confidence,
            brightness_correction=request.brightness_correction,
            source=state.predictor.description,
            cancel=job.cancel_token,
            progress=lambda message: job.report(finite(message)),
        )
        _store(state, cal)
        return _out(state)

    job = state.jobs.start("calibration", request.model_dump() | {"fields": fields}, work)
    return accepted(response, job)
