"""A channel type from outside the broadcaster, added as the README's "Adding a channel" says.

The type (``note``: a JSON POST to a notes service) is defined here, with its emulator; a distribution's
metadata written at run time declares it in the ``broadcaster.channels`` entry-point group, exactly as an
installed plugin would. It ships no templates, so it renders from the generic defaults; ``broadcaster check``,
``preview`` and ``send`` (in separate processes, as a user runs them) list it, render it and send it to its
emulator.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from broadcaster.core.errors import PermanentError, RateLimited, TransientError
from broadcaster.rendering import render
from broadcaster.sandbox import Sandbox
from broadcaster.testing import Result, run_cli, write_config
from channels import Channel, Message, SendContext, SendResult, channel_types
from channels.base import HttpChannelConfig, retry_after_seconds
from channels.emulation import Answer, Emulator, Faults, Request
from channels.registry import ENTRY_POINT_GROUP, emulator_types, rescan

LINK = "https://status.example.com/incidents/"


# --- the plugin: a channel and its emulator ------------------------------------------------------------------


class NoteConfig(HttpChannelConfig):
    url: str


class NoteChannel(Channel[NoteConfig]):
    """Posts ``{"title", "text"}`` to ``url``; the notes service answers with the note's id."""

    type: ClassVar[str] = "note"
    Config = NoteConfig
    templates: ClassVar[dict[str, str]] = {"title": "title.txt", "text": "body.txt"}
    emulator = f"{__name__}:NoteEmulator"

    def send(self, message: Message, target: str, context: SendContext) -> SendResult:
        payload = {"title": message.parts["title"], "text": message.parts["text"], "id": context.delivery_id}
        try:
            answer = httpx.post(self.config.url, json=payload, timeout=self.config.timeout.total_seconds())
        except httpx.HTTPError as exc:
            raise TransientError(f"cannot reach the notes service: {type(exc).__name__}") from exc
        if answer.status_code == 429:
            raise RateLimited("the notes service is busy", retry_after_seconds(answer.headers.get("retry-after")))
        if answer.status_code >= 500:
            raise TransientError(f"the notes service answered HTTP {answer.status_code}")
        if answer.status_code >= 300:
            raise PermanentError(f"the notes service refused the note: HTTP {answer.status_code}")
        return SendResult(provider_id=str(answer.json()["note"]))

    def check(self) -> str:
        try:
            answer = httpx.get(f"{self.config.url}/health", timeout=self.config.timeout.total_seconds())
        except httpx.HTTPError as exc:
            raise TransientError(f"cannot reach the notes service: {type(exc).__name__}") from exc
        if answer.status_code != 200:
            raise PermanentError(f"the notes service answered HTTP {answer.status_code}")
        return "the notes service is up"


class NoteEmulator(Emulator):
    type = "note"

    def install(self) -> None:
        self.sandbox.http.route("POST", r"/notes/(?P<name>[a-z0-9-]+)", "note.post", self.post)
        self.sandbox.http.route("GET", r"/notes/(?P<name>[a-z0-9-]+)/health", "note.health", self.health)

    def post(self, request: Request, match: re.Match[str]) -> Answer:
        note = len(self.sandbox.http.received("note.post")) + 1  # this request is recorded once answered
        request.note.update(request.json, note=note)
        return Answer(201, {"note": note})

    def health(self, request: Request, match: re.Match[str]) -> Answer:
        return Answer(200, {"ok": True})

    def faults(self) -> Faults:
        return Faults("note.post", Answer(429, headers={"Retry-After": "3"}), Answer(503), Answer(400))

    def channel_config(self, name: str) -> dict[str, Any]:
        return {"type": "note", "url": f"{self.sandbox.http.url}/notes/{name}"}


# --- installed as a plugin -------------------------------------------------------------------------------------


def install_plugin(site: Path) -> None:
    """A distribution's metadata in ``site``, declaring the note type as an installed plugin does."""
    info = site / "outage_note-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: outage-note\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nnote = {__name__}:NoteChannel\n")


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The plugin installed in this process and for the commands run; the environment those need."""
    site = tmp_path / "site"
    install_plugin(site)
    monkeypatch.syspath_prepend(str(site))
    rescan()
    root = Path(__file__).resolve().parent.parent
    yield {"PYTHONPATH": os.pathsep.join([str(site), str(root), os.environ.get("PYTHONPATH", "")])}
    monkeypatch.undo()
    rescan()


@pytest.fixture
def notes(plugin: dict[str, str]) -> Iterator[Sandbox]:
    """A sandbox of its own: the session's started before the plugin was installed, so it has no note emulator."""
    with Sandbox() as sandbox:
        yield sandbox


