"""Rate limits and circuits, as this process keeps them (broadcaster.delivery.guards, no Redis)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from broadcaster.core.errors import DeliveryError, PermanentError, RateLimited, TransientError
from broadcaster.core.units import RateLimit
from broadcaster.delivery.guards import MemoryStore, circuit_hold, rate_hold, reachable, record_outcome
from broadcaster.settings import Settings


def fresh() -> str:
    """A channel name no other test has used: the process's guards outlive each test."""
    return f"c-{uuid.uuid4().hex[:12]}"


def test_sends_are_spaced_evenly_by_the_rate_limit() -> None:
    """A limit of 5/s is one send every 200 ms: the first goes now, the next one waits out the interval."""
    store = MemoryStore()
    assert store.reserve("blog", RateLimit(5, 1.0)) == 0.0
    assert 0.15 < store.reserve("blog", RateLimit(5, 1.0)) <= 0.2
    assert store.reserve("other", RateLimit(5, 1.0)) == 0.0  # each channel has its own limit


def test_the_circuit_opens_at_its_threshold_and_an_answer_closes_it() -> None:
    store = MemoryStore()
    assert not store.record_failure("blog", threshold=3, cooldown=60).open
    assert not store.record_failure("blog", threshold=3, cooldown=60).open
    opened = store.record_failure("blog", threshold=3, cooldown=60)
    assert opened.open and opened.failures == 3
    assert opened.open_until is not None and 59 < opened.open_until - time.time() <= 60
    store.record_success("blog")
    assert store.circuit("blog").failures == 0 and not store.circuit("blog").open


def test_one_caller_per_hold_takes_a_turn_or_the_probe() -> None:
    store = MemoryStore()
    assert store.take_turn("sweep", hold=60) and not store.take_turn("sweep", hold=60)
    assert store.take_probe("blog", hold=60) and not store.take_probe("blog", hold=60)
    store.record_success("blog")  # the probe's verdict is in: the next cooldown may probe again
    assert store.take_probe("blog", hold=60)


@pytest.mark.parametrize(
    ("error", "answered"),
    [
        (None, True),
        (PermanentError("no such number"), True),
        (RateLimited("429", retry_after=1.0), True),
        (TransientError("timed out"), False),
    ],
)
def test_only_transient_failures_count_against_a_circuit(error: DeliveryError | None, answered: bool) -> None:
    assert reachable(error) is answered


def test_rate_hold_reserves_under_the_channels_limit(make_settings: Callable[..., Settings]) -> None:
    limited, free = fresh(), fresh()
    settings = make_settings(**{limited: {"rate_limit": "1/s"}, free: {}})
    assert rate_hold(settings, limited) is None
    wait = rate_hold(settings, limited)
    assert wait is not None and 0.9 < wait <= 1.0
    assert rate_hold(settings, free) is None and rate_hold(settings, free) is None
    assert rate_hold(settings, "not-here") is None


def test_an_open_circuit_holds_its_channel_until_the_cooldown(make_settings: Callable[..., Settings]) -> None:
    name = fresh()
    settings = make_settings(**{name: {"circuit": {"failures": 2, "cooldown": "1m"}}})
    assert circuit_hold(settings, name) is None
    record_outcome(settings, name, reachable=False)
    assert circuit_hold(settings, name) is None
    record_outcome(settings, name, reachable=False)
    wait = circuit_hold(settings, name)
    assert wait is not None and 59 < wait <= 60
    record_outcome(settings, name, reachable=True)
    assert circuit_hold(settings, name) is None


def test_a_cooled_down_circuit_lets_one_probe_through(make_settings: Callable[..., Settings]) -> None:
    """The first delivery after the cooldown probes; the others look again in a tenth of the cooldown (>= 1 s)."""
    name = fresh()
    settings = make_settings(**{name: {"circuit": {"failures": 1, "cooldown": "10ms"}}})
    record_outcome(settings, name, reachable=False)
    time.sleep(0.05)
    assert circuit_hold(settings, name) is None
    assert circuit_hold(settings, name) == 1.0
    assert circuit_hold(settings, "not-here") is None
