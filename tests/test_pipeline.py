"""A broadcast through real Celery workers on Redis, and through embedded mode, to the sandbox's receivers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery
from standardwebhooks.webhooks import Webhook

from broadcaster.sandbox import Answer, Sandbox
from broadcaster.testing import Result
from channels.email.emulator import RECIPIENTS
from channels.webhook.emulator import SECRET
from tests.support.cluster import Worker

SEND = ("send", "--title", "Checkout is failing", "--status", "investigating", "--impact", "major",
        "--component", "Checkout", "--message", "Payments fail for some customers; we are on it.",
        "--channel", "webhook", "--channel", "email")  # fmt: skip


def by_target(summary: dict) -> dict[str, dict]:
    return {d["target"]: d for d in summary["deliveries"]}


def assert_all_delivered_once(summary: dict, sandbox: Sandbox) -> None:
    assert summary["status"] == "delivered"
    assert {d["status"] for d in summary["deliveries"]} == {"delivered"}
    assert all(d["attempts"] == 1 for d in summary["deliveries"])
    hooks = sandbox.http.received("webhook")
    assert len(hooks) == 1
    # The receiver's own check, and ours: the signature is valid for the channel's secret.
    assert hooks[0].note["verified"] is True
    Webhook(SECRET).verify(hooks[0].body, hooks[0].headers)
    body = hooks[0].json
    assert body["event"] == "incident.update"
    assert body["incident"]["id"] == summary["incident_id"]
    assert body["update"]["message"] == "Payments fail for some customers; we are on it."
    assert set(body["rendered"]) == {"title", "markdown", "html"}
    webhook_delivery = next(d for d in summary["deliveries"] if d["type"] == "webhook")
    assert hooks[0].header("webhook-id") == webhook_delivery["id"]
    assert hooks[0].header("X-Broadcaster-Event") == "incident.update"
    mails = sandbox.smtp.received()
    assert sorted(r for m in mails for r in m.recipients) == sorted(RECIPIENTS)
    for mail in mails:
        message = mail.message
        assert message.get_content_type() == "multipart/alternative"
        assert message["Subject"] == "[Investigating] Checkout is failing"
        assert {part.get_content_type() for part in message.iter_parts()} == {"text/plain", "text/html"}
        delivery = by_target(summary)[mail.recipients[0]]
        assert message["Message-ID"] == delivery["provider_id"]


def test_worker_delivers_a_broadcast_to_every_receiver(worker_cli: Callable[..., Result], sandbox: Sandbox) -> None:
    """A real worker on Redis delivers to the webhook and every email recipient, one attempt each."""
    result = worker_cli(*SEND, "--wait", "--timeout", "60", "--json")
    assert result.code == 0, result.stderr
    summary = result.json
    assert len(summary["deliveries"]) == 1 + len(RECIPIENTS)
    assert_all_delivered_once(summary, sandbox)


def test_embedded_mode_delivers_without_redis(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    """broker_url empty: the same tasks run inside the command; no Redis, no worker process."""
    result = cli(*SEND, "--config", str(embedded_config(broker_url="")), "--json",
                 env={"BROADCASTER_BROKER_URL": ""})  # fmt: skip
    assert result.code == 0, result.stderr
    assert_all_delivered_once(result.json, sandbox)


def test_transient_failures_are_retried_without_delaying_other_channels(
    config_args: tuple[str, ...], cli: Callable[..., Result], sandbox: Sandbox
) -> None:
    """The blog answers 500 twice then 200: three attempts, delivered; email finished before the blog's retries."""
    sandbox.http.script("webhook", Answer(500, {"error": "down"}), Answer(500, {"error": "down"}))
    args = config_args
    result = cli(*SEND, *args, "--wait", "--timeout", "60", "--json")
    assert result.code == 0, result.stderr
    summary = result.json
    hook = next(d for d in summary["deliveries"] if d["type"] == "webhook")
    assert hook["status"] == "delivered" and hook["attempts"] == 3
    assert [r.status for r in sandbox.http.received("webhook")] == [500, 500, 200]
    # every webhook try carries the same webhook-id: receivers can drop duplicates
    assert {r.header("webhook-id") for r in sandbox.http.received("webhook")} == {hook["id"]}
    emails = [d for d in summary["deliveries"] if d["type"] == "email"]
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in emails)
    last_mail = max(m.received_at for m in sandbox.smtp.received())
    final_hook = sandbox.http.received("webhook")[-1].at
    assert last_mail < final_hook

    listing = cli("deliveries", "--broadcast", summary["broadcast_id"], "--json", *args)
    attempts = {row["id"]: row["attempts"] for row in listing.json}
    assert attempts[hook["id"]] == 3


@pytest.fixture(params=["worker", "embedded"])
def config_args(
    request: pytest.FixtureRequest, database_url: str, embedded_config: Callable[..., Path]
) -> tuple[str, ...]:
    """The same test through a real worker on Redis, and in embedded mode."""
    if request.param == "worker":
        worker: Worker = request.getfixturevalue("worker")
        return ("--config", str(worker.config))
    return ("--config", str(embedded_config()))


