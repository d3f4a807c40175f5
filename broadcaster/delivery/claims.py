"""Claims: a delivery is taken for one attempt by a conditional UPDATE, and only its holder records the attempt.

The database row is the truth. A claim turns ``pending``/``retrying`` into ``sending``, one attempt more, leased
for ``[delivery] lease``; two workers handed the same delivery never both send it, and a delivery already
delivered is never sent again. An outcome is written, and a claim given back, only while the claim holds
(``CLAIM_HELD``): a lease that ran out may have passed the delivery to another worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import ColumnElement, Table, Update, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from broadcaster.settings import Settings
from broadcaster.store.db import changed, session_scope
from broadcaster.store.models import Broadcast, Delivery, DeliveryStatus, utcnow
from channels import Message

log = logging.getLogger(__name__)

#: the deliveries table, for statements run once per list of parameters (executemany)
DELIVERIES = cast(Table, Delivery.__table__)
#: a task that arrives this early for a `retrying` delivery still claims it (clocks and timers differ slightly)
EARLY = timedelta(milliseconds=50)
#: where a claim may come from
CLAIMABLE = (DeliveryStatus.pending, DeliveryStatus.retrying)


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for attempt number ``attempt``; ``budget_used`` counts the attempts since the last manual
    retry, ``previous_status`` is what a release gives back."""

    delivery_id: str
    channel: str
    target: str
    attempt: int
    budget_used: int
    message: Message
    state: dict[str, object]
    previous_status: DeliveryStatus


#: the claim still holds: nobody took the delivery since (e.g. after its lease ran out); for statements run once
#: per list of parameters, each from ``held_claim``
CLAIM_HELD = and_(
    DELIVERIES.c.id == bindparam("claimed_id"),
    DELIVERIES.c.status == DeliveryStatus.sending.value,
    DELIVERIES.c.attempts == bindparam("claimed_attempt"),
)


def held_claim(delivery_id: str, attempt: int) -> dict[str, object]:
    """The parameters of ``CLAIM_HELD`` for the claim of ``attempt``."""
    return {"claimed_id": delivery_id, "claimed_attempt": attempt}


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
        if previous in CLAIMABLE:
            taken = _take(session, settings, now, [delivery_id], DeliveryStatus(previous))
            if taken:
                return taken[0]
        row = session.execute(select(Delivery.status, Delivery.due_at).where(Delivery.id == delivery_id)).one_or_none()
        if row is not None and row.status == DeliveryStatus.retrying and row.due_at and row.due_at > now:
            return (row.due_at - now).total_seconds()
        return None


def claim_many(settings: Settings, delivery_ids: Sequence[str]) -> tuple[list[Claimed], list[str]]:
    """Claim every due delivery among ``delivery_ids`` in one transaction; also return those that are not
    finished or being sent but cannot be claimed now (due later), for the one-delivery path."""
    now = utcnow()
    with session_scope(settings.database_url) as session:
        claims = [c for previous in CLAIMABLE for c in _take(session, settings, now, delivery_ids, previous)]
        taken = {c.delivery_id for c in claims}
        waiting = session.scalars(
            select(Delivery.id).where(
                Delivery.id.in_([i for i in delivery_ids if i not in taken]), Delivery.status.in_(CLAIMABLE)
            )
        ).all()
    return claims, list(waiting)


def _take(
    session: Session, settings: Settings, now: datetime, delivery_ids: Sequence[str], previous: DeliveryStatus
) -> list[Claimed]:
    """Claim those of ``delivery_ids`` that are due and ``previous``, in one statement: the one claim builder."""
    rows = session.execute(
        claiming(settings, now, Delivery.id.in_(delivery_ids), Delivery.status == previous)
        .returning(
            Delivery.id,
            Delivery.broadcast_id,
            Delivery.channel,
            Delivery.target,
            Delivery.attempts,
            Delivery.budget_from,
            Delivery.message,
            Delivery.state,
        )
        .execution_options(synchronize_session=False)
    ).all()
    renderings = _renderings(session, {row.broadcast_id for row in rows if row.message is None})
    return [
        Claimed(
            row.id,
            row.channel,
            row.target,
            row.attempts,
            row.attempts - row.budget_from,
            renderings[(row.broadcast_id, row.channel)] if row.message is None else Message.model_validate(row.message),
            dict(row.state or {}),
            previous,
        )
        for row in rows
    ]


def _renderings(session: Session, broadcast_ids: set[str]) -> dict[tuple[str, str], Message]:
    """Each broadcast's message per channel, validated once per batch rather than once per delivery."""
    if not broadcast_ids:
        return {}
    rows = session.execute(select(Broadcast.id, Broadcast.renderings).where(Broadcast.id.in_(broadcast_ids))).all()
    return {
        (row.id, channel): Message.model_validate(message)
        for row in rows
        for channel, message in row.renderings.items()
    }


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
                {
                    **held_claim(c.delivery_id, c.attempt),
                    "attempts_before": c.attempt - 1,
                    "previous_status": c.previous_status.value,
                }
                for c in claims
            ],
        )


def defer(settings: Settings, delivery_id: str, seconds: float) -> None:
    """Move a waiting delivery's due time without an attempt (the sweeper then leaves it alone until then)."""
    with session_scope(settings.database_url) as session:
        changed(
            session,
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status.in_(CLAIMABLE))
            .values(due_at=utcnow() + timedelta(seconds=seconds)),
        )
