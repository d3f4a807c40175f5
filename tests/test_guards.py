"""The circuit breaker and the rate limit, on Redis (shared by workers) and in memory (embedded mode)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from broadcaster.delivery.guards import circuit_hold, open_circuits, rate_hold, record_outcome, store_for
from broadcaster.settings import Settings, load_settings

HOOK = {"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="}


@pytest.fixture(params=["memory", "redis"])
def settings(request: pytest.FixtureRequest, redis_server: str) -> Iterator[Settings]:
    broker = f"{redis_server}/15" if request.param == "redis" else ""
    if broker:
        redis.Redis.from_url(broker).flushdb()
    channel = {**HOOK, "circuit": {"failures": 3, "cooldown": "1s"}, "rate_limit": "4/s"}
    name = f"hook-{request.param}-{time.monotonic_ns()}"  # a fresh circuit for every test
    yield load_settings(broker_url=broker, channels={name: channel})


def name_of(settings: Settings) -> str:
    return next(iter(settings.channels))


def test_circuit_opens_after_consecutive_failures_and_one_probe_closes_it(settings: Settings) -> None:
    channel = name_of(settings)
    for _ in range(2):
        record_outcome(settings, channel, reachable=False)
    assert circuit_hold(settings, channel) is None  # two failures: still closed
    record_outcome(settings, channel, reachable=True)  # a success resets the count
    for _ in range(3):
        record_outcome(settings, channel, reachable=False)
    wait = circuit_hold(settings, channel)
    assert wait is not None and 0 < wait <= 1.0
    assert [c.channel for c in open_circuits(settings)] == [channel]
    time.sleep(1.05)
    assert circuit_hold(settings, channel) is None  # the one probe may go
    assert circuit_hold(settings, channel) is not None  # everyone else waits for its verdict
    record_outcome(settings, channel, reachable=True)
    assert circuit_hold(settings, channel) is None
    assert open_circuits(settings) == []


def test_a_failed_probe_opens_the_circuit_again(settings: Settings) -> None:
    channel = name_of(settings)
    for _ in range(3):
        record_outcome(settings, channel, reachable=False)
    time.sleep(1.05)
    assert circuit_hold(settings, channel) is None  # the probe
    record_outcome(settings, channel, reachable=False)
    wait = circuit_hold(settings, channel)
    assert wait is not None and wait > 0.5


def test_rate_limit_spaces_sends_evenly_without_sleeping(settings: Settings) -> None:
    channel = name_of(settings)
    started = time.monotonic()
    assert rate_hold(settings, channel) is None  # the first goes at once
    wait = rate_hold(settings, channel)
    assert wait is not None and 0.2 <= wait <= 0.25  # "4/s": one every 250 ms
    assert time.monotonic() - started < 0.1  # it answered, it did not sleep
    time.sleep(wait)
    assert rate_hold(settings, channel) is None


def test_the_store_follows_the_broker(settings: Settings) -> None:
    kind = type(store_for(settings)).__name__
    assert kind == ("RedisStore" if settings.broker_url else "MemoryStore")


def test_on_rabbitmq_the_guards_live_in_redis_url(redis_server: str) -> None:
    """A RabbitMQ broker shares rate limits through ``redis_url``; without one, each process keeps its own."""
    channel = {f"hook-amqp-{time.monotonic_ns()}": {**HOOK, "rate_limit": "1/s"}}
    amqp = "amqp://guest:guest@127.0.0.1:5672//"
    shared = load_settings(broker_url=amqp, redis_url=f"{redis_server}/14", channels=channel)
    alone = load_settings(broker_url=amqp, channels=channel)
    assert type(store_for(shared)).__name__ == "RedisStore"
    assert type(store_for(alone)).__name__ == "MemoryStore"
    name = next(iter(channel))
    redis.Redis.from_url(f"{redis_server}/14").flushdb()
    assert rate_hold(shared, name) is None
    other_process = load_settings(broker_url="amqp://elsewhere//", redis_url=f"{redis_server}/14", channels=channel)
    assert rate_hold(other_process, name) is not None  # the same limit, seen through Redis
