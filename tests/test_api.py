"""The HTTP API through its real ASGI app, broadcasting through a real Celery worker to the sandbox."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from broadcaster.core.errors import ConfigError
from broadcaster.domain import idempotency
from broadcaster.interfaces.api import create_app
from broadcaster.sandbox import Answer, Sandbox
from broadcaster.settings import ApiSettings, ApiToken, Settings, load_settings
from channels.email.emulator import RECIPIENTS

if TYPE_CHECKING:
    from tests.support.cluster import Worker

WRITER = "writer-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
POSTER = "poster-token-0123456789abcdef"
TOKENS = ApiSettings(
    tokens=[
        ApiToken(name="ops-bot", token=SecretStr(WRITER), scopes=["read", "write"]),
        ApiToken(name="dashboard", token=SecretStr(READER), scopes=["read"]),
        ApiToken(name="alerts", token=SecretStr(POSTER), scopes=["write"]),
    ]
)
#: the webhook and email channels only: other channel types may be added to the sandbox over time
CHANNELS = ["webhook", "email"]


def auth(token: str = WRITER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def opening(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Checkout errors",
        "status": "investigating",
        "message": "Some payments fail; we are looking into it.",
        "impact": "major",
        "components": ["checkout"],
        "channels": CHANNELS,
    }
    body.update(overrides)
    return body


@pytest.fixture
def settings(worker: Worker, sandbox: Sandbox) -> Settings:
    """The running worker's configuration (same broker, same log), with API tokens."""
    return load_settings(worker.config).model_copy(update={"api": TOKENS})


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def wait_until_finished(api: TestClient, broadcast_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        summary = api.get(f"/v1/broadcasts/{broadcast_id}", headers=auth()).json()
        if summary["status"] != "pending" or time.monotonic() > deadline:
            return summary
        time.sleep(0.1)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert "Traceback" not in response.text
    return body


# --- authentication ----------------------------------------------------------------------------------------

V1_CALLS = [
    ("POST", "/v1/incidents", opening()),
    ("POST", "/v1/incidents/01HZZZZZZZZZZZZZZZZZZZZZZZ/updates", {"status": "resolved", "message": "ok"}),
    ("GET", "/v1/incidents", None),
    ("GET", "/v1/incidents/01HZZZZZZZZZZZZZZZZZZZZZZZ", None),
    ("GET", "/v1/broadcasts/01HZZZZZZZZZZZZZZZZZZZZZZZ", None),
    ("GET", "/v1/deliveries", None),
    ("POST", "/v1/deliveries/01HZZZZZZZZZZZZZZZZZZZZZZZ/retry", None),
    ("POST", "/v1/preview", opening()),
]


@pytest.mark.parametrize(("method", "path", "body"), V1_CALLS)
def test_every_v1_endpoint_needs_a_valid_token(api: TestClient, method: str, path: str, body: Any) -> None:
    """Without a token, or with a wrong one, every /v1 endpoint answers 401 with a Bearer challenge."""
    for headers in ({}, auth("not-a-configured-token"), {"Authorization": f"Basic {WRITER}"}):
        response = api.request(method, path, json=body, headers=headers)
        problem = assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert problem["instance"] == path


def test_a_refused_request_records_and_sends_nothing(api: TestClient, sandbox: Sandbox) -> None:
    before = len(api.get("/v1/incidents", headers=auth()).json())
    assert api.post("/v1/incidents", json=opening(), headers=auth("guessed-token")).status_code == 401
    assert len(api.get("/v1/incidents", headers=auth()).json()) == before
    time.sleep(0.3)
    assert sandbox.http.received("webhook") == [] and sandbox.smtp.received() == []


def test_a_token_without_the_scope_gets_403(api: TestClient, sandbox: Sandbox) -> None:
    """read cannot post; write alone cannot read; the problem names the missing scope."""
    problem = assert_problem(api.post("/v1/incidents", json=opening(), headers=auth(READER)), 403)
    assert "write" in problem["detail"]
    assert_problem(api.post("/v1/deliveries/01HZZZZZZZZZZZZZZZZZZZZZZZ/retry", headers=auth(READER)), 403)
    problem = assert_problem(api.get("/v1/incidents", headers=auth(POSTER)), 403)
    assert "read" in problem["detail"]
    assert api.get("/v1/incidents", headers=auth(READER)).status_code == 200
    time.sleep(0.3)
    assert sandbox.http.received("webhook") == []


def test_health_readiness_metrics_and_openapi_are_open(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
    assert api.get("/metrics").status_code == 200
    document = api.get("/openapi.json").json()
    assert {
        "/v1/incidents",
        "/v1/incidents/{incident_id}/updates",
        "/v1/incidents/{incident_id}",
        "/v1/broadcasts/{broadcast_id}",
        "/v1/deliveries",
        "/v1/deliveries/{delivery_id}/retry",
        "/v1/preview",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= document["paths"].keys()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_a_token_may_be_configured_by_its_sha256(settings: Settings) -> None:
    import hashlib

    digest = hashlib.sha256(b"hashed-token-0123456789").hexdigest()
    hashed = ApiSettings(tokens=[ApiToken(name="ci", token_sha256=digest, scopes=["read"])])
    client = TestClient(create_app(settings.model_copy(update={"api": hashed})))
    assert client.get("/v1/incidents", headers=auth("hashed-token-0123456789")).status_code == 200
    assert client.get("/v1/incidents", headers=auth(digest)).status_code == 401


def test_a_malformed_token_table_is_a_configuration_error(settings: Settings) -> None:
    bad = ApiSettings(tokens=[ApiToken(name="ci", token_sha256="abc", scopes=["read"])])
    with pytest.raises(ConfigError, match=r"api\.tokens\.0\.token_sha256"):
        create_app(settings.model_copy(update={"api": bad}))
    typo = ApiSettings(tokens=[ApiToken(name="ci", token=SecretStr(WRITER), scopes=["wirte"])])
    with pytest.raises(ConfigError, match="unknown scope 'wirte'"):
        create_app(settings.model_copy(update={"api": typo}))


# --- broadcasting ------------------------------------------------------------------------------------------


def test_opening_an_incident_broadcasts_its_first_update(api: TestClient, sandbox: Sandbox) -> None:
    """202 with the pending summary; the worker delivers to the blog and to every mail recipient."""
    response = api.post("/v1/incidents", json=opening(), headers=auth())
    assert response.status_code == 202, response.text
    summary = response.json()
    assert summary["status"] == "pending"
    assert response.headers["location"] == f"/v1/broadcasts/{summary['broadcast_id']}"
    assert {(d["channel"], d["target"]) for d in summary["deliveries"]} >= {("email", r) for r in RECIPIENTS}

    finished = wait_until_finished(api, summary["broadcast_id"])
    assert finished["status"] == "delivered", finished
    assert {d["status"] for d in finished["deliveries"]} == {"delivered"}
    assert finished["incident_id"] == summary["incident_id"]
    [post] = sandbox.http.received("webhook")
    assert post.note["verified"] is True
    assert post.json["update"]["message"] == "Some payments fail; we are looking into it."
    assert sorted(r for m in sandbox.smtp.received() for r in m.recipients) == sorted(RECIPIENTS)

    incident = api.get(f"/v1/incidents/{summary['incident_id']}", headers=auth(READER)).json()
    assert incident["title"] == "Checkout errors"
    assert incident["status"] == "investigating" and incident["impact"] == "major"
    assert incident["components"] == ["checkout"]
    assert [u["broadcast_ids"] for u in incident["updates"]] == [[summary["broadcast_id"]]]
    assert incident["url"].endswith(f"/incidents/{summary['incident_id']}")


def test_posting_updates_and_listing_open_incidents(api: TestClient, sandbox: Sandbox) -> None:
    """An update with ?wait=true answers 201 once delivered; a resolved incident leaves ?status=open."""
    first = api.post("/v1/incidents", json=opening(title="Search is slow"), headers=auth()).json()
    incident_id = first["incident_id"]
    assert incident_id in [i["id"] for i in api.get("/v1/incidents?status=open", headers=auth()).json()]

    response = api.post(
        f"/v1/incidents/{incident_id}/updates?wait=true&timeout=30",
        json={"status": "resolved", "message": "Search is fast again.", "channels": ["webhook"]},
        headers=auth(),
    )
    assert response.status_code == 201, response.text
    update = response.json()
    assert update["status"] == "delivered"
    assert update["incident_id"] == incident_id and update["broadcast_id"] != first["broadcast_id"]
    assert [d["channel"] for d in update["deliveries"]] == ["webhook"]

    wait_until_finished(api, first["broadcast_id"])
    messages = [r.json["update"]["message"] for r in sandbox.http.received("webhook")]
    assert sorted(messages) == sorted(["Some payments fail; we are looking into it.", "Search is fast again."])

    assert incident_id not in [i["id"] for i in api.get("/v1/incidents?status=open", headers=auth()).json()]
    assert incident_id in [i["id"] for i in api.get("/v1/incidents?status=resolved", headers=auth()).json()]
    timeline = api.get(f"/v1/incidents/{incident_id}", headers=auth()).json()["updates"]
    assert [u["status"] for u in timeline] == ["investigating", "resolved"]


def test_an_idempotent_replay_returns_the_first_broadcast_and_sends_nothing_new(
    api: TestClient, settings: Settings, sandbox: Sandbox
) -> None:
    """The same key and body: the first answer (same broadcast id), one set of posts; another body: 422."""
    headers = {**auth(), "Idempotency-Key": "alert-4711"}
    first = api.post("/v1/incidents", json=opening(), headers=headers)
    assert first.status_code == 202
    # A second API process sharing the database answers the same.
    other_process = TestClient(create_app(settings))
    again = other_process.post("/v1/incidents", json=dict(reversed(opening().items())), headers=headers)
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"

    wait_until_finished(api, first.json()["broadcast_id"])
    time.sleep(0.5)  # a second broadcast, if there were one, would have had time to arrive
    assert len(sandbox.http.received("webhook")) == 1
    assert len(sandbox.smtp.received()) == len(RECIPIENTS)
    assert (
        len([i for i in api.get("/v1/incidents", headers=auth()).json() if i["id"] == first.json()["incident_id"]]) == 1
    )

    changed = api.post("/v1/incidents", json=opening(message="Something else."), headers=headers)
    problem = assert_problem(changed, 422)
    assert problem["errors"] == [{"field": "Idempotency-Key", "in": "header", "message": problem["detail"]}]
    # Keys belong to their token: another token's same key is a new request.
    other = api.post("/v1/incidents", json=opening(), headers={**auth(POSTER), "Idempotency-Key": "alert-4711"})
    assert other.status_code == 202 and other.json()["broadcast_id"] != first.json()["broadcast_id"]
    wait_until_finished(api, other.json()["broadcast_id"])


def test_a_key_still_in_flight_is_a_409(api: TestClient, settings: Settings, sandbox: Sandbox) -> None:
    """While the first request runs (here: waiting on a slow blog), a retry with its key gets 409."""
    sandbox.http.script("webhook", Answer(200, {"ok": True}, delay=2.0))
    headers = {**auth(), "Idempotency-Key": "deploy-88"}
    answers: list[Any] = []
    slow = threading.Thread(
        target=lambda: answers.append(
            api.post("/v1/incidents?wait=true", json=opening(channels=["webhook"]), headers=headers)
        )
    )
    slow.start()
    deadline = time.monotonic() + 10
    while idempotency.stored(settings, "ops-bot", "deploy-88") is None and time.monotonic() < deadline:
        time.sleep(0.02)
    busy = TestClient(create_app(settings)).post("/v1/incidents", json=opening(channels=["webhook"]), headers=headers)
    problem = assert_problem(busy, 409)
    assert busy.headers["retry-after"]
    assert "still being processed" in problem["detail"]
    slow.join(30)
    [first] = answers
    assert first.status_code == 201 and first.json()["status"] == "delivered"
    replay = api.post("/v1/incidents", json=opening(channels=["webhook"]), headers=headers)
    assert replay.json()["broadcast_id"] == first.json()["broadcast_id"]
    assert len(sandbox.http.received("webhook")) == 1


def test_a_failed_request_releases_its_key(api: TestClient, sandbox: Sandbox) -> None:
    """A request refused for bad input stores nothing: the same key works once the input is right."""
    headers = {**auth(), "Idempotency-Key": "retry-me"}
    assert_problem(api.post("/v1/incidents", json=opening(channels=["nowhere"]), headers=headers), 422)
    assert api.post("/v1/incidents", json=opening(channels=["nowhere"]), headers=headers).status_code == 422
    ok = api.post("/v1/incidents?wait=true", json=opening(channels=["webhook"]), headers=headers)
    assert ok.status_code == 201


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x", "status": "investigating"}, "message"),
        (opening(status="on fire"), "status"),
        (opening(impact="apocalyptic"), "impact"),
        (opening(title="   "), "title"),
        (opening(message=""), "message"),
        (opening(channels=["Not A Name"]), "channels.0"),
        (opening(channels=["nowhere"]), "channels"),
        (opening(components="checkout"), "components"),
        (opening(colour="red"), "colour"),
        (opening(message="a\x00b"), "message"),
        ({k: v for k, v in opening().items() if k != "title"}, "title"),
    ],
)
def test_a_bad_body_is_a_422_naming_the_field(api: TestClient, sandbox: Sandbox, body: Any, field: str) -> None:
    problem = assert_problem(api.post("/v1/incidents", json=body, headers=auth()), 422)
    assert field in [e["field"] for e in problem["errors"]], problem
    assert problem["detail"].startswith(field)
    time.sleep(0.2)
    assert sandbox.http.received("webhook") == []


def test_bad_parameters_and_headers_are_422s(api: TestClient) -> None:
    checks = [
        (api.get("/v1/deliveries?status=lost", headers=auth()), "status", "query"),
        (api.get("/v1/incidents?status=sleeping", headers=auth()), "status", "query"),
        (api.get("/v1/incidents?limit=0", headers=auth()), "limit", "query"),
        (api.post("/v1/incidents?wait=true&timeout=0", json=opening(), headers=auth()), "timeout", "query"),
        (
            api.post("/v1/incidents", json=opening(), headers={**auth(), "Idempotency-Key": "k" * 300}),
            "idempotency-key",
            "header",
        ),
        (
            api.post("/v1/incidents", content=b"{not json", headers={**auth(), "Content-Type": "application/json"}),
            "body",
            "body",
        ),
    ]
    for response, field, where in checks:
        problem = assert_problem(response, 422)
        first = problem["errors"][0]
        assert (first["field"].lower(), first["in"]) == (field, where), problem


def test_unknown_ids_are_404s(api: TestClient) -> None:
    missing = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    for response in (
        api.post(f"/v1/incidents/{missing}/updates", json={"status": "resolved", "message": "ok"}, headers=auth()),
        api.get(f"/v1/incidents/{missing}", headers=auth()),
        api.get(f"/v1/broadcasts/{missing}", headers=auth()),
        api.post(f"/v1/deliveries/{missing}/retry", headers=auth()),
        api.post("/v1/preview", json=opening(incident_id=missing, title=None), headers=auth()),
        api.get("/v1/no-such-thing", headers=auth()),
    ):
        problem = assert_problem(response, 404)
        assert problem["detail"]


# --- reading, retrying, previewing -------------------------------------------------------------------------


def test_deliveries_are_listed_by_status_channel_and_incident(api: TestClient, sandbox: Sandbox) -> None:
    summary = api.post("/v1/incidents?wait=true", json=opening(), headers=auth()).json()
    incident = summary["incident_id"]
    rows = api.get(f"/v1/deliveries?incident={incident}", headers=auth(READER)).json()
    assert {r["id"] for r in rows} == {d["id"] for d in summary["deliveries"]}
    assert all(r["incident_id"] == incident and r["broadcast_id"] == summary["broadcast_id"] for r in rows)
    emails = api.get(f"/v1/deliveries?incident={incident}&channel=email&status=delivered", headers=auth()).json()
    assert sorted(r["target"] for r in emails) == sorted(RECIPIENTS)
    assert api.get(f"/v1/deliveries?incident={incident}&status=failed", headers=auth()).json() == []


def test_a_failed_delivery_is_sent_again(api: TestClient, sandbox: Sandbox) -> None:
    """A refused recipient fails; once the mailbox is back, POST .../retry delivers it (and only it)."""
    sandbox.smtp.reject.add(RECIPIENTS[1])
    summary = api.post("/v1/incidents?wait=true", json=opening(channels=["email"]), headers=auth()).json()
    assert summary["status"] == "failed"
    [failed] = [d for d in summary["deliveries"] if d["status"] == "failed"]
    assert failed["target"] == RECIPIENTS[1] and failed["error"]

    sandbox.smtp.reject.clear()
    response = api.post(f"/v1/deliveries/{failed['id']}/retry?wait=true", headers={**auth(), "Idempotency-Key": "r1"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "delivered" and response.json()["id"] == failed["id"]
    again = api.post(f"/v1/deliveries/{failed['id']}/retry?wait=true", headers={**auth(), "Idempotency-Key": "r1"})
    assert again.json() == response.json() and again.headers["idempotent-replayed"] == "true"
    assert [m.recipients for m in sandbox.smtp.received()].count([RECIPIENTS[1]]) == 1

    problem = assert_problem(api.post(f"/v1/deliveries/{failed['id']}/retry", headers=auth()), 409)
    assert "only failed deliveries" in problem["detail"]
    assert wait_until_finished(api, summary["broadcast_id"])["status"] == "delivered"


def test_preview_renders_every_channel_and_sends_nothing(api: TestClient, sandbox: Sandbox) -> None:
    before = api.get("/v1/incidents", headers=auth()).json()
    response = api.post("/v1/preview", json=opening(), headers=auth(READER))
    assert response.status_code == 200, response.text
    renderings = response.json()
    assert set(renderings) == set(CHANNELS)
    assert "Checkout errors" in renderings["email"]["parts"]["subject"]
    assert api.get("/v1/incidents", headers=auth()).json() == before
    time.sleep(0.2)
    assert sandbox.http.received("webhook") == [] and sandbox.smtp.received() == []


# --- operations --------------------------------------------------------------------------------------------


def test_readyz_reports_an_unreachable_broker_or_database(settings: Settings, tmp_path: Path) -> None:
    from broadcaster.sandbox.smtp import free_port

    no_broker = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    response = TestClient(create_app(no_broker)).get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "ok"
    assert response.json()["checks"]["broker"].startswith("unreachable")

    no_database = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path}/missing/dir/log.db"})
    client = TestClient(create_app(no_database))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("unreachable")
    # Any endpoint that needs the log says so, as a problem, not a crash.
    problem = assert_problem(client.get("/v1/incidents", headers=auth()), 503)
    assert problem["detail"].startswith("database_url: cannot open the delivery log")


def test_metrics_count_deliveries_attempts_and_requests(api: TestClient, sandbox: Sandbox) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = api.get("/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    before = scrape()
    summary = api.post("/v1/incidents?wait=true", json=opening(channels=["webhook"]), headers=auth()).json()
    assert summary["status"] == "delivered"
    after = scrape()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("broadcaster_deliveries", channel="webhook", status="delivered") == 1
    assert grew("broadcaster_attempts_total", channel="webhook", outcome="delivered") == 1
    assert grew("broadcaster_attempt_duration_seconds_count", channel="webhook") == 1
    assert grew("broadcaster_attempt_duration_seconds_bucket", channel="webhook", le="+Inf") == 1
    assert grew("broadcaster_broadcasts_total", event="incident.update") == 1
    assert grew("broadcaster_open_incidents", impact="major") == 1
    assert ("broadcaster_retries_total", (("channel", "webhook"),)) in after
    assert ("broadcaster_reminders_sent_total", ()) in after
    assert (
        after[("broadcaster_http_requests_total", (("method", "POST"), ("route", "/v1/incidents"), ("status", "201")))]
        >= 1
    )


def test_pending_deliveries_are_reported_by_age(settings: Settings, sandbox: Sandbox, tmp_path: Path) -> None:
    """With the broker down, deliveries stay pending: the API still answers 202, and metrics show them."""
    from broadcaster.sandbox.smtp import free_port

    # A log of its own: the workers' sweepers would send these deliveries later, into other tests.
    down = settings.model_copy(
        update={"broker_url": f"redis://127.0.0.1:{free_port()}/0", "database_url": f"sqlite:///{tmp_path}/down.db"}
    )
    client = TestClient(create_app(down))
    response = client.post("/v1/incidents", json=opening(channels=["webhook"]), headers=auth())
    assert response.status_code == 202 and response.json()["status"] == "pending"
    text = client.get("/metrics").text
    assert 'broadcaster_pending_deliveries{age="under_1m",channel="webhook"}' in text
    assert 'broadcaster_oldest_pending_delivery_age_seconds{channel="webhook"}' in text


def test_metrics_need_a_token_once_one_has_the_metrics_scope(settings: Settings) -> None:
    scraper = ApiToken(name="prometheus", token=SecretStr("scrape-token-0123456789"), scopes=["metrics"])
    guarded = settings.model_copy(update={"api": ApiSettings(tokens=[*TOKENS.tokens, scraper])})
    client = TestClient(create_app(guarded))
    assert_problem(client.get("/metrics"), 401)
    assert_problem(client.get("/metrics", headers=auth(WRITER)), 403)
    assert client.get("/metrics", headers=auth("scrape-token-0123456789")).status_code == 200
    assert client.get("/healthz").status_code == 200


# --- embedded mode -----------------------------------------------------------------------------------------


def test_embedded_mode_delivers_from_the_api_process(embedded_config: Callable[..., Path], sandbox: Sandbox) -> None:
    """No broker: the API runs the deliveries on a worker thread of its own."""
    settings = load_settings(embedded_config()).model_copy(update={"api": TOKENS})
    client = TestClient(create_app(settings))
    response = client.post("/v1/incidents?wait=true", json=opening(), headers=auth())
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "delivered"
    assert len(sandbox.http.received("webhook")) == 1
    assert len(sandbox.smtp.received()) == len(RECIPIENTS)
    assert client.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok"}


def test_metrics_report_an_open_circuit(embedded_config: Callable[..., Path], sandbox: Sandbox) -> None:
    """A blog that keeps failing opens its circuit; /metrics shows it."""
    name = f"flaky-{uuid.uuid4().hex[:8]}"  # circuits outlive a test in this process: a channel of its own
    flaky = {
        **sandbox.channel_config("webhook", name),
        "retry": {"max_attempts": 2},
        "circuit": {"failures": 2, "cooldown": "60s"},
    }
    settings = load_settings(embedded_config(channels={name: flaky})).model_copy(update={"api": TOKENS})
    sandbox.http.script("webhook", *[Answer(503, {"error": "down"}) for _ in range(5)])
    client = TestClient(create_app(settings))
    summary = client.post("/v1/incidents?wait=true", json=opening(channels=[name]), headers=auth()).json()
    assert summary["status"] == "failed"
    text = client.get("/metrics").text
    assert f'broadcaster_circuit_open{{channel="{name}"}} 1.0' in text
    assert "broadcaster_open_circuits 1.0" in text
