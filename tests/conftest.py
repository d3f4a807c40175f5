"""Real parts for the tests: a private Redis, SQLite and PostgreSQL logs, Celery workers, and the sandbox."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from broadcaster.sandbox import Sandbox
from broadcaster.sandbox.smtp import free_port

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
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: the worker tests need a real Redis (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("the private redis-server did not start")
    yield url
    process.terminate()
    process.wait(10)


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


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write a configuration dict as TOML (top-level keys, then one table per section)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for section, table in config.items():
        if not isinstance(table, dict):
            continue
        if section == "channels":
            for name, channel in table.items():
                lines.append(f"\n[channels.{name}]")
                lines += [f"{k} = {toml_value(v)}" for k, v in channel.items()]
        else:
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    tomllib.loads(path.read_text())  # the tests write only valid TOML unless they mean not to
    return path


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None) -> Result:
    """Run ``broadcaster`` as a user would: a separate process; its output and exit code."""
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    completed = subprocess.run(
        [sys.executable, "-m", "broadcaster", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd or ROOT,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_cli


@pytest.fixture
def embedded_config(
    tmp_path: Path, sandbox: Sandbox, database_url: str
) -> Callable[..., Path]:
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


def start_worker(
    config: Path, log: Path, concurrency: int = 4, pool: str = "threads", name: str = "w1"
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BROADCASTER_CONFIG": str(config)}
    command = [
        sys.executable, "-m", "celery", "-A", "broadcaster.worker", "worker",
        f"--pool={pool}", f"--concurrency={concurrency}", "--loglevel=INFO", f"--hostname={name}@%h",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    with log.open("ab") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited at start:\n{log.read_text()[-3000:]}")
        if " ready." in log.read_text():
            return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the worker did not become ready:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def worker(
    redis_server: str, database_url: str, running_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A worker on its own Redis database (one per log backend, so no worker takes another's tasks)."""
    folder = tmp_path_factory.mktemp("worker")
    index = 1 if database_url.startswith("sqlite") else 2
    broker_url = f"{redis_server}/{index}"
    config = write_config(
        folder / "broadcaster.toml",
        {
            "broker_url": broker_url,
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
        return run_cli(*args, "--config", str(worker.config), **kwargs) if _takes_config(args) else run_cli(*args, **kwargs)

    return run


def _takes_config(args: tuple[str, ...]) -> bool:
    return bool(args) and args[0] not in ("secret",) and "--config" not in args
