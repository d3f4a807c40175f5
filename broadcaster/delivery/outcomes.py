"""Outcomes: the one writer of attempts and of what they make of their deliveries.

Each outcome is written while its claim holds (``CLAIM_HELD``), by one of three doors over the same two
statements: ``record`` (one delivery's attempt, whatever came of it), ``record_delivered`` (a batch's successes,
many in one transaction) and ``record_lost`` (the sweeper's claim whose worker was lost mid-send). What an
outcome makes of its delivery (delivered; failed, with its fallbacks; retrying after a backoff) is ``judge``'s
verdict, a pure function of the retry budget and the error.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from pydantic import SecretStr
from sqlalchemy import Connection, CursorResult, Table, bindparam, insert, update
from sqlalchemy.orm import Session

from broadcaster.core.errors import DeliveryError, PermanentError, RateLimited
from broadcaster.delivery.claims import CLAIM_HELD, DELIVERIES, Claimed, held_claim
from broadcaster.delivery.fallback import fall_back
from broadcaster.domain.audiences import note_outcome, note_successes
from broadcaster.settings import RetrySettings, Settings
from broadcaster.store.db import session_scope
from broadcaster.store.models import Attempt, Delivery, DeliveryStatus, Outcome, new_id, utcnow
from channels import ChannelConfig, SendResult
from channels.base import SCRUB_MIN, scrub_url

log = logging.getLogger(__name__)

#: the error of an attempt whose worker was lost mid-send
LOST = "the worker was lost mid-send (lease expired); the provider may or may not have it"


@dataclass(frozen=True)
class Sent:
    """One send, as it went: ``error`` None is a success."""

    claimed: Claimed
    started: datetime
    duration: float
    result: SendResult | None
    error: DeliveryError | None
    state: dict[str, object]

    @classmethod
    def refused(cls, claimed: Claimed, error: PermanentError) -> Sent:
        """A send that could not start: its channel is not configured here, or its adapter cannot be built."""
        return cls(claimed, utcnow(), 0.0, None, error, {})


@dataclass
class Next:
    """What the task does after an attempt: run again in ``retry_in`` seconds, and enqueue new deliveries."""

    retry_in: float | None = None
    enqueue: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    """What an attempt's outcome makes of its delivery: its status and error, and for a ``retrying`` delivery
    the seconds until it is due."""

    outcome: Outcome
    status: DeliveryStatus
    error: str | None
    retry_in: float | None = None


DELIVERED = Verdict(Outcome.delivered, DeliveryStatus.delivered, None)


def backoff_delay(retry: RetrySettings, attempt: int) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(backoff_max, backoff * 2^(attempt-1))]."""
    ceiling = min(retry.backoff_max.total_seconds(), retry.backoff.total_seconds() * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)


def spent(retry: RetrySettings, budget_used: int) -> bool:
    """The delivery has had every attempt its retry budget allows."""
    return budget_used >= retry.max_attempts


def judge(retry: RetrySettings, budget_used: int, error: DeliveryError | None, reason: str | None) -> Verdict:
    """The verdict on an attempt that ended with ``error`` (None: delivered), shown in the log as ``reason``.

    A transient failure is retried after a backoff (at least the provider's Retry-After) until the budget is
    spent; a permanent one fails at once.
    """
    if error is None:
        return DELIVERED
    if isinstance(error, PermanentError):
        return Verdict(Outcome.permanent, DeliveryStatus.failed, reason)
    outcome = Outcome.rate_limited if isinstance(error, RateLimited) else Outcome.transient
    if spent(retry, budget_used):
        return Verdict(outcome, DeliveryStatus.failed, f"{reason} (gave up after {budget_used} attempts)")
    delay = backoff_delay(retry, budget_used)
    if isinstance(error, RateLimited) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return Verdict(outcome, DeliveryStatus.retrying, reason, delay)


#: the two statements every outcome is written with, built once: a large fan-out runs them thousands of times
_INSERT_ATTEMPT = insert(cast(Table, Attempt.__table__))
_SETTLE = (
    update(DELIVERIES)
    .where(CLAIM_HELD)
    .values(
        status=bindparam("new_status"),
        provider_id=bindparam("new_provider_id"),
        error=bindparam("new_error"),
        state=bindparam("new_state"),
        lease_until=None,
        due_at=bindparam("new_due_at"),
        updated_at=bindparam("recorded_at"),
    )
)


def _attempt_row(
    delivery_id: str, number: int, verdict: Verdict, provider_id: str | None, started: datetime, duration: float
) -> dict[str, object]:
    return {
        "id": new_id(),
        "delivery_id": delivery_id,
        "number": number,
        "outcome": verdict.outcome.value,
        "error": verdict.error,
        "provider_id": provider_id,
        "started_at": started,
        "duration_seconds": duration,
    }


