"""ASGI middleware: request body size limit (413 problem+json) and request metrics.

Both are plain ASGI (not ``BaseHTTPMiddleware``) so that streaming responses (MJPEG, SSE)
pass through untouched.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PROBLEM_MEDIA_TYPE, TYPE_PREFIX
from service.metrics import Metrics

__all__ = ["BodySizeLimitMiddleware", "RequestMetricsMiddleware"]


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing lets it through (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds upload_limit_bytes={limit}")


def _problem_bytes(path: str, limit: int, seen: int | None) -> bytes:
    size = f"{seen} bytes" if seen is not None else "more than that"
    body = {
        "type": TYPE_PREFIX + "payload-too-large",
        "title": "Request body too large",
        "status": 413,
        "detail": f"the request body ({size}) exceeds upload_limit_bytes={limit}",
        "instance": path,
        "allowed": {"max_bytes": limit},
    }
    return json.dumps(body).encode()


class BodySizeLimitMiddleware:
    """Refuse bodies over ``limit_bytes``: by ``Content-Length`` up front, else while reading."""

    def __init__(self, app: ASGIApp, limit_bytes: int, metrics: Metrics | None = None) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.metrics = metrics

    async def _reply(self, scope: Scope, send: Send, seen: int | None) -> None:
        body = _problem_bytes(scope.get("path", ""), self.limit_bytes, seen)
        if self.metrics is not None:
            self.metrics.count_error("payload-too-large")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                if declared is not None and declared > self.limit_bytes:
                    await self._reply(scope, send, declared)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    raise _TooLarge(self.limit_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            await self._reply(scope, send, None)


class RequestMetricsMiddleware:
    """Count requests by method, matched route template and status; time them."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.record_request(scope.get("method", "?"), template, status["code"], time.perf_counter() - t0)