def test_permanent_errors_fail_at_once_and_the_rest_deliver(
    config_args: tuple[str, ...], cli: Callable[..., Result], sandbox: Sandbox
) -> None:
    """400 from the blog and 550 for one recipient: those fail after one attempt; exit 1; listed as failed."""
    sandbox.http.script("webhook", Answer(400, {"error": "bad payload"}))
    sandbox.smtp.reject.add(RECIPIENTS[1])
    args = config_args
    result = cli(*SEND, *args, "--wait", "--timeout", "60", "--json")
    assert result.code == 1, result.stderr
    summary = result.json
    assert summary["status"] == "failed"
    failed = {d["target"]: d for d in summary["deliveries"] if d["status"] == "failed"}
    hook = next(d for d in summary["deliveries"] if d["type"] == "webhook")
    assert set(failed) == {hook["target"], RECIPIENTS[1]}
    assert all(d["attempts"] == 1 for d in failed.values())
    assert "HTTP 400" in failed[hook["target"]]["error"]
    assert "550" in failed[RECIPIENTS[1]]["error"]
    assert len(sandbox.http.received("webhook")) == 1
    delivered = [d for d in summary["deliveries"] if d["status"] == "delivered"]
    assert sorted(d["target"] for d in delivered) == sorted(set(RECIPIENTS) - {RECIPIENTS[1]})

    listing = cli("deliveries", "--status", "failed", "--incident", summary["incident_id"], "--json", *args)
    assert listing.code == 0
    assert {row["id"] for row in listing.json} == {d["id"] for d in failed.values()}
    plain = cli("deliveries", "--status", "failed", "--incident", summary["incident_id"], *args)
    assert "550 5.1.1 mailbox unavailable" in plain.stdout

    # once the receiver is fixed, `retry` sends the failed ones again
    sandbox.smtp.reject.clear()
    again = cli("retry", "--broadcast", summary["broadcast_id"], "--wait", "--timeout", "60", "--json", *args)
    assert again.code == 0, again.stderr
    assert {row["status"] for row in again.json} == {"delivered"}
    assert {row["attempts"] for row in again.json} == {2}


def test_a_task_delivered_twice_sends_once(worker: Worker, worker_cli: Callable[..., Result], sandbox: Sandbox) -> None:
    """Redelivery (the broker hands the same delivery out again) never posts twice."""
    sandbox.http.script("webhook", Answer(200, {"ok": True}, delay=0.5))
    result = worker_cli(*SEND[:-2], "--wait", "--timeout", "60", "--json")  # webhook only
    assert result.code == 0, result.stderr
    hook = result.json["deliveries"][0]
    client = Celery(broker=worker.broker_url)
    try:
        for _ in range(3):  # while delivered: nothing happens, however often it arrives
            client.send_task("broadcaster.deliver", args=[hook["id"]])
    finally:
        client.close()
    # a concurrent duplicate of a fresh delivery: claimed once, sent once
    second = worker_cli(*SEND[:-2], "--json")
    second_hook = second.json["deliveries"][0]
    client = Celery(broker=worker.broker_url)
    try:
        for _ in range(3):
            client.send_task("broadcaster.deliver", args=[second_hook["id"]])
    finally:
        client.close()
    _wait_delivered(worker_cli, second.json["broadcast_id"])
    _wait_delivered(worker_cli, result.json["broadcast_id"])
    hooks = sandbox.http.received("webhook")
    ids = [r.header("webhook-id") for r in hooks]
    assert ids.count(hook["id"]) == 1
    assert ids.count(second_hook["id"]) == 1
    final = worker_cli("deliveries", "--broadcast", second.json["broadcast_id"], "--json")
    assert final.json[0]["attempts"] == 1


def _wait_delivered(worker_cli: Callable[..., Result], broadcast_id: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = worker_cli("deliveries", "--broadcast", broadcast_id, "--json").json
        if rows and all(r["status"] == "delivered" for r in rows):
            time.sleep(1.0)  # give any duplicate task time to (wrongly) send again
            return
        time.sleep(0.2)
    raise AssertionError(f"broadcast {broadcast_id} did not finish: {rows}")


def test_send_without_wait_returns_once_enqueued(worker_cli: Callable[..., Result], sandbox: Sandbox) -> None:
    """Worker mode without --wait: the summary is printed at once, pending; the worker finishes later."""
    sandbox.http.script("webhook", Answer(200, {"ok": True}, delay=1.0))
    result = worker_cli(*SEND[:-2], "--json")
    assert result.code == 0, result.stderr
    assert result.json["status"] == "pending"
    _wait_delivered(worker_cli, result.json["broadcast_id"])
    assert len(sandbox.http.received("webhook")) == 1


def test_delivery_table_on_a_terminal_shows_every_delivery(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    """Without --json, one line per delivery with its status (a rich table on a terminal)."""
    result = cli(*SEND, "--config", str(embedded_config()))
    assert result.code == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert len(lines) == 1 + len(RECIPIENTS)
    assert {line[4] for line in lines} == {"delivered"}
    assert json.dumps(lines)  # plain text, no escape codes
    assert "\x1b[" not in result.stdout
