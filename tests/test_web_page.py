"""The operator's web page in REAL headless Chromium (Debian's /usr/bin/chromium via Playwright).

The page is served by a real uvicorn server on the simulated microscope. The test drives it
like an operator: live view, API key, Go to / Up, Z-scan autofocus (the trace updates, the
simulated truth ends near 0), STOP; it saves a screenshot (to $AUTOFOCUS_SCREENSHOT, e.g.
docs/img/web_page.png for the README, else to the temp folder) and checks a tablet layout.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_settings import make_test_settings

from autofocus.calibration_settings import (
    CALIBRATED_AIM_UM,
    DEFAULT_FIELDS,
    DEFAULT_RANGE_UM,
    LOCK_CURVE_RANGE_UM,
    LOCK_INTEGRAL_GAIN,
)
from service.app import create_app
from service.testing import serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "page-key-0123456789"
SCREENSHOT = Path(os.environ.get("AUTOFOCUS_SCREENSHOT", Path(tempfile.gettempdir()) / "autofocus_web_page.png"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("page")
    # a slide tilted 2 um/mm in X, so that the calibration fits (and the page shows) a tilt
    settings = make_test_settings(
        tmp, KEY, sim_frame_width=672, sim_frame_height=504, stream_fps=4, sim_tilt_x_um_per_mm=2.0
    )
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def wait_js(page: Any, expression: str, timeout_s: float) -> None:
    """``page.wait_for_function`` that says what the page showed when it times out."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(expression, timeout=timeout_s * 1000)
    except PlaywrightTimeout as exc:
        shown = {sel: page.text_content(sel) for sel in ("#job-badge", "#job-text", "#toasts", "#z-value")}
        base = page.url.rstrip("/")
        served = [
            line for line in httpx.get(f"{base}/metrics").text.splitlines() if line.startswith("http_requests_total")
        ]
        raise AssertionError(f"timed out waiting for {expression!r}; the page showed {shown}; served {served}") from exc


JOB_ENDED = (
    "document.getElementById('job-text').textContent.includes('succeeded') || "
    "document.getElementById('job-text').textContent.includes('failed')"
)


def truth_um(server: str) -> float:
    return float(httpx.get(f"{server}/status").json()["simulated_truth"]["defocus_um"])


def test_operator_page_end_to_end(server: str, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")

    # live view shows frames; status fills in Z and limits
    wait_js(page, "document.getElementById('live').naturalWidth > 0", 60)
    assert page.evaluate("document.getElementById('live').naturalWidth") == 672
    wait_js(page, "document.getElementById('z-value').textContent !== '–'", 30)
    assert "µm" in page.text_content("#limit-lo")

    # without a key a move is refused and the page says so
    page.fill("#goto-z", "-4")
    page.click("#goto-form button")
    page.wait_for_selector(".toast.bad", timeout=15_000)
    assert "API key" in page.text_content(".toast.bad")
    assert page.text_content("#key-state") == "wrong or missing key"

    # with the key (stored in localStorage) Go to and Up move the stage
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    assert page.evaluate("localStorage.getItem('ldse-autofocus.apiKey')") == KEY
    page.click("#goto-form button")
    wait_js(page, "document.getElementById('z-value').textContent === '-4.00'", 30)
    page.select_option("#step-size", "1")
    page.click("#step-up")
    wait_js(page, "document.getElementById('z-value').textContent === '-3.00'", 30)
    start_truth = truth_um(server)
    assert abs(start_truth) > 2.5

    # Z-scan autofocus: the job runs, the trace fills, Z ends in focus, the run is listed
    z_points_before = page.evaluate("ui.series.z.length")
    page.click("#af-zscan")
    wait_js(page, "document.getElementById('job-badge').textContent === 'running'", 15)
    wait_js(page, "document.getElementById('job-text').textContent.includes('succeeded')", 120)
    assert abs(truth_um(server)) < 1.5
    final_z = httpx.get(f"{server}/stage/z").json()["z_um"]
    assert page.evaluate("ui.series.z.length") > z_points_before
    wait_js(page, f"Math.abs(ui.series.z[ui.series.z.length - 1].v - ({final_z})) < 0.01", 10)
    wait_js(page, "ui.series.est.length > 0 && ui.regionMap !== null", 30)
    wait_js(page, "document.querySelector('#runs-body td.outcome') !== null", 15)
    assert page.text_content("#runs-body tr:first-child td:nth-child(2)") == "zscan"
    assert "Final Z" in page.text_content("#af-result")

    time.sleep(2.5)  # one more live estimate so the region map and trace are drawn for the picture
    wait_js(page, "document.querySelectorAll('.toast').length === 0", 10)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # in focus: "Set from estimate" takes the median of the live estimates at this Z as the focus
    # offset, and the next one-shot aims at it
    final_z = httpx.get(f"{server}/stage/z").json()["z_um"]
    here = f"ui.liveEstimates.filter((e) => Math.abs(e.z - ({final_z})) < 0.01)"
    wait_js(page, f"{here}.length >= 2", 30)
    page.click("#offset-here")
    page.wait_for_selector(".toast.ok", timeout=10_000)
    assert "Focus offset set" in page.text_content(".toast.ok")
    seen = sorted(e["v"] for e in page.evaluate(here))  # the estimates the page had when clicked (or one more)
    offset = float(page.input_value("#focus-offset"))
    assert min(seen) - 0.01 <= offset <= max(seen) + 0.01
    page.click("#af-oneshot")
    wait_js(page, JOB_ENDED, 120)
    jobs = httpx.get(f"{server}/jobs").json()
    assert jobs[0]["params"]["routine"] == "oneshot"
    assert jobs[0]["params"]["options"]["focus_offset_um"] == offset
    wait_js(page, "document.querySelectorAll('.toast').length === 0", 15)

    # STOP cancels a running autofocus
    page.fill("#goto-z", "3")
    page.click("#goto-form button")
    wait_js(page, "document.getElementById('z-value').textContent === '3.00'", 30)
    page.click("#af-zscan")
    wait_js(page, "document.getElementById('job-badge').textContent === 'running'", 15)
    page.click("#stop")
    wait_js(page, "document.getElementById('job-text').textContent.includes('cancelled')", 60)
    jobs = httpx.get(f"{server}/jobs").json()
    assert jobs[0]["status"] == "cancelled" and jobs[0]["params"]["routine"] == "zscan"
    assert errors == []
    page.close()


def test_tablet_layout(server: str, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 820, "height": 1180}, device_scale_factor=1)
    page.goto(server + "/")
    wait_js(page, "document.getElementById('z-value').textContent !== '–'", 30)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 820  # no sideways scrolling
    stop = page.locator("#stop").bounding_box()
    assert stop is not None and stop["width"] > 600 and stop["height"] >= 60  # big STOP across the page
    live = page.locator("#viewer").bounding_box()
    assert live is not None and live["width"] > 700
    page.close()


