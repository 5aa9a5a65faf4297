"""GET /runs: the record of autofocus runs (SQLite), newest first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from service.deps import ReadAccess, State
from service.errors import BadRequestError, NotFoundError, problem_responses
from service.schemas import RunDetail, RunsPage

__all__ = ["router"]

router = APIRouter(prefix="/runs", tags=["runs"])

Outcome = Literal["converged", "moved", "not_converged", "refused", "cancelled", "failed"]


@router.get(
    "",
    response_model=RunsPage,
    summary="Autofocus runs, newest first, with filters and paging",
    dependencies=[ReadAccess],
    responses=problem_responses(401, 422),
)
def list_runs(
    state: State,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    routine: Annotated[Literal["oneshot", "hybrid", "zscan"] | None, Query()] = None,
    outcome: Annotated[Outcome | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601 time, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601 time, exclusive")] = None,
) -> dict[str, Any]:
    rows, total = state.runs.query(
        limit=limit, offset=offset, routine=routine, outcome=outcome, since=_aware(since), until=_aware(until)
    )
    return {"items": [row.to_dict() for row in rows], "total": total, "limit": limit, "offset": offset}


def _aware(value: datetime | None) -> datetime | None:
    """The time in UTC; times without a zone are taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise BadRequestError(f"time {value.isoformat()} cannot be expressed in UTC: {exc}") from exc


@router.get(
    "/{run_id}",
    response_model=RunDetail,
    summary="One run with the full record the routine returned",
    dependencies=[ReadAccess],
    responses=problem_responses(401, 404),
)
def get_run(run_id: Annotated[int, Path(ge=1, le=2**62)], state: State) -> dict[str, Any]:
    found = state.runs.get(run_id)
    if found is None:
        raise NotFoundError(f"no run with id {run_id}")
    row, record = found
    return {**row.to_dict(), "record": record}
