"""Prometheus metrics for ``GET /metrics``.

Everything about deliveries is read from the delivery log when Prometheus scrapes, so every API process
reports the same numbers, whichever worker made the attempts, and nothing is lost when a process restarts:

    broadcaster_deliveries{channel,status}                     deliveries in the log, by status (gauge)
    broadcaster_pending_deliveries{channel,age}                unfinished deliveries, by age band (gauge)
    broadcaster_oldest_pending_delivery_age_seconds{channel}   age of the oldest unfinished delivery (gauge)
    broadcaster_attempts_total{channel,outcome}                attempts made (counter)
    broadcaster_retries_total{channel}                         attempts after a delivery's first (counter)
    broadcaster_attempt_duration_seconds{channel}              how long attempts took (histogram)
    broadcaster_broadcasts_total{event}                        broadcasts, by event (counter)
    broadcaster_reminders_sent_total                           reminder broadcasts (counter)
    broadcaster_open_incidents{impact}                         incidents not yet resolved (gauge)
    broadcaster_circuit_open{channel}                          1 while the channel's circuit is open (gauge)
    broadcaster_open_circuits                                  channels whose circuit is open (gauge)

The circuits are read from the guards' shared store (Redis in worker mode). Other features add their own
families with ``register``. The HTTP API also counts its own requests (``broadcaster_http_requests_total``,
``broadcaster_http_request_duration_seconds``, by ``RequestMetrics``): those are per process, like every HTTP
server's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broadcaster.delivery.guards import open_circuits
from broadcaster.settings import Settings
from broadcaster.store.db import sessions
from broadcaster.store.models import Attempt, Broadcast, Delivery, DeliveryStatus, Incident, IncidentStatus, utcnow

#: upper bounds of the attempt-duration histogram, in seconds
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: the age bands of unfinished deliveries: (label, upper bound); the last band is everything older
AGE_BANDS = (
    ("under_1m", timedelta(minutes=1)),
    ("1m_to_5m", timedelta(minutes=5)),
    ("5m_to_15m", timedelta(minutes=15)),
    ("15m_to_1h", timedelta(hours=1)),
)
OLDEST_BAND = "over_1h"
UNFINISHED = (DeliveryStatus.pending, DeliveryStatus.sending, DeliveryStatus.retrying)

Source = Callable[[Settings], Iterable[Metric]]
_sources: list[Source] = []


def register(source: Source) -> Source:
    """Add a source of metric families read at every scrape (usable as a decorator)."""
    _sources.append(source)
    return source


class DeliveryLogCollector(Collector):
    """Reads the delivery log at scrape time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def describe(self) -> Iterable[Metric]:
        # Registering must not touch the database; the names are checked at scrape time instead.
        return []

    def collect(self) -> Iterator[Metric]:
        yield from delivery_families(self.settings)
        yield from attempt_families(self.settings)
        yield from broadcast_families(self.settings)
        yield from circuit_families(self.settings)
        for source in _sources:
            yield from source(self.settings)


def delivery_families(settings: Settings) -> Iterator[Metric]:
    now = utcnow()
    by_status = GaugeMetricFamily(
        "broadcaster_deliveries", "Deliveries in the log, by channel and status.", labels=["channel", "status"]
    )
    by_age = GaugeMetricFamily(
        "broadcaster_pending_deliveries",
        "Unfinished deliveries (pending, sending, retrying), by channel and age band since they were created.",
        labels=["channel", "age"],
    )
    oldest = GaugeMetricFamily(
        "broadcaster_oldest_pending_delivery_age_seconds",
        "Age of the oldest unfinished delivery, by channel.",
        labels=["channel"],
    )
    bands = [func.sum(case((Delivery.created_at > now - bound, 1), else_=0)).label(name) for name, bound in AGE_BANDS]
    with sessions(settings.database_url)() as session:
        for channel, status, count in session.execute(
            select(Delivery.channel, Delivery.status, func.count()).group_by(Delivery.channel, Delivery.status)
        ):
            by_status.add_metric([channel, status], count)
        unfinished = session.execute(
            select(Delivery.channel, func.count(), func.min(Delivery.created_at), *bands)
            .where(Delivery.status.in_(UNFINISHED))
            .group_by(Delivery.channel)
        )
        for channel, count, first, *cumulative in unfinished:
            previous = 0
            for (name, _), upto in zip(AGE_BANDS, cumulative, strict=True):
                by_age.add_metric([channel, name], int(upto or 0) - previous)
                previous = int(upto or 0)
            by_age.add_metric([channel, OLDEST_BAND], count - previous)
            oldest.add_metric([channel], max(0.0, (now - first).total_seconds()) if first else 0.0)
    yield from (by_status, by_age, oldest)


