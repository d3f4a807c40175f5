"""Audiences: channels with ``audience = "subscribers"`` send to the subscribers who follow the incident's components.

Recipients are resolved when the broadcast is created (one delivery row each, written in bulk); subscribers
whose address keeps failing are quarantined; 2,000 subscribers go through a real worker on Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from broadcaster.domain.broadcasts import INCIDENT_UPDATE, parse_request, prepare, record_broadcast
from broadcaster.domain.subscriber_import import import_subscribers
from broadcaster.interfaces.api import create_app
from broadcaster.sandbox import Sandbox
from broadcaster.settings import Settings, load_settings
from broadcaster.store.db import sessions
from broadcaster.store.models import Delivery
from broadcaster.testing import Result
from channels.sms.emulator import TwilioEmulator
from tests.support.cluster import Cluster
from tests.support.subscribers import TOKENS, WRITER, audience_channels, listed

OPS = "ops@example.com"
SEND = ("send", "--status", "investigating", "--message", "Payments fail for some customers.",
        "--channel", "news", "--channel", "texts")  # fmt: skip


def sms_sent(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The messages Twilio accepted: to whom, and what."""
    return [r.note for r in sandbox.http.received("twilio.message") if r.status == 201]


def mails_by_recipient(sandbox: Sandbox) -> dict[str, Any]:
    mails = sandbox.smtp.received()
    assert all(len(m.recipients) == 1 for m in mails)
    return {m.recipients[0]: m.message for m in mails}


def import_csv(cli: Callable[..., Result], config: Path, tmp_path: Path, text: str) -> None:
    path = tmp_path / "subscribers.csv"
    path.write_text(text)
    result = cli("subscribers", "import", str(path), "--config", str(config))
    assert result.code == 0 and not result.stderr, result.stderr


@pytest.fixture
def twilio(sandbox: Sandbox) -> TwilioEmulator:
    emulator = sandbox.emulators["sms"]
    assert isinstance(emulator, TwilioEmulator)
    return emulator


def test_subscribers_get_updates_about_the_components_they_follow(
    cli: Callable[..., Result],
    embedded_config: Callable[..., Path],
    sandbox: Sandbox,
    no_subscribers: None,
    tmp_path: Path,
) -> None:
    """Followers of the incident's components and of all components get it; others, and the unsubscribed, not."""
    config = embedded_config(channels=audience_channels(sandbox, emails=[OPS]), api=TOKENS)
    import_csv(cli, config, tmp_path, "email,phone,components\n"
               "checkout@example.com,,Checkout\napi@example.com,,API\nall@example.com,,\n"
               "gone@example.com,,Checkout\n,+14155550111,checkout\n,+14155550112,API\n")  # fmt: skip
    gone = next(r for r in listed(cli, config) if r["email"] == "gone@example.com")
    with TestClient(create_app(load_settings(config))) as api:
        answer = api.patch(f"/v1/subscribers/{gone['id']}", json={"status": "unsubscribed"},
                           headers={"Authorization": f"Bearer {WRITER}"})  # fmt: skip
        assert answer.status_code == 200

    result = cli(*SEND, "--title", "Checkout errors", "--component", "Checkout", "--json", "--config", str(config))
    assert result.code == 0, result.stderr
    targets = {(d["channel"], d["target"]) for d in result.json["deliveries"]}
    assert targets == {
        ("news", OPS),
        ("news", "checkout@example.com"),
        ("news", "all@example.com"),
        ("texts", "+14155550111"),
    }
    assert {d["status"] for d in result.json["deliveries"]} == {"delivered"}
    mails = mails_by_recipient(sandbox)
    assert set(mails) == {OPS, "checkout@example.com", "all@example.com"}
    assert mails[OPS]["List-Unsubscribe"] is None  # a configured recipient, not a subscriber
    assert mails["checkout@example.com"]["List-Unsubscribe"].startswith("<https://status.example.com/unsubscribe/")
    texts = sms_sent(sandbox)
    assert [t["to"] for t in texts] == ["+14155550111"]
    assert texts[0]["body"].endswith("\nReply STOP to unsubscribe")

    # An incident that names no component reaches every confirmed subscriber.
    sandbox.reset()
    everyone = cli(*SEND, "--title", "Everything is down", "--json", "--config", str(config))
    assert everyone.code == 0, everyone.stderr
    assert set(mails_by_recipient(sandbox)) == {OPS, "checkout@example.com", "api@example.com", "all@example.com"}
    assert sorted(t["to"] for t in sms_sent(sandbox)) == ["+14155550111", "+14155550112"]
    assert len(everyone.json["deliveries"]) == 6


