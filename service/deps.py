"""Dependencies handed to the routes with ``Depends``: the shared state and the API-key checks.

Two levels of access:

* ``require_key``: everything that moves hardware or changes state needs ``X-API-Key``.
* ``read_access``: read-only endpoints are open unless ``read_requires_key`` is set.
  ``GET /stream.mjpg``, ``GET /frame`` and ``GET /jobs/{id}/events`` also accept ``?api_key=``
  because ``<img>`` and ``EventSource`` cannot send headers.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, APIKeyQuery

from service.errors import AuthError, NotReadyError
from service.state import ServiceState

__all__ = ["QueryKeyReadAccess", "ReadAccess", "State", "WriteAccess", "get_state", "read_access", "require_key"]

API_KEY_HEADER = "X-API-Key"
_header_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="the service's API key (printed by `autofocus serve`)"
)
# The same header under another scheme name, so the OpenAPI schema can show read-only routes as
# open (read_requires_key off) or protected (on); see service.app._polish_openapi.
_read_header_scheme = APIKeyHeader(
    name=API_KEY_HEADER, scheme_name="ReadAPIKey", auto_error=False, description="the service's API key"
)
_query_scheme = APIKeyQuery(
    name="api_key",
    scheme_name="ReadAPIKeyQuery",
    auto_error=False,
    description="the API key as a query parameter, for <img> elements that cannot send headers",
)


def get_state(request: Request) -> ServiceState:
    """The state built by the lifespan (503 before it exists or after shutdown began)."""
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise NotReadyError("the service is starting or stopping; the hardware is not open")
    return state


State = Annotated[ServiceState, Depends(get_state)]


def _check(state: ServiceState, given: str | None) -> None:
    if not given:
        raise AuthError(f"this request needs the API key in the {API_KEY_HEADER} header")
    if not secrets.compare_digest(given.encode(), state.api_key.encode()):
        raise AuthError(f"the API key in the {API_KEY_HEADER} header is wrong")


def require_key(state: State, key: Annotated[str | None, Security(_header_scheme)] = None) -> None:
    """Refuse (401) a request without the right ``X-API-Key``."""
    _check(state, key)


def read_access(state: State, key: Annotated[str | None, Security(_read_header_scheme)] = None) -> None:
    """Open unless ``read_requires_key``; then the same check as ``require_key``."""
    if state.settings.read_requires_key:
        _check(state, key)


def image_read_access(
    state: State,
    key: Annotated[str | None, Security(_read_header_scheme)] = None,
    query_key: Annotated[str | None, Security(_query_scheme)] = None,
) -> None:
    """``read_access`` that also takes ``?api_key=`` (for ``<img src=...>``)."""
    if state.settings.read_requires_key:
        _check(state, key or query_key)


WriteAccess = Depends(require_key)
ReadAccess = Depends(read_access)
QueryKeyReadAccess = Depends(image_read_access)