def attempt_families(settings: Settings) -> Iterator[Metric]:
    attempts = CounterMetricFamily(
        "broadcaster_attempts", "Delivery attempts made, by channel and outcome.", labels=["channel", "outcome"]
    )
    retries = CounterMetricFamily(
        "broadcaster_retries",
        "Attempts after a delivery's first one (automatic or manual retries).",
        labels=["channel"],
    )
    durations = HistogramMetricFamily(
        "broadcaster_attempt_duration_seconds", "How long delivery attempts took, by channel.", labels=["channel"]
    )
    buckets = [func.sum(case((Attempt.duration_seconds <= bound, 1), else_=0)) for bound in DURATION_BUCKETS]
    with sessions(settings.database_url)() as session:
        for channel, outcome, count in session.execute(
            select(Delivery.channel, Attempt.outcome, func.count())
            .join(Delivery, Attempt.delivery_id == Delivery.id)
            .group_by(Delivery.channel, Attempt.outcome)
        ):
            attempts.add_metric([channel, outcome], count)
        rows = session.execute(
            select(
                Delivery.channel,
                func.count(),
                func.coalesce(func.sum(Attempt.duration_seconds), 0.0),
                func.sum(case((Attempt.number > 1, 1), else_=0)),
                *buckets,
            )
            .join(Delivery, Attempt.delivery_id == Delivery.id)
            .group_by(Delivery.channel)
        )
        for channel, count, total, retried, *cumulative in rows:
            retries.add_metric([channel], int(retried or 0))
            durations.add_metric(
                [channel],
                buckets=[(str(b), int(c or 0)) for b, c in zip(DURATION_BUCKETS, cumulative, strict=True)]
                + [("+Inf", count)],
                sum_value=float(total),
            )
    yield from (attempts, retries, durations)


def broadcast_families(settings: Settings) -> Iterator[Metric]:
    broadcasts = CounterMetricFamily("broadcaster_broadcasts", "Broadcasts created, by event.", labels=["event"])
    reminders = CounterMetricFamily("broadcaster_reminders_sent", "Reminders broadcast for silent incidents.")
    incidents = GaugeMetricFamily(
        "broadcaster_open_incidents", "Incidents not yet resolved, by impact.", labels=["impact"]
    )
    reminded = 0
    with sessions(settings.database_url)() as session:
        for event, count in session.execute(select(Broadcast.event, func.count()).group_by(Broadcast.event)):
            broadcasts.add_metric([event], count)
            # Reminders are broadcasts of their own event (e.g. "incident.reminder").
            reminded += count if "reminder" in event else 0
        for impact, count in session.execute(
            select(Incident.impact, func.count())
            .where(Incident.status != IncidentStatus.resolved)
            .group_by(Incident.impact)
        ):
            incidents.add_metric([impact], count)
    reminders.add_metric([], reminded)
    yield from (broadcasts, reminders, incidents)


def circuit_families(settings: Settings) -> Iterator[Metric]:
    is_open = {circuit.channel for circuit in open_circuits(settings)}
    per_channel = GaugeMetricFamily(
        "broadcaster_circuit_open", "1 while the channel's circuit breaker is open, else 0.", labels=["channel"]
    )
    for channel in settings.channels:
        per_channel.add_metric([channel], 1 if channel in is_open else 0)
    yield per_channel
    yield GaugeMetricFamily("broadcaster_open_circuits", "Channels whose circuit breaker is open.", len(is_open))


#: the request methods counted by name (RFC 9110 and PATCH); any other is counted as ``other``
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD = "other"
#: the route label of a request that matched no route (an unknown path)
UNMATCHED = "unmatched"


class HttpMetrics:
    """This process's HTTP requests, by route template (never the raw path: ids would explode the labels).

    Every label comes from a closed set, whatever clients send: the standard methods or ``other``, the
    app's route templates or ``unmatched``, and the status codes the app answers with.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "broadcaster_http_requests",
            "HTTP API requests, by method, route and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "broadcaster_http_request_duration_seconds",
            "HTTP API request durations, by method and route.",
            ["method", "route"],
            registry=registry,
        )

    def observe(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """Count one request; ``route`` is the matched route's template, or None when none matched."""
        method = method if method in HTTP_METHODS else OTHER_METHOD
        route = route or UNMATCHED
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)


class RequestMetrics:
    """Counts and times each request by its route template (pure ASGI, so streaming stays untouched)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            # The template ("/v1/incidents/{incident_id}"), never the raw path; None when no route matched.
            route = getattr(scope.get("route"), "path", None)
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)


def build_registry(settings: Settings) -> tuple[CollectorRegistry, HttpMetrics]:
    """A registry of its own per app, so several apps in one process (tests) never clash."""
    registry = CollectorRegistry()
    registry.register(DeliveryLogCollector(settings))
    return registry, HttpMetrics(registry)
