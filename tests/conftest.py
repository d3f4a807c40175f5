"""The fixtures: a private Redis, SQLite and PostgreSQL logs, Celery workers, and the sandbox.

What they are made of (and what tests import) is in ``tests/support``. Every fixture here is asked for by
name; none is autouse, so ``tests/unit`` starts no server.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from broadcaster.sandbox import Sandbox
from broadcaster.settings import load_settings
from broadcaster.store.db import session_scope, sessions
from broadcaster.store.models import Subscriber
from broadcaster.testing import Result, delete_rabbitmq_vhost, run_cli, start_redis, start_worker, write_config
from tests.support.backends import (
    POSTGRES_URL,
    RABBITMQ_URL,
    Broker,
    postgres_available,
    postgres_database,
    rabbitmq_available,
)
from tests.support.cluster import TEST_RETRY, Cluster, Worker, clusters, sandbox_channels, takes_config
from tests.support.lifecycle import Log, channels

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


# --- Redis and the brokers -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A private redis-server on a free loopback port; a missing Redis fails the run, never skips it."""
    try:
        url, process = start_redis()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session", params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, redis_server: str, database_url: str) -> Iterator[Broker]:
    """Each broker production runs on. RabbitMQ pairs with the PostgreSQL log (SQLite where there is none)."""
    if request.param == "rabbitmq":
        if not rabbitmq_available():
            pytest.skip(f"no RabbitMQ at {RABBITMQ_URL} with rabbitmqctl (set BROADCASTER_TEST_RABBITMQ_URL)")
        if database_url.startswith("sqlite") and postgres_available():
            pytest.skip("RabbitMQ is tested with the PostgreSQL log")
    made: list[str] = []
    yield Broker(request.param, redis_server, made)
    for name in made:
        delete_rabbitmq_vhost(name)


# --- databases -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The delivery log on each backend: a SQLite file, and a fresh PostgreSQL database where a server runs."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('log') / 'broadcaster.db'}"
        return
    if not postgres_available():
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL} (set BROADCASTER_TEST_POSTGRES_URL)")
    with postgres_database("broadcaster_test") as url:
        yield url


@pytest.fixture
def fresh_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty delivery log on the same backend as ``database_url``, migrated before any worker opens it.

    (Two processes migrating one new SQLite file at once race: SQLite has no advisory lock to wait on.)
    """
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'lifecycle.db'}"
        sessions(url)
        yield url
        return
    with postgres_database("broadcaster_lifecycle") as url:
        sessions(url)
        yield url


@pytest.fixture
def no_subscribers(database_url: str) -> Iterator[None]:
    """The log is shared by the session's tests: start and end without subscribers."""

    def purge() -> None:
        with session_scope(database_url) as session:
            session.execute(delete(Subscriber))

    purge()
    yield
    purge()


# --- the sandbox -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def running_sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(running_sandbox: Sandbox) -> Sandbox:
    """The session's sandbox, emptied of recorded requests and scripted faults."""
    running_sandbox.reset()
    return running_sandbox


# --- configuration and the command line ------------------------------------------------------------------


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_cli


@pytest.fixture
def embedded_config(tmp_path: Path, sandbox: Sandbox, database_url: str) -> Callable[..., Path]:
    """Write an embedded-mode configuration (no broker) whose channels point at the sandbox."""

    def make(**overrides: Any) -> Path:
        config: dict[str, Any] = {
            "broker_url": "",
            "database_url": database_url,
            "public_url": "https://status.example.com",
            "retry": dict(TEST_RETRY),
            "channels": sandbox_channels(sandbox),
        }
        config.update(overrides)
        return write_config(tmp_path / "broadcaster.toml", config)

    return make


# --- Celery workers --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def worker(
    redis_server: str, database_url: str, running_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A worker on a Redis database of its own (one per log backend, so no worker takes another's tasks).

    The broker-facing tests use ``cluster``, which runs on each broker.
    """
    folder = tmp_path_factory.mktemp("worker")
    urls = Broker("redis", redis_server, []).fresh()
    broker_url = urls["broker_url"]
    config = write_config(
        folder / "broadcaster.toml",
        {
            **urls,
            "database_url": database_url,
            "retry": dict(TEST_RETRY),
            "delivery": {"lease": "30s"},
            "channels": sandbox_channels(running_sandbox),
        },
    )
    log = folder / "worker.log"
    running = Worker(config, broker_url, database_url, start_worker(config, log), log)
    yield running
    running.stop()


@pytest.fixture
def worker_cli(worker: Worker, sandbox: Sandbox) -> Callable[..., Result]:
    """The command line, configured like the running worker (and with an emptied sandbox)."""

    def run(*args: str, **kwargs: Any) -> Result:
        return (
            run_cli(*args, "--config", str(worker.config), **kwargs) if takes_config(args) else run_cli(*args, **kwargs)
        )

    return run


@pytest.fixture
def cluster(redis_server: str, database_url: str, sandbox: Sandbox, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Make a cluster configuration on Redis (channels and settings as given); start workers with ``.start(name)``."""
    yield from clusters(Broker("redis", redis_server, []), database_url, tmp_path)


@pytest.fixture
def broker_cluster(
    broker: Broker, database_url: str, sandbox: Sandbox, tmp_path: Path
) -> Iterator[Callable[..., Cluster]]:
    """``cluster`` on each broker (Redis, RabbitMQ): for the tests whose subject is how tasks travel."""
    yield from clusters(broker, database_url, tmp_path)


@pytest.fixture
def log(cluster: Callable[..., Cluster], fresh_database_url: str, sandbox: Sandbox) -> Callable[..., Log]:
    """Make a cluster on a fresh log with these ``[reminders]`` (and other) settings, with one worker running."""

    def make(reminders: dict[str, Any] | None = None, start: bool = True, **settings: Any) -> Log:
        made = cluster(
            channels(sandbox),
            database_url=fresh_database_url,
            reminders={"channels": ["ops"], **(reminders or {})},
            **settings,
        )
        if start:
            made.start("w1")
        return Log(made, load_settings(made.config), sandbox)

    return make
