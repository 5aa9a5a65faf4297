"""The REST service through FastAPI's TestClient on the simulated microscope (small frames).

Real components throughout: the simulator, the bundled model, SQLite, the job threads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_settings import make_test_settings

from service.app import create_app
from service.settings import Settings, load_settings

KEY = "test-key-0123456789"
AUTH = {"X-API-Key": KEY}
PROBLEM = "application/problem+json"
# A coarse grid first, then Brent on the variance of the Laplacian: on the simulated unstained
# cells the plain Brent search can settle on a contrast side lobe ~2 um from focus.
ZSCAN_OPTIONS = {"search_range_um": 16, "coarse_step_um": 2.0, "measure": "variance_of_laplacian"}


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    return make_test_settings(tmp, KEY, **{"data_root": str(tmp / "datasets"), "stream_fps": 10, **overrides})


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    tmp = tmp_path_factory.mktemp("svc")
    with TestClient(create_app(make_settings(tmp))) as c:
        yield c


def wait_job(client: TestClient, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")


def assert_problem(response: Any, status: int, type_suffix: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    for member in ("type", "title", "status", "detail", "instance"):
        assert member in body
    assert body["status"] == status
    if type_suffix is not None:
        assert body["type"].endswith(":" + type_suffix), body
    return body


def truth_um(client: TestClient) -> float:
    return client.get("/status").json()["simulated_truth"]["defocus_um"]


# -- health, status -------------------------------------------------------------------------------
def test_health_ready_status(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    status = client.get("/status").json()
    assert status["devices"]["camera_backend"] == "simulated"
    assert status["devices"]["camera"]["sensor_shape"] == [448, 448]
    lo, hi = status["stage"]["limits_um"]
    assert lo < status["stage"]["z_um"] < hi
    assert status["busy_job"] is None
    assert status["model"]["runtime"] == "torch"
    assert status["model"]["near_model"]["window_um"] == [-2.0, 6.0]  # near_model "auto" with the bundled model
    assert status["model"]["far_model"]["beyond_um"] == 6.0  # far_model "auto" with the bundled model
    assert isinstance(status["simulated_truth"]["defocus_um"], float)


def test_page_and_static_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and "STOP" in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]


# -- auth ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/stage/z", {"dz_um": 1.0}),
        ("POST", "/stage/stop", None),
        ("POST", "/autofocus", {"routine": "zscan"}),
        ("POST", "/focus-lock", {}),
        ("DELETE", "/focus-lock", None),
        ("POST", "/datasets/acquire", {"name": "x"}),
        ("DELETE", "/jobs/abc", None),
    ],
)
def test_state_changing_requests_need_the_key(client: TestClient, method: str, path: str, body: Any) -> None:
    z0 = client.get("/stage/z").json()["z_um"]
    missing = client.request(method, path, json=body)
    problem = assert_problem(missing, 401, "unauthorized")
    assert "X-API-Key" in problem["detail"]
    assert "X-API-Key" in missing.headers["www-authenticate"]
    wrong = client.request(method, path, json=body, headers={"X-API-Key": "not-the-key"})
    assert "wrong" in assert_problem(wrong, 401)["detail"]
    assert client.get("/stage/z").json()["z_um"] == z0  # nothing moved


def test_read_endpoints_can_require_the_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, read_requires_key=True)
    with TestClient(create_app(settings)) as c:
        for path in ("/status", "/stage/z", "/runs", "/jobs", "/metrics", "/frame", "/estimate", "/focus-lock"):
            assert_problem(c.get(path), 401)
        assert c.get("/status", headers=AUTH).status_code == 200
        assert c.get("/frame", params={"api_key": KEY, "max_width": 64}).status_code == 200  # for <img>
        assert c.get("/healthz").status_code == 200  # probes stay open
        security = c.get("/openapi.json").json()["paths"]["/status"]["get"]["security"]
        assert {"APIKeyHeader": []} in security


def test_cors_is_off_unless_origins_are_listed(client: TestClient, tmp_path: Path) -> None:
    preflight = {"Origin": "http://lab-pc:8000", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.get("/status", headers={"Origin": "http://x"}).headers
    with TestClient(create_app(make_settings(tmp_path, cors_origins=["http://lab-pc:8000"]))) as c:
        r = c.options("/stage/z", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "http://lab-pc:8000"
        other = c.get("/status", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# -- stage ------------------------------------------------------------------------------------------
def test_move_absolute_and_relative(client: TestClient) -> None:
    r = client.post("/stage/z", json={"z_um": 4.0}, headers=AUTH)
    assert r.status_code == 200 and r.json()["z_um"] == pytest.approx(4.0, abs=0.05)
    r = client.post("/stage/z", json={"dz_um": -1.5}, headers=AUTH)
    assert r.json()["z_um"] == pytest.approx(2.5, abs=0.05)
    assert client.get("/stage/z").json()["z_um"] == pytest.approx(2.5, abs=0.05)
    # the simulator's truth follows the stage: 2.5 um away from focus after these moves
    assert abs(truth_um(client)) == pytest.approx(2.5, abs=0.3)


def test_moves_outside_the_limits_are_refused_not_clamped(client: TestClient) -> None:
    stage = client.get("/stage/z").json()
    lo, hi = stage["limits_um"]
    z0 = stage["z_um"]
    problem = assert_problem(client.post("/stage/z", json={"z_um": hi + 10}, headers=AUTH), 422, "limit")
    assert problem["allowed"] == {"limits_um": [lo, hi], "max_step_um": stage["max_step_um"]}
    assert "soft limits" in problem["detail"]
    problem = assert_problem(
        client.post("/stage/z", json={"dz_um": stage["max_step_um"] + 1}, headers=AUTH), 422, "limit"
    )
    assert "max_step_um" in problem["detail"]
    assert client.get("/stage/z").json()["z_um"] == z0


@pytest.mark.parametrize(
    "body", [{}, {"z_um": 1, "dz_um": 1}, {"z_um": "high"}, {"z_um": 1, "speed": 3}, {"dz_um": None}]
)
def test_bad_move_requests_are_validation_problems(client: TestClient, body: dict[str, Any]) -> None:
    problem = assert_problem(client.post("/stage/z", json=body, headers=AUTH), 422, "validation")
    assert problem["errors"], problem


def test_stop_answers_and_reads_back(client: TestClient) -> None:
    r = client.post("/stage/stop", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["stopped"] is True and body["cancelled_job_id"] is None
    assert body["z_um"] == pytest.approx(client.get("/stage/z").json()["z_um"])


# -- jobs ---------------------------------------------------------------------------------------------
def test_zscan_autofocus_converges_and_is_recorded(client: TestClient) -> None:
    client.post("/stage/z", json={"z_um": 6.0}, headers=AUTH)
    before = client.get("/runs").json()["total"]
    r = client.post("/autofocus", json={"routine": "zscan", "options": ZSCAN_OPTIONS}, headers=AUTH)
    assert r.status_code == 202
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["kind"] == "autofocus"
    done = wait_job(client, job["id"])
    assert done["status"] == "succeeded", done
    result = done["result"]
    for key in ("final_z_um", "frames_used", "estimate_um", "confidence", "outcome", "duration_s"):
        assert key in result
    assert result["outcome"] == "converged" and result["frames_used"] >= 3
    assert abs(truth_um(client)) < 1.0  # the stage ended near the simulated focal plane
    assert result["final_z_um"] == pytest.approx(client.get("/stage/z").json()["z_um"])
    runs = client.get("/runs").json()
    assert runs["total"] == before + 1
    newest = runs["items"][0]
    assert newest["job_id"] == job["id"] and newest["routine"] == "zscan" and newest["outcome"] == "converged"
    assert newest["start_z_um"] == pytest.approx(6.0, abs=0.05)
    assert newest["final_z_um"] == pytest.approx(result["final_z_um"])
    assert newest["frames_used"] == result["frames_used"]
    detail = client.get(f"/runs/{newest['id']}").json()
    assert detail["record"]["moves"] == result["moves"]


def test_second_moving_job_gets_409_with_the_running_job(client: TestClient) -> None:
    client.post("/stage/z", json={"z_um": 3.0}, headers=AUTH)
    first = client.post("/autofocus", json={"routine": "zscan"}, headers=AUTH).json()
    try:
        for method, path, body in (
            ("POST", "/autofocus", {"routine": "oneshot"}),
            ("POST", "/focus-lock", {}),
            ("POST", "/stage/z", {"dz_um": 1.0}),
        ):
            problem = assert_problem(client.request(method, path, json=body, headers=AUTH), 409, "busy")
            assert problem["job_id"] == first["id"]
        assert client.get("/status").json()["busy_job"]["id"] == first["id"]
    finally:
        client.delete(f"/jobs/{first['id']}", params={"wait_s": 30}, headers=AUTH)
    assert wait_job(client, first["id"])["status"] in ("cancelled", "succeeded")


def test_cancel_stops_the_job_and_records_it(client: TestClient) -> None:
    client.post("/stage/z", json={"z_um": -5.0}, headers=AUTH)
    job = client.post("/autofocus", json={"routine": "zscan", "options": {"tolerance_um": 0.05}}, headers=AUTH).json()
    # wait for the first frame so the cancel lands mid-run
    deadline = time.monotonic() + 60
    while client.get(f"/jobs/{job['id']}").json()["progress"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    r = client.delete(f"/jobs/{job['id']}", params={"wait_s": 60}, headers=AUTH)
    assert r.status_code == 200
    done = r.json()
    assert done["status"] == "cancelled", done
    assert done["error"]["type"].endswith(":cancelled") and done["cancel_requested"] is True
    assert client.get("/status").json()["busy_job"] is None
    assert client.get("/stage/z").json()["busy"] is False
    run = client.get("/runs", params={"outcome": "cancelled"}).json()["items"][0]
    assert run["job_id"] == job["id"]
    assert_problem(client.delete("/jobs/does-not-exist", headers=AUTH), 404, "not-found")


def test_stop_cancels_the_running_job(client: TestClient) -> None:
    client.post("/stage/z", json={"z_um": 4.0}, headers=AUTH)
    job = client.post("/autofocus", json={"routine": "zscan"}, headers=AUTH).json()
    r = client.post("/stage/stop", headers=AUTH).json()
    assert r["cancelled_job_id"] == job["id"]
    assert wait_job(client, job["id"])["status"] == "cancelled"


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_job_events_stream_as_server_sent_events(client: TestClient) -> None:
    client.post("/stage/z", json={"z_um": 2.0}, headers=AUTH)
    job = client.post("/autofocus", json={"routine": "zscan"}, headers=AUTH).json()
    with client.stream("GET", f"/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = parse_sse(text)
    kinds = [e[0] for e in events]
    assert kinds[-1] == "done" and events[-1][1]["status"] == "succeeded"
    progress = [data for kind, data in events if kind == "progress"]
    assert progress[0]["event"] == "start" and progress[-1]["event"] == "done"
    assert any(p["event"] == "score" for p in progress)  # the z-scan's sharpness samples
    assert events[-1][1]["result"]["final_z_um"] == progress[-1]["record"]["final_z_um"]
    # Resuming after the last event id gives nothing more than the end.
    last_id = text.strip().split("id: ")[-1].split("\n")[0]
    with client.stream("GET", f"/jobs/{job['id']}/events", headers={"Last-Event-ID": last_id}) as r:
        assert parse_sse("".join(r.iter_text())) == []


def test_focus_lock_on_and_off(client: TestClient) -> None:
    r = client.post("/focus-lock", json={"options": {"interval_s": 0.3, "dead_band_um": 0.1}}, headers=AUTH)
    assert r.status_code == 202
    job_id = r.json()["id"]
    assert r.json()["kind"] == "focus-lock"
    deadline = time.monotonic() + 60
    while client.get(f"/jobs/{job_id}").json()["progress"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    state = client.get("/focus-lock").json()
    assert state["active"] is True and state["job_id"] == job_id
    update = client.get(f"/jobs/{job_id}").json()["progress"]
    assert {"defocus_um", "z_um", "correction_um", "state"} <= set(update)
    off = client.delete("/focus-lock", headers=AUTH).json()
    assert off["active"] is False
    done = wait_job(client, job_id)
    assert done["status"] == "cancelled" and done["result"]["steps"] >= 1
    assert client.delete("/focus-lock", headers=AUTH).json()["active"] is False  # idempotent


@pytest.mark.parametrize(
    "options", [{"min_confidence": 2.0}, {"measure": "sharpness?"}, {"search_range_um": -1}, {"typo_option": 1}]
)
def test_invalid_autofocus_options_are_refused(client: TestClient, options: dict[str, Any]) -> None:
    r = client.post("/autofocus", json={"routine": "zscan", "options": options}, headers=AUTH)
    assert_problem(r, 422, "validation")
    assert client.get("/status").json()["busy_job"] is None


@pytest.mark.parametrize("path", ["/autofocus", "/focus-lock"])
def test_a_focus_offset_out_of_range_is_refused_with_the_allowed_range(client: TestClient, path: str) -> None:
    r = client.post(path, json={"options": {"focus_offset_um": 7.5}}, headers=AUTH)
    assert "-5..+5 um" in assert_problem(r, 422, "validation")["detail"]
    assert client.get("/status").json()["busy_job"] is None


def test_unknown_routine_is_refused(client: TestClient) -> None:
    problem = assert_problem(client.post("/autofocus", json={"routine": "magic"}, headers=AUTH), 422, "validation")
    assert "oneshot" in problem["detail"]


# -- datasets -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../escape", "/etc", "a/b", "..", ".hidden", "x" * 80, ""])
def test_dataset_names_cannot_leave_the_data_root(client: TestClient, name: str) -> None:
    r = client.post("/datasets/acquire", json={"name": name}, headers=AUTH)
    assert_problem(r, 422)


def test_dataset_acquisition_writes_under_the_data_root(client: TestClient) -> None:
    data_root = Path(client.app.state.service.settings.data_root)
    plan = {"z_offsets_um": [-1.0, 0.0, 1.0], "z_reference": "physical_focal_plane"}
    r = client.post("/datasets/acquire", json={"name": "svc-test", "plan": plan}, headers=AUTH)
    assert r.status_code == 202, r.text
    done = wait_job(client, r.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["planes_written"] == 3 and done["result"]["path"] == "svc-test"
    assert (data_root / "svc-test" / "manifest.json").is_file()
    again = client.post("/datasets/acquire", json={"name": "svc-test", "plan": plan}, headers=AUTH)
    assert "already exists" in assert_problem(again, 422)["detail"]


# -- frames and prediction ------------------------------------------------------------------------
def test_frame_png_and_jpeg_with_downscale(client: TestClient) -> None:
    png = client.get("/frame", params={"format": "png"})
    assert png.headers["content-type"] == "image/png"
    image = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (448, 448, 3)
    jpeg = client.get("/frame", params={"format": "jpeg", "max_width": 112})
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(jpeg.content, np.uint8), cv2.IMREAD_COLOR).shape == (112, 112, 3)
    assert_problem(client.get("/frame", params={"format": "gif"}), 422, "validation")


def read_mjpeg_parts(chunks: Any, count: int) -> list[bytes]:
    buffer = b""
    parts: list[bytes] = []
    for chunk in chunks:
        buffer += chunk
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            headers = buffer[:head_end].decode()
            assert headers.startswith("--frame") and "image/jpeg" in headers
            length = int(headers.split("Content-Length: ")[1].split("\r\n")[0])
            if len(buffer) < head_end + 4 + length + 2:
                break
            parts.append(buffer[head_end + 4 : head_end + 4 + length])
            buffer = buffer[head_end + 4 + length + 2 :]
        if len(parts) >= count:
            break
    return parts


def test_mjpeg_stream_sends_jpeg_frames(client: TestClient) -> None:
    with client.stream("GET", "/stream.mjpg", params={"max_frames": 2, "max_width": 128}) as r:
        assert r.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        parts = read_mjpeg_parts(r.iter_bytes(), 2)
    assert len(parts) == 2
    for jpeg in parts:
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (128, 128, 3)


def test_estimate_of_the_live_frame(client: TestClient) -> None:
    z0 = client.get("/stage/z").json()["z_um"]
    e = client.get("/estimate").json()
    assert e["tiles_total"] == 4 and len(e["region_map"]) == 3 and all(len(row) == 3 for row in e["region_map"])
    assert e["z_um"] == z0 and isinstance(e["simulated_truth_defocus_um"], float)
    assert client.get("/stage/z").json()["z_um"] == z0
    assert client.get("/status").json()["last_prediction"]["source"] == "live"


def test_predict_an_uploaded_image(client: TestClient) -> None:
    png = client.get("/frame", params={"format": "png"}).content
    z0 = client.get("/stage/z").json()["z_um"]
    r = client.post("/predict", files={"file": ("frame.png", png, "image/png")})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["frame_shape"] == [448, 448] and p["tiles_total"] == 4 and len(p["tiles"]) == 4
    assert 0.0 <= p["confidence"] <= 1.0 and 0.0 < p["brightness"] < 1.0
    assert len(p["region_map"]) == 3
    # near_model "auto": the near-focus model reads the frame exactly when the wide reading is in -2..+6 um
    assert p["model"] == ("near" if -2.0 <= p["wide_defocus_um"] <= 6.0 else "wide")
    assert client.get("/stage/z").json()["z_um"] == z0  # no hardware touched
    # the same image gives the same estimate as the live-frame route would compute from it
    again = client.post("/predict", files={"file": ("frame.png", png, "image/png")}).json()
    assert again["defocus_um"] == pytest.approx(p["defocus_um"])
    # 16-bit mono TIFF
    frame16 = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.uint16) << 4
    ok, tif = cv2.imencode(".tiff", frame16)
    assert ok
    r16 = client.post("/predict", files={"file": ("f.tiff", tif.tobytes(), "image/tiff")}, params={"bit_depth": 12})
    assert r16.status_code == 200, r16.text


def test_tile_budget_setting_reaches_the_predictor(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, predictor_max_tiles=2))) as c:
        png = c.get("/frame", params={"format": "png"}).content
        p = c.post("/predict", files={"file": ("frame.png", png, "image/png")}).json()
    assert p["tiles_total"] == 4 and p["tiles_used"] == 2  # the default field has 4 non-blank tiles


def test_predict_refuses_bad_uploads(client: TestClient) -> None:
    garbage = client.post("/predict", files={"file": ("x.png", b"not an image")})
    assert "decoded" in assert_problem(garbage, 422)["detail"]
    _, small = cv2.imencode(".png", np.zeros((100, 100, 3), np.uint8))
    problem = assert_problem(client.post("/predict", files={"file": ("s.png", small.tobytes())}), 422, "invalid-input")
    assert "224" in problem["detail"]
    assert_problem(client.post("/predict"), 422, "validation")


def test_upload_size_limit_is_413(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, upload_limit_bytes=4096))) as c:
        big = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
        _, png = cv2.imencode(".png", big)
        problem = assert_problem(c.post("/predict", files={"file": ("big.png", png.tobytes())}), 413)
        assert problem["type"].endswith("payload-too-large") and "4096" in problem["detail"]


# -- runs, metrics ----------------------------------------------------------------------------------
def test_runs_paging_and_filters(client: TestClient) -> None:
    everything = client.get("/runs", params={"limit": 1000}).json()
    assert everything["total"] == len(everything["items"]) >= 1
    page = client.get("/runs", params={"limit": 1, "offset": 1}).json()
    if everything["total"] > 1:
        assert page["items"][0]["id"] == everything["items"][1]["id"]
    zscans = client.get("/runs", params={"routine": "zscan"}).json()
    assert all(run["routine"] == "zscan" for run in zscans["items"])
    future = client.get("/runs", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert future == {"items": [], "total": 0, "limit": 50, "offset": 0}
    assert_problem(client.get("/runs", params={"limit": 0}), 422, "validation")
    assert_problem(client.get("/runs/999999"), 404, "not-found")


def test_metrics_in_prometheus_text_format(client: TestClient) -> None:
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    runs = client.get("/runs", params={"routine": "zscan", "outcome": "converged"}).json()["total"]
    assert samples['autofocus_runs_total{routine="zscan",outcome="converged"}'] == runs
    assert samples["autofocus_stage_z_um"] == pytest.approx(client.get("/stage/z").json()["z_um"])
    assert samples["autofocus_job_running"] == 0
    assert samples['autofocus_errors_total{type="unauthorized"}'] >= 1
    count = samples['autofocus_duration_seconds_count{routine="zscan"}']
    assert samples['autofocus_duration_seconds_bucket{routine="zscan",le="+Inf"}'] == count
    assert any(name.startswith('http_requests_total{method="GET",route="/status"') for name in samples)


# -- OpenAPI ----------------------------------------------------------------------------------------
def test_openapi_documents_every_response(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    expected = {
        ("post", "/autofocus"): {"202", "401", "409", "422", "503"},
        ("post", "/stage/z"): {"200", "401", "409", "422", "503"},
        ("post", "/predict"): {"200", "401", "413", "422"},
        ("delete", "/jobs/{job_id}"): {"200", "401", "404", "422"},
    }
    for (method, path), codes in expected.items():
        assert set(schema["paths"][path][method]["responses"]) == codes, (method, path)
    for path, item in schema["paths"].items():
        for method, op in item.items():
            for code, response in op["responses"].items():
                if int(code) >= 400 and (path, code) != ("/readyz", "503"):
                    assert list(response["content"]) == [PROBLEM], (method, path, code)
            if method in ("post", "delete") and path != "/predict":  # /predict reads only
                assert op["security"] == [{"APIKeyHeader": []}], (method, path)
    assert "security" not in schema["paths"]["/status"]["get"]  # read-only routes open by default


# -- settings ---------------------------------------------------------------------------------------
def test_settings_from_toml_env_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "autofocus.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\nsim_frame_width = 1296\nstage_limits_um = [-50, 50]\n')
    monkeypatch.setenv("AUTOFOCUS_PORT", "9002")
    s = load_settings(config, {"host": "127.0.0.1"})
    assert (s.port, s.host, s.sim_frame_width, s.stage_limits_um) == (9002, "127.0.0.1", 1296, (-50.0, 50.0))
    monkeypatch.setenv("AUTOFOCUS_CONFIG", str(config))
    assert load_settings().sim_frame_width == 1296


@pytest.mark.parametrize(
    ("overrides", "toml", "named"),
    [
        ({"port": 0}, "", "port"),
        ({"runtime": "tensorrt"}, "", "runtime"),
        ({"predictor_max_tiles": 0}, "", "predictor_max_tiles"),
        ({"stage_limits_um": [5, -5]}, "", "stage_limits_um"),
        ({"camera": "opencv"}, "", "stage"),
        ({"model_path": "/no/such/model.pt"}, "", "model_path"),
        ({"near_model": "/no/such/near.pt"}, "", "near_model"),
        ({"far_model": "/no/such/far.pt"}, "", "far_model"),
        ({"host": "lab pc"}, "", "host"),
        ({}, "bogus_setting = 1\n", "bogus_setting"),
    ],
)
def test_wrong_settings_fail_naming_the_setting(
    tmp_path: Path, overrides: dict[str, Any], toml: str, named: str
) -> None:
    from drivers.errors import ConfigurationError

    config = None
    if toml:
        config = tmp_path / "c.toml"
        config.write_text(toml)
    with pytest.raises(ConfigurationError, match=named):
        load_settings(config, overrides, environ={})


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    from drivers.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_unknown_environment_variables_are_reported() -> None:
    from service.settings import unknown_env_settings

    env = {"AUTOFOCUS_PORT": "1", "AUTOFOCUS_API_KY": "x", "AUTOFOCUS_CONFIG": "c.toml", "PATH": "/bin"}
    assert unknown_env_settings(env) == ["AUTOFOCUS_API_KY"]


# -- one run at the camera's full size ---------------------------------------------------------------
@pytest.mark.slow
def test_full_size_frames(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sim_frame_width=2592, sim_frame_height=1944)
    with TestClient(create_app(settings)) as c:
        frame = c.get("/frame", params={"format": "jpeg"})
        assert cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR).shape == (1944, 2592, 3)
        e = c.get("/estimate", params={"max_age_ms": 60000}).json()
        assert e["frame_shape"] == [1944, 2592] and e["tiles_total"] == 88


def test_every_setting_is_documented() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "service.md").read_text()
    missing = [name for name in Settings.model_fields if f"`AUTOFOCUS_{name.upper()}`" not in text]
    assert missing == [], f"docs/service.md lacks these settings: {missing}"
