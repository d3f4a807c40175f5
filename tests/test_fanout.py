"""The fast fan-out: deliveries travel in batches, each still with its own status, attempts and retries."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select

from broadcaster.sandbox import Sandbox
from broadcaster.store.db import sessions
from broadcaster.store.models import Delivery
from tests.support.cluster import (
    SEND,
    Cluster,
    all_finished,
    assert_log_consistent,
    deliveries,
    email_channel,
    wait_until,
)


@pytest.mark.parametrize("batch_size", [1, 50])
def test_each_delivery_keeps_its_own_outcome_in_a_batch_or_alone(
    broker_cluster: Callable[..., Cluster], sandbox: Sandbox, batch_size: int
) -> None:
    """One refused address, one temporary failure, 38 fine: the same log whether batched or one task each."""
    recipients = [f"reader{i:02d}@example.com" for i in range(40)]
    sandbox.smtp.reject.add("reader07@example.com")
    sandbox.smtp.script("451 4.3.0 try again later")  # the first DATA only
    group = broker_cluster(
        {"email": email_channel(sandbox, recipients)},
        delivery={"lease": "5s", "sweep_every": "1s", "batch_size": batch_size, "in_flight": 8},
    )
    group.start("w1", concurrency=2)
    sent = group.cli(*SEND, "--wait", "--timeout", "60", "--json")
    assert sent.code == 1, sent.stderr + group.logs()  # one delivery failed

    rows = {d["target"]: d for d in sent.json["deliveries"]}
    assert rows["reader07@example.com"]["status"] == "failed"
    assert rows["reader07@example.com"]["attempts"] == 1
    assert "550" in rows["reader07@example.com"]["error"]
    retried = [d for d in rows.values() if d["attempts"] == 2]
    assert len(retried) == 1 and retried[0]["status"] == "delivered"
    assert sum(1 for d in rows.values() if d["status"] == "delivered" and d["attempts"] == 1) == 38
    received = Counter(r for mail in sandbox.smtp.received() for r in mail.recipients)
    assert set(received) == set(recipients) - {"reader07@example.com"}
    assert set(received.values()) == {1}
    assert_log_consistent(group, sent.json["broadcast_id"])


def test_a_batch_task_delivered_three_times_sends_each_delivery_once(
    cluster: Callable[..., Cluster], sandbox: Sandbox
) -> None:
    """The broker hands the same batch out again (and again) while it runs: every recipient gets one email."""
    recipients = [f"twice{i:02d}@example.com" for i in range(30)]
    group = cluster({"email": email_channel(sandbox, recipients)})
    sent = group.cli(*SEND, "--json")  # enqueued; no worker yet
    assert sent.code == 0, sent.stderr
    ids = [d["id"] for d in sent.json["deliveries"]]
    client = Celery(broker=group.broker_url)
    try:
        for _ in range(3):
            client.send_task("broadcaster.deliver_batch", args=[ids])
    finally:
        client.close()
    group.start("w1", concurrency=4)
    broadcast_id = sent.json["broadcast_id"]
    wait_until(lambda: all_finished(group, broadcast_id), 60, "every delivery to finish", group)

    received = Counter(r for mail in sandbox.smtp.received() for r in mail.recipients)
    assert received == Counter(recipients)
    assert {(r.status, r.attempts) for r in deliveries(group, broadcast_id)} == {("delivered", 1)}
    assert_log_consistent(group, broadcast_id)


@pytest.mark.parametrize("batch_size", [1, 50])
def test_batches_keep_connections_open_between_sends(
    cluster: Callable[..., Cluster], sandbox: Sandbox, batch_size: int
) -> None:
    """Batched, the mail server and Twilio see a few connections, each carrying many sends; one task per
    delivery opens one connection per send (the naive path, kept for comparison)."""
    emails = [f"kept{i:02d}@example.com" for i in range(40)]
    numbers = [f"+1415555{i:04d}" for i in range(200, 240)]
    in_flight = 4
    group = cluster(
        {
            "email": email_channel(sandbox, emails),
            "sms": {**sandbox.channel_config("sms"), "recipients": numbers},
        },
        delivery={"lease": "5s", "sweep_every": "1s", "batch_size": batch_size, "in_flight": in_flight},
    )
    group.start("w1", concurrency=1)  # one process: at most `in_flight` sends at once
    sent = group.cli(*SEND, "--wait", "--timeout", "60", "--json")
    assert sent.code == 0, sent.stderr + group.logs()
    assert {d["status"] for d in sent.json["deliveries"]} == {"delivered"}

    mails = sandbox.smtp.received()
    texts = sandbox.http.received("twilio.message")
    assert sorted(r for m in mails for r in m.recipients) == sorted(emails)
    assert sorted(r.note["to"] for r in texts) == sorted(numbers)
    smtp_sessions = {m.peer for m in mails}
    http_connections = {r.peer for r in texts}
    if batch_size == 1:
        assert len(smtp_sessions) == len(emails) and len(http_connections) == len(numbers)
    else:
        assert len(smtp_sessions) <= in_flight and len(http_connections) <= in_flight


EXITING_SENDER = """
import json, sys
from broadcaster.delivery.batch import run_batch
from broadcaster.domain.broadcasts import create_broadcast
from broadcaster.interfaces.cli.broadcasts import update_request
from broadcaster.settings import Settings

settings = Settings.model_validate(json.loads(sys.argv[1]))
request = update_request(None, "Checkout errors", "investigating", "Down.", None, None, None, None, False)
broadcast_id, ids = create_broadcast(settings, request)
run_batch(settings, ids, lambda step: None)
print(broadcast_id)
"""


def test_a_process_that_exits_after_its_sends_records_them(sandbox: Sandbox, tmp_path: Path) -> None:
    """Successes wait up to 20 ms for the recorder's next transaction; a process that ends meanwhile still
    writes them to the log (else they would go out again after their lease)."""
    recipients = [f"exit{i:02d}@example.com" for i in range(30)]
    settings = {
        "database_url": f"sqlite:///{tmp_path / 'log.db'}",
        "channels": {"email": email_channel(sandbox, recipients)},
    }
    done = subprocess.run(
        [sys.executable, "-c", EXITING_SENDER, json.dumps(settings)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr

    received = Counter(r for mail in sandbox.smtp.received() for r in mail.recipients)
    assert received == Counter(recipients)
    with sessions(settings["database_url"])() as session:
        rows = session.execute(
            select(Delivery.status, Delivery.attempts).where(Delivery.broadcast_id == done.stdout.strip())
        )
        assert Counter(map(tuple, rows)) == Counter({("delivered", 1): 30})


def test_a_channels_connections_cap_its_open_sessions(cluster: Callable[..., Cluster], sandbox: Sandbox) -> None:
    """``connections = 2`` on the email channel: 40 emails on 8 send threads go over 2 SMTP sessions at most
    (a relay may limit connections per client)."""
    emails = [f"capped{i:02d}@example.com" for i in range(40)]
    group = cluster(
        {"email": email_channel(sandbox, emails, connections=2)},
        delivery={"lease": "5s", "sweep_every": "1s", "batch_size": 50, "in_flight": 8},
    )
    group.start("w1", concurrency=1)  # one process
    sent = group.cli(*SEND, "--wait", "--timeout", "60", "--json")
    assert sent.code == 0, sent.stderr + group.logs()
    assert {d["status"] for d in sent.json["deliveries"]} == {"delivered"}

    mails = sandbox.smtp.received()
    assert sorted(r for m in mails for r in m.recipients) == sorted(emails)
    assert 1 <= len({m.peer for m in mails}) <= 2
