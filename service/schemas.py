"""Request and response bodies of the API (they make up the OpenAPI schema)."""

from __future__ import annotations

import math
from typing import Any, Literal

import pydantic.dataclasses as pdc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from autofocus.routines import AutofocusOptions
from service.errors import BadRequestError, Problem

__all__ = [
    "AutofocusOptionsIn",
    "AutofocusRequest",
    "FocusLockState",
    "Health",
    "JobOut",
    "MoveZRequest",
    "PredictionOut",
    "Readiness",
    "RunOut",
    "RunsPage",
    "StageZ",
    "StatusOut",
    "StopOut",
    "check_bit_depth",
]

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_bit_depth(bit_depth: int | None, camera_bit_depth: int) -> None:
    """Refuse an options ``bit_depth`` the camera's frames cannot have (``BadRequestError``)."""
    top = 8 if camera_bit_depth <= 8 else 16
    if bit_depth is not None and not 1 <= bit_depth <= top:
        raise BadRequestError(
            f"options.bit_depth={bit_depth} is not possible for this {camera_bit_depth}-bit camera; "
            f"allowed: 1..{top} or null (the camera's own)"
        )


@pdc.dataclass(config=ConfigDict(extra="forbid"))
class AutofocusOptionsIn(AutofocusOptions):
    """``autofocus.routines.AutofocusOptions``; unknown option names are refused (422)."""


class AutofocusRequest(_Strict):
    routine: Literal["oneshot", "hybrid", "zscan"] = Field(
        default="hybrid", description="oneshot: the paper's single-frame move; zscan: sharpness search; hybrid: both"
    )
    options: AutofocusOptionsIn = Field(default_factory=AutofocusOptionsIn, description="routine options")
    use_calibration: bool = Field(
        default=True, description="one-shot/hybrid: read defocus through the stored calibration (GET /calibration)"
    )


class MoveZRequest(_Strict):
    """Exactly one of ``z_um`` (absolute) and ``dz_um`` (relative)."""

    z_um: float | None = Field(default=None, description="absolute target (um, stage coordinates)")
    dz_um: float | None = Field(default=None, description="relative move (um)")

    @model_validator(mode="after")
    def _exactly_one(self) -> MoveZRequest:
        if (self.z_um is None) == (self.dz_um is None):
            raise ValueError("give exactly one of z_um (absolute target) and dz_um (relative move)")
        value = self.z_um if self.z_um is not None else self.dz_um
        if value is not None and not math.isfinite(value):
            raise ValueError("z_um / dz_um must be a finite number")
        return self


class StageZ(BaseModel):
    z_um: float = Field(description="position read back from the stage (um)")
    limits_um: list[float] = Field(
        min_length=2, max_length=2, description="soft limits [lo, hi]; moves outside them are refused"
    )
    max_step_um: float = Field(description="largest single move")
    direction: int = Field(description="+1: a positive move brings the objective towards the sample")
    busy: bool = Field(description="the stage reports motion")


class StopOut(BaseModel):
    stopped: bool
    z_um: float | None = Field(description="position read back after the stop (None if it could not be read)")
    cancelled_job_id: str | None = Field(description="the job that was asked to stop, if one was running")


class JobOut(BaseModel):
    id: str
    kind: Literal["autofocus", "focus-lock", "acquire", "calibration"]
    status: JobStatusName
    params: dict[str, Any]
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: dict[str, Any] | None = Field(description="the last progress message")
    result: dict[str, Any] | None = Field(
        description="autofocus: the run record (final_z_um, frames_used, estimate_um, confidence, outcome, ...)"
    )
    error: Problem | None = Field(description="why the job failed or was cancelled (problem+json)")
    cancel_requested: bool


class TileOut(BaseModel):
    row: int
    col: int
    y0: int
    x0: int
    size: int
    defocus_um: float | None
    blank: bool


class PredictionOut(BaseModel):
    defocus_um: float | None = Field(description="signed defocus (um); > 0: specimen beyond the focal plane")
    confidence: float = Field(ge=0, le=1)
    spread_um: float | None
    tiles_used: int
    tiles_total: int
    tiles: list[TileOut]
    region_map: list[list[float | None]] = Field(description="3x3 regions of the frame, row-major, um")
    aggregate: str
    runtime: str
    frame_shape: list[int] = Field(description="(height, width) in px")
    timings_ms: dict[str, float]
    model: str = Field(
        default="wide",
        description="'near' when the near-focus model read the frame, 'far' when the far-defocus model did, "
        "else 'wide'",
    )
    wide_defocus_um: float | None = Field(
        default=None,
        description="the first (wide-range) model's reading, which chose the model (um); with 'near' on a frame of "
        "more than 8 usable tiles, the reading of 8 of them spread over the frame (the near-model gate)",
    )
    brightness: float | None = Field(
        default=None, description="the frame's mean intensity, 0..1 of full scale (at the camera's bit depth)"
    )


class FocusLockState(BaseModel):
    active: bool
    job_id: str | None
    job: JobOut | None


class SimulatedTruth(BaseModel):
    defocus_um: float = Field(description="the simulator's true defocus at the frame centre (um)")
    time_s: float = Field(description="simulated clock (s)")


class StatusOut(BaseModel):
    ready: bool
    uptime_s: float
    devices: dict[str, Any] = Field(description="backends and device descriptions")
    stage: StageZ | None = Field(description="None if the stage could not be read")
    busy_job: JobOut | None = Field(description="the job holding the device")
    focus_lock: FocusLockState
    model: dict[str, Any]
    calibration: dict[str, Any] | None = Field(description="summary of the stored focus calibration (GET /calibration)")
    last_prediction: dict[str, Any] | None = Field(description="summary of the newest /estimate or /predict")
    last_device_error: str | None
    read_requires_key: bool
    simulated_truth: SimulatedTruth | None = Field(description="simulated backend only: ground truth, for demos")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]


class RunOut(BaseModel):
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


class RunDetail(RunOut):
    record: dict[str, Any] | None = Field(description="the full record the routine returned")


class RunsPage(BaseModel):
    items: list[RunOut]
    total: int = Field(description="runs matching the filters")
    limit: int
    offset: int


class EstimateOut(PredictionOut):
    frame_seq: int = Field(description="running number of the frame the estimate is of")
    z_um: float = Field(description="stage position when the estimate was returned")
    simulated_truth_defocus_um: float | None = Field(description="simulated backend only: the true defocus")
