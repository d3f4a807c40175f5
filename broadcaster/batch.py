"""Many deliveries in one task: claimed in one statement, sent concurrently, successes committed together.

Each delivery keeps its own row, attempts and retries: a batch only shares the round trips. What is not the
plain path (a channel whose circuit is open, a rate limit that would hold a send too long, a failure) goes
back to the one-delivery path in ``broadcaster.delivery``, which owns waiting, retries and fallbacks.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from broadcaster.broadcasts import build_channel
from broadcaster.db import session_scope
from broadcaster.delivery import DELIVERIES, EARLY, Claimed, Next, reachable, record, release, send
from broadcaster.guards import rate_hold, record_outcome, store_for
from broadcaster.models import Attempt, Broadcast, Delivery, DeliveryStatus, Outcome, new_id, utcnow
from broadcaster.settings import Settings
from broadcaster.subscribers import note_successes
from channels import Channel, Message, SendResult

#: how long a send in a batch may wait for its channel's rate limit before it is handed back to wait alone
RATE_WAIT = 2.0


@dataclass
class BatchNext:
    """What the batch task does next: run these deliveries alone (now or in N seconds), enqueue these."""

    later: dict[str, float] = field(default_factory=dict)
    enqueue: list[str] = field(default_factory=list)


@dataclass
class Sent:
    claimed: Claimed
    started: datetime
    duration: float
    result: SendResult | None
    state: dict[str, object]


@dataclass
class Done:
    """One claimed delivery after its turn: sent (and recorded) or given back unsent."""

    claimed: Claimed
    sent: bool
    reachable: bool = True
    after: Next = field(default_factory=Next)


def run_batch(settings: Settings, delivery_ids: Sequence[str]) -> BatchNext:
    """Make one attempt at each delivery that is due; hand the rest to the one-delivery path."""
    step = BatchNext()
    claims, unclaimed = claim_many(settings, delivery_ids)
    step.enqueue.extend(unclaimed)
    resting = {name for name in {c.channel for c in claims} if store_for(settings).circuit(name).open_until is not None}
    if resting:
        # An open (or probing) circuit is the one-delivery path's business: it defers and falls back.
        waiting = [c for c in claims if c.channel in resting]
        release(settings, waiting, 0)
        step.enqueue.extend(c.delivery_id for c in waiting)
        claims = [c for c in claims if c.channel not in resting]
    deadline = time.monotonic() + settings.delivery.lease.total_seconds() / 2
    done = list(_executor(settings).map(lambda claimed: _attempt(settings, claimed, deadline), claims))
    given_back = [d.claimed for d in done if not d.sent]
    release(settings, given_back, RATE_WAIT)
    step.later.update((c.delivery_id, RATE_WAIT) for c in given_back)
    _feed_circuits(settings, [d for d in done if d.sent])
    for d in done:
        step.enqueue.extend(d.after.enqueue)
        if d.after.retry_in is not None:
            step.later[d.claimed.delivery_id] = d.after.retry_in
    return step


def claim_many(settings: Settings, delivery_ids: Sequence[str]) -> tuple[list[Claimed], list[str]]:
    """Claim every due delivery among ``delivery_ids`` in one transaction; also return those that are not
    finished or being sent but cannot be claimed now (due later), for the one-delivery path."""
    now = utcnow()
    claims: list[Claimed] = []
    with session_scope(settings.database_url) as session:
        for previous in (DeliveryStatus.pending, DeliveryStatus.retrying):
            rows = session.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_(delivery_ids),
                    Delivery.status == previous,
                    or_(Delivery.due_at.is_(None), Delivery.due_at <= now + EARLY),
                )
                .values(
                    status=DeliveryStatus.sending,
                    attempts=Delivery.attempts + 1,
                    lease_until=now + settings.delivery.lease,
                    updated_at=now,
                )
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
            claims.extend(
                Claimed(
                    row.id,
                    row.channel,
                    row.target,
                    row.attempts,
                    row.attempts - row.budget_from,
                    renderings[(row.broadcast_id, row.channel)] if row.message is None else Message(**row.message),
                    dict(row.state or {}),
                    previous,
                )
                for row in rows
            )
        taken = {c.delivery_id for c in claims}
        waiting = session.scalars(
            select(Delivery.id).where(
                Delivery.id.in_([i for i in delivery_ids if i not in taken]),
                Delivery.status.in_([DeliveryStatus.pending, DeliveryStatus.retrying]),
            )
        ).all()
    return claims, list(waiting)


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


def _attempt(settings: Settings, claimed: Claimed, deadline: float) -> Done:
    """Send one claimed delivery and record it; give it back unsent when its rate limit or lease says wait."""
    waited = 0.0
    while True:
        if time.monotonic() > deadline:
            return Done(claimed, sent=False)  # sending now could outlive the lease: another worker may take it
        wait = rate_hold(settings, claimed.channel)
        if wait is None:
            break
        if waited + wait > RATE_WAIT:
            return Done(claimed, sent=False)
        time.sleep(wait)
        waited += wait
    started = utcnow()
    clock = time.monotonic()
    result, error, state = send(settings, claimed, _channel(settings, claimed.channel))
    duration = time.monotonic() - clock
    if error is not None:
        after = record(settings, claimed, started, duration, None, error, state)
        return Done(claimed, sent=True, reachable=reachable(error), after=after)
    _recorder().record(settings, Sent(claimed, started, duration, result, state))
    return Done(claimed, sent=True)


def _feed_circuits(settings: Settings, done: Sequence[Done]) -> None:
    """One verdict per channel and batch: any answer closes the circuit; each transient failure counts."""
    by_channel: dict[str, list[bool]] = defaultdict(list)
    for d in done:
        by_channel[d.claimed.channel].append(d.reachable)
    for channel, verdicts in by_channel.items():
        if any(verdicts):
            record_outcome(settings, channel, reachable=True)
        for _ in range(verdicts.count(False)):
            record_outcome(settings, channel, reachable=False)


class GroupRecorder:
    """Records successful sends from many threads in shared transactions (group commit).

    ``record`` returns only once the send is committed, so a worker that dies repeats at most the sends
    in flight; meanwhile every send that finished while a transaction was running joins the next one.
    """

    def __init__(self) -> None:
        self._queue: list[Sent] = []
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()

    def record(self, settings: Settings, sent: Sent) -> None:
        with self._queue_lock:
            self._queue.append(sent)
        with self._commit_lock:
            # Whoever held the lock before may already have committed ours with theirs.
            with self._queue_lock:
                group, self._queue = self._queue, []
            record_delivered(settings, group)


#: statements built once: a large fan-out runs them thousands of times
_INSERT_ATTEMPTS = insert(cast(Table, Attempt.__table__))
_MARK_DELIVERED = (
    update(DELIVERIES)
    .where(
        DELIVERIES.c.id == bindparam("claimed_id"),
        DELIVERIES.c.status == DeliveryStatus.sending.value,
        DELIVERIES.c.attempts == bindparam("claimed_attempt"),
    )
    .values(
        status=DeliveryStatus.delivered.value,
        provider_id=bindparam("sent_provider_id"),
        error=None,
        state=bindparam("sent_state"),
        lease_until=None,
        due_at=None,
        updated_at=bindparam("recorded_at"),
    )
)


def record_delivered(settings: Settings, sent: Sequence[Sent]) -> None:
    """Record successful sends: their attempts and statuses, in one transaction (while each claim holds)."""
    if not sent:
        return
    now = utcnow()
    with session_scope(settings.database_url) as session:
        connection = session.connection()
        connection.execute(
            _INSERT_ATTEMPTS,
            [
                {
                    "id": new_id(),
                    "delivery_id": s.claimed.delivery_id,
                    "number": s.claimed.attempt,
                    "outcome": Outcome.delivered.value,
                    "error": None,
                    "provider_id": s.result.provider_id if s.result else None,
                    "started_at": s.started,
                    "duration_seconds": s.duration,
                }
                for s in sent
            ],
        )
        connection.execute(
            _MARK_DELIVERED,
            [
                {
                    "claimed_id": s.claimed.delivery_id,
                    "claimed_attempt": s.claimed.attempt,
                    "sent_provider_id": s.result.provider_id if s.result else None,
                    "sent_state": s.state,
                    "recorded_at": now,
                }
                for s in sent
            ],
        )
        by_channel: dict[str, list[str]] = defaultdict(list)
        for s in sent:
            by_channel[s.claimed.channel].append(s.claimed.target)
        for channel, targets in by_channel.items():
            note_successes(session, settings, channel, targets)


# --- per process: the send threads, and the adapters each keeps open ---------------------------------------

_executor_lock = threading.Lock()
_executors: dict[int, ThreadPoolExecutor] = {}
_recorders: dict[int, GroupRecorder] = {}
_local = threading.local()


def _executor(settings: Settings) -> ThreadPoolExecutor:
    """This process's send threads: made after a fork (never inherited), remade when ``in_flight`` changes."""
    with _executor_lock:
        current = _executors.get(os.getpid())
        if current is None or current._max_workers != settings.delivery.in_flight:
            if current is not None:
                current.shutdown(wait=False)
            current = ThreadPoolExecutor(settings.delivery.in_flight, thread_name_prefix="broadcaster-send")
            _executors[os.getpid()] = current
        return current


def _recorder() -> GroupRecorder:
    with _executor_lock:
        return _recorders.setdefault(os.getpid(), GroupRecorder())


def _channel(settings: Settings, name: str) -> Channel:  # type: ignore[type-arg]
    """This thread's adapter for the channel, kept open between sends (SMTP sessions, HTTP keep-alive)."""
    if getattr(_local, "settings", None) is not settings:
        for adapter in getattr(_local, "channels", {}).values():
            adapter.close()
        _local.settings, _local.channels = settings, {}
    kept: dict[str, Channel] = _local.channels  # type: ignore[type-arg]
    if name not in kept:
        kept[name] = build_channel(settings, name)
    return kept[name]
