"""One attempt at one delivery: claim the row, send, record the attempt, decide what comes next.

The database row is the truth. A claim is a conditional UPDATE (pending/retrying -> sending), so two
workers handed the same delivery never both send it, and a delivery already delivered is never sent again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import SecretStr
from sqlalchemy import ColumnElement, Table, Update, and_, bindparam, or_, select, update

from broadcaster.broadcasts import build_channel
from broadcaster.db import changed, session_scope, sessions
from broadcaster.errors import ConfigError, DeliveryError, PermanentError, RateLimited, TransientError
from broadcaster.fallback import fall_back
from broadcaster.guards import circuit_hold, rate_hold, record_outcome
from broadcaster.models import Attempt, Broadcast, Delivery, DeliveryStatus, Outcome, utcnow
from broadcaster.settings import RetrySettings, Settings
from broadcaster.subscribers import note_outcome
from channels import Channel, ChannelConfig, Message, SendContext, SendResult
from channels.base import SCRUB_MIN, scrub_url

log = logging.getLogger(__name__)

#: the deliveries table, for statements run once per list of parameters (executemany)
DELIVERIES = cast(Table, Delivery.__table__)
#: a task that arrives this early for a `retrying` delivery still claims it (clocks and timers differ slightly)
EARLY = timedelta(milliseconds=50)


@dataclass(frozen=True)
class Claimed:
    delivery_id: str
    channel: str
    target: str
    attempt: int
    budget_used: int
    message: Message
    state: dict[str, object]
    previous_status: DeliveryStatus


#: ``claim_holds`` for statements run once per list of parameters, each from ``held_claim``
CLAIM_HELD = and_(
    DELIVERIES.c.id == bindparam("claimed_id"),
    DELIVERIES.c.status == DeliveryStatus.sending.value,
    DELIVERIES.c.attempts == bindparam("claimed_attempt"),
)


def held_claim(claimed: Claimed) -> dict[str, object]:
    """The parameters of ``CLAIM_HELD`` for one claim."""
    return {"claimed_id": claimed.delivery_id, "claimed_attempt": claimed.attempt}


def claim_holds(delivery_id: str, attempt: int) -> ColumnElement[bool]:
    """The claim for ``attempt`` still holds: nobody else took the delivery since (e.g. after its lease ran out)."""
    return and_(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.sending, Delivery.attempts == attempt)


def backoff_delay(retry: RetrySettings, attempt: int) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(backoff_max, backoff * 2^(attempt-1))]."""
    ceiling = min(retry.backoff_max.total_seconds(), retry.backoff.total_seconds() * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)


def claiming(settings: Settings, now: datetime, *which: ColumnElement[bool]) -> Update:
    """The conditional UPDATE that takes the deliveries ``which`` select, when due, for one attempt each:
    ``sending``, one attempt more, leased until ``now`` plus the lease."""
    return (
        update(Delivery)
        .where(*which, or_(Delivery.due_at.is_(None), Delivery.due_at <= now + EARLY))
        .values(
            status=DeliveryStatus.sending,
            attempts=Delivery.attempts + 1,
            lease_until=now + settings.delivery.lease,
            updated_at=now,
        )
    )


def claim(settings: Settings, delivery_id: str) -> Claimed | float | None:
    """Take the delivery for one attempt; or seconds until it is due; or None when there is nothing to do."""
    now = utcnow()
    with session_scope(settings.database_url) as session:
        previous = session.scalar(select(Delivery.status).where(Delivery.id == delivery_id))
        if previous is None:
            log.warning("delivery %s is not in the log; dropping its task", delivery_id)
            return None
        claimed = changed(
            session,
            claiming(
                settings,
                now,
                Delivery.id == delivery_id,
                Delivery.status == previous,
                Delivery.status.in_([DeliveryStatus.pending, DeliveryStatus.retrying]),
            ),
        )
        row = session.get(Delivery, delivery_id, populate_existing=True)
        if row is None:
            return None
        if not claimed:
            if row.status == DeliveryStatus.retrying and row.due_at and row.due_at > now:
                return (row.due_at - now).total_seconds()
            return None
        broadcast = session.get(Broadcast, row.broadcast_id)
        assert broadcast is not None
        message = Message.model_validate(row.message or broadcast.renderings[row.channel])
        return Claimed(
            row.id,
            row.channel,
            row.target,
            row.attempts,
            row.attempts - row.budget_from,
            message,
            dict(row.state),
            DeliveryStatus(previous),
        )


def send(
    settings: Settings, claimed: Claimed, channel: Channel[Any] | None = None
) -> tuple[SendResult | None, DeliveryError | None, dict[str, object]]:
    """Send through the channel's adapter; every failure comes back as one of our DeliveryErrors.

    Without ``channel`` the adapter is built for this one send and closed after it.
    """
    context = SendContext(delivery_id=claimed.delivery_id, attempt=claimed.attempt, state=dict(claimed.state))
    if claimed.channel not in settings.channels:
        return None, PermanentError(f"channel {claimed.channel!r} is not in this worker's configuration"), {}
    own = channel is None
    try:
        adapter = build_channel(settings, claimed.channel) if channel is None else channel
    except ConfigError as exc:
        return None, PermanentError(str(exc)), {}
    try:
        return adapter.send(claimed.message, claimed.target, context), None, context.state
    except DeliveryError as exc:
        return None, exc, context.state
    except Exception as exc:  # an adapter bug must not lose the delivery: record it and retry
        log.exception("channel %s raised an unexpected error", claimed.channel)
        return None, TransientError(f"unexpected {type(exc).__name__}: {exc}"), context.state
    finally:
        if own:
            adapter.close()