def test_recipients_are_resolved_when_the_broadcast_is_created(
    cluster: Callable[..., Cluster],
    cli: Callable[..., Result],
    sandbox: Sandbox,
    no_subscribers: None,
) -> None:
    """A broadcast in flight keeps its recipients: a later unsubscribe or a new subscriber does not change it."""
    running = cluster(audience_channels(sandbox))
    for address in ("ana@example.com", "bo@example.com"):
        assert running.cli("subscribers", "add", "--email", address).code == 0
    queued = running.cli(*SEND, "--title", "Queued while no worker runs", "--json")  # no worker yet: it waits
    assert queued.code == 0, queued.stderr
    broadcast = queued.json
    assert broadcast["status"] == "pending"
    assert sorted(d["target"] for d in broadcast["deliveries"]) == ["ana@example.com", "bo@example.com"]

    assert running.cli("subscribers", "remove", "--email", "ana@example.com").code == 0
    assert running.cli("subscribers", "add", "--email", "chen@example.com").code == 0
    running.start("w1")
    rows = wait_finished(running, broadcast["broadcast_id"], 60)
    assert sorted(r["target"] for r in rows) == ["ana@example.com", "bo@example.com"]
    assert {r["status"] for r in rows} == {"delivered"}
    assert set(mails_by_recipient(sandbox)) == {"ana@example.com", "bo@example.com"}

    later = running.cli(*SEND, "--title", "After the changes", "--wait", "--timeout", "60", "--json")
    assert later.code == 0, later.stderr
    assert sorted(d["target"] for d in later.json["deliveries"]) == ["bo@example.com", "chen@example.com"]


