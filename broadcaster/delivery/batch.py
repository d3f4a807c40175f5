"""Many deliveries in one task: claimed in one statement, sent concurrently, successes committed together.

Each delivery keeps its own row, attempts and retries: a batch only shares the round trips. The sends run on
the worker process's send threads, over adapters the process keeps open (broadcaster.delivery.adapters); the
task returns once its last send has started, so the next batch begins while the slowest of this one finish.
Successes go to the process's group recorder (broadcaster.delivery.recorder). What is not the plain path (a
failure, a channel whose circuit is open, a rate limit that would hold a send too long) goes on alone, through
the one-delivery task (``broadcaster.deliver``, broadcaster.delivery.attempt), which owns waiting, retries and
fallbacks.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kombu.exceptions import KombuError
from sqlalchemy.exc import SQLAlchemyError

from broadcaster.core.errors import PermanentError
from broadcaster.delivery.adapters import close_pools, pool
from broadcaster.delivery.attempt import send
from broadcaster.delivery.claims import Claimed, claim_many, release
from broadcaster.delivery.guards import rate_hold, reachable, record_outcome, store_for
from broadcaster.delivery.outcomes import Sent, record
from broadcaster.delivery.recorder import close_recorder, recorder_for
from broadcaster.settings import Settings

log = logging.getLogger(__name__)

#: how long a send in a batch may wait for its channel's rate limit (or a free connection) before it is handed
#: back to wait alone
RATE_WAIT = 2.0


@dataclass
class BatchNext:
    """What follows a batch: these deliveries run alone (now or in N seconds); these new ones are enqueued."""

    later: dict[str, float] = field(default_factory=dict)
    enqueue: list[str] = field(default_factory=list)


FollowUp = Callable[[BatchNext], None]


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
        except (SQLAlchemyError, KombuError) as exc:  # the log or the broker is down: the lease brings it back
            log.warning("delivery %s: its attempt could not be finished: %s", claimed.delivery_id, exc)
        except Exception:
            log.exception("delivery %s: its attempt could not be finished", claimed.delivery_id)

    def _attempt(self, claimed: Claimed) -> None:
        settings = self.settings
        try:
            # A connection first, then the rate limit, reserved right before the send.
            with pool(settings, claimed.channel).lend(self.deadline - time.monotonic()) as adapter:
                if adapter is None or not self._may_send(claimed):
                    release(settings, [claimed], RATE_WAIT)
                    self.follow_up(BatchNext(later={claimed.delivery_id: RATE_WAIT}))
                    return
                sent = send(claimed, adapter)
        except PermanentError as exc:  # no adapter for the channel here
            sent = Sent.refused(claimed, exc)
        self._feed_circuit(claimed.channel, reachable(sent.error))
        if sent.error is None:
            recorder_for(settings).record(settings, sent)
            return
        after = record(settings, sent)
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


# --- per process: the send threads ---------------------------------------------------------------------------

_executor_lock = threading.Lock()
#: per process id: its send threads, and how many
_executors: dict[int, tuple[ThreadPoolExecutor, int]] = {}


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
    close_recorder()
    close_pools()


# A process that sent from its own threads (embedded mode, the Python API) records its last successes on exit;
# a Celery pool process does it on worker_process_shutdown, since it leaves without running atexit.
atexit.register(finish_sends)
