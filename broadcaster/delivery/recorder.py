"""The group recorder: a worker process's successful sends, written to the log many per transaction."""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta

from broadcaster.delivery.outcomes import Sent, record_delivered
from broadcaster.settings import Settings
from broadcaster.store.models import utcnow

log = logging.getLogger(__name__)

#: how often (seconds) a worker process commits the successes that gathered meanwhile
RECORD_EVERY = 0.02


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


_recorders_lock = threading.Lock()
#: per process id: its recorder
_recorders: dict[int, GroupRecorder] = {}


def recorder_for(settings: Settings) -> GroupRecorder:
    """This process's recorder (made after a fork, never inherited), holding back at most ``in_flight``."""
    with _recorders_lock:
        recorder = _recorders.get(os.getpid())
        if recorder is None:
            recorder = _recorders[os.getpid()] = GroupRecorder(settings.delivery.in_flight)
        recorder.limit = settings.delivery.in_flight
        return recorder


def close_recorder() -> None:
    """Record this process's waiting successes, then stop its recorder."""
    with _recorders_lock:
        recorder = _recorders.pop(os.getpid(), None)
    if recorder is not None:
        recorder.close()
