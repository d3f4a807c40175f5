"""The incident lifecycle on the command line: incidents and timelines, explicit reopening, "next update by".

Every command runs as a user runs it (a subprocess, embedded mode, the sandbox's receivers).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broadcaster.core.errors import InputError
from broadcaster.domain import broadcasts, maintenance, reminders
from broadcaster.domain.broadcasts import incident_view, parse_request, render_context
from broadcaster.domain.postmortem import read_report
from broadcaster.domain.reminders import Silence
from broadcaster.rendering import render
from broadcaster.sandbox import Sandbox
from broadcaster.settings import load_settings
from broadcaster.store.models import Incident, Maintenance, Update, utcnow
from broadcaster.testing import Result
from channels import channel_types
from channels.twitter.text import weighted_length
from tests.support import ROOT

TO = ("--channel", "webhook", "--channel", "slack")


def test_status_follows_the_latest_update_and_the_timeline_shows_what_each_channel_got(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    """Two updates: the incident's status, impact and components follow them; `incident ID` lists every
    update with each channel's delivery; resolved leaves `incidents --open`."""
    config = ("--config", str(embedded_config()))
    opened = cli("send", *config, *TO, "--title", "Checkout is failing", "--status", "investigating",
                 "--impact", "critical", "--component", "Checkout", "--message", "Payments fail.", "--json")  # fmt: skip
    assert opened.code == 0, opened.stderr
    incident = opened.json["incident_id"]
    resolved = cli("send", *config, *TO, "--incident", incident, "--status", "resolved", "--message", "Now resolved.",
                   "--impact", "major", "--component", "Payments")  # fmt: skip
    assert resolved.code == 0, resolved.stderr

    listed = cli("incidents", *config, "--json")
    assert listed.code == 0, listed.stderr
    (row,) = [r for r in listed.json if r["id"] == incident]
    assert row["status"] == "resolved" and row["impact"] == "major" and row["kind"] == "incident"
    assert row["components"] == ["Checkout", "Payments"] and row["resolved_at"] is not None
    assert row["next_update_by"] is None  # a resolved update promises none
    still_open = cli("incidents", *config, "--open", "--json")
    assert incident not in [r["id"] for r in still_open.json]

    detail = cli("incident", incident, *config, "--json")
    assert detail.code == 0, detail.stderr
    timeline = detail.json
    assert timeline["status"] == "resolved" and timeline["events"] == []
    assert [u["status"] for u in timeline["updates"]] == ["investigating", "resolved"]
    for update in timeline["updates"]:
        (broadcast,) = update["broadcasts"]
        assert broadcast["event"] == "incident.update" and broadcast["status"] == "delivered"
        assert sorted(d["channel"] for d in broadcast["deliveries"]) == ["slack", "webhook"]
        assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in broadcast["deliveries"])
        assert broadcast["rendered"]["webhook"] == f"[{update['status'].title()}] Checkout is failing"
    assert timeline["updates"][0]["next_update_by"] is not None
    assert len(sandbox.http.received("webhook")) == 2

    text = cli("incident", incident, *config)
    assert text.code == 0
    assert "Checkout is failing" in text.stdout and "resolved: Now resolved." in text.stdout
    assert text.stdout.count("webhook (webhook)") == 2 and "delivered" in text.stdout


