"""The lifecycle tests' cluster on a delivery log of its own, and readers of what the sandbox received.

The reminder and maintenance passes look at every open incident in the log, so each of those tests gets a
fresh database (the ``fresh_database_url`` fixture) rather than the session's shared one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broadcaster.delivery.queue import dispatch
from broadcaster.domain.broadcasts import create_broadcast, parse_request
from broadcaster.sandbox import Request, Sandbox
from broadcaster.settings import Settings
from broadcaster.store.queries import broadcast_summary, wait_for
from broadcaster.testing import start_worker
from tests.support.cluster import Cluster


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
        return str(broadcast_summary(self.settings, broadcast_id)["incident_id"])

    def post(self, request: dict[str, Any]) -> str:
        """Record and dispatch an update as `send` does; wait for it; the broadcast id."""
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
