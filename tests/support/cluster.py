"""Celery workers on the sandbox: one per session (``Worker``) or groups the tests kill and restart (``Cluster``),
and readers of what they recorded in the delivery log."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from broadcaster.sandbox import Sandbox
from broadcaster.store.db import session_scope, sessions
from broadcaster.store.models import Attempt, Delivery, DeliveryStatus
from broadcaster.testing import Result, run_cli, start_worker, write_config
from tests.support.backends import Broker

#: fast retries, so a test of three attempts takes well under a second of backoff
TEST_RETRY = {"max_attempts": 3, "backoff": "100ms", "backoff_max": "400ms"}
#: the update the resilience tests send
SEND = ("send", "--title", "Database failover", "--status", "identified", "--message", "Failover in progress.")


def sandbox_channels(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    """One channel per emulated type, named after its type ("webhook", "email", ...)."""
    return {kind: sandbox.channel_config(kind, kind) for kind in sorted(sandbox.emulators)}


def email_channel(sandbox: Sandbox, recipients: list[str], **extra: Any) -> dict[str, Any]:
    return {**sandbox.channel_config("email"), "recipients": recipients, **extra}


# --- workers -----------------------------------------------------------------------------------------------


@dataclass
class Worker:
    """A real ``celery worker`` process on Redis, and the configuration it and the tests share."""

    config: Path
    broker_url: str
    database_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def takes_config(args: tuple[str, ...]) -> bool:
    """Whether a command line gets the worker's ``--config`` added (``secret`` reads no configuration)."""
    return bool(args) and args[0] not in ("secret",) and "--config" not in args


@dataclass
class Cluster:
    """Workers sharing one configuration, on a Redis database of their own; the tests kill and restart them."""

    config: Path
    broker_url: str
    database_url: str
    folder: Path
    workers: dict[str, subprocess.Popen[bytes]]

    def start(self, name: str, concurrency: int = 4) -> subprocess.Popen[bytes]:
        process = start_worker(self.config, self.folder / f"{name}.log", concurrency=concurrency, name=name)
        self.workers[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL: no goodbye, no acknowledgement, nothing flushed."""
        process = self.workers.pop(name)
        process.kill()
        process.wait(10)

    def stop_all(self) -> None:
        """Clean-up, not a test: a warm shutdown on RabbitMQ takes about 10 s, so a worker gets 3 s, then SIGKILL
        (its namespace, a Redis database or a vhost, is discarded anyway)."""
        for process in self.workers.values():
            process.terminate()
        for process in self.workers.values():
            try:
                process.wait(3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.workers.clear()

    def cli(self, *args: str, **kwargs: Any) -> Result:
        return run_cli(*args, "--config", str(self.config), **kwargs)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-4000:] for p in self.folder.glob("*.log"))


def clusters(broker: Broker, database_url: str, folder: Path) -> Iterator[Callable[..., Cluster]]:
    """A maker of clusters on ``broker`` (channels and settings as given); stops every worker they started."""
    made: list[Cluster] = []

    def make(channels: dict[str, dict[str, Any]], **settings: Any) -> Cluster:
        urls = broker.fresh()
        config: dict[str, Any] = {
            **urls,
            "database_url": database_url,
            "retry": dict(TEST_RETRY),
            "delivery": {"lease": "5s", "sweep_every": "1s"},
            "channels": channels,
        }
        config.update(settings)
        config_file = write_config(folder / f"cluster{len(made) or ''}.toml", config)
        made.append(Cluster(config_file, urls["broker_url"], database_url, folder, {}))
        return made[-1]

    yield make
    for running in made:
        running.stop_all()
    if made:
        settle_leftovers(database_url)


def settle_leftovers(database_url: str) -> None:
    """Fail what a finished test left unfinished (a delivery deferred by an open circuit, say): the PostgreSQL
    log is shared by the whole session, and a later test's sweeper would otherwise send it to that test's
    emulators, spending their scripted answers and opening their circuits."""
    unfinished = [DeliveryStatus.pending, DeliveryStatus.retrying, DeliveryStatus.sending]
    with session_scope(database_url) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.status.in_(unfinished))
            .values(status=DeliveryStatus.failed, error="left unfinished when its test ended", due_at=None)
        )


# --- what the delivery log says ----------------------------------------------------------------------------


def deliveries(cluster: Cluster, broadcast_id: str) -> list[Delivery]:
    with sessions(cluster.database_url)() as session:
        return list(session.scalars(select(Delivery).where(Delivery.broadcast_id == broadcast_id)))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, cluster: Cluster | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{cluster.logs() if cluster else ''}")


def all_finished(cluster: Cluster, broadcast_id: str) -> bool:
    rows = deliveries(cluster, broadcast_id)
    return bool(rows) and all(r.status in ("delivered", "failed") for r in rows)


def assert_log_consistent(cluster: Cluster, broadcast_id: str) -> None:
    """Every delivery's attempt count matches its recorded attempts."""
    with sessions(cluster.database_url)() as session:
        counted = dict(
            session.execute(
                select(Attempt.delivery_id, func.count())
                .join(Delivery, Delivery.id == Attempt.delivery_id)
                .where(Delivery.broadcast_id == broadcast_id)
                .group_by(Attempt.delivery_id)
            ).all()
        )
    for row in deliveries(cluster, broadcast_id):
        assert counted.get(row.id, 0) == row.attempts, (row.id, row.status, row.attempts, counted.get(row.id))
