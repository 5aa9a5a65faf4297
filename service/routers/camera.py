"""Frames: the latest frame, the MJPEG live view, the model's estimate of the live frame, and
prediction on an uploaded image (no hardware touched)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from service.deps import QueryKeyReadAccess, ReadAccess, State
from service.errors import BadRequestError, StreamLimitError, problem_responses
from service.hardware import encode_frame, to_display_uint8
from service.schemas import EstimateOut, PredictionOut
from service.state import ServiceState, finite

__all__ = ["decode_image", "router"]

router = APIRouter(tags=["camera"])

BOUNDARY = "frame"
DISCONNECT_POLL_S = 0.5  # how often a waiting stream checks whether its client went
ALLOWED_IMAGES = "PNG, JPEG, TIFF or BMP; 8 or 16 bit; mono, RGB or RGBA; at least 224x224 px"


_FRAME_DOCS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "the newest frame (8-bit), downscaled to max_width if given",
    },
    **problem_responses(401, 409, 422, 503),
}


@router.get(
    "/frame",
    response_class=Response,
    summary="The latest camera frame as JPEG or PNG, optionally downscaled",
    dependencies=[QueryKeyReadAccess],
    responses=_FRAME_DOCS,
)
def frame(
    state: State,
    format: Annotated[Literal["jpeg", "png"], Query(description="image format")] = "jpeg",
    max_width: Annotated[int | None, Query(ge=16, le=16384, description="downscale to at most this width")] = None,
    max_age_ms: Annotated[float, Query(ge=0, le=60000, description="reuse a frame at most this old")] = 200.0,
) -> Response:
    latest = state.frames.latest(max_age_ms / 1000.0)
    image = to_display_uint8(latest.image, state.camera.bit_depth)
    data = encode_frame(image, format, max_width, state.settings.jpeg_quality)
    headers = {"Cache-Control": "no-store", "X-Frame-Seq": str(latest.seq)}
    return Response(data, media_type=f"image/{format}", headers=headers)


_STREAM_DOCS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {"schema": {"type": "string"}}},
        "description": "JPEG frames, one per part, until the client goes, max_frames, or stream_max_s",
    },
    **problem_responses(401, 422, 429),
}


@router.get(
    "/stream.mjpg",
    summary="Live view as MJPEG (multipart/x-mixed-replace), bounded in rate, duration and clients",
    dependencies=[QueryKeyReadAccess],
    response_class=StreamingResponse,
    responses=_STREAM_DOCS,
)
async def stream(
    request: Request,
    state: State,
    fps: Annotated[float | None, Query(ge=0.1, le=30, description="frame rate; at most the stream_fps setting")] = None,
    max_width: Annotated[int | None, Query(ge=16, le=16384, description="width; default stream_width_px")] = None,
    max_frames: Annotated[int | None, Query(ge=1, le=1_000_000, description="end after this many frames")] = None,
) -> StreamingResponse:
    if state.streams >= state.settings.stream_max_clients:
        raise StreamLimitError(
            f"{state.streams} live streams are open; at most stream_max_clients={state.settings.stream_max_clients}",
            allowed={"stream_max_clients": state.settings.stream_max_clients},
        )
    rate = min(fps or state.settings.stream_fps, state.settings.stream_fps)
    width = max_width or state.settings.stream_width_px
    body = _mjpeg(request, state, 1.0 / rate, width, max_frames)
    return StreamingResponse(
        body,
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _jpeg_of_latest(state: ServiceState, max_age_s: float, width: int) -> tuple[int, bytes]:
    latest = state.frames.latest(max_age_s)
    image = to_display_uint8(latest.image, state.camera.bit_depth)
    return latest.seq, encode_frame(image, "jpeg", width, state.settings.jpeg_quality)


async def _mjpeg(
    request: Request, state: ServiceState, period_s: float, width: int, max_frames: int | None
) -> AsyncIterator[bytes]:
    if not state.stream_slot():
        return
    try:
        deadline = time.monotonic() + state.settings.stream_max_s
        sent = 0
        while time.monotonic() < deadline and not state.shutting_down.is_set():
            if await request.is_disconnected():
                break
            started = time.monotonic()
            _, jpeg = await run_in_threadpool(_jpeg_of_latest, state, period_s * 0.9, width)
            yield (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                + jpeg
                + b"\r\n"
            )
            sent += 1
            if max_frames is not None and sent >= max_frames:
                break
            next_frame = min(started + period_s, deadline)
            while time.monotonic() < next_frame and not state.shutting_down.is_set():
                await asyncio.sleep(min(DISCONNECT_POLL_S, next_frame - time.monotonic()))
                if await request.is_disconnected():
                    return
    finally:
        state.release_stream_slot()


def _summary(prediction: dict[str, Any], source: str) -> dict[str, Any]:
    return {
        "source": source,
        "time": time.time(),
        "defocus_um": prediction["defocus_um"],
        "confidence": prediction["confidence"],
        "tiles_used": prediction["tiles_used"],
        "tiles_total": prediction["tiles_total"],
        "region_map": prediction["region_map"],
    }


@router.get(
    "/estimate",
    response_model=EstimateOut,
    summary="The model's defocus estimate of the live frame (nothing moves)",
    dependencies=[ReadAccess],
    responses=problem_responses(401, 409, 422, 503),
)
def estimate(
    state: State,
    max_age_ms: Annotated[float, Query(ge=0, le=60000, description="reuse a frame at most this old")] = 200.0,
) -> dict[str, Any]:
    latest = state.frames.latest(max_age_ms / 1000.0)
    prediction = state.predictor.predict(latest.image, bit_depth=state.camera.bit_depth).to_dict()
    state.metrics.inc("autofocus_predictions_total", [("source", "live")])
    prediction = finite(prediction)
    state.last_prediction = _summary(prediction, "live")
    truth = state.simulated_truth()
    return {
        **prediction,
        "frame_seq": latest.seq,
        "z_um": state.hardware.focus_stage.z_um,
        "simulated_truth_defocus_um": truth["defocus_um"] if truth is not None else None,
    }


def decode_image(data: bytes) -> np.ndarray:
    """Decode an uploaded image into ``HxWx3`` RGB (or ``HxW`` mono) ``uint8``/``uint16``."""
    if not data:
        raise BadRequestError(f"the uploaded file is empty; allowed: {ALLOWED_IMAGES}")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BadRequestError(f"the upload could not be decoded as an image; allowed: {ALLOWED_IMAGES}")
    if image.dtype not in (np.uint8, np.uint16):
        raise BadRequestError(f"the image has {image.dtype} pixels; allowed: {ALLOWED_IMAGES}")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        elif image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.shape[2] == 1:
            image = image[:, :, 0]
        else:
            raise BadRequestError(f"the image has {image.shape[2]} channels; allowed: {ALLOWED_IMAGES}")
    return image


@router.post(
    "/predict",
    response_model=PredictionOut,
    summary="Defocus, confidence, tiles and 3x3 region map of an uploaded image (no hardware touched)",
    dependencies=[ReadAccess],
    responses=problem_responses(401, 413, 422),
)
async def predict(
    state: State,
    file: Annotated[UploadFile, File(description=f"the image: {ALLOWED_IMAGES}")],
    bit_depth: Annotated[
        int | None, Query(ge=9, le=16, description="significant bits of a 16-bit image (default 16)")
    ] = None,
) -> dict[str, Any]:
    data = await file.read()
    image = decode_image(data)
    if image.dtype == np.uint8 and bit_depth is not None:
        raise BadRequestError("bit_depth applies to 16-bit images only; this image is 8-bit")
    prediction = await run_in_threadpool(state.predictor.predict, image, bit_depth)
    state.metrics.inc("autofocus_predictions_total", [("source", "upload")])
    result = finite(prediction.to_dict())
    state.last_prediction = _summary(result, "upload")
    return result
