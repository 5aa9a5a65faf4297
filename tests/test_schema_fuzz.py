"""Schema fuzzing with schemathesis against the real uvicorn server: no 5xx, responses match the schema.

Bounded: a few examples per operation and small (224x224) simulated frames, so the run stays
under a minute. ``POST /datasets/acquire`` is left out here (each accepted request records a
z-stack for seconds of CPU; it has its own tests in test_service.py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from service_settings import make_test_settings

from service.app import create_app
from service.settings import Settings
from service.testing import serve_in_thread

KEY = "fuzz-key-0123456789"

pytestmark = pytest.mark.slow


def fuzz_settings(tmp: Path) -> Settings:
    return make_test_settings(
        tmp, KEY, sim_frame_width=224, sim_frame_height=224, stream_max_s=0.5, upload_limit_bytes=200_000
    )


# The schema is read from an app that is built but never started (building opens nothing);
# the cases run against a started twin of it on a real uvicorn server.
schema = schemathesis.openapi.from_dict(
    json.loads(json.dumps(create_app(fuzz_settings(Path(tempfile.gettempdir()) / "ldse-fuzz-schema")).openapi()))
).exclude(path="/datasets/acquire")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_in_thread(create_app(fuzz_settings(tmp_path_factory.mktemp("fuzz")))) as url:
        yield url


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, server_url: str) -> None:
    case.call_and_validate(base_url=server_url, headers={"X-API-Key": KEY}, checks=CHECKS, timeout=30)
