"""The Celery app (``celery -A broadcaster.worker worker``) and its tasks.

Worker mode: ``broker_url`` names Redis; ``broadcaster worker`` (or ``celery -A broadcaster.worker worker``)
runs the tasks. Embedded mode: ``broker_url`` is empty; the same tasks run on Celery's in-memory transport,
consumed by a worker thread inside the command that sent them (``embedded_worker``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery, group
from celery.signals import celeryd_init, worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown
from kombu.exceptions import ChannelError, OperationalError

from broadcaster import db, sweeper
from broadcaster.batch import BatchNext, finish_sends, run_batch
from broadcaster.delivery import run_attempt
from broadcaster.errors import ConfigError
from broadcaster.guards import take_turn
from broadcaster.settings import Settings, load_settings

EMBEDDED_BROKER = "memory://localhost/"
#: Redis re-delivers an unacknowledged task after this long; every countdown we use stays far below it.
VISIBILITY_TIMEOUT = 3 * 3600
MAX_COUNTDOWN = 15 * 60

log = logging.getLogger(__name__)
app = Celery("broadcaster")
_settings: Settings | None = None
_embedded: Any = None
_sweeping = False
_embedded_lock = threading.Lock()


def celery_config(settings: Settings) -> dict[str, Any]:
    embedded = settings.embedded
    return {
        "broker_url": EMBEDDED_BROKER if embedded else settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": _transport_options(settings),
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "task_soft_time_limit": settings.delivery.lease.total_seconds(),
        "task_time_limit": settings.delivery.lease.total_seconds() + 30,
        "enable_utc": True,
    }


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.embedded:
        return {"polling_interval": 0.01}
    if settings.broker_is_redis:
        return {"visibility_timeout": VISIBILITY_TIMEOUT}
    return {}  # RabbitMQ gives an unacknowledged task back when its worker's connection drops


def use_settings(settings: Settings) -> Settings:
    """Make ``settings`` the ones this process's tasks read, and point the app at its broker."""
    global _settings
    _settings = settings
    broker = app.conf.broker_url
    app.conf.update(celery_config(settings))
    if app.conf.broker_url != broker:
        app._after_fork()  # Celery keeps the connection pools of the first broker it used: drop them
    return settings


def start_delivering(settings: Settings) -> None:
    """Point this process's tasks at ``settings``; in embedded mode, run a worker thread here."""
    if get_settings() is not settings:
        use_settings(settings)
    if settings.embedded:
        start_embedded_worker()


def get_settings() -> Settings:
    return _settings if _settings is not None else use_settings(load_settings())


@celeryd_init.connect
def _refuse_embedded(**_: Any) -> None:
    if get_settings().embedded:
        print(
            "broadcaster: broker_url is empty, so deliveries run inside the sending command (embedded mode); "
            "set broker_url (BROADCASTER_BROKER_URL) to a Redis or RabbitMQ URL to run workers",
            file=sys.stderr,
        )
        raise SystemExit(2)


@celeryd_init.connect
def _warn_unshared_guards(**_: Any) -> None:
    settings = get_settings()
    if not settings.embedded and not settings.shared_state_url:
        limited = [n for n, c in settings.channels.items() if c.rate_limit is not None]
        print(
            "broadcaster: warning: the broker is not Redis and redis_url is empty, so rate limits"
            f"{' (' + ', '.join(limited) + ')' if limited else ''} and circuits are kept per worker process, "
            "not shared by the workers; set redis_url (BROADCASTER_REDIS_URL) to a Redis URL to share them",
            file=sys.stderr,
        )


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # A forked pool process must not share its parent's database connections.
    db.dispose_all()
    try:  # open the log (and check its schema) now, not inside the first task
        db.sessions(get_settings().database_url)
    except ConfigError as exc:
        log.warning("the delivery log is not reachable yet: %s", exc)


@app.task(name="broadcaster.deliver", acks_late=True, ignore_result=True)
def deliver(delivery_id: str) -> None:
    """Make one attempt at a delivery; schedule the next one when it must be retried or wait."""
    step = run_attempt(get_settings(), delivery_id)
    enqueue(step.enqueue)
    if step.retry_in is not None:
        later(delivery_id, step.retry_in)


def later(delivery_id: str, seconds: float) -> None:
    """Run the delivery again in ``seconds``, as a new task.

    Not ``Task.retry``: Celery counts those against its own ``max_retries`` (3 by default) and logs an
    error when it runs out; the attempt budget is the delivery log's, kept per delivery. A countdown stays
    far below the broker's visibility timeout: a task that wakes up early just schedules itself again.
    """
    try:
        deliver.apply_async((delivery_id,), countdown=max(0.0, min(seconds, MAX_COUNTDOWN)))
    except OperationalError as exc:  # its row says when it is due: the sweeper enqueues it once the broker is back
        log.warning("the broker is unreachable (%s); delivery %s waits for the sweeper", exc, delivery_id)


