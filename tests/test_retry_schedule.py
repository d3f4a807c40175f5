"""Every attempt goes out when its backoff, rate limit or circuit says, however many there are.

Celery's own retry count (3 by default) once capped how often a delivery could be rescheduled: the fourth
retry stalled until the sweeper found it a minute later, with a traceback in the worker's log. These tests
use more attempts and more waits than that on real workers (each broker) and in embedded mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from broadcaster.sandbox import Answer, Sandbox
from broadcaster.testing import Result
from tests.support.backends import Broker
from tests.support.cluster import Cluster, all_finished, assert_log_consistent, deliveries, wait_until

MANY_RETRIES = {"max_attempts": 8, "backoff": "100ms", "backoff_max": "400ms"}
SEND = ("send", "--title", "Search is slow", "--status", "investigating", "--message", "Queries time out.")
PHONES = [f"+1415555{100 + i:04d}" for i in range(12)]


def no_tracebacks(cluster: Cluster) -> None:
    logs = cluster.logs()
    assert "Traceback" not in logs and "MaxRetriesExceeded" not in logs, logs[-3000:]


def flaky_webhook(sandbox: Sandbox, failures: int) -> None:
    sandbox.http.script("webhook", *[Answer(503, {"error": "down"}) for _ in range(failures)], Answer(200, {}))


def test_a_delivery_retries_past_celerys_default_count_on_schedule(
    broker_cluster: Callable[..., Cluster], sandbox: Sandbox
) -> None:
    """Six 503s, then 200, with max_attempts 8: delivered on the 7th attempt, seconds after the send."""
    # The circuit would rest the channel after five failures in a row: not this test's subject.
    hook = {**sandbox.channel_config("webhook"), "circuit": {"failures": 10}}
    group = broker_cluster({"webhook": hook}, retry=MANY_RETRIES)
    group.start("w1")
    flaky_webhook(sandbox, 6)
    sent = group.cli(*SEND, "--json")
    assert sent.code == 0, sent.stderr
    broadcast_id = sent.json["broadcast_id"]
    # The backoff adds up to at most 6 x 400 ms; the stall this guards against was 60-90 s.
    wait_until(lambda: all_finished(group, broadcast_id), 20, "the 7th attempt", group)
    [row] = deliveries(group, broadcast_id)
    assert (row.status, row.attempts) == ("delivered", 7)
    calls = sandbox.http.received("webhook")
    assert [c.status for c in calls] == [503] * 6 + [200]
    assert len({c.header("webhook-id") for c in calls}) == 1
    assert_log_consistent(group, broadcast_id)
    no_tracebacks(group)


def test_a_rate_limit_spaces_more_deliveries_than_retries_without_stalling(
    broker_cluster: Callable[..., Cluster], sandbox: Sandbox
) -> None:
    """12 SMS at 2/s: most wait their turn several times; the last leaves about 5.5 s after the first."""
    sms = {**sandbox.channel_config("sms"), "recipients": PHONES, "rate_limit": "2/s"}
    group = broker_cluster({"sms": sms}, delivery={"lease": "5s", "sweep_every": "1s", "batch_size": 1})
    group.start("w1")
    sent = group.cli(*SEND, "--json")
    assert sent.code == 0, sent.stderr
    broadcast_id = sent.json["broadcast_id"]
    wait_until(lambda: all_finished(group, broadcast_id), 30, "every SMS", group)
    assert {r.status for r in deliveries(group, broadcast_id)} == {"delivered"}
    times = sorted(r.at for r in sandbox.http.received("twilio.message"))
    assert len(times) == len(PHONES)
    # Spaced by the limit: 11 intervals of 0.5 s, give or take the time from reserving to the provider (the
    # first send also opens its connection); and on that schedule, not a sweeper's minute.
    assert 5.5 - 1.5 < times[-1] - times[0] < 5.5 + 5
    no_tracebacks(group)


def test_a_held_delivery_goes_out_when_the_circuit_cools_down(
    broker_cluster: Callable[..., Cluster], sandbox: Sandbox
) -> None:
    """Failures open the circuit (1 s cooldown) several times over; the delivery still ends delivered, soon."""
    hook = {**sandbox.channel_config("webhook"), "circuit": {"failures": 2, "cooldown": "1s"}}
    group = broker_cluster({"webhook": hook}, retry={**MANY_RETRIES, "max_attempts": 10})
    group.start("w1")
    flaky_webhook(sandbox, 6)
    sent = group.cli(*SEND, "--json")
    broadcast_id = sent.json["broadcast_id"]
    wait_until(lambda: all_finished(group, broadcast_id), 30, "the delivery after three cooldowns", group)
    [row] = deliveries(group, broadcast_id)
    assert (row.status, row.attempts) == ("delivered", 7)
    no_tracebacks(group)


def timed(run: Callable[[], Result]) -> tuple[Result, float]:
    started = time.monotonic()
    result = run()
    return result, time.monotonic() - started


def test_embedded_mode_keeps_the_schedule_too(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    """In-process: 7 attempts of one webhook and 12 rate-limited SMS, all in one `send`, in seconds."""
    flaky_webhook(sandbox, 6)
    channels: dict[str, Any] = {
        "webhook": {**sandbox.channel_config("webhook"), "circuit": {"failures": 10}},
        "sms": {**sandbox.channel_config("sms"), "recipients": PHONES, "rate_limit": "2/s"},
    }
    config = embedded_config(retry=MANY_RETRIES, channels=channels)
    result, took = timed(lambda: cli(*SEND, "--config", str(config), "--json", "--timeout", "60"))
    assert result.code == 0, result.stderr
    by_channel = {(d["channel"], d["status"], d["attempts"]) for d in result.json["deliveries"]}
    assert ("webhook", "delivered", 7) in by_channel
    assert {(c, s) for c, s, _ in by_channel} == {("webhook", "delivered"), ("sms", "delivered")}
    assert len(sandbox.http.received("twilio.message")) == len(PHONES)
    assert took < 5.5 + 15, f"took {took:.1f} s"
    assert "Traceback" not in result.stderr


def test_a_worker_without_a_channel_leaves_its_overdue_deliveries_alone(
    broker_cluster: Callable[..., Cluster], sandbox: Sandbox
) -> None:
    """Two deployments share a log: one has only the blog, the other email too. The first one's sweeper
    must not take the second's lost email deliveries (its worker would fail them as unknown)."""
    full = broker_cluster({"webhook": sandbox.channel_config("webhook"), "email": sandbox.channel_config("email")})
    blog_only = broker_cluster({"webhook": sandbox.channel_config("webhook")})
    sent = full.cli(*SEND, "--channel", "email", "--json")
    assert sent.code == 0, sent.stderr
    broadcast_id = sent.json["broadcast_id"]
    Celery(broker=full.broker_url).control.purge()  # its tasks are lost before any worker runs
    blog_only.start("blog")
    time.sleep(5)  # five of its sweep periods, two of them past the deliveries' grace
    assert {r.status for r in deliveries(full, broadcast_id)} == {"pending"}, blog_only.logs()
    full.start("full")
    wait_until(lambda: all_finished(full, broadcast_id), 30, "the full worker's sweeper", full)
    assert {r.status for r in deliveries(full, broadcast_id)} == {"delivered"}
    assert len(sandbox.smtp.received()) == len(sandbox.channel_config("email")["recipients"])


def test_a_rabbitmq_worker_without_redis_says_its_limits_are_its_own(
    broker_cluster: Callable[..., Cluster], sandbox: Sandbox, broker: Broker
) -> None:
    if broker.kind != "rabbitmq":
        pytest.skip("a RabbitMQ deployment's warning")
    hook = {**sandbox.channel_config("webhook"), "rate_limit": "2/s"}
    group = broker_cluster({"webhook": hook}, redis_url="")
    group.start("w1")
    assert "rate limits (webhook) and circuits are kept per worker process" in group.logs()
    assert "set redis_url (BROADCASTER_REDIS_URL)" in group.logs()
