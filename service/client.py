"""``AutofocusClient``: a small synchronous Python client for the service (over httpx).

    from service.client import AutofocusClient

    with AutofocusClient("http://127.0.0.1:8000", api_key="...") as af:
        print(af.status()["stage"]["z_um"])
        job = af.autofocus("hybrid", wait=True)       # the finished job; job["result"]["final_z_um"]
        af.move_z(dz_um=-2.0)
        print(af.predict_file("frame.png")["defocus_um"])

Error responses raise ``ApiError`` carrying the problem+json document (``.problem``,
``.status``, ``.job_id``). ``wait_until_ready(url)`` waits for a service a script has just
started.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

__all__ = ["ApiError", "AutofocusClient", "wait_until_ready"]

TERMINAL = ("succeeded", "failed", "cancelled")


def wait_until_ready(
    base_url: str, timeout_s: float = 60.0, *, process: subprocess.Popen[Any] | None = None, poll_s: float = 0.2
) -> None:
    """Poll ``GET /readyz`` until it answers 200; raise if ``process`` (the server) exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base_url.rstrip('/')}/readyz", timeout=5.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the service at {base_url} exited (status {process.poll()}) before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the service at {base_url} was not ready within {timeout_s:g} s")
        time.sleep(poll_s)


class ApiError(Exception):
    """An error response of the service; ``problem`` is its problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.job_id: str | None = problem.get("job_id")
        super().__init__(f"HTTP {status} {problem.get('title', '')}: {problem.get('detail', '')}".strip())


class AutofocusClient:
    """Talks to one service. ``api_key`` is sent as ``X-API-Key`` on every request."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout_s: float = 30.0):
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

    # -- plumbing -------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AutofocusClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, **options: Any) -> Any:
        """One request; ``options`` are httpx's (json, params, files). Raises ``ApiError`` on >= 400."""
        response = self._http.request(method, path, **options)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.reason_phrase, "detail": response.text}
            raise ApiError(response.status_code, problem)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response

    # -- reading ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Devices, Z and limits, the busy job, the model (and on the simulator the truth)."""
        return self._request("GET", "/status")

    def z_um(self) -> float:
        return float(self._request("GET", "/stage/z")["z_um"])

    def frame(self, fmt: str = "png", max_width: int | None = None) -> bytes:
        """The latest frame, encoded (``png`` or ``jpeg``)."""
        params: dict[str, Any] = {"format": fmt}
        if max_width is not None:
            params["max_width"] = max_width
        return self._request("GET", "/frame", params=params).content

    def estimate(self) -> dict[str, Any]:
        """The model's estimate of the live frame (nothing moves)."""
        return self._request("GET", "/estimate")

    def predict_file(self, path: str | Path, bit_depth: int | None = None) -> dict[str, Any]:
        """Defocus, confidence, tiles and region map of an image file (no hardware touched)."""
        p = Path(path)
        params = {"bit_depth": bit_depth} if bit_depth is not None else None
        with p.open("rb") as fh:
            return self._request("POST", "/predict", files={"file": (p.name, fh)}, params=params)

    def runs(self, limit: int = 50, offset: int = 0, routine: str | None = None, outcome: str | None = None) -> dict:
        """A page of recorded runs, newest first: ``{"items": [...], "total": n, ...}``."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if routine is not None:
            params["routine"] = routine
        if outcome is not None:
            params["outcome"] = outcome
        return self._request("GET", "/runs", params=params)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{job_id}")

    # -- acting -----------------------------------------------------------------------------------
    def move_z(self, z_um: float | None = None, dz_um: float | None = None) -> dict[str, Any]:
        """Move to ``z_um`` or by ``dz_um`` (exactly one); refused outside the limits (``ApiError`` 422)."""
        body = {"z_um": z_um} if z_um is not None else {"dz_um": dz_um}
        return self._request("POST", "/stage/z", json=body)

    def stop(self) -> dict[str, Any]:
        """Stop the stage now and cancel the running job."""
        return self._request("POST", "/stage/stop")

    def wait(self, job_id: str, timeout_s: float = 300.0, poll_s: float = 0.2) -> dict[str, Any]:
        """Poll until the job is finished; returns it. ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s} s")
            time.sleep(poll_s)

    def autofocus(
        self,
        routine: str = "hybrid",
        options: dict[str, Any] | None = None,
        wait: bool = True,
        timeout_s: float = 300.0,
    ) -> dict[str, Any]:
        """Start an autofocus job; with ``wait`` return the finished job (else the new one)."""
        job = self._request("POST", "/autofocus", json={"routine": routine, "options": options or {}})
        return self.wait(job["id"], timeout_s) if wait else job

    def cancel(self, job_id: str, wait_s: float = 10.0) -> dict[str, Any]:
        return self._request("DELETE", f"/jobs/{job_id}", params={"wait_s": wait_s})

    def focus_lock_on(
        self,
        options: dict[str, Any] | None = None,
        duration_s: float | None = None,
        calibrate_range_um: float | None = None,
    ) -> dict:
        """Start the focus lock; returns its job. ``calibrate_range_um`` (e.g. 4, with
        ``options={"integral_gain": 0.2}``): first measure this field around the current Z and
        hold this focus (``POST /focus-lock``'s field of that name)."""
        body: dict[str, Any] = {"options": options or {}}
        if duration_s is not None:
            body["duration_s"] = duration_s
        if calibrate_range_um is not None:
            body["calibrate_range_um"] = calibrate_range_um
        return self._request("POST", "/focus-lock", json=body)

    def focus_lock_off(self) -> dict[str, Any]:
        return self._request("DELETE", "/focus-lock")

    def focus_lock(self) -> dict[str, Any]:
        return self._request("GET", "/focus-lock")