def wait_finished(running: Cluster, broadcast_id: str, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows: list[dict[str, Any]] = running.cli("deliveries", "--broadcast", broadcast_id, "--json").json
        if all(r["status"] in ("delivered", "failed") for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_a_subscriber_is_quarantined_after_n_permanent_failures_in_a_row(
    cli: Callable[..., Result],
    embedded_config: Callable[..., Path],
    sandbox: Sandbox,
    twilio: TwilioEmulator,
    no_subscribers: None,
    tmp_path: Path,
) -> None:
    """Two bounces in a row (quarantine_after = 2) quarantine an address; a delivery in between resets the run."""
    config = embedded_config(channels=audience_channels(sandbox), subscribers={"quarantine_after": 2})
    args = ("--json", "--config", str(config))
    import_csv(cli, config, tmp_path, "email,phone\ngood@example.com,\nbounce@example.com,\nflaky@example.com,\n"
               ",+14155550121\n,+14155550122\n")  # fmt: skip

    def broadcast(title: str, refused: set[str]) -> dict[str, dict[str, Any]]:
        sandbox.reset()
        sandbox.smtp.reject.update({"bounce@example.com"} | refused)
        twilio.reject.add("+14155550122")
        result = cli(*SEND, "--title", title, *args)
        assert result.code == 1, result.stderr  # some deliveries failed
        return {d["target"]: d for d in result.json["deliveries"]}

    def state() -> dict[str, tuple[str, int]]:
        return {(r["email"] or r["phone"]): (r["status"], r["failures"]) for r in listed(cli, config)}

    first = broadcast("First", {"flaky@example.com"})
    assert first["bounce@example.com"]["status"] == "failed" and first["bounce@example.com"]["attempts"] == 1
    assert "550" in first["bounce@example.com"]["error"] and "21211" in first["+14155550122"]["error"]
    assert state() == {
        "good@example.com": ("confirmed", 0),
        "bounce@example.com": ("confirmed", 1),
        "flaky@example.com": ("confirmed", 1),
        "+14155550121": ("confirmed", 0),
        "+14155550122": ("confirmed", 1),
    }

    broadcast("Second", set())  # flaky is accepted this time
    assert state() == {
        "good@example.com": ("confirmed", 0),
        "bounce@example.com": ("quarantined", 2),
        "flaky@example.com": ("confirmed", 0),
        "+14155550121": ("confirmed", 0),
        "+14155550122": ("quarantined", 2),
    }
    quarantined = cli("subscribers", "list", "--quarantined", "--json", "--config", str(config)).json
    assert sorted(r["email"] or r["phone"] for r in quarantined) == ["+14155550122", "bounce@example.com"]
    assert all(r["quarantined_at"] and r["last_error"] for r in quarantined)
    plain = cli("subscribers", "list", "--quarantined", "--config", str(config)).stdout.splitlines()
    assert sorted(line.split("\t")[1] for line in plain) == ["+14155550122", "bounce@example.com"]

    third = broadcast("Third", {"flaky@example.com"})
    assert set(third) == {"good@example.com", "flaky@example.com", "+14155550121"}  # no more sends to them
    assert state()["flaky@example.com"] == ("confirmed", 1)

    # The operator fixes the address and adds it again: confirmed, with a clean record.
    again = cli("subscribers", "add", "--email", "bounce@example.com", *args)
    assert again.json["status"] == "confirmed" and again.json["failures"] == 0


def test_delivery_rows_are_written_in_bulk(
    database_url: str,
    sandbox: Sandbox,
    no_subscribers: None,
) -> None:
    """2,500 recipients are one INSERT executed for all their rows (executemany), not 2,500 statements."""
    settings = Settings.model_validate({"database_url": database_url, "channels": audience_channels(sandbox)})
    rows = [f"user{i}@example.com," + ("Checkout" if i % 2 else "API") for i in range(5000)]
    report = import_subscribers(settings, ["email,components", *rows])
    assert report.created == 5000
    factory = sessions(database_url)
    engine = factory.kw["bind"]
    inserts: list[tuple[bool, int]] = []

    def count(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO DELIVERIES"):
            inserts.append((many, len(parameters)))

    event.listen(engine, "before_cursor_execute", count)
    try:
        with factory() as session:
            request = parse_request({"title": "Checkout errors", "status": "investigating", "message": "Down.",
                                     "components": ["Checkout"], "channels": ["news"]})  # fmt: skip
            incident, update, messages = prepare(session, settings, request)
            session.add(update)
            session.flush()
            broadcast_id, ids = record_broadcast(session, settings, incident, update, INCIDENT_UPDATE, messages)
            query = select(func.count()).select_from(Delivery).where(Delivery.broadcast_id == broadcast_id)
            stored = session.scalar(query)
            session.rollback()  # nothing of this stays in the shared log
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(ids) == len(set(ids)) == stored == 2500
    assert inserts == [(True, 2500)], inserts


@pytest.fixture
def fanout_subscribers(tmp_path: Path) -> Path:
    """1,000 email and 1,000 SMS subscribers, each address distinct."""
    lines = ["email,phone,components"]
    lines += [f"reader{i:04d}@example.com,,Checkout" for i in range(1000)]
    lines += [f",+1415555{i:04d}," for i in range(1000)]
    path = tmp_path / "fanout.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def fanout(cluster: Callable[..., Cluster], sandbox: Sandbox, no_subscribers: None) -> Iterator[Cluster]:
    running = cluster(audience_channels(sandbox), delivery={"lease": "2m", "sweep_every": "5s"})
    yield running
    running.stop_all()


def test_a_broadcast_to_2000_subscribers_through_a_real_worker(
    fanout: Cluster, fanout_subscribers: Path, sandbox: Sandbox
) -> None:
    """2,000 subscribers (1,000 by email, 1,000 by SMS): 2,000 delivered rows, 2,000 messages received, each to a
    distinct recipient, and none twice."""
    imported = fanout.cli("subscribers", "import", str(fanout_subscribers))
    assert imported.code == 0 and "2000 new" in imported.stdout, imported.stderr
    fanout.start("w1", concurrency=8)  # two processes: both cores
    fanout.start("w2", concurrency=8)
    started = time.monotonic()
    result = fanout.cli(*SEND, "--title", "Checkout errors", "--component", "Checkout", "--wait",
                        "--timeout", "90", "--json", timeout=150)  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.code == 0, (result.stderr, fanout.logs()[-2000:])
    deliveries = result.json["deliveries"]
    assert len(deliveries) == 2000 and {d["status"] for d in deliveries} == {"delivered"}
    assert len({(d["channel"], d["target"]) for d in deliveries}) == 2000

    mails = sandbox.smtp.received()
    texts = sms_sent(sandbox)
    assert len(mails) == 1000 and len({m.recipients[0] for m in mails}) == 1000
    assert len(texts) == 1000 and len({t["to"] for t in texts}) == 1000
    assert {m.recipients[0] for m in mails} == {f"reader{i:04d}@example.com" for i in range(1000)}
    assert {t["to"] for t in texts} == {f"+1415555{i:04d}" for i in range(1000)}
    print(f"2,000 deliveries in {elapsed:.1f}s")
    listing = fanout.cli("subscribers", "list", "--json").json
    assert len(listing) == 2000 and {(r["status"], r["failures"]) for r in listing} == {("confirmed", 0)}
