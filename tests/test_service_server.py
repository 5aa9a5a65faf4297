"""The service on a REAL uvicorn server on 127.0.0.1 (a thread of this process), and `autofocus serve`.

What TestClient cannot show: concurrent requests on real sockets, a stream that stops when
its client goes, the runs database surviving a restart, the command line start-up.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from service_settings import make_test_settings

from service.app import create_app
from service.client import wait_until_ready
from service.settings import Settings
from service.testing import serve_in_thread

KEY = "server-key-0123456789"
AUTH = {"X-API-Key": KEY}
REPO = Path(__file__).resolve().parent.parent


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    return make_test_settings(tmp, KEY, **{"data_root": str(tmp / "datasets"), "stream_fps": 10, **overrides})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_in_thread(create_app(make_settings(tmp_path_factory.mktemp("server")))) as url:
        yield url


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


def wait_job(http: httpx.Client, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = http.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def metric(http: httpx.Client, name: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[1])
    raise AssertionError(f"{name} not in /metrics")


def test_every_read_endpoint_answers(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json()["ready"] is True
    assert http.get("/status").json()["devices"]["camera"]["sensor_shape"] == [448, 448]
    assert "limits_um" in http.get("/stage/z").json()
    assert http.get("/focus-lock").json()["active"] is False
    assert isinstance(http.get("/jobs").json(), list)
    assert "items" in http.get("/runs").json()
    assert http.get("/metrics").text.startswith("# HELP")
    assert http.get("/").headers["content-type"].startswith("text/html")
    png = http.get("/frame", params={"format": "png"})
    assert cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR).shape == (448, 448, 3)
    assert len(http.get("/estimate").json()["region_map"]) == 3
    prediction = http.post("/predict", files={"file": ("f.png", png.content, "image/png")}).json()
    assert prediction["tiles_total"] == 4
    schema = http.get("/openapi.json").json()
    assert {"/autofocus", "/predict", "/stream.mjpg", "/jobs/{job_id}/events", "/runs"} <= set(schema["paths"])


def test_auth_and_limits_over_the_wire(http: httpx.Client) -> None:
    r = http.post("/stage/z", json={"dz_um": 1})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert http.post("/stage/z", json={"dz_um": 1}, headers={"X-API-Key": "nope"}).status_code == 401
    lo, hi = http.get("/stage/z").json()["limits_um"]
    refused = http.post("/stage/z", json={"z_um": lo - 1}, headers=AUTH)
    assert refused.status_code == 422 and refused.json()["allowed"]["limits_um"] == [lo, hi]
    moved = http.post("/stage/z", json={"z_um": 1.0}, headers=AUTH)
    assert moved.status_code == 200 and moved.json()["z_um"] == pytest.approx(1.0, abs=0.05)


def test_concurrent_job_requests_start_exactly_one(http: httpx.Client, server: str) -> None:
    http.post("/stage/z", json={"z_um": 3.0}, headers=AUTH)
    results: list[httpx.Response] = []
    barrier = threading.Barrier(3)

    def post() -> None:
        with httpx.Client(base_url=server, timeout=60) as c:
            barrier.wait()
            results.append(c.post("/autofocus", json={"routine": "zscan"}, headers=AUTH))

    threads = [threading.Thread(target=post) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = [r for r in results if r.status_code == 202]
    busy = [r for r in results if r.status_code == 409]
    assert len(accepted) == 1 and len(busy) == 2
    job_id = accepted[0].json()["id"]
    assert all(r.json()["job_id"] == job_id for r in busy)
    cancelled = http.delete(f"/jobs/{job_id}", params={"wait_s": 60}, headers=AUTH).json()
    assert cancelled["status"] in ("cancelled", "succeeded")


def test_sse_over_a_real_socket(http: httpx.Client) -> None:
    http.post("/stage/z", json={"z_um": -2.0}, headers=AUTH)
    job = http.post("/autofocus", json={"routine": "zscan"}, headers=AUTH).json()
    events: list[str] = []
    with http.stream("GET", f"/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
    assert events[0] == "status" and "progress" in events and events[-1] == "done"
    assert http.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"


def test_mjpeg_first_frames_and_the_stream_ends_when_the_client_goes(http: httpx.Client, server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as viewer, viewer.stream("GET", "/stream.mjpg") as r:
        assert r.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        buffer = b""
        chunks = r.iter_bytes()  # kept referenced: a dropped iterator closes the response
        for chunk in chunks:
            buffer += chunk
            if buffer.count(b"--frame") >= 3:
                break
        assert metric(http, "autofocus_streams_active") == 1
    first = buffer.split(b"\r\n\r\n", 1)[1]
    jpeg = first[: first.index(b"\r\n--frame")]
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
    deadline = time.monotonic() + 20
    while metric(http, "autofocus_streams_active") != 0:  # the server noticed the client left
        assert time.monotonic() < deadline, "the MJPEG stream kept running after the client disconnected"
        time.sleep(0.2)


def test_stream_client_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, stream_max_clients=1)
    with (
        serve_in_thread(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=30) as a,
        a.stream("GET", "/stream.mjpg") as first,
        httpx.Client(base_url=url, timeout=30) as b,
    ):
        chunks = first.iter_bytes()
        next(chunks)
        second = b.get("/stream.mjpg", params={"max_frames": 1})
        assert second.status_code == 429
        assert second.json()["allowed"] == {"stream_max_clients": 1}


def test_runs_survive_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as c:
        c.post("/stage/z", json={"z_um": 2.0}, headers=AUTH)
        job = c.post("/autofocus", json={"routine": "zscan"}, headers=AUTH).json()
        finished = wait_job(c, job["id"])
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as c:
        runs = c.get("/runs").json()
        assert runs["total"] == 1
        run = runs["items"][0]
        assert run["job_id"] == job["id"] and run["final_z_um"] == pytest.approx(finished["result"]["final_z_um"])
        with pytest.raises(KeyError):
            _ = c.get(f"/jobs/{job['id']}").json()["id"]  # jobs live in memory; the record stays


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_autofocus_serve_command(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AUTOFOCUS_RUNS_DB": str(tmp_path / "runs.sqlite3"),
        "AUTOFOCUS_DATA_ROOT": str(tmp_path / "data"),
        "AUTOFOCUS_SIM_FRAME_WIDTH": "448",
        "AUTOFOCUS_SIM_FRAME_HEIGHT": "448",
        "AUTOFOCUS_PREDICTOR_THREADS": "1",
    }
    env.pop("AUTOFOCUS_API_KEY", None)
    env.pop("AUTOFOCUS_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "autofocus", "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        key = None
        for line in proc.stdout:
            match = re.search(r"API key \(generated.*\): (\S+)", line)
            if match:
                key = match.group(1)
                break
        assert key, "serve did not print the generated API key"
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, timeout_s=90, process=proc)
        assert httpx.post(f"{base}/stage/z", json={"dz_um": 1}).status_code == 401
        moved = httpx.post(f"{base}/stage/z", json={"dz_um": 1}, headers={"X-API-Key": key})
        assert moved.status_code == 200
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
        # uvicorn re-raises the captured SIGINT after a clean shutdown: exit status 130
        assert proc.returncode in (0, 130), output
        assert "Application shutdown complete" in output
        assert "sim-focus: stop" in output  # the stage was stopped before the devices closed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_autofocus_serve_refuses_a_wrong_setting(tmp_path: Path) -> None:
    env = {**os.environ, "AUTOFOCUS_STAGE": "asi", "AUTOFOCUS_RUNS_DB": str(tmp_path / "r.sqlite3")}
    result = subprocess.run(
        [sys.executable, "-m", "autofocus", "serve", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "stage" in result.stderr and "simulated" in result.stderr  # names the setting, no fall-back


def test_wait_until_ready_reports_a_dead_server_and_a_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    exited.wait()
    with pytest.raises(RuntimeError, match=r"exited \(status 3\)"):
        wait_until_ready(url, timeout_s=30, process=exited)
    with pytest.raises(TimeoutError, match=r"not ready within 0\.3 s"):
        wait_until_ready(url, timeout_s=0.3, poll_s=0.05)