@app.task(name="broadcaster.deliver_batch", acks_late=True, ignore_result=True)
def deliver_batch(delivery_ids: list[str]) -> None:
    """Start one attempt at each of these deliveries together; each one that must wait or retry goes on alone."""
    run_batch(get_settings(), delivery_ids, follow_up)


def follow_up(step: BatchNext) -> None:
    """Hand on what a batch could not finish: a delivery to retry or wait for runs alone, by countdown."""
    for delivery_id, seconds in step.later.items():
        later(delivery_id, seconds)
    enqueue(step.enqueue)


def _finish_sends(**_: Any) -> None:
    # Sends outlive the batch task that started them: a process that exits lets them finish and be recorded.
    finish_sends()


worker_process_shutdown.connect(_finish_sends)
worker_shutdown.connect(_finish_sends)


def enqueue(delivery_ids: Sequence[str]) -> None:
    """Hand deliveries to the workers, ``[delivery] batch_size`` per task; call only after their rows are committed."""
    size = get_settings().delivery.batch_size
    if len(delivery_ids) == 1 or size == 1:
        group(deliver.s(delivery_id) for delivery_id in delivery_ids).apply_async()
    elif delivery_ids:
        chunks = (list(delivery_ids[i : i + size]) for i in range(0, len(delivery_ids), size))
        group(deliver_batch.s(chunk) for chunk in chunks).apply_async()


def dispatch(settings: Settings, delivery_ids: Sequence[str]) -> bool:
    """Start delivering committed deliveries; False when the broker is unreachable (the sweeper sends them later)."""
    start_delivering(settings)
    try:
        enqueue(delivery_ids)
    except OperationalError as exc:
        log.warning(
            "the broker is unreachable (%s); %d deliveries stay pending until it is back", exc, len(delivery_ids)
        )
        return False
    return True


def start_embedded_worker(concurrency: int = 8) -> None:
    """Consume the in-memory queue on a worker thread of this process, started once, living until exit.

    It is a real Celery worker (the WorkController behind Celery's own embedded-worker helper, thread pool):
    tasks are serialized, acknowledged, retried with countdowns and timed out as on Redis; only the
    transport differs.
    """
    global _embedded
    from celery.contrib.testing.worker import TestWorkController, setup_app_for_worker

    with _embedded_lock:
        if _embedded is not None:
            return
        setup_app_for_worker(app, "WARNING", None)
        _embedded = TestWorkController(
            app=app,
            hostname=f"embedded-{os.getpid()}@{socket.gethostname()}",
            concurrency=concurrency,
            pool="threads",
            loglevel="WARNING",
            logfile=None,
            ready_callback=None,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        threading.Thread(target=_embedded.start, name="broadcaster-embedded-worker", daemon=True).start()
        _embedded.ensure_started()
    start_sweeper()


@worker_ready.connect
def _sweep_in_workers(**_: Any) -> None:
    start_sweeper()


def start_sweeper() -> None:
    """Sweep in this process every ``sweep_every`` (see broadcaster.sweeper), once per period across workers.

    A thread, not a beat task: after a flushed or restarted Redis a task sent to sweep could itself be lost.
    """
    global _sweeping
    with _embedded_lock:
        if _sweeping:
            return
        _sweeping = True
    threading.Thread(target=_sweep_forever, name="broadcaster-sweeper", daemon=True).start()


def _sweep_forever() -> None:
    while True:
        settings = get_settings()
        period = settings.delivery.sweep_every.total_seconds()
        try:
            if take_turn(settings, "sweep", period * 0.9):
                to_enqueue = sweeper.sweep(settings, queue_empty=queued_tasks() == 0)
                if to_enqueue:
                    declare_queues()
                enqueue(to_enqueue)
        except Exception as exc:  # the database or broker is down: the next period tries again
            log.warning("sweep failed, trying again in %gs: %s", period, exc)
        time.sleep(period)


def queued_tasks() -> int:
    """Tasks waiting in the broker's queue (not those a worker holds)."""
    with app.connection_for_read() as connection:
        queue = app.amqp.queues[app.conf.task_default_queue]
        try:
            return int(queue(connection.default_channel).queue_declare(passive=True).message_count)
        except ChannelError:  # no such queue (a flushed Redis): nothing waits in it
            return 0


def declare_queues() -> None:
    """Declare the task queue again: a flushed Redis forgets its bindings, and messages sent then vanish."""
    with app.connection_for_write() as connection:
        for queue in app.amqp.queues.values():
            queue(connection.default_channel).declare()


def _configure_on_import() -> None:
    try:
        get_settings()
    except ConfigError as exc:
        print(f"broadcaster: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


_configure_on_import()

# The tasks other services may call by name (send_task) must be registered wherever a worker runs.
import broadcaster.tasks_api  # noqa: E402,F401

# The beat's tasks (and their schedule entries): update reminders and holding statements, maintenance steps.
from broadcaster import maintenance, reminders  # noqa: E402,F401
