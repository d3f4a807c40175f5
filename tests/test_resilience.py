"""Delivery that holds when things break: killed workers, a flushed Redis, rate limits, open circuits, hangs.

Each test breaks something for real: worker processes are SIGKILLed, Redis is flushed, the sandbox's
providers hang or answer 503; the delivery log and the sandbox's records say what customers got.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import redis
from sqlalchemy import select

from broadcaster.sandbox import Answer, Sandbox
from broadcaster.store.db import sessions
from broadcaster.store.models import Attempt
from tests.support.cluster import (
    SEND,
    Cluster,
    all_finished,
    assert_log_consistent,
    deliveries,
    email_channel,
    wait_until,
)


def test_killed_worker_mid_fan_out_loses_nothing(broker_cluster: Callable[..., Cluster], sandbox: Sandbox) -> None:
    """SIGKILL a worker during a 1,000-recipient email fan-out; a new worker finishes it, nothing lost."""
    recipients = [f"customer{i:04d}@example.com" for i in range(1000)]
    in_flight = 8
    group = broker_cluster(
        {"email": email_channel(sandbox, recipients)},
        delivery={"lease": "5s", "sweep_every": "1s", "in_flight": in_flight},
    )
    group.start("w1", concurrency=8)
    # 20 ms per email keeps the fan-out going for seconds after the 150th (the fast path once finished first).
    sandbox.smtp.latency = 0.02
    try:
        sent = group.cli(*SEND, "--json")
        assert sent.code == 0, sent.stderr
        broadcast_id = sent.json["broadcast_id"]
        wait_until(lambda: len(sandbox.smtp.received()) >= 150, 60, "the fan-out to get going", group)
        group.kill("w1")
        killed_at = len(sandbox.smtp.received())
    finally:
        sandbox.smtp.latency = 0.0
    assert killed_at < len(recipients), "the fan-out finished before the kill; the test proves nothing"
    group.start("w2", concurrency=8)
    wait_until(lambda: all_finished(group, broadcast_id), 120, "every delivery to finish", group)

    received = Counter(r for mail in sandbox.smtp.received() for r in mail.recipients)
    assert set(received) == set(recipients)
    duplicates = sum(count - 1 for count in received.values())
    print(f"duplicates after the kill: {duplicates}")
    assert duplicates <= 4 * in_flight, duplicates
    rows = deliveries(group, broadcast_id)
    assert {r.status for r in rows} == {"delivered"}
    assert_log_consistent(group, broadcast_id)


def test_flushed_redis_mid_broadcast_still_delivers(
    cluster: Callable[..., Cluster], sandbox: Sandbox, redis_server: str
) -> None:
    """FLUSHALL while deliveries wait in the queue: the sweeper enqueues them again from the log."""
    recipients = [f"reader{i:03d}@example.com" for i in range(60)]
    group = cluster(
        {"email": email_channel(sandbox, recipients, rate_limit="20/s"), "webhook": sandbox.channel_config("webhook")}
    )
    group.start("w1", concurrency=4)
    sent = group.cli(*SEND, "--json")
    broadcast_id = sent.json["broadcast_id"]
    wait_until(lambda: len(sandbox.smtp.received()) >= 10, 30, "the first emails", group)
    redis.Redis.from_url(redis_server).flushall()
    wait_until(lambda: all_finished(group, broadcast_id), 90, "every delivery to finish after FLUSHALL", group)
    rows = deliveries(group, broadcast_id)
    assert {r.status for r in rows} == {"delivered"}
    received = Counter(r for mail in sandbox.smtp.received() for r in mail.recipients)
    assert set(received) == set(recipients)
    assert len(sandbox.http.received("webhook")) == 1
    assert_log_consistent(group, broadcast_id)


def test_rate_limit_is_shared_by_every_worker(broker_cluster: Callable[..., Cluster], sandbox: Sandbox) -> None:
    """Two workers, one "5/s" channel, 50 deliveries: the provider never sees more than 5 in a second."""
    recipients = [f"sub{i:02d}@example.com" for i in range(50)]
    group = broker_cluster({"email": email_channel(sandbox, recipients, rate_limit="5/s")})
    group.start("w1", concurrency=4)
    group.start("w2", concurrency=4)
    sent = group.cli(*SEND, "--wait", "--timeout", "60", "--json")
    assert sent.code == 0, sent.stderr + group.logs()
    times = sorted(mail.received_at for mail in sandbox.smtp.received())
    assert len(times) == 50
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 6, [
        round(x - times[0], 3) for x in times
    ]  # 5, with a little tolerance for the time between reserving and arriving
    assert times[-1] - times[0] >= 8.0  # 50 at 5 a second cannot take much less than 9 seconds
    # waiting for the limit is not an attempt
    assert {d["attempts"] for d in sent.json["deliveries"]} == {1}


def test_open_circuit_defers_deliveries_and_falls_back_once(
    broker_cluster: Callable[..., Cluster], sandbox: Sandbox
) -> None:
    """The blog is down for the whole test: its circuit opens, later deliveries wait, the fallback gets it."""
    sandbox.http.script("webhook", *[Answer(503, {"error": "down"}) for _ in range(50)])
    group = broker_cluster(
        {
            "blog": {
                **sandbox.channel_config("webhook", "blog"),
                "fallback": ["oncall"],
                "fallback_after": "1s",
                "circuit": {"failures": 3, "cooldown": "60s"},
            },
            "oncall": email_channel(sandbox, ["oncall@example.com"]),
        }
    )
    group.start("w1", concurrency=4)
    first = group.cli(*SEND, "--channel", "blog", "--wait", "--timeout", "120", "--json")  # a bound, not a speed test
    assert first.code == 1, first.stdout + first.stderr + group.logs()
    blog = next(d for d in first.json["deliveries"] if d["channel"] == "blog")
    fallback = next(d for d in first.json["deliveries"] if d["channel"] == "oncall")
    assert blog["status"] == "failed" and blog["attempts"] == 3
    assert fallback["status"] == "delivered" and fallback["fallback_for"] == blog["id"]
    assert len(sandbox.http.received("webhook")) == 3

    second = group.cli(*SEND, "--channel", "blog", "--json")
    broadcast_id = second.json["broadcast_id"]
    wait_until(
        lambda: any(r.fallback_for and r.status == "delivered" for r in deliveries(group, broadcast_id)),
        30,
        "the second broadcast's fallback",
        group,
    )
    rows = {r.channel: r for r in deliveries(group, broadcast_id)}
    assert rows["blog"].attempts == 0 and rows["blog"].status == "pending"  # deferred, no attempt burnt
    assert rows["oncall"].fallback_for == rows["blog"].id
    assert len(sandbox.http.received("webhook")) == 3  # nothing more reached the broken blog
    mails = sandbox.smtp.received()
    assert len(mails) == 2  # the fallback went out once per broadcast
    assert "blog is unavailable" in mails[0].message.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    listing = group.cli("deliveries", "--broadcast", broadcast_id)
    assert "circuit open: blog after 3 failures in a row" in listing.stdout


def test_hung_provider_times_out_and_frees_the_worker(cluster: Callable[..., Cluster], sandbox: Sandbox) -> None:
    """The blog accepts the connection and never answers: the attempt ends at the timeout and is retried."""
    sandbox.http.script("webhook", Answer(hang=True))
    group = cluster(
        {
            "webhook": {**sandbox.channel_config("webhook"), "timeout": "1s"},
            "email": email_channel(sandbox, ["a@example.com", "b@example.com"]),
        }
    )
    group.start("w1", concurrency=1)  # one slot: a held slot would stall the emails behind it
    started = time.monotonic()
    sent = group.cli(*SEND, "--wait", "--timeout", "60", "--json")
    assert sent.code == 0, sent.stderr
    assert time.monotonic() - started < 20
    hook = next(d for d in sent.json["deliveries"] if d["type"] == "webhook")
    assert hook["status"] == "delivered" and hook["attempts"] == 2
    with sessions(group.database_url)() as session:
        first = session.scalar(select(Attempt).where(Attempt.delivery_id == hook["id"], Attempt.number == 1))
    assert first is not None and first.outcome == "transient"
    assert "within 1s" in (first.error or "")
    assert first.duration_seconds < 3
    assert {d["status"] for d in sent.json["deliveries"]} == {"delivered"}


def test_rate_limited_channel_waits_for_retry_after_while_others_finish(
    cluster: Callable[..., Cluster], sandbox: Sandbox
) -> None:
    """Slack answers 429 with Retry-After: 2: its retry comes no sooner; the other channels are done first."""
    sandbox.http.script("slack.post", Answer(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "2"}))
    group = cluster(
        {
            "slack": sandbox.channel_config("slack"),
            "webhook": sandbox.channel_config("webhook"),
            "email": email_channel(sandbox, ["a@example.com", "b@example.com", "c@example.com"]),
        }
    )
    group.start("w1", concurrency=4)
    sent = group.cli(*SEND, "--wait", "--timeout", "60", "--json")
    assert sent.code == 0, sent.stderr
    slack = next(d for d in sent.json["deliveries"] if d["type"] == "slack")
    assert slack["status"] == "delivered" and slack["attempts"] == 2
    posts = sandbox.http.received("slack.post")
    assert [p.status for p in posts] == [429, 200]
    assert posts[1].at - posts[0].at >= 2.0
    others = [r.at for r in sandbox.http.received("webhook")] + [m.received_at for m in sandbox.smtp.received()]
    assert len(others) == 4 and max(others) < posts[1].at
