"""The outbox sweeper: the database is the truth, so whatever the broker lost is enqueued again.

A `sending` claim whose lease ran out lost its worker mid-send: the attempt is recorded as lost and the
delivery retried. A `pending` or `retrying` delivery whose due time passed two sweep periods ago lost its
task (a flushed or restarted Redis, a killed worker holding it): it is enqueued again. A task that turns
out to be a duplicate is harmless: the claim lets exactly one of them send.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select, update

from broadcaster.delivery.claims import CLAIMABLE
from broadcaster.delivery.outcomes import record_lost
from broadcaster.settings import Settings
from broadcaster.store.db import changed, session_scope
from broadcaster.store.models import Delivery, DeliveryStatus, utcnow

log = logging.getLogger(__name__)
BATCH = 5000


def sweep(settings: Settings, queue_empty: bool = True) -> list[str]:
    """Recover lost claims and lost tasks; return the deliveries to enqueue (fallbacks of those that failed too).

    Overdue deliveries are taken for lost only while the queue is empty: in a long backlog they are still
    waiting their turn, and enqueueing them again would only lengthen it.
    """
    now = utcnow()
    # Two whole periods: a task still waiting in a busy queue is not taken for lost at once.
    grace = max(2 * settings.delivery.sweep_every, timedelta(seconds=1))
    to_enqueue: list[str] = []
    # Only channels this worker can send, lost claims and overdue deliveries alike: a worker configured for
    # fewer channels leaves the others to the workers that have them.
    mine = Delivery.channel.in_(list(settings.channels))
    with session_scope(settings.database_url) as session:
        lost = session.scalars(
            select(Delivery)
            .where(Delivery.status == DeliveryStatus.sending, Delivery.lease_until < now, mine)
            .limit(BATCH)
        ).all()
        for delivery in lost:
            to_enqueue += record_lost(session, settings, delivery, now)
        overdue = (
            []
            if not queue_empty
            else list(
                session.scalars(
                    select(Delivery.id)
                    .where(
                        Delivery.status.in_(CLAIMABLE),
                        func.coalesce(Delivery.due_at, Delivery.created_at) < now - grace,
                        mine,
                    )
                    .limit(BATCH)
                )
            )
        )
        if overdue:
            # Due again one whole sweep period from now: a slow queue is not swept twice in a row.
            changed(session, update(Delivery).where(Delivery.id.in_(overdue)).values(due_at=now))
        to_enqueue += overdue
    if to_enqueue:
        log.warning("sweeper: %d lost claims, %d overdue deliveries re-enqueued", len(lost), len(overdue))
    return to_enqueue
