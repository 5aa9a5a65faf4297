"""POST /datasets/acquire: record a z-stack dataset as a job, only inside the configured data root."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pydantic.dataclasses as pdc
from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from autofocus.acquire import AcquisitionPlan, acquire_dataset
from service.deps import State, WriteAccess
from service.errors import BadRequestError, problem_responses
from service.jobs import Job
from service.routers.autofocus import JOB_CREATED_DOCS, accepted
from service.schemas import JobOut
from service.state import ServiceState, finite

__all__ = ["AcquireRequest", "dataset_folder", "router"]

router = APIRouter(prefix="/datasets", tags=["datasets"])

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_PLANES = 100_000


@pdc.dataclass(config=ConfigDict(extra="forbid"), frozen=True)
class AcquisitionPlanIn(AcquisitionPlan):
    """``autofocus.acquire.AcquisitionPlan``; unknown fields are refused (422)."""


class AcquireRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=NAME_PATTERN,
        description="dataset folder name, created under the data_root setting (letters, digits, . _ -)",
    )
    plan: AcquisitionPlanIn = Field(default_factory=AcquisitionPlanIn, description="what to record")
    resume: bool = Field(default=False, description="continue an interrupted dataset of this name")


def dataset_folder(data_root: Path, name: str) -> Path:
    """``data_root / name``, refused unless it is a plain child of the data root."""
    if not re.fullmatch(NAME_PATTERN, name) or name in (".", ".."):
        raise BadRequestError(f"dataset name {name!r} is not allowed; allowed: {NAME_PATTERN}")
    root = data_root.resolve()
    folder = (root / name).resolve()
    if folder.parent != root:
        raise BadRequestError(f"dataset name {name!r} leaves the data root", allowed={"data_root": str(root)})
    return folder


def _objective(state: ServiceState) -> str:
    if state.settings.objective:
        return state.settings.objective
    if state.simulator is not None:
        return state.settings.sim_objective
    raise BadRequestError("set the objective setting (AUTOFOCUS_OBJECTIVE) to record datasets on real hardware")


@router.post(
    "/acquire",
    status_code=202,
    response_model=JobOut,
    summary="Record a z-stack dataset (models.zstack format) under data_root as a job",
    dependencies=[WriteAccess],
    responses={**JOB_CREATED_DOCS, **problem_responses(401, 409, 422, 503)},
)
def acquire(request: AcquireRequest, response: Response, state: State) -> dict[str, Any]:
    folder = dataset_folder(state.settings.data_root, request.name)
    plan: AcquisitionPlan = request.plan
    positions = len(plan.positions_um) if plan.positions_um else 1
    planes = positions * len(plan.planes_for(0))
    if planes > MAX_PLANES:
        raise BadRequestError(f"the plan records {planes} planes; at most {MAX_PLANES} per request")
    if plan.positions_um is not None and state.hardware.xy_stage is None:
        raise BadRequestError("the plan has positions_um but this backend has no XY stage; leave positions_um empty")
    scope = state.simulator
    if plan.z_reference == "physical_focal_plane" and scope is None:
        raise BadRequestError(
            "z_reference 'physical_focal_plane' needs the simulator's truth; use 'sharpness_peak' on real hardware"
        )
    objective = _objective(state)
    if folder.exists() and not request.resume and any(folder.iterdir()):
        raise BadRequestError(
            f"dataset {request.name!r} already exists under data_root; choose another name or set resume=true"
        )

    def work(job: Job) -> dict[str, Any]:
        def progress(message: dict[str, Any]) -> None:
            job.report(finite(message))

        result = acquire_dataset(
            folder,
            state.camera,
            state.hardware.focus_stage,
            plan,
            objective=objective,
            xy_stage=state.hardware.xy_stage if plan.positions_um is not None else None,
            true_defocus=scope.true_defocus_um if scope is not None else None,
            clock=(lambda: float(scope.time_s)) if scope is not None else None,
            source={"service": {"dataset": request.name}},
            resume=request.resume,
            cancel=job.cancel_token,
            progress=progress,
        )
        data = result.to_dict()
        data["path"] = request.name  # relative to data_root: the server's folders stay private
        return finite(data)

    params = {"name": request.name, "plan": finite(asdict(plan)), "resume": request.resume}
    job = state.jobs.start("acquire", params, work)
    return accepted(response, job)
