"""Service benchmark: request latency and throughput on loopback, and autofocus end-to-end time.

* ``GET /status`` and ``POST /predict`` (a full camera frame, encoded as JPEG) with 1..N
  concurrent clients, each level bounded by a request count and a time limit;
* ``POST /autofocus`` to job done (z-scan and one-shot) on the simulated microscope.

Everything runs on 127.0.0.1 against ``autofocus serve`` started in its own process (a server
in the clients' process would share their GIL and add tens of ms per request). Figures depend on
the machine (printed with the results) and on what else runs on it.

    python benchmarks/bench_service.py [--quick] [--out benchmarks/results/service.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from machine import cpu_model  # benchmarks/machine.py (scripts run from benchmarks/)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.client import wait_until_ready  # noqa: E402

KEY = "bench-key-0123456789"


@contextmanager
def server_process(settings: dict[str, Any]) -> Iterator[str]:
    """``autofocus serve`` in its own process (clients in this process do not share its GIL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    overrides = [f"--set={name}={json.dumps(value)}" for name, value in settings.items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOFOCUS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "autofocus", "serve", "--port", str(port), *overrides],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, timeout_s=300, process=proc)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def machine_info() -> dict[str, Any]:
    cpu = cpu_model()
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def load(url: str, clients: int, requests_per_client: int, time_limit_s: float, send: Any) -> dict[str, Any]:
    """``clients`` threads, each with its own connection, sending until their count or the time is up."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit_s

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": KEY}) as c:
            for _ in range(requests_per_client):
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                r = send(c)
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                    else:
                        errors.append(f"{r.status_code}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if not latencies:
        return {"clients": clients, "requests": 0, "errors": len(errors)}
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(latencies) / wall, 2),
        "latency_ms": {
            "mean": round(statistics.fmean(latencies) * 1e3, 2),
            "p50": round(percentile(latencies, 50) * 1e3, 2),
            "p95": round(percentile(latencies, 95) * 1e3, 2),
            "p99": round(percentile(latencies, 99) * 1e3, 2),
            "max": round(max(latencies) * 1e3, 2),
        },
    }


def autofocus_runs(url: str, routine: str, options: dict[str, Any], starts_um: list[float]) -> dict[str, Any]:
    """POST /autofocus -> job done, from each start position; wall time and the truth afterwards."""
    rows = []
    with httpx.Client(base_url=url, timeout=300, headers={"X-API-Key": KEY}) as c:
        for z0 in starts_um:
            c.post("/stage/z", json={"z_um": z0}).raise_for_status()
            t0 = time.perf_counter()
            job = c.post("/autofocus", json={"routine": routine, "options": options}).json()
            while True:
                state = c.get(f"/jobs/{job['id']}").json()
                if state["status"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.02)
            wall = time.perf_counter() - t0
            result = state.get("result") or {}
            truth = c.get("/status").json()["simulated_truth"]["defocus_um"]
            rows.append(
                {
                    "start_z_um": z0,
                    "status": state["status"],
                    "outcome": result.get("outcome"),
                    "frames_used": result.get("frames_used"),
                    "post_to_done_s": round(wall, 3),
                    "routine_duration_s": result.get("duration_s"),
                    "true_defocus_after_um": round(truth, 3),
                }
            )
    walls = [r["post_to_done_s"] for r in rows]
    return {
        "routine": routine,
        "options": options,
        "runs": rows,
        "post_to_done_s_median": round(statistics.median(walls), 3),
        "abs_true_defocus_after_um_median": round(statistics.median(abs(r["true_defocus_after_um"]) for r in rows), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and runs (smoke test)")
    parser.add_argument("--frame-width", type=int, default=2592)
    parser.add_argument("--frame-height", type=int, default=1944)
    parser.add_argument("--af-frame-width", type=int, default=896, help="simulated frames for the autofocus runs")
    parser.add_argument("--af-frame-height", type=int, default=672)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "service.json")
    args = parser.parse_args()

    info = machine_info()
    print("machine:", json.dumps(info))
    per_client = 20 if args.quick else 100
    time_limit_s = 10.0 if args.quick else 30.0
    starts = [-4.0, 3.0] if args.quick else [-5.0, -3.0, 3.0, 5.0]
    results: dict[str, Any] = {"machine": info, "loopback": "127.0.0.1", "status": [], "predict": []}

    with tempfile.TemporaryDirectory() as tmp:
        base = {
            "api_key": KEY,
            "runs_db": str(Path(tmp) / "runs.sqlite3"),
            "data_root": str(Path(tmp) / "data"),
            "log_level": "warning",
        }
        frame = {"sim_frame_width": args.frame_width, "sim_frame_height": args.frame_height}
        with server_process({**base, **frame}) as url:
            with httpx.Client(base_url=url, timeout=300) as c:
                jpeg = c.get("/frame", params={"format": "jpeg"}).content
            print(f"server {url}; predict payload: {args.frame_width}x{args.frame_height} JPEG, {len(jpeg)} bytes")
            for clients in (1, 4, 16):
                row = load(url, clients, per_client, time_limit_s, lambda c: c.get("/status"))
                results["status"].append(row)
                print("GET /status", json.dumps(row))
            predict_per_client = max(3, per_client // 10)
            for clients in (1, 2, 4):
                row = load(
                    url,
                    clients,
                    predict_per_client,
                    time_limit_s * 2,
                    lambda c: c.post("/predict", files={"file": ("frame.jpg", jpeg, "image/jpeg")}),
                )
                results["predict"].append(row)
                print("POST /predict", json.dumps(row))

        af_frame = {"sim_frame_width": args.af_frame_width, "sim_frame_height": args.af_frame_height}
        with server_process({**base, **af_frame}) as url:
            zscan = autofocus_runs(
                url, "zscan", {"search_range_um": 16, "coarse_step_um": 2.0, "measure": "variance_of_laplacian"}, starts
            )
            print("POST /autofocus zscan", json.dumps({k: v for k, v in zscan.items() if k != "runs"}))
            oneshot = autofocus_runs(url, "oneshot", {}, starts)
            print("POST /autofocus oneshot", json.dumps({k: v for k, v in oneshot.items() if k != "runs"}))
            results["autofocus"] = {
                "frame": [args.af_frame_width, args.af_frame_height],
                "zscan": zscan,
                "oneshot": oneshot,
            }

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
