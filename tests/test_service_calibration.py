"""/calibration on the service (TestClient, simulated microscope, bundled model): store, measure,
use in /autofocus and /focus-lock, persist across a restart, refuse bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_settings import make_test_settings
from test_service import AUTH, KEY, assert_problem, wait_job

from autofocus.calibration import FocusCalibration
from autofocus.calibration_settings import CALIBRATED_AIM_UM, DEFAULT_FIELDS, LOCK_INTEGRAL_GAIN
from drivers.errors import ConfigurationError
from service.app import create_app

LINEAR = FocusCalibration(
    z_um=[-2.0, -1.0, 0.0, 1.0, 2.0], reading_um=[-2.5, -1.0, 0.5, 2.0, 3.5], spread_um=[0.0] * 5, fields=1
).to_dict()


BRIGHTNESS = {
    "brightness_slope_um": [0.0, 0.0, 20.0, 30.0, 0.0],
    "brightness_mean": 0.8,
    "brightness_range": [0.78, 0.81],
}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("svc-cal")


@pytest.fixture(scope="module")
def client(tmp: Path) -> TestClient:
    with TestClient(create_app(make_test_settings(tmp, KEY))) as c:
        yield c


def test_store_read_and_drop_a_calibration(client: TestClient, tmp: Path) -> None:
    empty = {"active": False, "calibration": None, "summary": None, "suggested_aim_um": CALIBRATED_AIM_UM}
    assert client.get("/calibration").json() == empty
    assert client.put("/calibration", json=LINEAR).status_code == 401
    stored = client.put("/calibration", json=LINEAR, headers=AUTH)
    assert stored.status_code == 200, stored.text
    assert stored.json()["active"] and stored.json()["summary"]["reading_at_focus_um"] == 0.5
    assert stored.json()["suggested_aim_um"] == CALIBRATED_AIM_UM  # what the web page proposes
    assert json.loads((tmp / "calibration.json").read_text()) == LINEAR
    assert client.get("/calibration").json()["calibration"] == LINEAR
    assert client.get("/status").json()["calibration"]["reading_at_focus_um"] == 0.5
    dropped = client.delete("/calibration", headers=AUTH).json()
    assert dropped["active"] is False and not (tmp / "calibration.json").exists()
    # a calibration with the brightness correction (format version 3) is stored as it came
    corrected = {**LINEAR, "format_version": 3, **BRIGHTNESS}
    stored = client.put("/calibration", json=corrected, headers=AUTH)
    assert stored.status_code == 200, stored.text
    assert stored.json()["summary"]["brightness_correction"] is True
    assert FocusCalibration.load(tmp / "calibration.json") == FocusCalibration.from_dict(corrected)
    client.delete("/calibration", headers=AUTH)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reading_um": [0.1, 0.1, 0.1, 0.1, 0.1]}, "changes by only"),
        ({"z_um": [1.0, 2.0, 3.0, 4.0, 5.0]}, "include focus"),
        ({"spread_um": [0.0]}, "one length"),
        ({"zz_um": [1.0]}, "zz_um"),
        ({"format": "other"}, "format"),
        ({"fields": True}, "fields"),
        ({"z_um": "012"}, "z_um"),
        ({"tilt_um_per_mm": [True, 0.5]}, "tilt_um_per_mm"),
        ({"tilt_um_per_mm": [1.0]}, "tilt_um_per_mm"),
        ({"format_version": 1, "tilt_um_per_mm": [1.0, 0.5]}, "needs format_version 2"),
        ({"format_version": 2, **BRIGHTNESS}, "need(s) format_version 3"),
        ({"format_version": 3, **BRIGHTNESS, "brightness_mean": None}, "must be given together"),
        ({"format_version": 3, **BRIGHTNESS, "brightness_range": [0.8]}, "brightness_range"),
    ],
)
def test_a_bad_calibration_is_refused_and_the_old_one_kept(
    client: TestClient, tmp: Path, change: dict[str, Any], message: str
) -> None:
    assert client.put("/calibration", json=LINEAR, headers=AUTH).status_code == 200
    body = assert_problem(client.put("/calibration", json={**LINEAR, **change}, headers=AUTH), 422)
    assert message in json.dumps(body)
    assert client.get("/calibration").json()["calibration"] == LINEAR
    assert json.loads((tmp / "calibration.json").read_text()) == LINEAR
    client.delete("/calibration", headers=AUTH)


def test_measure_then_autofocus_and_lock_read_through_it(client: TestClient) -> None:
    bad = client.post("/calibration/measure", json={"range_um": 1.0, "step_um": 2.0}, headers=AUTH)
    assert "larger than range_um" in assert_problem(bad, 422)["detail"]
    r = client.post("/calibration/measure", json={"range_um": 2.0, "step_um": 1.0, "min_confidence": 0.0}, headers=AUTH)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "succeeded", job
    cal = FocusCalibration.from_dict(client.get("/calibration").json()["calibration"])
    assert cal.z_um == [-2.0, -1.0, 0.0, 1.0, 2.0] and job["result"]["summary"] == cal.summary()
    # the default: a 3 x 3 grid of fields where there is an XY stage (5 planes are too few to fit a tilt)
    assert job["params"]["fields"] == cal.fields == DEFAULT_FIELDS and cal.tilt_um_per_mm is None
    assert job["params"]["brightness_correction"] is True

    options = {"min_confidence": 0.0, "min_move_um": 0.0, "approach": "none", "aim_um": 1.0}
    r = client.post("/autofocus", json={"routine": "oneshot", "options": options}, headers=AUTH)
    job = wait_job(client, r.json()["id"])
    assert job["params"]["calibration"] == cal.summary() and job["result"]["calibration"] == cal.summary()
    for estimate in job["result"]["estimates"]:
        expected = cal.defocus_um(estimate["defocus_um"], estimate["brightness"])
        assert 0.0 < estimate["brightness"] < 1.0 and estimate["focus_error_um"] == pytest.approx(expected)

    # an offset and the calibration cannot both hold the focus
    with_offset = {"routine": "oneshot", "options": {"focus_offset_um": 0.5}}
    body = assert_problem(client.post("/autofocus", json=with_offset, headers=AUTH), 422)
    assert "use_calibration false" in body["detail"]
    lock_with_offset = {"options": {"focus_offset_um": 0.5}, "use_calibration": True}
    assert_problem(client.post("/focus-lock", json=lock_with_offset, headers=AUTH), 422)
    r = client.post("/autofocus", json={**with_offset, "use_calibration": False}, headers=AUTH)
    job = wait_job(client, r.json()["id"])
    assert job["params"]["calibration"] is None and job["result"]["focus_offset_um"] == 0.5

    # the lock uses it only when asked (a curve from other fields holds worse than none, docs/autofocus.md)
    for use, expected in ((False, None), (True, cal.summary())):
        body = {"options": {"interval_s": 0.2}, "duration_s": 0.5, **({"use_calibration": True} if use else {})}
        r = client.post("/focus-lock", json=body, headers=AUTH)
        job = wait_job(client, r.json()["id"])
        assert job["params"]["calibration"] == expected


def test_the_calibration_survives_a_restart_and_a_broken_file_stops_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "calibration.json").write_text(json.dumps(LINEAR))
    with TestClient(create_app(make_test_settings(tmp_path, KEY))) as c:
        assert c.get("/calibration").json()["calibration"] == LINEAR
    other = {**LINEAR, "source": "someone_elses_model.pt"}  # measured with other models: loaded, with a warning
    (tmp_path / "calibration.json").write_text(json.dumps(other))
    with (
        caplog.at_level("WARNING", logger="service.state"),
        TestClient(create_app(make_test_settings(tmp_path, KEY))) as c,
    ):
        assert c.get("/calibration").json()["calibration"]["source"] == "someone_elses_model.pt"
        near = c.get("/status").json()["model"]["near_model"]["source"]
    warned = [r.getMessage() for r in caplog.records if "calibrate again" in r.getMessage()]
    assert len(warned) == 1 and "someone_elses_model.pt" in warned[0] and near in warned[0]
    (tmp_path / "calibration.json").write_text("{broken")
    with (
        pytest.raises(ConfigurationError, match="calibration_file"),
        TestClient(create_app(make_test_settings(tmp_path, KEY))),
    ):
        pass


def test_the_calibration_cannot_be_replaced_while_one_is_measured(client: TestClient) -> None:
    body = {"range_um": 4.0, "step_um": 0.5, "fields": 3, "min_confidence": 0.0}
    r = client.post("/calibration/measure", json=body, headers=AUTH)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    try:
        busy = assert_problem(client.put("/calibration", json=LINEAR, headers=AUTH), 409)
        assert job_id in busy["detail"]
        assert_problem(client.delete("/calibration", headers=AUTH), 409)
    finally:
        client.delete(f"/jobs/{job_id}", headers=AUTH)
        job = wait_job(client, job_id)
    assert job["status"] == "cancelled"
    client.delete("/calibration", headers=AUTH)


def test_a_measure_without_the_brightness_correction_fits_none(client: TestClient) -> None:
    body = {"range_um": 1.0, "step_um": 1.0, "fields": 5, "min_confidence": 0.0, "brightness_correction": False}
    job = wait_job(client, client.post("/calibration/measure", json=body, headers=AUTH).json()["id"])
    assert job["status"] == "succeeded", job
    assert job["params"]["brightness_correction"] is False
    assert job["result"]["summary"]["brightness_correction"] is False
    assert client.get("/calibration").json()["calibration"]["brightness_slope_um"] is None
    bad = client.post("/calibration/measure", json={**body, "brightness_correction": "maybe"}, headers=AUTH)
    assert "brightness_correction" in json.dumps(assert_problem(bad, 422))
    client.delete("/calibration", headers=AUTH)


def test_a_lock_can_first_measure_the_field_it_holds(client: TestClient) -> None:
    for bad, message in (
        ({"calibrate_range_um": 2.0, "use_calibration": True}, "not both"),
        ({"calibrate_range_um": 2.0, "options": {"focus_offset_um": 0.5}}, "send focus_offset_um 0"),
        ({"calibrate_range_um": 0}, "calibrate_range_um"),
        ({"calibrate_range_um": 10.5}, "calibrate_range_um"),
    ):
        assert message in json.dumps(assert_problem(client.post("/focus-lock", json=bad, headers=AUTH), 422))
    stage = client.get("/stage/z").json()  # focus first (here with the simulator's truth)
    truth = client.get("/status").json()["simulated_truth"]["defocus_um"]
    assert client.post("/stage/z", json={"dz_um": stage["direction"] * truth}, headers=AUTH).status_code == 200
    z0 = client.get("/stage/z").json()["z_um"]
    options = {"interval_s": 0.2, "integral_gain": LOCK_INTEGRAL_GAIN, "min_confidence": 0.0}
    r = client.post("/focus-lock", json={"options": options, "calibrate_range_um": 2.0}, headers=AUTH)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while "state" not in (client.get(f"/jobs/{job_id}").json()["progress"] or {}):  # the sweep reports planes first
        assert time.monotonic() < deadline, "the lock did not start after its sweep"
        time.sleep(0.1)
    client.delete("/focus-lock", headers=AUTH)
    job = wait_job(client, job_id)
    assert job["status"] == "cancelled" and job["params"]["calibrate_range_um"] == 2.0
    curve = job["result"]["calibration"]
    assert curve["z_range_um"] == [-2.0, 2.0] and curve["planes"] == 9 and curve["fields"] == 1
    assert job["result"]["steps"] >= 1 and job["result"]["warning"] is None
    assert client.get("/calibration").json()["active"] is False  # the curve is the lock's own, not stored
    assert abs(client.get("/stage/z").json()["z_um"] - z0) < 3.0
    # started 3 um out of focus, the lock holds that plane and says it may not be focused
    assert client.post("/stage/z", json={"z_um": z0 - stage["direction"] * 3.0}, headers=AUTH).status_code == 200
    body = {"options": options, "calibrate_range_um": 2.0, "duration_s": 0.5}
    job = wait_job(client, client.post("/focus-lock", json=body, headers=AUTH).json()["id"])
    assert job["status"] == "succeeded" and "may not be in focus" in job["result"]["warning"]