def open_page_with_key(browser: Any, server: str, errors: list[str]) -> Any:
    """A desktop-sized operator page with the API key entered; its script errors go to ``errors``."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    return page


def move_in_legs(server: str, z_um: float, max_step_um: float) -> None:
    """Move the stage to ``z_um`` through the API in moves the stage accepts (at most ``max_step_um``)."""
    z = httpx.get(f"{server}/stage/z").json()["z_um"]
    leg = 0.99 * max_step_um  # a full step can exceed the limit by a rounding error
    while abs(z_um - z) > 1e-6:
        z = z_um if abs(z_um - z) <= leg else z + (leg if z_um > z else -leg)
        r = httpx.post(f"{server}/stage/z", json={"z_um": z}, headers={"X-API-Key": KEY}, timeout=60)
        assert r.status_code == 200, r.text


def test_calibrate_aim_and_drop_from_the_page(server: str, browser: Any) -> None:
    errors: list[str] = []
    page = open_page_with_key(browser, server, errors)
    wait_js(page, "document.getElementById('cal-text').textContent === 'No calibration.'", 30)
    # the operator focuses the sample first (here with the simulator's truth), then calibrates there
    stage = httpx.get(f"{server}/stage/z").json()
    focus_z = round(stage["z_um"] + stage["direction"] * truth_um(server), 2)
    page.fill("#goto-z", str(focus_z))
    page.click("#goto-form button")
    wait_js(page, f"Math.abs(Number(document.getElementById('z-value').textContent) - ({focus_z})) < 0.011", 30)
    page.click("#cal-measure")
    # the default sweep: 9 fields x 41 planes
    wait_js(page, "document.getElementById('cal-text').textContent.startsWith('Calibrated')", 600)
    stored = httpx.get(f"{server}/calibration").json()
    assert stored["active"] and f"{stored['summary']['reading_at_focus_um']:+.2f}" in page.text_content("#cal-text")
    assert stored["summary"]["z_range_um"] == [-DEFAULT_RANGE_UM, DEFAULT_RANGE_UM]  # the service's default sweep
    assert stored["summary"]["fields"] == DEFAULT_FIELDS and stored["summary"]["tilt_um_per_mm"] is not None
    assert "slide tilt" in page.text_content("#cal-text")
    shown = "corrected for each field's brightness" in page.text_content("#cal-text")
    assert shown == stored["summary"]["brightness_correction"]
    assert page.is_disabled("#focus-offset")  # the calibration holds the focus now
    assert float(page.input_value("#aim")) == CALIBRATED_AIM_UM  # the aim measured best with a calibration
    # a one-shot with the first move aimed beyond focus runs through the calibration
    wait_js(page, "document.querySelectorAll('.toast').length === 0", 15)
    page.click("#af-oneshot")
    wait_js(page, JOB_ENDED, 120)
    job = httpx.get(f"{server}/jobs").json()[0]
    assert job["params"]["routine"] == "oneshot" and job["params"]["options"]["aim_um"] == CALIBRATED_AIM_UM
    assert job["params"]["options"]["focus_offset_um"] == 0 and job["params"]["calibration"] == stored["summary"]
    page.click("#cal-drop")
    wait_js(page, "document.getElementById('cal-text').textContent === 'No calibration.'", 15)
    assert not page.is_disabled("#focus-offset") and httpx.get(f"{server}/calibration").json()["active"] is False
    assert page.input_value("#aim") == "0"
    # a calibration stored by another client shows up on the page (from /status)
    cal = {
        "format": "ldse-focus-calibration",
        "format_version": 1,
        "z_um": [-1, 0, 1],
        "reading_um": [-1, 0.4, 2],
        "spread_um": [0, 0, 0],
        "fields": 1,
    }
    assert httpx.put(f"{server}/calibration", json=cal, headers={"X-API-Key": KEY}).status_code == 200
    wait_js(page, "document.getElementById('cal-text').textContent.startsWith('Calibrated: reads +0.40')", 15)
    assert page.is_disabled("#focus-offset")
    assert float(page.input_value("#aim")) == CALIBRATED_AIM_UM  # a calibration in use: the page proposes the aim
    # a page opened while a calibration is stored proposes the aim too
    later = open_page_with_key(browser, server, errors)
    wait_js(later, "document.getElementById('cal-text').textContent.startsWith('Calibrated: reads +0.40')", 30)
    assert float(later.input_value("#aim")) == CALIBRATED_AIM_UM
    later.close()
    assert httpx.delete(f"{server}/calibration", headers={"X-API-Key": KEY}).status_code == 200
    assert errors == []
    page.close()


def test_hold_this_focus_from_the_page(server: str, browser: Any) -> None:
    errors: list[str] = []
    page = open_page_with_key(browser, server, errors)
    wait_js(page, "document.getElementById('z-value').textContent !== '–'", 30)
    assert page.is_checked("#lock-here")  # the lock holds the focus the sample is at, by default
    # near the soft limit the sweep cannot be made: the lock fails, says why, and nothing moved
    stage = httpx.get(f"{server}/stage/z").json()
    start_z, near_limit = stage["z_um"], stage["limits_um"][1] - 1.0
    move_in_legs(server, near_limit, stage["max_step_um"])
    wait_js(page, f"Math.abs(Number(document.getElementById('z-value').textContent) - ({near_limit})) < 0.011", 30)
    page.click(".lock .switch")
    page.wait_for_selector(".toast.bad", timeout=30_000)
    assert "Focus lock failed" in page.text_content(".toast.bad") and "nothing moved" in page.text_content("#lock-text")
    assert httpx.get(f"{server}/stage/z").json()["z_um"] == pytest.approx(near_limit)
    wait_js(page, "!document.getElementById('lock-toggle').checked", 10)
    # focused (here with the simulator's truth), the lock measures this field, then holds its focus
    move_in_legs(server, start_z, stage["max_step_um"])
    focus_z = round(start_z + stage["direction"] * truth_um(server), 2)
    page.fill("#goto-z", str(focus_z))
    page.click("#goto-form button")
    wait_js(page, f"Math.abs(Number(document.getElementById('z-value').textContent) - ({focus_z})) < 0.011", 30)
    wait_js(page, "document.querySelectorAll('.toast').length === 0", 15)
    page.click(".lock .switch")
    wait_js(page, "document.getElementById('lock-text').textContent.includes('from the held focus')", 120)
    job = httpx.get(f"{server}/focus-lock").json()["job"]
    assert job["params"]["calibrate_range_um"] == LOCK_CURVE_RANGE_UM
    assert job["params"]["options"]["integral_gain"] == LOCK_INTEGRAL_GAIN
    assert page.text_content("#lock-badge") == "locked"
    page.click(".lock .switch")
    wait_js(page, "document.getElementById('lock-text').textContent.includes('ended (cancelled)')", 30)
    ended = httpx.get(f"{server}/jobs/{job['id']}").json()
    lo, hi = ended["result"]["calibration"]["z_range_um"]  # planes with too few reliable frames are left out
    assert -LOCK_CURVE_RANGE_UM <= lo < 0.0 < hi <= LOCK_CURVE_RANGE_UM
    assert abs(truth_um(server)) < 1.0
    # started 3 um out of focus, the lock holds that plane and the page says to check the focus
    out_z = round(focus_z - stage["direction"] * 3.0, 2)
    page.fill("#goto-z", str(out_z))
    page.click("#goto-form button")
    wait_js(page, f"Math.abs(Number(document.getElementById('z-value').textContent) - ({out_z})) < 0.011", 30)
    wait_js(page, "document.querySelectorAll('.toast').length === 0", 15)
    page.click(".lock .switch")
    page.wait_for_selector(".toast.bad", timeout=120_000)
    shown = page.text_content(".toast.bad")
    assert "check the focus" in shown and "may not be in focus" in shown
    page.click(".lock .switch")
    wait_js(page, "document.getElementById('lock-text').textContent.includes('ended (cancelled)')", 30)
    assert errors == []
    page.close()
