"""Property-based fuzzing of the HTTP API from its own OpenAPI document: no input makes it answer 5xx.

Schemathesis generates valid and invalid paths, queries, headers and bodies for every operation and sends them
to the real ASGI app (embedded mode, one webhook channel to the sandbox) with a valid token. Every answer must
be something other than a server error, documented for its operation, and shaped as its schema says.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from broadcaster.interfaces.api import create_app
from broadcaster.sandbox import Sandbox
from broadcaster.settings import Settings
from broadcaster.store.db import sessions
from broadcaster.store.models import Broadcast
from broadcaster.store.queries import wait_for

TOKEN = "fuzz-token-0123456789abcdef"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_settings(running_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Embedded mode on a log of its own, one fast webhook channel: broadcasts stay few and cheap."""
    database = tmp_path_factory.mktemp("fuzz") / "broadcaster.db"
    configured = Settings.model_validate(
        {
            "broker_url": "",
            "database_url": f"sqlite:///{database}",
            "retry": {"max_attempts": 2, "backoff": "50ms", "backoff_max": "100ms"},
            "channels": {"webhook": running_sandbox.channel_config("webhook")},
            "api": {"tokens": [{"name": "fuzzer", "token": TOKEN, "scopes": ["read", "write"]}]},
        }
    )
    yield configured
    # Let the embedded worker finish what the fuzzing started before other tests use this process.
    with sessions(configured.database_url)() as session:
        broadcasts = list(session.scalars(select(Broadcast.id)))
    assert wait_for(configured, broadcasts, timeout=60)


@pytest.fixture(scope="module")
def api_schema(fuzz_settings: Settings) -> Any:
    # The fuzzing phase (valid and invalid data, max_examples each) without the coverage phase's hundreds of
    # boundary cases per operation, to stay within a minute.
    config = SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}}})
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(fuzz_settings), config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail(case: Any) -> None:
    """Whatever the input, the API answers with a documented status and shape, never a 5xx."""
    started = time.monotonic()
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)
    assert time.monotonic() - started < 30


def test_the_schema_covers_every_endpoint(api_schema: Any) -> None:
    operations = {f"{op.method.upper()} {op.path}" for op in (r.ok() for r in api_schema.get_all_operations())}
    assert {
        "POST /v1/incidents",
        "POST /v1/incidents/{incident_id}/updates",
        "GET /v1/incidents",
        "GET /v1/incidents/{incident_id}",
        "GET /v1/broadcasts/{broadcast_id}",
        "GET /v1/deliveries",
        "POST /v1/deliveries/{delivery_id}/retry",
        "POST /v1/preview",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    } <= operations


def test_fuzzing_reached_the_sandbox(fuzz_settings: Settings, running_sandbox: Sandbox, api_schema: Any) -> None:
    """The fuzzer's valid incidents were broadcast for real (so the success path was fuzzed too)."""
    with sessions(fuzz_settings.database_url)() as session:
        broadcasts = list(session.scalars(select(Broadcast.id)))
    assert broadcasts, "no generated request opened an incident"
    assert Path(fuzz_settings.database_url.removeprefix("sqlite:///")).exists()
