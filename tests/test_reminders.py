"""Update reminders and holding statements: a silent open incident nudges its responders, once per period.

The clock is the pass's ``now``: each test opens incidents at the real time and runs ``remind(settings, now)``
as the beat would at later times. Deliveries go through a real worker on Redis to the sandbox, on a delivery
log of the test's own (SQLite, and PostgreSQL where it runs).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broadcaster.core.errors import ConfigError
from broadcaster.domain.lifecycle import at_text
from broadcaster.sandbox import Sandbox
from broadcaster.service import remind
from broadcaster.settings import load_settings
from broadcaster.store.db import sessions
from broadcaster.store.models import Broadcast, Reminder, Update, utcnow
from broadcaster.testing import Result
from tests.support.lifecycle import Log, eventually, start_beat_worker

CADENCE = {"critical": "15m", "major": "30m", "minor": "1h"}


def reminder_texts(log: Log) -> list[str]:
    return [post["text"] for post in log.slack()]


def latest_update_at(log: Log, incident_id: str) -> datetime:
    with sessions(log.settings.database_url)() as session:
        return session.scalars(
            select(Update.created_at).where(Update.incident_id == incident_id).order_by(Update.created_at.desc())
        ).first()


def count(log: Log, event: str) -> int:
    with sessions(log.settings.database_url)() as session:
        return int(session.scalar(select(func.count()).where(Broadcast.event == event)) or 0)


def test_reminders_follow_the_cadence_once_per_period_and_escalate(log: Callable[..., Log]) -> None:
    """Silent for 15m (critical): one reminder; nothing more within the period; at 2x escalated to the pager."""
    lab = log({"after": CADENCE, "escalate": ["pager"]})
    incident = lab.open("Checkout is failing")
    t0 = utcnow()

    assert remind(lab.settings, t0 + timedelta(minutes=10)) == []
    first = remind(lab.settings, t0 + timedelta(minutes=16))
    assert len(first) == 1
    lab.delivered(first)
    assert remind(lab.settings, t0 + timedelta(minutes=16)) == []
    assert remind(lab.settings, t0 + timedelta(minutes=29)) == []
    (text,) = reminder_texts(lab)
    assert text.startswith('Reminder: "Checkout is failing" has had no update for 16m')
    assert f"broadcaster send --incident {incident} --status investigating" in text
    assert lab.sms() == []  # the pager waits for the escalation
    assert [r.json["event"] for r in lab.blog()] == ["incident.update"]  # customers see no reminders

    second = remind(lab.settings, t0 + timedelta(minutes=31))
    assert len(second) == 1
    lab.delivered(second)
    assert remind(lab.settings, t0 + timedelta(minutes=44)) == []
    texts = reminder_texts(lab)
    assert len(texts) == 2
    assert texts[1].startswith('Escalated reminder: "Checkout is failing" has had no update for 31m')
    assert json.dumps(lab.slack()[1]["blocks"]).count("Escalated") == 1
    pages = lab.sms()  # one per number on the pager
    assert pages and len(set(pages)) == 1
    assert pages[0].startswith('ESCALATED: No update on "Checkout is failing" for 31m')
    assert f"--incident {incident}" in pages[0]
    assert count(lab, "incident.reminder") == 2


def test_the_cadence_is_per_impact_and_follows_the_promised_next_update(log: Callable[..., Log]) -> None:
    """major: 30m; minor: 1h; an impact without a cadence: never; an update's "next update by" moves the reminder."""
    lab = log({"after": {"major": "30m", "minor": "1h"}})
    major = lab.open("Search is slow", impact="major")
    minor = lab.open("Avatars are blurry", impact="minor")
    lab.open("Docs typo", impact="none")
    promised = lab.open("Slow exports", impact="major", next_update_in="2h")
    t0 = utcnow()

    seen = 0

    def reminded_at(minutes: int) -> list[str]:
        """Run a pass at t0 + minutes; the titles and silences of the reminders it sent."""
        nonlocal seen
        lab.delivered(remind(lab.settings, t0 + timedelta(minutes=minutes)))
        texts = reminder_texts(lab)[seen:]
        seen += len(texts)
        return sorted(f"{t.split(chr(34))[1]}: {t.split('no update for ')[1].splitlines()[0]}" for t in texts)

    assert reminded_at(29) == []
    assert reminded_at(31) == ["Search is slow: 31m"]
    assert reminded_at(59) == []
    assert reminded_at(61) == ["Avatars are blurry: 1h 1m", "Search is slow: 1h 1m"]  # the major one escalated
    assert reminded_at(119) == ["Search is slow: 1h 59m"]
    assert reminded_at(121) == ["Avatars are blurry: 2h 1m", "Search is slow: 2h 1m", "Slow exports: 2h 1m"]
    assert {major, minor, promised} and all("Docs typo" not in t for t in reminder_texts(lab))


