"""What a worker process does when Celery starts, forks, readies or stops it."""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery.signals import celeryd_init, worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown

from broadcaster.core.errors import ConfigError
from broadcaster.delivery.batch import finish_sends
from broadcaster.delivery.queue import get_settings, start_sweeper
from broadcaster.store import db

log = logging.getLogger(__name__)


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


@worker_ready.connect
def _sweep_in_workers(**_: Any) -> None:
    start_sweeper()


def _finish_sends(**_: Any) -> None:
    # Sends outlive the batch task that started them: a process that exits lets them finish and be recorded.
    finish_sends()


worker_process_shutdown.connect(_finish_sends)
worker_shutdown.connect(_finish_sends)