def test_a_resolved_incident_is_reopened_only_explicitly(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    """An update to a resolved incident is refused (exit 2, nothing sent) unless it says --reopen."""
    config = ("--config", str(embedded_config()))
    opened = cli("send", *config, *TO, "--title", "Search is down", "--status", "resolved",
                 "--message", "It was down for five minutes; it is back.", "--json")  # fmt: skip
    assert opened.code == 0, opened.stderr
    incident = opened.json["incident_id"]
    sent_before = len(sandbox.http.received())

    refused = cli("send", *config, *TO, "--incident", incident, "--status", "investigating", "--message", "Again.")
    assert refused.code == 2
    assert f"incident {incident} is resolved" in refused.stderr and "--reopen" in refused.stderr
    assert len(sandbox.http.received()) == sent_before

    reopened = cli("send", *config, *TO, "--incident", incident, "--status", "investigating", "--message", "Again.",
                   "--reopen", "--json")  # fmt: skip
    assert reopened.code == 0, reopened.stderr
    listed = cli("incidents", *config, "--open", "--json").json
    (row,) = [r for r in listed if r["id"] == incident]
    assert row["status"] == "investigating" and row["resolved_at"] is None


def test_every_update_carries_next_update_by(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    """By default the impact's cadence from the update; or --next-update as a duration or a time; rendered in
    the blog post; none for an impact without a cadence; refused for a resolved update or a past time."""
    path = embedded_config(reminders={"after": {"critical": "15m", "major": "30m"}})
    config = ("--config", str(path))

    def received() -> tuple[datetime, datetime | None, str]:
        body = sandbox.http.received("webhook")[-1].json
        by = body["update"]["next_update_by"]
        created = datetime.fromisoformat(body["update"]["created_at"])
        return created, datetime.fromisoformat(by) if by else None, body["rendered"]["markdown"]

    opened = cli("send", *config, "--channel", "webhook", "--title", "Login failures", "--status", "investigating",
                 "--impact", "critical", "--message", "Some logins fail.", "--json")  # fmt: skip
    assert opened.code == 0, opened.stderr
    incident = opened.json["incident_id"]
    created, by, markdown = received()
    assert by == created + timedelta(minutes=15)
    assert f"**Next update by {by:%Y-%m-%d %H:%M} UTC.**" in markdown
    updated = cli("send", *config, "--channel", "webhook", "--incident", incident, "--status", "identified",
                  "--message", "Found it.", "--next-update", "45m")  # fmt: skip
    assert updated.code == 0, updated.stderr
    created, by, _ = received()
    assert by == created + timedelta(minutes=45)
    refused = cli("send", *config, "--channel", "webhook", "--incident", incident, "--status", "resolved",
                  "--message", "Fixed.", "--next-update", "30m")  # fmt: skip
    assert refused.code == 2 and "a resolved update promises no next update" in refused.stderr

    # The rest through `preview`'s code path in this process: nothing is written.
    settings = load_settings(path)

    def preview(**fields: str) -> dict:
        request = {"incident_id": incident, "status": "monitoring", "message": "Watching.", "channels": ["webhook"]}
        return broadcasts.preview(settings, parse_request({**request, **fields}))["webhook"].data["update"]

    assert preview(next_update_by="2099-01-01T12:00Z")["next_update_by"] == "2099-01-01T12:00:00+00:00"
    assert preview(next_update_by="2099-01-01T12:00")["next_update_by"] == "2099-01-01T12:00:00+00:00"  # UTC
    assert preview(incident_id="", title="Blurry avatars", impact="minor")["next_update_by"] is None  # no cadence
    for fields, error in (
        ({"next_update_by": "2001-01-01T00:00Z"}, "is not in the future"),
        ({"next_update_in": "soon"}, "not a duration"),
        ({"next_update_in": "1h", "next_update_by": "2099-01-01T12:00Z"}, "not both"),
    ):
        with pytest.raises(InputError, match=error):
            preview(**fields)


# --- the templates of every lifecycle event, for every channel type --------------------------------------------

PARTS = {
    "webhook": ["title.txt", "body.md", "body.html"],
    "email": ["subject.txt", "body.txt", "body.html"],
    "twitter": ["tweet.txt"],
    "slack": ["text.txt", "blocks.json"],
    "sms": ["body.txt"],
}
STEP_NAMES = ["scheduled", "upcoming", "started", "completed"]
FOLDERS = ["reminder", "holding", *(f"maintenance-{s}" for s in STEP_NAMES), "postmortem"]


def event_context(folder: str, escalated: bool = False) -> dict[str, Any]:
    """What `broadcast_event` gives the templates of ``folder``, built by the lifecycle modules themselves."""
    settings = load_settings(public_url="https://status.example.com")
    now = utcnow()
    incident = Incident(id="01JLIFECYCLE00000000000000", title="Checkout <is> failing & slow", status="identified",
                        impact="major", components=["Checkout"], created_at=now - timedelta(hours=1))  # fmt: skip
    update = Update(id="01JUPDATE0000000000000000", status="identified", message="A bad deploy; rolling back.",
                    created_at=now - timedelta(minutes=40), next_update_by=now - timedelta(minutes=10))  # fmt: skip
    context = render_context(settings, f"incident.{folder}", incident, update, [update])
    if folder in ("reminder", "holding"):
        silence = Silence(incident.id, update.id, "identified", "major", update.created_at,
                          now - timedelta(minutes=10), timedelta(minutes=30))  # fmt: skip
        event = reminders.REMINDER if folder == "reminder" else reminders.HOLDING
        return {**context, **reminders._context(settings, silence, incident, 2 if escalated else 1, now, event)}
    if folder.startswith("maintenance-"):
        step = {name: number for number, name in maintenance.STEPS.items()}[folder.removeprefix("maintenance-")]
        window = Maintenance(id="01JWINDOW0000000000000000", incident_id=incident.id, title="Database upgrade",
                             message="Read-only for a few minutes.", components=["Checkout"], channels=[],
                             starts_at=now + timedelta(hours=1), ends_at=now + timedelta(hours=2),
                             remind_at=now, step=step)  # fmt: skip
        return {**context, "update": None, **maintenance.context(settings, window, incident, step, now)}
    report = "# Outage report\n\nA bad deploy broke checkout for 42 minutes.\n"
    facts = read_report(report, incident.title)
    url = f"{incident_view(incident, settings.public_url)['url']}/postmortem"
    return {**context, "postmortem": {**facts, "markdown": report, "url": url, "revision": 1, "id": "01JPM"}}


@pytest.mark.parametrize("kind", sorted(PARTS))
@pytest.mark.parametrize("folder", FOLDERS)
def test_every_event_has_its_own_templates_for_every_channel(sandbox: Sandbox, kind: str, folder: str) -> None:
    """Each lifecycle event has every part of every channel type (no fallback to the update templates) and
    renders without leaking "None" or template syntax, with the link people follow."""
    for part in PARTS[kind]:
        assert (ROOT / "templates" / kind / folder / f"{part}.j2").is_file(), f"{kind}/{folder}/{part}.j2"
    channel = channel_types()[kind](kind, channel_types()[kind].Config.model_validate(sandbox.channel_config(kind)))
    for escalated in (False, True) if folder == "reminder" else (False,):
        context = event_context(folder, escalated)
        message = render(channel, folder, context)
        text = "\n".join(message.parts.values())
        assert "None" not in text and "{{" not in text and "{%" not in text, text
        links = [context["incident"]["url"], context.get("postmortem", {}).get("url", "-")]
        assert any(link in text or link.replace("&", "&amp;") in text for link in links), text
        if kind == "twitter":
            assert all(weighted_length(t) <= 280 for t in message.data["tweets"])
        if folder == "reminder":
            assert "broadcaster send --incident 01JLIFECYCLE00000000000000" in text
            assert ("Escalated" in text or "ESCALATED" in text) is escalated
        if folder == "holding":
            assert "Next update by" in text
