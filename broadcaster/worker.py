"""The Celery app (``celery -A broadcaster.worker worker``) and its tasks.

Worker mode: ``broker_url`` names Redis; ``broadcaster worker`` (or ``celery -A broadcaster.worker worker``)
runs the tasks. Embedded mode: ``broker_url`` is empty; the same tasks run on Celery's in-memory transport,
consumed by a worker thread inside the command that sent them (``embedded_worker``).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any

from celery import Celery, Task, group
from celery.signals import celeryd_init, worker_process_init

from broadcaster import db
from broadcaster.delivery import run_attempt
from broadcaster.errors import ConfigError
from broadcaster.settings import Settings, load_settings

EMBEDDED_BROKER = "memory://localhost/"
#: Redis re-delivers an unacknowledged task after this long; every countdown we use stays far below it.
VISIBILITY_TIMEOUT = 3 * 3600

app = Celery("broadcaster")
_settings: Settings | None = None
_embedded: Any = None
_embedded_lock = threading.Lock()


def celery_config(settings: Settings) -> dict[str, Any]:
    embedded = settings.embedded
    return {
        "broker_url": EMBEDDED_BROKER if embedded else settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": (
            {"polling_interval": 0.01} if embedded else {"visibility_timeout": VISIBILITY_TIMEOUT}
        ),
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


def use_settings(settings: Settings) -> Settings:
    """Make ``settings`` the ones this process's tasks read, and point the app at its broker."""
    global _settings
    _settings = settings
    app.conf.update(celery_config(settings))
    return settings


def get_settings() -> Settings:
    return _settings if _settings is not None else use_settings(load_settings())


@celeryd_init.connect
def _refuse_embedded(**_: Any) -> None:
    if get_settings().embedded:
        print(
            "broadcaster: broker_url is empty, so deliveries run inside the sending command (embedded mode); "
            "set broker_url (BROADCASTER_BROKER_URL) to a Redis URL to run workers",
            file=sys.stderr,
        )
        raise SystemExit(2)


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # A forked pool process must not share its parent's database connections.
    db.dispose_all()


@app.task(name="broadcaster.deliver", bind=True, acks_late=True, ignore_result=True)
def deliver(self: Task, delivery_id: str) -> None:  # type: ignore[type-arg]
    """Make one attempt at a delivery; schedule the next one when it must be retried."""
    retry_in = run_attempt(get_settings(), delivery_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in, max_retries=None)


def enqueue(delivery_ids: Sequence[str]) -> None:
    """Hand deliveries to the workers; call only after their rows are committed."""
    if delivery_ids:
        group(deliver.s(delivery_id) for delivery_id in delivery_ids).apply_async()


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


def _configure_on_import() -> None:
    try:
        get_settings()
    except ConfigError as exc:
        print(f"broadcaster: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


_configure_on_import()