def reachable(error: DeliveryError | None) -> bool:
    """A provider that answered at all (even "no") is up; only transient failures count against its circuit."""
    return not isinstance(error, TransientError) or isinstance(error, RateLimited)


@dataclass
class Next:
    """What the task does after an attempt: run again in ``retry_in`` seconds, and enqueue new deliveries."""

    retry_in: float | None = None
    enqueue: list[str] = field(default_factory=list)


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
    started = utcnow()
    clock = time.monotonic()
    result, error, state = send(settings, claimed)
    duration = time.monotonic() - clock
    record_outcome(settings, claimed.channel, reachable=reachable(error))
    return record(settings, claimed, started, duration, result, error, state)


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


def release(settings: Settings, claims: Sequence[Claimed], seconds: float) -> None:
    """Give back claims that could not send (rate limit spent, circuit open): as they were, minus the attempt,
    due in ``seconds``."""
    if not claims:
        return
    with session_scope(settings.database_url) as session:
        session.execute(
            update(DELIVERIES)
            .where(CLAIM_HELD)
            .values(
                status=bindparam("previous_status"),
                attempts=bindparam("attempts_before"),
                lease_until=None,
                due_at=utcnow() + timedelta(seconds=seconds),
            ),
            [
                {**held_claim(c), "attempts_before": c.attempt - 1, "previous_status": c.previous_status.value}
                for c in claims
            ],
        )


def defer(settings: Settings, delivery_id: str, seconds: float) -> None:
    """Move a waiting delivery's due time without an attempt (the sweeper then leaves it alone until then)."""
    with session_scope(settings.database_url) as session:
        changed(
            session,
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status.in_([DeliveryStatus.pending, DeliveryStatus.retrying]))
            .values(due_at=utcnow() + timedelta(seconds=seconds)),
        )


def record(
    settings: Settings,
    claimed: Claimed,
    started: datetime,
    duration: float,
    result: SendResult | None,
    error: DeliveryError | None,
    state: dict[str, object],
) -> Next:
    retry = settings.retry_for(claimed.channel) if claimed.channel in settings.channels else RetrySettings()
    config = settings.channels.get(claimed.channel)
    reason = redact(str(error), config) if error else None
    delay: float | None = None
    if error is None:
        outcome, status = Outcome.delivered, DeliveryStatus.delivered
    elif isinstance(error, PermanentError):
        outcome, status = Outcome.permanent, DeliveryStatus.failed
    else:
        outcome = Outcome.rate_limited if isinstance(error, RateLimited) else Outcome.transient
        if claimed.budget_used >= retry.max_attempts:
            status = DeliveryStatus.failed
            reason = f"{reason} (gave up after {claimed.budget_used} attempts)"
        else:
            status = DeliveryStatus.retrying
            delay = backoff_delay(retry, claimed.budget_used)
            if isinstance(error, RateLimited) and error.retry_after is not None:
                delay = max(delay, error.retry_after)
    now = utcnow()
    provider_id = result.provider_id if result else None
    with session_scope(settings.database_url) as session:
        session.add(
            Attempt(
                delivery_id=claimed.delivery_id,
                number=claimed.attempt,
                outcome=outcome,
                error=reason,
                provider_id=provider_id,
                started_at=started,
                duration_seconds=duration,
            )
        )
        # A subscriber's run of permanent failures (a bounced address, an invalid number) leads to quarantine.
        note_outcome(session, settings, claimed.channel, claimed.target, error, reason)
        # Only while our claim holds: a lease that ran out may have passed the delivery to another worker.
        held = changed(
            session,
            update(Delivery)
            .where(claim_holds(claimed.delivery_id, claimed.attempt))
            .values(
                status=status,
                provider_id=provider_id,
                error=reason,
                state=state,
                lease_until=None,
                due_at=now + timedelta(seconds=delay) if delay is not None else None,
                updated_at=now,
            ),
        )
        step = Next(retry_in=delay)
        if held and status == DeliveryStatus.failed:
            # In the same transaction: no one sees the broadcast finished before its fallbacks exist.
            step.enqueue = fall_back(settings, claimed.delivery_id, session)
    log.info(
        "delivery %s attempt %d: %s%s", claimed.delivery_id, claimed.attempt, outcome, f" ({reason})" if reason else ""
    )
    return step


def redact(text: str, config: ChannelConfig | None) -> str:
    """Remove every configured secret of the channel from a message bound for the log (or a terminal).

    URLs first (a webhook ``url``, an ``api_base_url``, a secret ``webhook_url``): SDK and HTTP library
    messages often quote them whole, or only their path and query; then every other secret value.
    """
    if config is None:
        return text
    values = [(value, False) for value in config.__dict__.values() if isinstance(value, str)]
    values += [(v.get_secret_value(), True) for v in config.__dict__.values() if isinstance(v, SecretStr)]
    for value, secret in values:
        if value.startswith(("http://", "https://")):
            text = scrub_url(text, value, secret=secret)
    for value, secret in values:
        if secret and len(value) >= SCRUB_MIN:
            text = text.replace(value, "***")
    return text
