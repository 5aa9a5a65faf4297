"""The one place that turns errors into RFC 9457 ``application/problem+json`` responses.

Every error the project raises on purpose (``drivers.errors``, ``models.errors``) and the
service's own request errors (``ServiceError`` subclasses below) map to one HTTP status here:

=============================  ======  ===============================================
error                           status  problem type (``urn:ldse-autofocus:problem:*``)
=============================  ======  ===============================================
request validation (FastAPI)    422     validation (also unparsable bodies, 400 in FastAPI)
ModelInputError, DatasetError   422     invalid-input / dataset
LimitError                      422     limit      (``allowed``: limits_um, max_step_um)
UnreliableEstimateError         422     unreliable-estimate
BadRequestError                 422     invalid-request
AuthError                       401     unauthorized (``WWW-Authenticate: X-API-Key``)
NotFoundError                   404     not-found
BusyError                       409     busy       (``job_id``: the running job)
CancelledError                  409     cancelled
PayloadTooLargeError            413     payload-too-large (``allowed``: max bytes)
StreamLimitError                429     too-many-streams
DeviceError (and subclasses)    503     device-fault
NotReadyError                   503     not-ready
ConfigurationError              500     configuration
anything else                   500     internal (logged with its traceback)
=============================  ======  ===============================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from drivers.errors import (
    AutofocusError,
    BusyError,
    CancelledError,
    ConfigurationError,
    DeviceError,
    LimitError,
    UnreliableEstimateError,
)
from models.errors import DatasetError, ModelInputError

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "AuthError",
    "BadRequestError",
    "NotFoundError",
    "NotReadyError",
    "PayloadTooLargeError",
    "Problem",
    "ServiceError",
    "StreamLimitError",
    "install_error_handlers",
    "problem_for_exception",
    "problem_response",
    "problem_responses",
]

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:ldse-autofocus:problem:"


class Problem(BaseModel):
    """An RFC 9457 problem document, with this service's extension members."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI naming the kind of problem, e.g. urn:ldse-autofocus:problem:busy")
    title: str = Field(description="short summary of the kind of problem")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what was wrong in this request and what is allowed")
    instance: str = Field(description="the request path that caused the problem")
    job_id: str | None = Field(default=None, description="the running job that holds the device (409 busy)")
    allowed: dict[str, Any] | None = Field(default=None, description="what would have been accepted")
    errors: list[dict[str, Any]] | None = Field(default=None, description="request validation errors (422)")


