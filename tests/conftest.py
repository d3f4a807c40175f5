"""Real parts for the tests: a private Redis, SQLite and PostgreSQL logs, Celery workers, and the sandbox."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from broadcaster.sandbox import Sandbox
from broadcaster.testing import (
    Result,
    delete_rabbitmq_vhost,
    rabbitmq_vhost,
    run_cli,
    start_redis,
    start_worker,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
POSTGRES_URL = os.environ.get("BROADCASTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
#: fast retries, so a test of three attempts takes well under a second of backoff
TEST_RETRY = {"max_attempts": 3, "backoff": "100ms", "backoff_max": "400ms"}


# --- Redis -----------------------------------------------------------------------------------------------


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


# --- brokers ---------------------------------------------------------------------------------------------

RABBITMQ_URL = os.environ.get("BROADCASTER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
#: databases 16-63 of the private Redis (it runs with 64): 0-15 are left to tests that name one
_next_redis_db = itertools.cycle(range(16, 64))


@dataclass
class Broker:
    """One kind of broker; ``fresh()`` gives an empty namespace on it (a Redis database, a RabbitMQ vhost)."""

    kind: str
    redis_server: str
    made: list[str]

    def fresh(self) -> dict[str, str]:
        """The ``broker_url`` (and ``redis_url`` for the shared guards) of an empty namespace."""
        if self.kind == "redis":
            url = f"{self.redis_server}/{next(_next_redis_db)}"
            redis.Redis.from_url(url).flushdb()
            return {"broker_url": url}
        name = f"broadcaster_test_{uuid.uuid4().hex[:10]}"
        self.made.append(name)
        # Rate limits and circuits live in Redis beside RabbitMQ, as the README asks of such a deployment.
        guards = f"{self.redis_server}/{next(_next_redis_db)}"
        redis.Redis.from_url(guards).flushdb()
        return {"broker_url": rabbitmq_vhost(RABBITMQ_URL, name), "redis_url": guards}


def _rabbitmq_available() -> bool:
    try:
        import kombu

        with kombu.Connection(RABBITMQ_URL, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
        return shutil.which("rabbitmqctl") is not None
    except Exception:
        return False


@pytest.fixture(scope="session", params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, redis_server: str, database_url: str) -> Iterator[Broker]:
    """Each broker production runs on. RabbitMQ pairs with the PostgreSQL log (SQLite where there is none)."""
    if request.param == "rabbitmq":
        if not _rabbitmq_available():
            pytest.skip(f"no RabbitMQ at {RABBITMQ_URL} with rabbitmqctl (set BROADCASTER_TEST_RABBITMQ_URL)")
        if database_url.startswith("sqlite") and _postgres_available():
            pytest.skip("RabbitMQ is tested with the PostgreSQL log")
    made: list[str] = []
    yield Broker(request.param, redis_server, made)
    for name in made:
        delete_rabbitmq_vhost(name)


# --- databases -------------------------------------------------------------------------------------------


def _postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The delivery log on each backend: a SQLite file, and a fresh PostgreSQL database where a server runs."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('log') / 'broadcaster.db'}"
        return
    if not _postgres_available():
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL} (set BROADCASTER_TEST_POSTGRES_URL)")
    import psycopg

    name = f"broadcaster_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    from broadcaster.db import dispose_all

    dispose_all()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


def sandbox_channels(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    """One channel per emulated type, named after its type ("webhook", "email", ...)."""
    return {kind: sandbox.channel_config(kind, kind) for kind in sorted(sandbox.emulators)}


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
            run_cli(*args, "--config", str(worker.config), **kwargs)
            if _takes_config(args)
            else run_cli(*args, **kwargs)
        )

    return run


def _takes_config(args: tuple[str, ...]) -> bool:
    return bool(args) and args[0] not in ("secret",) and "--config" not in args


# --- clusters of workers for the resilience tests --------------------------------------------------------


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
        for process in self.workers.values():
            process.terminate()
        for process in self.workers.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.workers.clear()

    def cli(self, *args: str, **kwargs: Any) -> Result:
        return run_cli(*args, "--config", str(self.config), **kwargs)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-4000:] for p in self.folder.glob("*.log"))


def _clusters(broker: Broker, database_url: str, folder: Path) -> Iterator[Callable[..., Cluster]]:
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


@pytest.fixture
def cluster(redis_server: str, database_url: str, sandbox: Sandbox, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Make a cluster configuration on Redis (channels and settings as given); start workers with ``.start(name)``."""
    yield from _clusters(Broker("redis", redis_server, []), database_url, tmp_path)


@pytest.fixture
def broker_cluster(
    broker: Broker, database_url: str, sandbox: Sandbox, tmp_path: Path
) -> Iterator[Callable[..., Cluster]]:
    """``cluster`` on each broker (Redis, RabbitMQ): for the tests whose subject is how tasks travel."""
    yield from _clusters(broker, database_url, tmp_path)
