"""Property-based fuzzing of every documented operation with schemathesis.

Each operation of the app's own OpenAPI document gets up to ``FUZZ_EXAMPLES`` (50) valid generated
requests and 40 % as many invalid ones (negative mode: wrong types, missing fields, out-of-range
values), derandomized so a CI run is reproducible, sent with valid credentials for its role: the SDK
publishable key, a registered device's token, the manager, POS and compliance keys. Every answer
must be no server error, a documented status code with a documented content type, headers and a
body matching the documented schema. It runs on the embedded default (SQLite + in-process state).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.runtime import Runtime
from core.clock import ManualClock
from core.settings import INSECURE_KEYS, EmailBackend, Environment, Settings
from tests.conftest import NO_RATE_LIMITS, START

FUZZ_EXAMPLES = int(os.environ.get("OFFER_ENGINE_FUZZ_EXAMPLES", "50"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class Credentials:
    def __init__(self, device_token: str) -> None:
        self.device_token = device_token

    def for_path(self, path: str) -> dict[str, str]:
        if path == "/v1/sdk/devices":
            return {"X-API-Key": INSECURE_KEYS["sdk"]}
        if path.startswith("/v1/sdk/"):
            return {"Authorization": f"Bearer {self.device_token}"}
        for prefix, role in (
            ("/v1/manager/", "manager"),
            ("/v1/pos/", "pos"),
            ("/v1/compliance/", "compliance"),
        ):
            if path.startswith(prefix):
                return {"X-API-Key": INSECURE_KEYS[role]}
        return {}


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Credentials]]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    settings_ = Settings(
        environment=Environment.TEST,
        database_url=f"sqlite:///{folder / 'fuzz.db'}",
        email_backend=EmailBackend.FILE,
        email_file_dir=folder / "outbox",
        run_scheduler=False,
        rate_limits=NO_RATE_LIMITS,
    )
    runtime = Runtime.build(settings_, clock=ManualClock(START))
    runtime.start()
    app = create_app(runtime=runtime)
    with TestClient(app) as client:
        manager = {"X-API-Key": INSECURE_KEYS["manager"]}
        for purpose in ("location_tracking", "marketing_offers"):
            notice = {"purpose": purpose, "version": "n-1", "text": f"We use {purpose}."}
            assert client.post("/v1/manager/notices", headers=manager, json=notice).is_success
        store = {
            "name": "Corner Cafe",
            "fence": {"lon": 24.9414, "lat": 60.1699, "radius_m": 50},
        }
        assert client.post("/v1/manager/stores", headers=manager, json=store).is_success
        device = client.post(
            "/v1/sdk/devices",
            headers={"X-API-Key": INSECURE_KEYS["sdk"]},
            json={"customer_ref": "fuzz", "platform": "android", "email": "fuzz@example.com"},
        ).json()
        token = device["token"]
        consent = {"purpose": "location_tracking", "granted": True, "notice_version": "n-1"}
        bearer = {"Authorization": f"Bearer {token}"}
        assert client.post("/v1/sdk/consents", headers=bearer, json=consent).is_success
    try:
        yield app, Credentials(token)
    finally:
        runtime.stop()


# An answer that never ends by design (a live feed without max_events) cannot be fuzzed here;
# its own tests read a bounded stream (tests/api/test_holdout_funnel.py).
ENDLESS = frozenset({"/v1/manager/events/stream"})


def _fuzz(operation: Any, credentials: Credentials, mode: GenerationMode, examples: int) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=credentials.for_path(case.path), checks=CHECKS)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_as_documented(
    fuzz_target: tuple[Any, Credentials], mode: GenerationMode
) -> None:
    app, credentials = fuzz_target
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        if operation.path in ENDLESS:
            continue
        examples = FUZZ_EXAMPLES if mode is GenerationMode.POSITIVE else FUZZ_EXAMPLES * 2 // 5
        try:
            _fuzz(operation, credentials, mode, examples)
        except Unsatisfiable:  # negative mode: the operation takes nothing that can be wrong
            continue
        except (Exception, BaseExceptionGroup) as exc:  # report every operation, not the first
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 15, "the OpenAPI document lists the API's operations"
    assert not failures, "\n\n".join(failures)