def test_a_new_update_ends_the_silence_and_resolving_stops_reminders(log: Callable[..., Log]) -> None:
    """After an update the count starts again; once resolved, no reminder ever comes, however long the silence."""
    lab = log({"after": CADENCE})
    incident = lab.open("Login failures")
    t0 = utcnow()
    lab.delivered(remind(lab.settings, t0 + timedelta(minutes=16)))
    assert len(reminder_texts(lab)) == 1

    lab.post({"incident_id": incident, "status": "identified", "message": "A bad deploy.", "channels": ["blog"]})
    t1 = utcnow()
    assert remind(lab.settings, t1 + timedelta(minutes=14)) == []
    lab.delivered(remind(lab.settings, t1 + timedelta(minutes=16)))
    texts = reminder_texts(lab)
    assert len(texts) == 2 and texts[1].startswith('Reminder: "Login failures" has had no update for 16m')
    assert "--status identified" in texts[1] and "Last update: A bad deploy." in texts[1]

    lab.post({"incident_id": incident, "status": "resolved", "message": "Fixed.", "channels": ["blog"]})
    for minutes in (16, 31, 60, 600):
        assert remind(lab.settings, utcnow() + timedelta(minutes=minutes)) == []
    assert len(reminder_texts(lab)) == 2


def test_two_concurrent_passes_send_one_reminder(log: Callable[..., Log]) -> None:
    """Two beats (or workers) running the same pass at the same time: each reminder is sent once."""
    lab = log({"after": CADENCE})
    incidents = [lab.open(f"Outage {n}") for n in range(4)]
    when = utcnow() + timedelta(minutes=16)
    for round_ in range(3):
        barrier = threading.Barrier(2)
        results: list[list[str]] = []

        def run(results: list[list[str]] = results, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            results.append(remind(lab.settings, when))

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        created = [b for result in results for b in result]
        assert len(created) == (len(incidents) if round_ == 0 else 0)
        lab.delivered(created)
    titles = sorted(t.split('"')[1] for t in reminder_texts(lab))
    assert titles == [f"Outage {n}" for n in range(4)]
    with sessions(lab.settings.database_url)() as session:
        assert session.scalar(select(func.count()).select_from(Reminder)) == 4


def test_holding_statements_tell_customers_what_to_expect(log: Callable[..., Log]) -> None:
    """Opt-in per impact: a silent critical incident also gets "still working on it, next update by" on the
    customers' channels; a minor one only reminds its responders."""
    lab = log({"after": CADENCE, "holding": ["critical"]})
    critical = lab.open("Payments down")
    lab.open("Slow avatars", impact="minor")
    t0 = utcnow()
    created = remind(lab.settings, t0 + timedelta(minutes=16))
    assert len(created) == 2  # the critical one's reminder and holding statement
    lab.delivered(created)
    holding = [r for r in lab.blog() if r.json["event"] == "incident.holding"]
    assert len(holding) == 1
    body = holding[0].json
    assert body["incident"]["id"] == critical
    # Next update by: the next period's end (the update, plus the 15m to the first reminder, plus 15m).
    promise = f"Next update by {at_text(latest_update_at(lab, critical) + timedelta(minutes=30))}"
    assert promise in body["rendered"]["markdown"] and "still working on" in body["rendered"]["markdown"]
    tweets = [r.json["text"] for r in lab.sandbox.http.received("twitter.tweet")]
    assert len(tweets) == 1 and promise in tweets[0] and tweets[0].endswith(f"/incidents/{critical}")
    assert len(reminder_texts(lab)) == 1  # responders: the reminder, not the holding statement

    lab.delivered(remind(lab.settings, t0 + timedelta(minutes=61)))  # minor: reminder only; critical: level 4
    assert [r.json["event"] for r in lab.blog()].count("incident.holding") == 2
    assert sorted(t.split('"')[1] for t in reminder_texts(lab)) == ["Payments down", "Payments down", "Slow avatars"]


def test_remind_command_runs_one_pass_for_cron(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], fresh_database_url: str, sandbox: Sandbox
) -> None:
    """Embedded mode: `broadcaster remind` runs one pass, delivers it and exits; run again, nothing is due."""
    config = str(
        embedded_config(
            database_url=fresh_database_url,
            channels={"ops": sandbox.channel_config("slack", "ops"), "blog": sandbox.channel_config("webhook", "blog")},
            reminders={"after": "30m", "channels": ["ops"]},
        )
    )
    opened = cli("send", "--config", config, "--title", "Queue backlog", "--status", "investigating",
                 "--message", "Jobs are delayed.", "--channel", "blog", "--json")  # fmt: skip
    assert opened.code == 0, opened.stderr
    incident = opened.json["incident_id"]

    ran = cli("remind", "--config", config, "--now", "+31m", "--json")
    assert ran.code == 0, ran.stderr
    (summary,) = ran.json
    assert summary["event"] == "incident.reminder" and summary["incident_id"] == incident
    assert summary["status"] == "delivered" and summary["update_id"] is None
    assert [d["channel"] for d in summary["deliveries"]] == ["ops"]
    again = cli("remind", "--config", config, "--now", "+31m")
    assert again.code == 0 and "nothing is due" in again.stdout
    assert len(sandbox.http.received("slack.post")) == 1

    timeline = cli("incident", incident, "--config", config, "--json").json
    assert [e["event"] for e in timeline["events"]] == ["incident.reminder"]
    assert timeline["events"][0]["deliveries"][0]["status"] == "delivered"

    broken = str(embedded_config(database_url=fresh_database_url, reminders={"channels": ["nowhere"]}))
    refused = cli("remind", "--config", broken)
    assert refused.code == 2
    assert "'nowhere'" in refused.stderr and "Traceback" not in refused.stderr


