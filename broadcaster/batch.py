"""Many deliveries in one task: claimed in one statement, sent concurrently, successes committed together.

Each delivery keeps its own row, attempts and retries: a batch only shares the round trips. The sends run on
the worker process's send threads, over adapters the process keeps open; the task returns once its last send
has started, so the next batch begins while the slowest of this one finish. What is not the plain path (a
failure, a channel whose circuit is open, a rate limit that would hold a send too long) goes on alone, through
the one-delivery task (``broadcaster.delivery``), which owns waiting, retries and fallbacks.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from broadcaster.broadcasts import build_channel
from broadcaster.db import session_scope
from broadcaster.delivery import CLAIM_HELD, DELIVERIES, Claimed, claiming, held_claim, reachable, record, release, send
from broadcaster.guards import rate_hold, record_outcome, store_for
from broadcaster.models import Attempt, Broadcast, Delivery, DeliveryStatus, Outcome, new_id, utcnow
from broadcaster.settings import Settings
from broadcaster.subscribers import note_successes
from channels import Channel, Message, SendResult

log = logging.getLogger(__name__)

#: how long a send in a batch may wait for its channel's rate limit before it is handed back to wait alone
RATE_WAIT = 2.0
#: how often (seconds) a worker process commits the successes that gathered meanwhile
RECORD_EVERY = 0.02


@dataclass
class BatchNext:
    """What follows a batch: these deliveries run alone (now or in N seconds); these new ones are enqueued."""

    later: dict[str, float] = field(default_factory=dict)
    enqueue: list[str] = field(default_factory=list)


FollowUp = Callable[[BatchNext], None]


@dataclass
class Sent:
    claimed: Claimed
    started: datetime
    duration: float
    result: SendResult | None
    state: dict[str, object]


def run_batch(settings: Settings, delivery_ids: Sequence[str], follow_up: FollowUp) -> None:
    """Claim the batch and start its sends; return once the last one has started, so the worker takes its next
    batch while these finish. Whatever must then run alone goes to ``follow_up``, from the thread that knows."""
    step = BatchNext()
    claims, step.enqueue = claim_many(settings, delivery_ids)
    resting = {name for name in {c.channel for c in claims} if store_for(settings).circuit(name).open_until is not None}
    if resting:
        # An open (or probing) circuit is the one-delivery path's business: it defers and falls back.
        waiting = [c for c in claims if c.channel in resting]
        release(settings, waiting, 0)
        step.enqueue.extend(c.delivery_id for c in waiting)
        claims = [c for c in claims if c.channel not in resting]
    follow_up(step)
    if not claims:
        return
    batch = _Batch(settings, follow_up, deadline=time.monotonic() + settings.delivery.lease.total_seconds() / 2)
    executor = _executor(settings)
    last_started = threading.Event()
    for claimed in claims[:-1]:
        executor.submit(batch.attempt, claimed)
    executor.submit(batch.attempt, claims[-1], last_started)
    last_started.wait(batch.deadline - time.monotonic())


def claim_many(settings: Settings, delivery_ids: Sequence[str]) -> tuple[list[Claimed], list[str]]:
    """Claim every due delivery among ``delivery_ids`` in one transaction; also return those that are not
    finished or being sent but cannot be claimed now (due later), for the one-delivery path."""
    now = utcnow()
    claims: list[Claimed] = []
    with session_scope(settings.database_url) as session:
        for previous in (DeliveryStatus.pending, DeliveryStatus.retrying):
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
            claims.extend(
                Claimed(
                    row.id,
                    row.channel,
                    row.target,
                    row.attempts,
                    row.attempts - row.budget_from,
                    renderings[(row.broadcast_id, row.channel)]
                    if row.message is None
                    else Message.model_validate(row.message),
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


class _Batch:
    """One batch's sends, on the send threads: each sent, recorded and followed up on its own."""

    def __init__(self, settings: Settings, follow_up: FollowUp, deadline: float) -> None:
        self.settings = settings
        self.follow_up = follow_up
        #: past this, a send could outlive the lease and another worker could take the delivery over
        self.deadline = deadline
        self._lock = threading.Lock()
        self._answered: set[str] = set()
        self._failing: set[str] = set()

    def attempt(self, claimed: Claimed, on_start: threading.Event | None = None) -> None:
        if on_start is not None:
            on_start.set()
        try:
            self._attempt(claimed)
        except Exception:  # the log or the broker is unreachable, say: the lease or the sweeper brings it back
            log.exception("delivery %s: its attempt could not be finished", claimed.delivery_id)

    def _attempt(self, claimed: Claimed) -> None:
        settings = self.settings
        adapters = _adapters(settings, claimed.channel)  # None: a channel this worker does not know
        adapter = adapters.take(self.deadline - time.monotonic()) if adapters is not None else None
        try:
            # A connection first, then the rate limit, reserved right before the send.
            if (adapters is not None and adapter is None) or not self._may_send(claimed):
                release(settings, [claimed], RATE_WAIT)
                self.follow_up(BatchNext(later={claimed.delivery_id: RATE_WAIT}))
                return
            started = utcnow()
            clock = time.monotonic()
            result, error, state = send(settings, claimed, adapter)
            duration = time.monotonic() - clock
        finally:
            if adapters is not None and adapter is not None:
                adapters.give_back(adapter)
        self._feed_circuit(claimed.channel, reachable(error))
        if error is None:
            _recorder(settings).record(settings, Sent(claimed, started, duration, result, state))
            return
        after = record(settings, claimed, started, duration, None, error, state)
        later = {claimed.delivery_id: after.retry_in} if after.retry_in is not None else {}
        self.follow_up(BatchNext(later=later, enqueue=after.enqueue))

    def _may_send(self, claimed: Claimed) -> bool:
        """False when the delivery must wait alone: its lease runs short, its rate limit holds it too long,
        or its channel's circuit opened during this batch."""
        if claimed.channel in self._failing and store_for(self.settings).circuit(claimed.channel).open:
            return False
        waited = 0.0
        while time.monotonic() < self.deadline:
            wait = rate_hold(self.settings, claimed.channel)
            if wait is None:
                return True
            if waited + wait > RATE_WAIT:
                return False
            time.sleep(wait)
            waited += wait
        return False

    def _feed_circuit(self, channel: str, answered: bool) -> None:
        """A transient failure counts at once; an answer closes the circuit (once per channel and batch, unless
        failures came in between)."""
        with self._lock:
            if answered:
                tell = channel not in self._answered or channel in self._failing
                self._answered.add(channel)
                self._failing.discard(channel)
            else:
                tell = True
                self._failing.add(channel)
        if tell:
            record_outcome(self.settings, channel, reachable=answered)


