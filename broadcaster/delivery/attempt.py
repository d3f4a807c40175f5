"""One attempt at one delivery: wait while its channel's circuit is open, claim it, send, record the outcome.

The claim (broadcaster.delivery.claims) makes sure one worker sends it; the outcome (broadcaster.delivery.outcomes)
decides what comes next: done, retried after a backoff, or failed over to the channel's fallbacks.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from broadcaster.core.errors import DeliveryError, PermanentError, TransientError
from broadcaster.delivery.adapters import one_off
from broadcaster.delivery.claims import EARLY, Claimed, claim, defer, release
from broadcaster.delivery.fallback import fall_back
from broadcaster.delivery.guards import circuit_hold, rate_hold, reachable, record_outcome
from broadcaster.delivery.outcomes import Next, Sent, record
from broadcaster.settings import Settings
from broadcaster.store.db import sessions
from broadcaster.store.models import Delivery, DeliveryStatus, utcnow
from channels import Channel, SendContext

log = logging.getLogger(__name__)


def run_attempt(settings: Settings, delivery_id: str) -> Next:
    """Make one attempt at a delivery, unless its channel must wait (which costs no attempt)."""
    waiting = wait_needed(settings, delivery_id)
    if waiting is not None:
        return waiting
    claimed = claim(settings, delivery_id)
    if not isinstance(claimed, Claimed):
        return Next(retry_in=claimed)
    # The rate limit is reserved last, right before the send, so the provider sees the limit we reserved.
    wait = rate_hold(settings, claimed.channel)
    if wait is not None:
        release(settings, [claimed], wait)
        return Next(retry_in=wait)
    try:
        with one_off(settings, claimed.channel) as adapter:
            sent = send(claimed, adapter)
    except PermanentError as exc:  # no adapter for the channel here
        sent = Sent.refused(claimed, exc)
    record_outcome(settings, claimed.channel, reachable=reachable(sent.error))
    return record(settings, sent)


def send(claimed: Claimed, adapter: Channel[Any]) -> Sent:
    """Send through the adapter; every failure comes back as one of our DeliveryErrors."""
    context = SendContext(delivery_id=claimed.delivery_id, attempt=claimed.attempt, state=dict(claimed.state))
    started = utcnow()
    clock = time.monotonic()
    result, error = None, None
    try:
        result = adapter.send(claimed.message, claimed.target, context)
    except DeliveryError as exc:
        error = exc
    except Exception as exc:  # an adapter bug must not lose the delivery: record it and retry
        log.exception("channel %s raised an unexpected error", claimed.channel)
        error = TransientError(f"unexpected {type(exc).__name__}: {exc}")
    return Sent(claimed, started, time.monotonic() - clock, result, error, context.state)


def wait_needed(settings: Settings, delivery_id: str) -> Next | None:
    """Defer the delivery while its channel's circuit is open; None: go ahead."""
    with sessions(settings.database_url)() as session:
        row = session.get(Delivery, delivery_id)
        if row is None or DeliveryStatus(row.status).finished or row.status == DeliveryStatus.sending:
            return None  # the claim decides what happens to these
        if row.due_at is not None and row.due_at > utcnow() + EARLY:
            return Next(retry_in=(row.due_at - utcnow()).total_seconds())
        channel, created_at, fallback_for = row.channel, row.created_at, row.fallback_for
    wait = circuit_hold(settings, channel)
    if wait is None:
        return None
    step = Next(retry_in=wait)
    config = settings.channels.get(channel)
    if config is not None and not fallback_for and config.fallback:
        # Its fallbacks go out once the circuit has kept it waiting `fallback_after`; look again by then.
        waited = (utcnow() - created_at).total_seconds()
        fallback_after = config.fallback_after.total_seconds()
        if waited >= fallback_after:
            step.enqueue = fall_back(settings, delivery_id)
        else:
            step.retry_in = min(wait, fallback_after - waited)
    defer(settings, delivery_id, step.retry_in or wait)
    return step