def test_a_real_beat_sends_exactly_one_reminder(log: Callable[..., Log]) -> None:
    """End to end: two workers each running the beat every second, a 6s cadence: Slack gets one reminder."""
    lab = log({"after": "6s", "check_every": "1s"}, start=False)
    start_beat_worker(lab.cluster, "b1")
    start_beat_worker(lab.cluster, "b2")
    before = time.monotonic()
    incident = lab.open("Checkout is failing")
    assert eventually(lambda: lab.slack(), timeout=15), lab.cluster.logs()
    assert time.monotonic() - before >= 5.5  # not before the cadence
    time.sleep(max(0.0, 9 - (time.monotonic() - before)))  # both beats ran several more passes by now
    lab.post({"incident_id": incident, "status": "resolved", "message": "Fixed.", "channels": ["blog"]})
    time.sleep(max(0.0, 14 - (time.monotonic() - before)))  # past the escalation's time: resolved, nothing comes
    texts = reminder_texts(lab)
    assert len(texts) == 1, texts
    assert texts[0].startswith('Reminder: "Checkout is failing" has had no update for ')
    assert count(lab, "incident.reminder") == 1


def test_reminder_settings_are_checked() -> None:
    """The cadence names impacts; durations are positive; holding statements name impacts (or true)."""
    for reminders, error in (
        ({"after": {"urgent": "5m"}}, "impacts are none, minor, major, critical, not urgent"),
        ({"after": "0s"}, "must be longer than 0s"),
        ({"holding": ["sev1"]}, "not sev1"),
    ):
        with pytest.raises(ConfigError, match=error):
            load_settings(reminders=reminders)
    settings = load_settings(reminders={"after": {"critical": "15m"}, "holding": True})
    assert settings.reminders.after_for("critical") == timedelta(minutes=15)
    assert settings.reminders.after_for("minor") is None
    assert settings.reminders.holds_for("minor")