class GroupRecorder:
    """Records successful sends in shared transactions (group commit), on a thread of its own.

    A send thread hands its success over and goes on to its next send; the recorder commits what has
    gathered at most every ``RECORD_EVERY`` seconds, so each transaction carries many deliveries (a
    transaction per delivery cost more CPU than the send). At most ``limit`` successes wait to be
    recorded: beyond that a send thread waits, so a worker that dies repeats at most those, the group being
    committed and its sends in flight (3 x ``in_flight``). A log that is down for a while holds the sends
    back the same way, while the recorder tries again (as long as the claims hold).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._queue: list[tuple[Settings, Sent]] = []
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="broadcaster-record", daemon=True)
        self._thread.start()

    def record(self, settings: Settings, sent: Sent) -> None:
        with self._changed:
            while len(self._queue) >= self.limit and not self._closing:
                self._changed.wait()
            self._queue.append((settings, sent))
            self._changed.notify_all()

    def close(self) -> None:
        """Record what is waiting, then stop."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closing:
                    self._changed.wait()
                if not self._queue:
                    return
                # Let more successes gather, unless the queue is full (send threads are waiting) or closing.
                gather_until = time.monotonic() + RECORD_EVERY
                while len(self._queue) < self.limit and not self._closing:
                    left = gather_until - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(left)
                group, self._queue = self._queue, []
                self._changed.notify_all()
            for settings, sent in _by_settings(group):
                _record_while_held(settings, sent)


def _record_while_held(settings: Settings, sent: list[Sent]) -> None:
    """Record ``sent``, trying again while their claims hold: a log that restarts for a few seconds must not
    turn every success of those seconds into a send repeated once the lease runs out."""
    held_until = min(s.started for s in sent) + settings.delivery.lease * 0.9
    wait = RECORD_EVERY
    while True:
        try:
            record_delivered(settings, sent)
            return
        except Exception as exc:  # the log is unreachable, say
            if utcnow() + timedelta(seconds=wait) >= held_until:
                # The lease (or the sweeper) sends them again: repeated, never lost.
                log.error("%d deliveries were sent but could not be recorded: %s", len(sent), exc)
                return
            log.warning("%d deliveries wait to be recorded (%s); trying again in %.1f s", len(sent), exc, wait)
            time.sleep(wait)
            wait = min(wait * 2, 5.0)


