"""Shared parts of the lifecycle tests: a delivery log of their own, a cluster on it, and readers of the sandbox.

The reminder and maintenance passes look at every open incident in the log, so each of those tests gets a
fresh database (a SQLite file, or a new PostgreSQL database) rather than the session's shared one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broadcaster.broadcasts import create_broadcast, parse_request
from broadcaster.queries import wait_for
from broadcaster.sandbox import Request, Sandbox
from broadcaster.settings import Settings, load_settings
from broadcaster.testing import start_worker
from tests.conftest import POSTGRES_URL, Cluster


@pytest.fixture(name="fresh_database_url")
def fresh_database_url_fixture(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty delivery log on the same backend as ``database_url``, migrated before any worker opens it.

    (Two processes migrating one new SQLite file at once race: SQLite has no advisory lock to wait on.)
    """
    from broadcaster.db import sessions

    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'lifecycle.db'}"
        sessions(url)
        yield url
        return
    import psycopg

    name = f"broadcaster_lifecycle_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    sessions(url)
    yield url
    from broadcaster.db import dispose_all

    dispose_all()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def channels(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    """Responders on Slack ("ops") and SMS ("pager"); customers on the blog webhook and X."""
    return {
        "ops": sandbox.channel_config("slack", "ops"),
        "pager": sandbox.channel_config("sms", "pager"),
        "blog": sandbox.channel_config("webhook", "blog"),
        "x": sandbox.channel_config("twitter", "x"),
    }


@dataclass
class Log:
    """A cluster on a fresh log, its settings in this process, and helpers to drive it."""

    cluster: Cluster
    settings: Settings
    sandbox: Sandbox

    def open(self, title: str, impact: str = "critical", **fields: Any) -> str:
        """Open an incident (to the blog only) and wait until it is delivered; its id."""
        request = {"title": title, "status": "investigating", "message": f"{title}: we are on it.", "impact": impact}
        broadcast_id = self.post({**request, "channels": ["blog"], **fields})
        from broadcaster.queries import broadcast_summary

        return str(broadcast_summary(self.settings, broadcast_id)["incident_id"])

    def post(self, request: dict[str, Any]) -> str:
        """Record and dispatch an update as `send` does; wait for it; the broadcast id."""
        from broadcaster.worker import dispatch

        broadcast_id, delivery_ids = create_broadcast(self.settings, parse_request(request))
        dispatch(self.settings, delivery_ids)
        assert wait_for(self.settings, [broadcast_id], 30)
        return broadcast_id

    def delivered(self, broadcast_ids: list[str]) -> None:
        assert wait_for(self.settings, broadcast_ids, 30), self.cluster.logs()

    def slack(self) -> list[dict[str, Any]]:
        """What the responders' Slack channel received, in order."""
        return [r.json for r in self.sandbox.http.received("slack.post")]

    def sms(self) -> list[str]:
        return [r.form["Body"][0] for r in self.sandbox.http.received("twilio.message")]

    def blog(self) -> list[Request]:
        return self.sandbox.http.received("webhook")


@pytest.fixture(name="log")
def log_fixture(cluster: Callable[..., Cluster], fresh_database_url: str, sandbox: Sandbox) -> Callable[..., Log]:
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


def start_beat_worker(cluster: Cluster, name: str) -> None:
    """A worker that also runs the beat (as `broadcaster worker --beat` does)."""
    cluster.workers[name] = start_worker(cluster.config, cluster.folder / f"{name}.log", name=name, beat=True)


def eventually(check: Callable[[], Any], timeout: float = 20, pause: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(pause)