# -- the service's own request errors -------------------------------------------------------------
class ServiceError(Exception):
    """An error the service raises about a request; ``status``/``slug``/``title`` are per class."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, *, allowed: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.allowed = allowed


class BadRequestError(ServiceError):
    status, slug, title = 422, "invalid-request", "Invalid request"


class AuthError(ServiceError):
    status, slug, title = 401, "unauthorized", "API key missing or wrong"


class NotFoundError(ServiceError):
    status, slug, title = 404, "not-found", "Not found"


class PayloadTooLargeError(ServiceError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class StreamLimitError(ServiceError):
    status, slug, title = 429, "too-many-streams", "Too many live streams"


class NotReadyError(ServiceError):
    status, slug, title = 503, "not-ready", "Service not ready"


# -- the mapping ---------------------------------------------------------------------------------
# Looked up along the exception's MRO, so the most specific class wins.
_AUTOFOCUS_ERRORS: dict[type[BaseException], tuple[int, str, str]] = {
    BusyError: (409, "busy", "Device busy"),
    CancelledError: (409, "cancelled", "Operation cancelled"),
    LimitError: (422, "limit", "Outside the allowed limits"),
    UnreliableEstimateError: (422, "unreliable-estimate", "Estimate not reliable enough to move"),
    ModelInputError: (422, "invalid-input", "Invalid input for the model"),
    DatasetError: (422, "dataset", "Dataset error"),
    DeviceError: (503, "device-fault", "Device fault"),
    ConfigurationError: (500, "configuration", "Service misconfigured"),
}

LimitsProvider = Callable[[], dict[str, Any] | None]


def problem_for_exception(
    exc: BaseException, instance: str, limits: LimitsProvider | None = None
) -> dict[str, Any] | None:
    """The problem document for a known error, or ``None`` for an unexpected one.

    Also used by the job runner so a failed job's ``error`` is the same document a request
    would have got.
    """
    if isinstance(exc, ServiceError):
        return _problem(exc.status, exc.slug, exc.title, str(exc), instance, allowed=exc.allowed)
    for cls in type(exc).__mro__:
        if cls in _AUTOFOCUS_ERRORS:
            status, slug, title = _AUTOFOCUS_ERRORS[cls]
            extra: dict[str, Any] = {}
            if isinstance(exc, BusyError) and exc.job_id is not None:
                extra["job_id"] = exc.job_id
            if isinstance(exc, LimitError) and limits is not None:
                allowed = limits()
                if allowed is not None:
                    extra["allowed"] = allowed
            return _problem(status, slug, title, str(exc) or title, instance, **extra)
    return None


def _problem(status: int, slug: str, title: str, detail: str, instance: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    body.update({key: value for key, value in extra.items() if value is not None})
    return body


def problem_response(problem: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    """A ``JSONResponse`` with the problem+json media type."""
    return JSONResponse(problem, status_code=int(problem["status"]), media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _count_error(request: Request, problem: dict[str, Any]) -> None:
    metrics = getattr(getattr(request.app.state, "service", None), "metrics", None)
    if metrics is not None:
        metrics.count_error(str(problem["type"]).removeprefix(TYPE_PREFIX))


def _limits_of(request: Request) -> LimitsProvider:
    def limits() -> dict[str, Any] | None:
        state = getattr(request.app.state, "service", None)
        hardware = getattr(state, "hardware", None)
        if hardware is None:
            return None
        stage = hardware.focus_stage
        return {"limits_um": list(stage.limits_um), "max_step_um": stage.max_step_um}

    return limits


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that make every error response problem+json."""

    async def known_error(request: Request, exc: Exception) -> JSONResponse:
        problem = problem_for_exception(exc, request.url.path, _limits_of(request))
        if problem is None:  # pragma: no cover - the handler is registered for known classes only
            return await unexpected_error(request, exc)
        _count_error(request, problem)
        headers = {"WWW-Authenticate": 'APIKey header="X-API-Key"'} if isinstance(exc, AuthError) else None
        if problem["status"] >= 500:
            log.error("%s %s: %s", request.method, request.url.path, problem["detail"])
        return problem_response(problem, headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
        problem = _problem(422, "validation", "Request validation failed", detail, request.url.path, errors=errors)
        _count_error(request, problem)
        return problem_response(problem)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:
            # FastAPI's only 400: a body that is not valid JSON / form data. Like every other
            # malformed request it is a 422 validation problem here.
            problem = _problem(
                422, "validation", "Request validation failed", f"{exc.detail} (send a JSON body)", request.url.path
            )
            _count_error(request, problem)
            return problem_response(problem)
        problem = {
            "type": "about:blank",
            "title": _http_title(exc.status_code),
            "status": exc.status_code,
            "detail": str(exc.detail),
            "instance": request.url.path,
        }
        if exc.status_code == 405:
            problem["allowed"] = {"methods": (exc.headers or {}).get("Allow", "")}
        if exc.status_code == 413:
            problem["type"] = TYPE_PREFIX + "payload-too-large"
            _count_error(request, problem)
        return problem_response(problem, dict(exc.headers) if exc.headers else None)

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        problem = _problem(500, "internal", "Internal error", f"{type(exc).__name__}: {exc}", request.url.path)
        _count_error(request, problem)
        return problem_response(problem)

    for cls in (ServiceError, AutofocusError, ModelInputError, DatasetError):
        app.add_exception_handler(cls, known_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


def _http_title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# -- OpenAPI -------------------------------------------------------------------------------------
_DESCRIPTIONS: dict[int, str] = {
    401: "API key missing or wrong (X-API-Key header)",
    404: "no such job or run",
    409: "another job holds the device (job_id names it), or the operation was cancelled",
    413: "request body larger than upload_limit_bytes",
    422: "invalid request, a move outside the soft limits or max step, or an unusable image",
    429: "too many live streams at once",
    500: "service misconfigured or an unexpected error",
    503: "device fault, or the service is not ready",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting problem+json bodies for ``statuses``.

    FastAPI files the model under ``application/json``; ``app.openapi`` moves every error
    response to ``application/problem+json`` afterwards (see ``service.app``).
    """
    return {status: {"model": Problem, "description": _DESCRIPTIONS[status]} for status in statuses}