def _by_settings(group: list[tuple[Settings, Sent]]) -> list[tuple[Settings, list[Sent]]]:
    by_settings: dict[int, tuple[Settings, list[Sent]]] = {}
    for settings, sent in group:
        by_settings.setdefault(id(settings), (settings, []))[1].append(sent)
    return list(by_settings.values())


#: statements built once: a large fan-out runs them thousands of times
_INSERT_ATTEMPTS = insert(cast(Table, Attempt.__table__))
_MARK_DELIVERED = (
    update(DELIVERIES)
    .where(CLAIM_HELD)
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
                    **held_claim(s.claimed),
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


# --- per process: the send threads, and the adapters they keep open ---------------------------------------

_executor_lock = threading.Lock()
#: per process id: its send threads, and how many
_executors: dict[int, tuple[ThreadPoolExecutor, int]] = {}
_recorders: dict[int, GroupRecorder] = {}
#: per process id: the settings its adapters were made for, and each channel's adapters
_adapter_pools: dict[int, tuple[Settings, dict[str, Adapters]]] = {}


def _executor(settings: Settings) -> ThreadPoolExecutor:
    """This process's send threads: made after a fork (never inherited), remade when ``in_flight`` changes."""
    size = settings.delivery.in_flight
    with _executor_lock:
        current = _executors.get(os.getpid())
        if current is None or current[1] != size:
            if current is not None:
                current[0].shutdown(wait=False)
            current = ThreadPoolExecutor(size, thread_name_prefix="broadcaster-send"), size
            _executors[os.getpid()] = current
        return current[0]


def finish_sends() -> None:
    """Let this process's sends in flight finish and be recorded before it exits."""
    with _executor_lock:
        current = _executors.pop(os.getpid(), None)
    if current is not None:
        current[0].shutdown(wait=True)
    with _executor_lock:
        recorder = _recorders.pop(os.getpid(), None)
        _, pools = _adapter_pools.pop(os.getpid(), (None, {}))
    if recorder is not None:
        recorder.close()
    for adapters in pools.values():
        adapters.close()


# A process that sent from its own threads (embedded mode, the Python API) records its last successes on exit;
# a Celery pool process does it on worker_process_shutdown, since it leaves without running atexit.
atexit.register(finish_sends)


def _recorder(settings: Settings) -> GroupRecorder:
    """This process's recorder (made after a fork, never inherited)."""
    with _executor_lock:
        recorder = _recorders.get(os.getpid())
        if recorder is None:
            recorder = _recorders[os.getpid()] = GroupRecorder(settings.delivery.in_flight)
        recorder.limit = settings.delivery.in_flight
        return recorder


class Adapters:
    """One channel's open adapters in this process, each lent to one send at a time and kept open between
    sends (SMTP sessions, HTTP keep-alive): at most the channel's ``connections`` of them (``in_flight``
    by default), so at most that many connections to the provider."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings, self.name = settings, name
        self._slots = threading.Semaphore(settings.channels[name].connections or settings.delivery.in_flight)
        self._idle: list[Channel[Any]] = []
        self._lock = threading.Lock()

    def take(self, timeout: float) -> Channel[Any] | None:
        """An adapter of the channel, or None when none came free within ``timeout`` seconds."""
        if not self._slots.acquire(timeout=max(0.0, timeout)):
            return None
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            return build_channel(self.settings, self.name)
        except BaseException:
            self._slots.release()
            raise

    def give_back(self, adapter: Channel[Any]) -> None:
        with self._lock:
            self._idle.append(adapter)
        self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for adapter in idle:
            adapter.close()


def _adapters(settings: Settings, name: str) -> Adapters | None:
    """This process's adapters for the channel (made after a fork, remade when the settings change)."""
    if name not in settings.channels:
        return None
    stale: dict[str, Adapters] = {}
    with _executor_lock:
        made_for, pools = _adapter_pools.get(os.getpid(), (None, {}))
        if made_for is not settings:
            stale, pools = pools, {}
            _adapter_pools[os.getpid()] = (settings, pools)
        if name not in pools:
            pools[name] = Adapters(settings, name)
        adapters = pools[name]
    for old in stale.values():
        old.close()
    return adapters
