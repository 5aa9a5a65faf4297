"""The operator's web page at ``/`` and its static files (shipped in the package, no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

__all__ = ["STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["web page"])


@router.get(
    "/",
    response_class=FileResponse,
    summary="The operator's web page",
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "the page"}},
)
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
