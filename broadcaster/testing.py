"""Helpers for testing a broadcaster setup with real parts: a private Redis, worker processes, the CLI.

The project's own tests and benchmarks use them; so can a user's tests of their configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from broadcaster.sandbox.smtp import free_port

__all__ = [
    "Result",
    "free_port",
    "delete_rabbitmq_vhost",
    "rabbitmq_vhost",
    "run_cli",
    "start_redis",
    "start_worker",
    "write_config",
]


def start_redis() -> tuple[str, subprocess.Popen[bytes]]:
    """Start a private, non-persistent redis-server on a free loopback port; return its URL and process."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: the worker tests need a real Redis (apt-get install redis-server)"
        )
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--databases", "64"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            return url, process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the private redis-server did not start")


def rabbitmq_vhost(server: str, name: str) -> str:
    """A new, empty virtual host on the RabbitMQ at ``server`` (``amqp://user:pass@host:port``); its URL.

    Made with ``rabbitmqctl``, which needs to run on the server's machine (as root or the rabbitmq user).
    """
    delete_rabbitmq_vhost(name)
    user = urlsplit(server).username or "guest"
    for command in (["add_vhost", name], ["set_permissions", "-p", name, user, ".*", ".*", ".*"]):
        done = _rabbitmqctl(*command)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {command[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
    return f"{server.rstrip('/')}/{name}"


def delete_rabbitmq_vhost(name: str) -> None:
    """Delete the virtual host, if there is one."""
    _rabbitmqctl("delete_vhost", name)


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise RuntimeError("rabbitmqctl is not installed (apt-get install rabbitmq-server)")
    return subprocess.run([ctl, "-q", *args], capture_output=True, text=True, timeout=60)


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
    """What a command printed and returned."""

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
        cwd=cwd,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def start_worker(
    config: Path,
    log: Path,
    concurrency: int = 4,
    pool: str = "threads",
    name: str = "w1",
    cwd: Path | None = None,
    beat: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``celery -A broadcaster.worker worker`` on ``config``, logging to ``log``; return once it is ready.

    ``beat`` also runs the scheduler in it (reminders, maintenance), keeping its schedule file next to ``log``.
    """
    env = {**os.environ, "BROADCASTER_CONFIG": str(config)}
    command = [
        sys.executable, "-m", "celery", "-A", "broadcaster.worker", "worker",
        f"--pool={pool}", f"--concurrency={concurrency}", "--loglevel=INFO", f"--hostname={name}@%h",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    if beat:
        command += ["--beat", f"--schedule={log.with_name(log.stem + '-beat-schedule')}"]
    with log.open("ab") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited at start:\n{log.read_text()[-3000:]}")
        if " ready." in log.read_text():
            return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the worker did not become ready:\n{log.read_text()[-3000:]}")
