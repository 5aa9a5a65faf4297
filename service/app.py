"""The FastAPI application: ``create_app(settings)``.

Layout follows FastAPI's "bigger applications": one router per area in ``service/routers``,
shared state built in the lifespan and kept on ``app.state.service`` (no module globals), routes
get it through ``Depends``. Hardware is opened when the app starts and closed (stage stopped)
when it stops; a wrong setting or a device that does not open makes start-up fail.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from service.errors import PROBLEM_MEDIA_TYPE, install_error_handlers
from service.metrics import Metrics
from service.middleware import BodySizeLimitMiddleware, RequestMetricsMiddleware
from service.routers import autofocus, calibration, camera, datasets, focus_lock, jobs, runs, stage, system, web
from service.settings import Settings
from service.state import open_state

__all__ = ["create_app", "generate_api_key"]

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
READ_SCHEMES = ("ReadAPIKey", "ReadAPIKeyQuery")

DESCRIPTION = """
Live single-frame microscope autofocus (LDSE-NET) over HTTP.

* Everything that moves hardware or changes state needs the API key in the `X-API-Key` header
  (`autofocus serve` prints it). Read-only endpoints are open unless `read_requires_key` is set.
* Long operations (autofocus, focus lock, dataset acquisition) are jobs: `202 Accepted` with
  `Location: /jobs/{id}`; poll it, stream `/jobs/{id}/events`, or cancel with `DELETE /jobs/{id}`.
* Errors are RFC 9457 `application/problem+json`.
"""


def generate_api_key() -> str:
    """A random key for when none is configured (``autofocus serve`` prints it)."""
    return secrets.token_urlsafe(24)


def create_app(settings: Settings) -> FastAPI:
    """Build the app; the hardware opens when the app starts (lifespan), not here."""
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    if api_key is None:
        api_key = generate_api_key()
        log.warning("no api_key configured; generated one for this run: %s", api_key)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            state = await run_in_threadpool(open_state, settings, api_key, metrics)
        except Exception as exc:
            app.state.startup_error = exc  # `autofocus serve` reports it as a clean error
            raise
        app.state.service = state
        try:
            yield
        finally:
            app.state.service = None
            await run_in_threadpool(state.close)

    app = FastAPI(
        title="ldse-autofocus",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.service = None
    app.state.startup_error = None
    install_error_handlers(app)
    for module in (system, stage, autofocus, calibration, focus_lock, datasets, jobs, runs, camera, web):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")

    app.add_middleware(BodySizeLimitMiddleware, limit_bytes=settings.upload_limit_bytes, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type", "Last-Event-ID"],
            expose_headers=["Location"],
        )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = _polish_openapi(schema, settings.read_requires_key)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _polish_openapi(schema: dict[str, Any], read_requires_key: bool) -> dict[str, Any]:
    """Make the generated schema say what the app does.

    * Error responses are ``application/problem+json`` with the ``Problem`` schema (FastAPI
      files them under ``application/json`` and adds its own ``HTTPValidationError`` for 422).
    * Read-only endpoints list the API key only when ``read_requires_key`` is set.
    """
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            for code, response in responses.items():
                if not code.isdigit() or int(code) < 400:
                    continue
                # FastAPI files the model under the route's media type (JSON, text, image).
                refs = [body.get("schema", {}).get("$ref", "") for body in response.get("content", {}).values()]
                if any(ref.endswith(("/Problem", "/HTTPValidationError")) for ref in refs):
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}
                    if any(ref.endswith("/HTTPValidationError") for ref in refs):
                        response["description"] = "request validation failed (problem+json with `errors`)"
            security = operation.get("security")
            if security is not None:
                if read_requires_key:
                    merged = []
                    for requirement in security:
                        renamed = {("APIKeyHeader" if k == "ReadAPIKey" else k): v for k, v in requirement.items()}
                        if renamed not in merged:
                            merged.append(renamed)
                    operation["security"] = merged
                else:
                    kept = [r for r in security if not any(k in READ_SCHEMES for k in r)]
                    if kept:
                        operation["security"] = kept
                    else:
                        del operation["security"]
    schemes = schema.get("components", {}).get("securitySchemes", {})
    if read_requires_key:
        schemes.pop("ReadAPIKey", None)
    else:
        for name in READ_SCHEMES:
            schemes.pop(name, None)
    components = schema.get("components", {}).get("schemas", {})
    text = str(schema["paths"])
    for name in ("HTTPValidationError", "ValidationError"):
        if f"/{name}'" not in text:
            components.pop(name, None)
    return schema
