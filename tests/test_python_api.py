"""The Python API (``Broadcaster``) and the ``broadcaster.post_update`` Celery task, against real workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from celery import Celery

from broadcaster.client import Broadcaster, NotFound
from broadcaster.core.errors import InputError
from broadcaster.sandbox import Sandbox
from channels.email.emulator import RECIPIENTS

if TYPE_CHECKING:
    from tests.support.cluster import Worker

CHANNELS = ["webhook", "email"]


@pytest.fixture
def broadcaster(worker: Worker, sandbox: Sandbox) -> Broadcaster:
    """A tool's Broadcaster, configured like the running worker."""
    return Broadcaster(config=worker.config)


def eventually(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_open_update_and_read_back(broadcaster: Broadcaster, sandbox: Sandbox) -> None:
    """A tool opens an incident, posts an update and reads the summaries and the timeline."""
    opened = broadcaster.open_incident(
        "Login failures", message="Some logins fail.", impact="critical", components=["auth"], channels=CHANNELS
    )
    assert opened.status == "pending"
    finished = broadcaster.wait(opened.broadcast_id, timeout=30)
    assert finished.status == "delivered"
    assert {(d.channel, d.status) for d in finished.deliveries} == {("webhook", "delivered"), ("email", "delivered")}

    resolved = broadcaster.post_update(
        opened.incident_id, status="resolved", message="Logins work again.", channels=["webhook"], wait=True
    )
    assert resolved.status == "delivered" and resolved.incident_id == opened.incident_id
    assert [r.json["update"]["message"] for r in sandbox.http.received("webhook")] == [
        "Some logins fail.",
        "Logins work again.",
    ]
    assert sorted(r for m in sandbox.smtp.received() for r in m.recipients) == sorted(RECIPIENTS)

    incident = broadcaster.incident(opened.incident_id)
    assert incident.status == "resolved" and incident.impact == "critical" and incident.resolved_at is not None
    assert [u.message for u in incident.updates] == ["Some logins fail.", "Logins work again."]
    assert opened.incident_id not in [i.id for i in broadcaster.incidents(open_only=True)]
    assert broadcaster.summary(resolved.broadcast_id) == resolved
    delivered = broadcaster.deliveries(incident=opened.incident_id, status="delivered")
    assert len(delivered) == len(RECIPIENTS) + 2
    assert broadcaster.summary(opened.broadcast_id).model_dump(mode="json").keys() == {
        "incident_id",
        "update_id",
        "broadcast_id",
        "status",
        "deliveries",
    }


def test_an_idempotency_key_broadcasts_once(broadcaster: Broadcaster, worker: Worker, sandbox: Sandbox) -> None:
    """The same key and arguments, even from another Broadcaster (another process), give the first summary."""
    first = broadcaster.open_incident(
        "Queue backlog", message="Jobs are delayed.", channels=["webhook"], idempotency_key="page-1"
    )
    again = Broadcaster(config=worker.config).open_incident(
        "Queue backlog", message="Jobs are delayed.", channels=["webhook"], idempotency_key="page-1"
    )
    assert again.broadcast_id == first.broadcast_id
    broadcaster.wait(first.broadcast_id, timeout=30)
    time.sleep(0.5)
    assert len(sandbox.http.received("webhook")) == 1
    with pytest.raises(InputError, match="different request"):
        broadcaster.open_incident(
            "Queue backlog", message="Other words.", channels=["webhook"], idempotency_key="page-1"
        )


def test_bad_input_names_the_field_and_sends_nothing(broadcaster: Broadcaster, sandbox: Sandbox) -> None:
    with pytest.raises(InputError, match="^status: "):
        broadcaster.open_incident("x", message="y", status="on fire")
    with pytest.raises(InputError, match="unknown channel 'nowhere'"):
        broadcaster.open_incident("x", message="y", channels=["nowhere"])
    with pytest.raises(NotFound):
        broadcaster.post_update("01HZZZZZZZZZZZZZZZZZZZZZZZ", status="resolved", message="ok")
    with pytest.raises(NotFound):
        broadcaster.summary("01HZZZZZZZZZZZZZZZZZZZZZZZ")
    with pytest.raises(InputError, match="exactly one"):
        broadcaster.retry()
    time.sleep(0.3)
    assert sandbox.http.received("webhook") == [] and sandbox.smtp.received() == []


def test_preview_and_retry(broadcaster: Broadcaster, sandbox: Sandbox) -> None:
    renderings = broadcaster.preview(
        title="DNS", status="identified", message="A resolver is down.", channels=["email"]
    )
    assert "DNS" in renderings["email"].parts["subject"]
    sandbox.smtp.reject.add(RECIPIENTS[0])
    summary = broadcaster.open_incident("DNS", message="A resolver is down.", channels=["email"], wait=True)
    assert summary.status == "failed"
    sandbox.smtp.reject.clear()
    [retried] = broadcaster.retry(broadcast_id=summary.broadcast_id, wait=True)
    assert retried.target == RECIPIENTS[0] and retried.status == "delivered"
    assert broadcaster.summary(summary.broadcast_id).status == "delivered"


def test_embedded_mode_runs_the_deliveries_in_this_process(
    embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    embedded = Broadcaster(config=embedded_config())
    summary = embedded.open_incident("Embedded", message="No broker needed.", channels=CHANNELS, wait=True)
    assert summary.status == "delivered"
    assert len(sandbox.http.received("webhook")) == 1
    assert len(sandbox.smtp.received()) == len(RECIPIENTS)


# --- broadcaster.post_update from a plain Celery client ------------------------------------------------------


def plain_celery(worker: Worker) -> Celery:
    """A service's own Celery app: it knows the broker, nothing of this package."""
    return Celery("some-service", broker=worker.broker_url, set_as_current=False)


def test_send_task_reaches_the_sandbox(worker: Worker, sandbox: Sandbox, broadcaster: Broadcaster) -> None:
    """send_task("broadcaster.post_update") opens the incident and delivers it; a redelivery sends nothing new."""
    service = plain_celery(worker)
    payload = {
        "title": "Payments API down",
        "status": "investigating",
        "message": "Card payments fail.",
        "impact": "critical",
        "channels": CHANNELS,
        "idempotency_key": "alertmanager-77",
    }
    service.send_task("broadcaster.post_update", kwargs=payload)
    service.send_task("broadcaster.post_update", args=[payload])  # the same alert, fired again

    mails = eventually(lambda: len(sandbox.smtp.received()) >= len(RECIPIENTS) and sandbox.http.received("webhook"))
    assert mails, f"nothing arrived; worker log:\n{worker.log.read_text()[-3000:]}"
    [post] = sandbox.http.received("webhook")
    assert post.json["incident"]["title"] == "Payments API down"
    assert post.json["update"]["message"] == "Card payments fail."
    time.sleep(1.0)  # the repeated task has run by now; it must have broadcast nothing
    assert len(sandbox.http.received("webhook")) == 1
    assert len(sandbox.smtp.received()) == len(RECIPIENTS)
    [incident] = [i for i in broadcaster.incidents() if i.title == "Payments API down"]
    assert incident.impact == "critical"

    # Updating the incident by id works the same way.
    service.send_task(
        "broadcaster.post_update",
        kwargs={"incident_id": incident.id, "status": "resolved", "message": "Payments work.", "channels": ["webhook"]},
    )
    assert eventually(lambda: len(sandbox.http.received("webhook")) == 2)
    assert sandbox.http.received("webhook")[1].json["update"]["status"] == "resolved"
    service.close()


def test_a_bad_payload_is_dropped_and_the_worker_goes_on(worker: Worker, sandbox: Sandbox) -> None:
    service = plain_celery(worker)
    service.send_task("broadcaster.post_update", kwargs={"title": "No status", "message": "m"})
    service.send_task("broadcaster.post_update", kwargs={"status": "resolved", "message": "m", "colour": "red"})
    service.send_task(
        "broadcaster.post_update",
        kwargs={"title": "Good one", "status": "investigating", "message": "ok", "channels": ["webhook"]},
    )
    assert eventually(lambda: sandbox.http.received("webhook"))
    [post] = sandbox.http.received("webhook")
    assert post.json["incident"]["title"] == "Good one"
    assert eventually(lambda: "status: Field required" in worker.log.read_text(), timeout=10)
    service.close()
