"""The task queue: the Celery app, and handing deliveries to it by task name.

Worker mode: ``broker_url`` names Redis or RabbitMQ; ``broadcaster worker`` (or ``celery -A broadcaster.worker
worker``) runs the tasks, which the worker package (broadcaster.worker) defines on this app. Embedded mode:
``broker_url`` is empty; the same tasks run on Celery's in-memory transport, consumed by a worker thread inside
the command that sent them (``start_embedded_worker``). Everything here sends tasks by name, so that the layers
that record deliveries (the service, the domain's scheduled steps) never import the tasks themselves.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery, group
from kombu.exceptions import ChannelError, OperationalError

from broadcaster.delivery import sweeper
from broadcaster.delivery.guards import take_turn
from broadcaster.settings import Settings, load_settings

EMBEDDED_BROKER = "memory://localhost/"
#: Redis re-delivers an unacknowledged task after this long; every countdown we use stays far below it.
VISIBILITY_TIMEOUT = 3 * 3600
MAX_COUNTDOWN = 15 * 60
#: the tasks, by the names other services may also use (send_task)
DELIVER, DELIVER_BATCH = "broadcaster.deliver", "broadcaster.deliver_batch"

log = logging.getLogger(__name__)
# The worker package's modules define the tasks; a worker (embedded ones too) imports them when it starts.
app = Celery("broadcaster", include=["broadcaster.worker.tasks"])
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


def get_settings() -> Settings:
    return _settings if _settings is not None else use_settings(load_settings())


def start_delivering(settings: Settings) -> None:
    """Point this process's tasks at ``settings``; in embedded mode, run a worker thread here."""
    if get_settings() is not settings:
        use_settings(settings)
    if settings.embedded:
        start_embedded_worker()


def enqueue(delivery_ids: Sequence[str]) -> None:
    """Hand deliveries to the workers, ``[delivery] batch_size`` per task; call only after their rows are committed."""
    size = get_settings().delivery.batch_size
    if len(delivery_ids) == 1 or size == 1:
        group(app.signature(DELIVER, (delivery_id,)) for delivery_id in delivery_ids).apply_async()
    elif delivery_ids:
        chunks = (list(delivery_ids[i : i + size]) for i in range(0, len(delivery_ids), size))
        group(app.signature(DELIVER_BATCH, (chunk,)) for chunk in chunks).apply_async()


def later(delivery_id: str, seconds: float) -> None:
    """Run the delivery again in ``seconds``, as a new task.

    Not ``Task.retry``: Celery counts those against its own ``max_retries`` (3 by default) and logs an
    error when it runs out; the attempt budget is the delivery log's, kept per delivery. A countdown stays
    far below the broker's visibility timeout: a task that wakes up early just schedules itself again.
    """
    try:
        app.send_task(DELIVER, (delivery_id,), countdown=max(0.0, min(seconds, MAX_COUNTDOWN)))
    except OperationalError as exc:  # its row says when it is due: the sweeper enqueues it once the broker is back
        log.warning("the broker is unreachable (%s); delivery %s waits for the sweeper", exc, delivery_id)


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
    from celery.contrib.testing.worker import TestWorkController, setup_app_for_worker  # only embedded mode needs it

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


def start_sweeper() -> None:
    """Sweep in this process every ``sweep_every`` (see broadcaster.delivery.sweeper), once per period across
    workers. A thread, not a beat task: after a flushed or restarted Redis a task sent to sweep could itself be lost.
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