def _settlement(
    delivery_id: str,
    attempt: int,
    verdict: Verdict,
    provider_id: str | None,
    state: dict[str, object],
    now: datetime,
) -> dict[str, object]:
    """The parameters of ``_SETTLE``: the delivery as the verdict leaves it, if the claim of ``attempt`` holds."""
    return {
        **held_claim(delivery_id, attempt),
        "new_status": verdict.status.value,
        "new_provider_id": provider_id,
        "new_error": verdict.error,
        "new_state": state,
        "new_due_at": now + timedelta(seconds=verdict.retry_in) if verdict.retry_in is not None else None,
        "recorded_at": now,
    }


def _settle(connection: Connection, settlement: dict[str, object]) -> bool:
    """Write one delivery's new status; False when its claim no longer held (nothing was written)."""
    return bool(cast(CursorResult[object], connection.execute(_SETTLE, settlement)).rowcount)


def record(settings: Settings, sent: Sent) -> Next:
    """Record one attempt and what it makes of its delivery; failed for good, its fallbacks are created."""
    claimed = sent.claimed
    reason = redact(str(sent.error), settings.channels.get(claimed.channel)) if sent.error else None
    verdict = judge(settings.retry_for(claimed.channel), claimed.budget_used, sent.error, reason)
    provider_id = sent.result.provider_id if sent.result else None
    step = Next(retry_in=verdict.retry_in)
    with session_scope(settings.database_url) as session:
        connection = session.connection()
        # The attempt was made: it is in the log even if the claim was lost meanwhile.
        connection.execute(
            _INSERT_ATTEMPT,
            _attempt_row(claimed.delivery_id, claimed.attempt, verdict, provider_id, sent.started, sent.duration),
        )
        # A subscriber's run of permanent failures (a bounced address, an invalid number) leads to quarantine.
        note_outcome(session, settings, claimed.channel, claimed.target, sent.error, verdict.error)
        settlement = _settlement(claimed.delivery_id, claimed.attempt, verdict, provider_id, sent.state, utcnow())
        if _settle(connection, settlement) and verdict.status == DeliveryStatus.failed:
            # In the same transaction: no one sees the broadcast finished before its fallbacks exist.
            step.enqueue = fall_back(settings, claimed.delivery_id, session)
    log.info(
        "delivery %s attempt %d: %s%s",
        claimed.delivery_id,
        claimed.attempt,
        verdict.outcome,
        f" ({verdict.error})" if verdict.error else "",
    )
    return step


def record_delivered(settings: Settings, sent: Sequence[Sent]) -> None:
    """Record successful sends: their attempts and statuses, in one transaction (while each claim holds)."""
    if not sent:
        return
    now = utcnow()
    with session_scope(settings.database_url) as session:
        connection = session.connection()
        provider_ids = [s.result.provider_id if s.result else None for s in sent]
        connection.execute(
            _INSERT_ATTEMPT,
            [
                _attempt_row(s.claimed.delivery_id, s.claimed.attempt, DELIVERED, provider_id, s.started, s.duration)
                for s, provider_id in zip(sent, provider_ids, strict=True)
            ],
        )
        connection.execute(
            _SETTLE,
            [
                _settlement(s.claimed.delivery_id, s.claimed.attempt, DELIVERED, provider_id, s.state, now)
                for s, provider_id in zip(sent, provider_ids, strict=True)
            ],
        )
        by_channel: dict[str, list[str]] = defaultdict(list)
        for s in sent:
            by_channel[s.claimed.channel].append(s.claimed.target)
        for channel, targets in by_channel.items():
            note_successes(session, settings, channel, targets)


def record_lost(session: Session, settings: Settings, delivery: Delivery, now: datetime) -> list[str]:
    """Record a ``sending`` claim whose lease ran out as a lost attempt, if it still holds: the delivery is due
    again now, or failed when its budget is spent. Return the deliveries to enqueue (it, or its fallbacks)."""
    exhausted = spent(settings.retry_for(delivery.channel), delivery.attempts - delivery.budget_from)
    if exhausted:
        verdict = Verdict(Outcome.transient, DeliveryStatus.failed, LOST)
    else:
        verdict = Verdict(Outcome.transient, DeliveryStatus.retrying, LOST, retry_in=0.0)
    connection = session.connection()
    # Its provider id and state stay as they are: only the claim's holder, now lost, would have changed them.
    settlement = _settlement(delivery.id, delivery.attempts, verdict, delivery.provider_id, delivery.state, now)
    if not _settle(connection, settlement):
        return []  # its worker recorded it after all, or another sweeper did
    lease = settings.delivery.lease
    started = delivery.lease_until - lease if delivery.lease_until else now
    connection.execute(
        _INSERT_ATTEMPT, _attempt_row(delivery.id, delivery.attempts, verdict, None, started, lease.total_seconds())
    )
    return fall_back(settings, delivery.id, session) if exhausted else [delivery.id]


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
