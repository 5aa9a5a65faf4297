"""Service settings for tests: small simulated frames, a temporary runs database and data root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.settings import Settings, load_settings


def make_test_settings(tmp: Path, api_key: str, **overrides: Any) -> Settings:
    """448x448 simulated frames, runs DB and data root under ``tmp``, one predictor thread; ``overrides`` win."""
    values: dict[str, Any] = {
        "sim_frame_width": 448,
        "sim_frame_height": 448,
        "api_key": api_key,
        "runs_db": str(tmp / "runs.sqlite3"),
        "calibration_file": str(tmp / "calibration.json"),
        "data_root": str(tmp / "data"),
        "predictor_threads": 1,
    }
    values.update(overrides)
    return load_settings(overrides=values, environ={})
