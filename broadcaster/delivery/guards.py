"""Per-channel guards shared by every worker: the outbound rate limit and the circuit breaker.

In worker mode their state lives in Redis (``redis_url``, by default the broker's server), so every worker
process sees one limit and one circuit per channel; in embedded mode, or on a RabbitMQ broker with no
``redis_url``, it lives in this process. Neither ever sleeps: each answers
"go" (None) or "come back in N seconds", and the caller reschedules the delivery without an attempt.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from broadcaster.core.errors import DeliveryError, RateLimited, TransientError
from broadcaster.core.units import RateLimit
from broadcaster.settings import Settings

KEY = "broadcaster"

#: even spacing (GCRA without bursts): one send per interval; answers ms to wait, or 0 when reserved
_RESERVE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local interval = tonumber(ARGV[1])
local free_at = tonumber(redis.call('GET', KEYS[1]) or '0')
if free_at <= now then
  redis.call('SET', KEYS[1], now + interval, 'PX', interval + 60000)
  return 0
end
return free_at - now
"""


@dataclass(frozen=True)
class Circuit:
    channel: str
    failures: int
    open_until: float | None

    @property
    def open(self) -> bool:
        return self.open_until is not None


class Store(Protocol):
    def reserve(self, channel: str, limit: RateLimit) -> float: ...
    def circuit(self, channel: str) -> Circuit: ...
    def record_failure(self, channel: str, threshold: int, cooldown: float) -> Circuit: ...
    def record_success(self, channel: str) -> None: ...
    def take_probe(self, channel: str, hold: float) -> bool: ...
    def take_turn(self, name: str, hold: float) -> bool: ...


class RedisStore:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._reserve = self.client.register_script(_RESERVE)

    def reserve(self, channel: str, limit: RateLimit) -> float:
        waited = self._reserve(keys=[f"{KEY}:rate:{channel}"], args=[max(1, round(limit.interval * 1000))])
        return float(waited) / 1000  # type: ignore[arg-type]

    def circuit(self, channel: str) -> Circuit:
        failures, until = self.client.hmget(f"{KEY}:circuit:{channel}", ["failures", "open_until"])
        return Circuit(channel, int(failures or 0), float(until) if until else None)

    def record_failure(self, channel: str, threshold: int, cooldown: float) -> Circuit:
        key = f"{KEY}:circuit:{channel}"
        failures = int(self.client.hincrby(key, "failures", 1))
        if failures >= threshold:
            self.client.hset(key, "open_until", time.time() + cooldown)
            self.client.delete(f"{key}:probe")
        return self.circuit(channel)

    def record_success(self, channel: str) -> None:
        key = f"{KEY}:circuit:{channel}"
        self.client.delete(key, f"{key}:probe")

    def take_probe(self, channel: str, hold: float) -> bool:
        return self.take_turn(f"circuit:{channel}:probe", hold)

    def take_turn(self, name: str, hold: float) -> bool:
        return bool(self.client.set(f"{KEY}:{name}", "1", nx=True, px=max(1, int(hold * 1000))))


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free_at: dict[str, float] = {}
        self._failures: dict[str, int] = defaultdict(int)
        self._open_until: dict[str, float] = {}
        self._turns: dict[str, float] = {}

    def reserve(self, channel: str, limit: RateLimit) -> float:
        now = time.monotonic()
        with self._lock:
            free_at = self._free_at.get(channel, 0.0)
            if free_at <= now:
                self._free_at[channel] = now + limit.interval
                return 0.0
            return free_at - now

    def circuit(self, channel: str) -> Circuit:
        with self._lock:
            return Circuit(channel, self._failures[channel], self._open_until.get(channel))

    def record_failure(self, channel: str, threshold: int, cooldown: float) -> Circuit:
        with self._lock:
            self._failures[channel] += 1
            if self._failures[channel] >= threshold:
                self._open_until[channel] = time.time() + cooldown
                self._turns.pop(f"circuit:{channel}:probe", None)
        return self.circuit(channel)

    def record_success(self, channel: str) -> None:
        with self._lock:
            self._failures.pop(channel, None)
            self._open_until.pop(channel, None)
            self._turns.pop(f"circuit:{channel}:probe", None)

    def take_probe(self, channel: str, hold: float) -> bool:
        return self.take_turn(f"circuit:{channel}:probe", hold)

    def take_turn(self, name: str, hold: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._turns.get(name, 0) > now:
                return False
            self._turns[name] = now + hold
            return True


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def store_for(settings: Settings) -> Store:
    """Redis (``redis_url``, or the broker when it is Redis), shared by every worker; else this process's memory."""
    url = settings.shared_state_url
    with _stores_lock:
        if url not in _stores:
            _stores[url] = RedisStore(url) if url else MemoryStore()
        return _stores[url]


def circuit_hold(settings: Settings, channel: str) -> float | None:
    """Seconds to wait while the channel's circuit is open; None when it may be tried (or probed) now."""
    config = settings.channels.get(channel)
    if config is None:
        return None
    store = store_for(settings)
    circuit = store.circuit(channel)
    if circuit.open_until is None:
        return None
    remaining = circuit.open_until - time.time()
    if remaining > 0:
        return remaining
    # Cooled down: exactly one delivery probes the channel; the others wait for its verdict.
    if store.take_probe(channel, hold=settings.delivery.lease.total_seconds()):
        return None
    return max(1.0, config.circuit.cooldown.total_seconds() / 10)


def rate_hold(settings: Settings, channel: str) -> float | None:
    """Reserve one send under the channel's rate limit; else the seconds until one is free.

    Sends are spaced evenly ("5/s" is one every 200 ms), so no window of the period ever holds more
    than the limit, even when the time between reserving and reaching the provider varies.
    """
    config = settings.channels.get(channel)
    if config is None or config.rate_limit is None:
        return None
    wait = store_for(settings).reserve(channel, config.rate_limit)
    return wait if wait > 0 else None


def reachable(error: DeliveryError | None) -> bool:
    """A provider that answered at all (even "no") is up; only transient failures count against its circuit."""
    return not isinstance(error, TransientError) or isinstance(error, RateLimited)


def record_outcome(settings: Settings, channel: str, reachable: bool) -> Circuit | None:
    """Feed the circuit breaker: a provider that answered closes it; transient failures open it."""
    config = settings.channels.get(channel)
    if config is None:
        return None
    store = store_for(settings)
    if reachable:
        store.record_success(channel)
        return None
    return store.record_failure(channel, config.circuit.failures, config.circuit.cooldown.total_seconds())


def take_turn(settings: Settings, name: str, hold: float) -> bool:
    """True for exactly one caller (across every worker) per ``hold`` seconds."""
    return store_for(settings).take_turn(name, hold)


def open_circuits(settings: Settings) -> list[Circuit]:
    """Channels whose circuit is open now (for `deliveries`, `check` and metrics)."""
    try:
        store = store_for(settings)
        circuits = [store.circuit(name) for name in settings.channels]
    except redis.RedisError:
        return []
    return [c for c in circuits if c.open]


def describe(circuit: Circuit) -> dict[str, Any]:
    until = time.strftime("%H:%M:%S", time.gmtime(circuit.open_until)) if circuit.open_until else None
    return {"channel": circuit.channel, "failures": circuit.failures, "open_until": until}