def context(message: str) -> dict[str, Any]:
    update = {"id": "01U", "status": "identified", "message": message, "created_at": "2024-05-01T10:00:00+00:00"}
    incident = {
        "id": "01I",
        "title": "Checkout is failing",
        "status": "identified",
        "impact": "major",
        "components": ["Checkout"],
        "created_at": "2024-05-01T10:00:00+00:00",
        "url": LINK + "01I",
    }
    return {"event": "incident.update", "incident": incident, "update": update, "timeline": [update]}


# --- the tests -------------------------------------------------------------------------------------------------


def test_the_registry_finds_the_plugin_through_its_entry_point(plugin: dict[str, str]) -> None:
    assert channel_types()["note"] is NoteChannel
    assert emulator_types()["note"] is NoteEmulator
    assert {"email", "slack", "sms", "twitter", "webhook"} <= set(channel_types())


def test_a_type_without_templates_renders_from_the_generic_defaults(plugin: dict[str, str]) -> None:
    """Title, status, message and link, in each part's format."""
    channel = NoteChannel("notes", NoteConfig.model_validate({"type": "note", "url": "http://127.0.0.1:9/notes"}))
    message = render(channel, "identified", context("A fix is rolling out."))

    assert message.parts == {
        "title": "Identified: Checkout is failing",
        "text": f"Identified: Checkout is failing\n\nA fix is rolling out.\n{LINK}01I",
    }


def test_a_plugin_s_own_templates_come_before_the_generic_ones(tmp_path: Path) -> None:
    """``templates_dir``, laid out as ``templates/``: a part it ships is used; one it lacks is generic."""
    shipped = tmp_path / "templates" / "note" / "default"
    shipped.mkdir(parents=True)
    (shipped / "body.txt.j2").write_text("{{ incident.title }} ({{ update.status }}) {{ incident.url }}\n")

    class ShippingNoteChannel(NoteChannel):
        templates_dir = tmp_path / "templates"

    config = NoteConfig.model_validate({"type": "note", "url": "http://127.0.0.1:9/notes"})
    message = render(ShippingNoteChannel("notes", config), "identified", context("unused"))
    assert message.parts == {
        "title": "Identified: Checkout is failing",
        "text": f"Checkout is failing (identified) {LINK}01I",
    }


def test_check_preview_and_send_take_the_plugin_like_any_channel(
    plugin: dict[str, str], notes: Sandbox, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "broadcaster.toml",
        {
            "broker_url": "",
            "database_url": f"sqlite:///{tmp_path / 'log.db'}",
            "public_url": "https://status.example.com",
            "channels": {"notes": notes.channel_config("note", "notes")},
        },
    )

    def cli(*args: str) -> Result:
        return run_cli(*args, "--config", str(config), env=plugin)

    checked = cli("check")
    assert checked.code == 0, checked.stderr
    assert "notes (note): ready: the notes service is up" in checked.stdout

    update = ("--title", "Checkout is failing", "--status", "investigating", "--message", "Payments time out.")
    previewed = cli("preview", *update)
    assert previewed.code == 0, previewed.stderr
    assert "notes (note)" in previewed.stdout
    assert "Investigating: Checkout is failing" in previewed.stdout and "Payments time out." in previewed.stdout
    assert notes.http.received("note.post") == []  # a preview sends nothing

    sent = cli("send", *update, "--json")
    assert sent.code == 0, sent.stderr
    summary = json.loads(sent.stdout)
    (delivery,) = summary["deliveries"]
    assert summary["status"] == "delivered"
    assert (delivery["channel"], delivery["type"], delivery["provider_id"]) == ("notes", "note", "1")

    (received,) = notes.http.received("note.post")
    assert received.note["title"] == "Investigating: Checkout is failing"
    assert received.note["text"].startswith("Investigating: Checkout is failing\n\nPayments time out.\n")
    assert received.note["text"].endswith(f"/incidents/{summary['incident_id']}")
    assert received.note["id"] == delivery["id"]


def test_an_unknown_type_names_the_known_ones_including_plugins(plugin: dict[str, str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.toml", {"channels": {"x": {"type": "notez", "url": "http://127.0.0.1:9"}}})
    result = run_cli("check", "--config", str(config), env=plugin)
    assert result.code == 2
    assert "channels.x.type must be one of email, note, slack, sms, twitter, webhook, not 'notez'" in result.stderr
