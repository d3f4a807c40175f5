"""Scheduled maintenance: announced, reminded before the start, started and completed: each once, in order.

Passes run as the beat would, at chosen times (``advance(settings, now)``); deliveries go through a real
worker on Redis to the sandbox (the blog webhook and X are the customers' channels here).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from broadcaster.core.errors import InputError
from broadcaster.domain.maintenance import find, windows
from broadcaster.service import advance_maintenance as advance
from broadcaster.service import complete_maintenance as complete
from broadcaster.service import incident_listing as incident_rows
from broadcaster.service import incident_timeline as timeline
from broadcaster.service import schedule_maintenance as schedule
from broadcaster.store.models import utcnow
from tests.support.lifecycle import Log

SCHEDULED, UPCOMING, STARTED, COMPLETED = (
    "incident.maintenance-scheduled",
    "incident.maintenance-upcoming",
    "incident.maintenance-started",
    "incident.maintenance-completed",
)
#: the pager (SMS) escalates reminders, so the customers' channels are the blog and X
RESPONDERS = {"escalate": ["pager"]}


def events(lab: Log, incident_id: str) -> list[str]:
    """The maintenance events the blog received for this window, in order."""
    return [str(r.header("X-Broadcaster-Event")) for r in lab.blog() if r.json["incident"]["id"] == incident_id]


def tweets(lab: Log) -> list[str]:
    return [r.json["text"] for r in lab.sandbox.http.received("twitter.tweet")]


def run(lab: Log, now: datetime) -> list[str]:
    created = advance(lab.settings, now)
    lab.delivered(created)
    return created


def test_each_step_is_posted_once_in_order(log: Callable[..., Log]) -> None:
    """Announced by the command; reminded 30m before; started and completed on time; every pass after a
    step finds nothing more to do."""
    lab = log(RESPONDERS, maintenance={"remind_before": "30m"})
    made = lab.cluster.cli(
        "maintenance", "schedule", "--title", "Database upgrade", "--starts", "+2h", "--ends", "+3h",
        "--component", "Checkout", "--message", "Checkout is read-only for a few minutes.", "--wait", "--json",
    )  # fmt: skip
    assert made.code == 0, made.stderr
    announced = made.json
    window = announced["maintenance"]
    incident = announced["incident_id"]
    assert announced["event"] == SCHEDULED and announced["status"] == "delivered"
    assert {d["channel"] for d in announced["deliveries"]} == {"blog", "x"}
    assert window["step"] == "announced" and window["incident_id"] == incident
    starts, ends = datetime.fromisoformat(window["starts_at"]), datetime.fromisoformat(window["ends_at"])
    assert ends - starts == timedelta(hours=1)
    assert datetime.fromisoformat(window["remind_at"]) == starts - timedelta(minutes=30)

    assert run(lab, starts - timedelta(minutes=31)) == []
    assert len(run(lab, starts - timedelta(minutes=29))) == 1
    assert run(lab, starts - timedelta(minutes=29)) == []
    assert run(lab, starts - timedelta(seconds=1)) == []
    # Scheduled and in progress, a maintenance window is not an open incident.
    assert incident not in [row["id"] for row in incident_rows(lab.settings, True, 100)]
    assert len(run(lab, starts + timedelta(minutes=1))) == 1
    assert run(lab, starts + timedelta(minutes=2)) == []
    assert incident not in [row["id"] for row in incident_rows(lab.settings, True, 100)]
    assert run(lab, ends - timedelta(seconds=1)) == []
    assert len(run(lab, ends + timedelta(minutes=1))) == 1
    assert run(lab, ends + timedelta(hours=5)) == []

    assert events(lab, incident) == [SCHEDULED, UPCOMING, STARTED, COMPLETED]
    posted = tweets(lab)
    assert [t.split(":")[0] for t in posted] == [
        "Scheduled maintenance",
        "Reminder",
        "Maintenance in progress",
        "Maintenance completed",
    ]
    assert "starts at" in posted[1] and "(in 29m)" in posted[1]
    html = [r.json["rendered"]["html"] for r in lab.blog() if r.json["incident"]["id"] == incident]
    # What to expect is said until it is over.
    assert ["Checkout is read-only for a few minutes." in h for h in html] == [True, True, True, False]
    detail = timeline(lab.settings, incident)
    assert detail["kind"] == "maintenance" and detail["status"] == "resolved"
    assert [e["event"] for e in detail["events"]] == [SCHEDULED, UPCOMING, STARTED, COMPLETED]
    assert windows(lab.settings) == []
    (done,) = windows(lab.settings, include_completed=True)
    assert done["step"] == "completed" and done["completed_at"] is not None


def test_a_late_beat_catches_up_in_order_without_double_posting(log: Callable[..., Log]) -> None:
    """The beat was down: the window that ended meanwhile gets its start then its end (its reminder, which
    would now be noise, is skipped); the window still ahead gets its late reminder first. Two beats racing
    through the catch-up post each step once."""
    lab = log(RESPONDERS)
    now = utcnow()
    missed = schedule(lab.settings, "Network maintenance", now + timedelta(hours=1), now + timedelta(hours=2))
    ahead = schedule(lab.settings, "Storage maintenance", now + timedelta(hours=4), now + timedelta(hours=5))
    lab.delivered([missed.broadcast_id, ahead.broadcast_id])

    back = now + timedelta(hours=3, minutes=30)  # the beat comes back: "Storage" starts in 30m, reminded at 3h
    posted: list[str] = []
    for _ in range(50):
        if find(lab.settings, missed.maintenance_id).step == 4:
            break
        posted += race(lab, back)
    assert events(lab, missed.incident_id) == [SCHEDULED, STARTED, COMPLETED]
    assert events(lab, ahead.incident_id) == [SCHEDULED, UPCOMING]
    assert len(posted) == 3

    later = now + timedelta(hours=8)
    for _ in range(50):
        if find(lab.settings, ahead.maintenance_id).step == 4:
            break
        race(lab, later)
    assert events(lab, ahead.incident_id) == [SCHEDULED, UPCOMING, STARTED, COMPLETED]
    assert race(lab, later) == []
    assert events(lab, missed.incident_id) == [SCHEDULED, STARTED, COMPLETED]


def race(lab: Log, now: datetime) -> list[str]:
    """Two passes at the same time, as two beats would run them; the broadcasts they made, once delivered."""
    barrier = threading.Barrier(2)
    results: list[list[str]] = []

    def one() -> None:
        barrier.wait()
        results.append(advance(lab.settings, now))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    created = [b for result in results for b in result]
    lab.delivered(created)
    return created


def test_complete_ends_a_window_early_and_bad_input_is_refused(log: Callable[..., Log]) -> None:
    """`maintenance complete` posts the start (if no pass has) and the end at once; a window that has not
    started, or already ended, cannot be completed; an end before the start is bad input (exit 2)."""
    lab = log(RESPONDERS)
    now = utcnow()
    started = schedule(lab.settings, "Cache flush", now - timedelta(minutes=5), now + timedelta(hours=2))
    lab.delivered([started.broadcast_id])
    finished = lab.cluster.cli("maintenance", "complete", started.maintenance_id, "--json")
    assert finished.code == 0, finished.stderr
    assert finished.json["maintenance"]["step"] == "completed"
    assert events(lab, started.incident_id) == [SCHEDULED, STARTED, COMPLETED]
    ended = [r.json for r in lab.blog() if r.header("X-Broadcaster-Event") == COMPLETED]
    assert "ahead of schedule" in ended[0]["rendered"]["markdown"]
    with pytest.raises(InputError, match="already completed"):
        complete(lab.settings, started.incident_id)  # by its incident's id too

    ahead = schedule(lab.settings, "Index rebuild", now + timedelta(hours=1), now + timedelta(hours=2))
    with pytest.raises(InputError, match="has not started"):
        complete(lab.settings, ahead.maintenance_id)
    refused = lab.cluster.cli("maintenance", "schedule", "--title", "Backwards", "--starts", "+2h", "--ends", "+1h")
    assert refused.code == 2
    assert "must be after --starts" in refused.stderr and "Traceback" not in refused.stderr
    assert len(windows(lab.settings)) == 1  # only "Index rebuild" is still ahead
