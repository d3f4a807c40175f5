"""What messages say and cost: HTML escaping everywhere, the SMS segment ceiling, impact wording, the example.

Rendered through the real path (``broadcaster.rendering`` with the contexts the broadcasts, reminders,
maintenance and post-mortems build, and the ``preview``/``send``/``check`` commands); SMS and HTML checked in
what the sandbox's emulators received.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from broadcaster.domain import maintenance, reminders
from broadcaster.domain.broadcasts import render_channel, render_context
from broadcaster.domain.postmortem import read_report
from broadcaster.sandbox import Sandbox
from broadcaster.sandbox.smtp import free_port
from broadcaster.settings import Settings, load_settings
from broadcaster.store.models import Incident, Maintenance, Update
from broadcaster.testing import Result, write_config
from channels import Message

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_URL = "https://status.example.com"
INCIDENT_ID = "01JMESSAGES00000000000000"
LINK = f"{PUBLIC_URL}/incidents/{INCIDENT_ID}"
KINDS = ["webhook", "email", "twitter", "slack", "sms"]

SCRIPT, IMG, ENTITY = "<script>alert(1)</script>", '"><img src=x onerror=1>', "&amp;"
MARKUP = f"{SCRIPT} {IMG} {ENTITY}"
COMPONENTS = [SCRIPT, IMG, f"R{ENTITY}D"]
#: every template folder, and the event that renders it
EVENTS = [
    *(("incident.update", status) for status in ("investigating", "identified", "monitoring", "resolved")),
    ("incident.reminder", "reminder"),
    ("incident.holding", "holding"),
    *((maintenance.EVENTS[step], maintenance.EVENTS[step].split(".")[1]) for step in sorted(maintenance.EVENTS)),
    ("incident.postmortem", "postmortem"),
]


def channel_settings(sandbox: Sandbox, folder: Path, **channel_keys: Any) -> Settings:
    """One channel of each type, named after its type, pointing at the sandbox (nothing is sent)."""
    channels = {kind: {**sandbox.channel_config(kind, kind), **channel_keys.get(kind, {})} for kind in KINDS}
    return load_settings(write_config(folder / "broadcaster.toml", {"public_url": PUBLIC_URL, "channels": channels}))


def render_event(settings: Settings, kind: str, event: str, folder: str, impact: str = "major") -> Message:
    """``kind``'s message for ``event``, from the context the broadcaster builds for it."""
    now = datetime.now(UTC)
    status = folder if folder in ("investigating", "identified", "monitoring", "resolved") else "identified"
    incident = Incident(
        id=INCIDENT_ID, title=MARKUP, status=status, impact=impact, components=COMPONENTS, created_at=now
    )
    update = Update(id="01JMESSAGESUPDATE00000000", status=status, message=MARKUP, created_at=now, next_update_by=now)
    extra: dict[str, Any] = {}
    if event in (reminders.REMINDER, reminders.HOLDING):
        since = now - timedelta(hours=1)
        silence = reminders.Silence(incident.id, update.id, status, impact, since, since, timedelta(minutes=30))
        extra = reminders._context(settings, silence, incident, 2, now, event)
    elif event in maintenance.EVENTS.values():
        step = next(s for s, e in maintenance.EVENTS.items() if e == event)
        window = Maintenance(
            id="01JMESSAGESWINDOW00000000", incident_id=incident.id, title=MARKUP, message=MARKUP,
            components=COMPONENTS, channels=[], starts_at=now, ends_at=now + timedelta(hours=1), step=step,
        )  # fmt: skip
        extra = maintenance.context(settings, window, incident, step, now)
    elif event == "incident.postmortem":
        report = f"# {MARKUP}\n\n{MARKUP}\n\n<p onclick=1>{SCRIPT}</p>"
        extra = {
            "postmortem": {**read_report(report, MARKUP), "markdown": report, "url": f"{LINK}/postmortem",
                           "revision": 2, "id": "01JMESSAGESPM000000000000"}
        }  # fmt: skip
    context = {**render_context(settings, event, incident, update, [update]), **extra}
    return render_channel(settings, kind, folder, context)


class _Page(HTMLParser):
    """The elements, attributes and text of an HTML part, as a browser would read them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.text = ""
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]

    def handle_data(self, data: str) -> None:
        self.text += data


def assert_html_escaped_once(html: str) -> None:
    """No element or attribute came from the input, and its text reads exactly as typed (not escaped twice)."""
    page = _Page(html)
    assert not {"script", "img"} & set(page.tags), page.tags
    assert not [a for a in page.attributes if a.startswith("on")], page.attributes
    assert SCRIPT in page.text, html
    assert "&lt;" not in page.text and "&amp;amp;" not in page.text, page.text


def assert_plain_text(text: str) -> None:
    """A text part shows the input as typed: never HTML-escaped."""
    assert SCRIPT in text, text
    for escaped in ("&lt;", "&gt;", "&#34;", "&quot;", "&amp;amp;"):
        assert escaped not in text, text


def mrkdwn_texts(value: Any) -> list[str]:
    """Every mrkdwn text in Slack blocks."""
    if isinstance(value, list):
        return [t for v in value for t in mrkdwn_texts(v)]
    if not isinstance(value, dict):
        return []
    own = [value["text"]] if value.get("type") == "mrkdwn" and isinstance(value.get("text"), str) else []
    return own + [t for v in value.values() for t in mrkdwn_texts(v)]


# --- 1. every value in every HTML part is escaped --------------------------------------------------------


@pytest.mark.parametrize(("event", "folder"), EVENTS, ids=[folder for _, folder in EVENTS])
def test_every_html_part_is_escaped_and_no_text_part_is(
    sandbox: Sandbox, tmp_path: Path, event: str, folder: str
) -> None:
    settings = channel_settings(sandbox, tmp_path)
    html_parts = 0
    for kind in KINDS:
        message = render_event(settings, kind, event, folder)
        for part, text in message.parts.items():
            if "html" in part:
                html_parts += 1
                assert_html_escaped_once(text)
            else:
                assert_plain_text(text)
        if kind == "slack":  # mrkdwn escapes "&", "<" and ">" once (Slack's own rule); the header is plain text
            mrkdwn = " ".join(mrkdwn_texts(message.data["blocks"]))
            assert "<script" not in mrkdwn and "<img" not in mrkdwn and "&amp;lt;" not in mrkdwn, mrkdwn
    assert html_parts == 2  # the email's and the blog's


def test_markup_in_components_reaches_no_inbox_or_blog_raw(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    """The probe of the review, as a user runs it: what the SMTP server and the blog received is escaped."""
    config = embedded_config()
    components = [arg for c in COMPONENTS for arg in ("--component", c)]
    result = cli(
        "send", "--config", str(config), "--title", MARKUP, "--status", "investigating", "--message", MARKUP,
        *components, "--channel", "email", "--channel", "webhook", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr

    (hook,) = sandbox.http.received("webhook")
    assert_html_escaped_once(hook.json["rendered"]["html"])
    assert_plain_text(hook.json["rendered"]["markdown"])
    mails = sandbox.smtp.received()
    assert mails
    for mail in mails:
        parts = {part.get_content_type(): part.get_content() for part in mail.message.iter_parts()}
        assert_html_escaped_once(parts["text/html"])
        assert_plain_text(parts["text/plain"])
        assert all(c in parts["text/plain"] for c in COMPONENTS)
        assert all(c in _Page(parts["text/html"]).text for c in COMPONENTS)


# --- 2. the SMS cost ceiling -----------------------------------------------------------------------------

LONG = {
    "GSM-7": "Card payments time out for some customers and PayPal answers with errors; we are on it. " * 12,
    "UCS-2": "一部のお客様でカード決済がタイムアウトしています。 PayPal もエラーを返しています。 対応中です。 " * 12,
}
#: (characters in one segment, in each part of a longer message): GSM-7 septets, UCS-2 UTF-16 units
SIZES = {"GSM-7": (160, 153), "UCS-2": (70, 67)}
LINK_AT_END = re.compile(r"\n(https://status\.example\.com/incidents/[0-9A-Z]{26})$")


def billed_segments(body: str, encoding: str) -> int:
    """Segments by the carriers' arithmetic, written out here rather than taken from the channel."""
    from channels.sms.gsm import GSM_EXTENDED

    units = (
        len(body) + sum(c in GSM_EXTENDED for c in body) if encoding == "GSM-7" else len(body.encode("utf-16-le")) // 2
    )
    single, part = SIZES[encoding]
    return 1 if units <= single else -(-units // part)


@pytest.mark.parametrize(("encoding", "limit"), [("GSM-7", 3), ("UCS-2", 3), ("GSM-7", 1), ("UCS-2", 1)])
def test_a_long_sms_is_cut_to_max_segments_in_preview_and_in_what_twilio_receives(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox, encoding: str, limit: int
) -> None:
    sandbox.emulators["sms"].reset()
    config = embedded_config(channels={"sms": {**sandbox.channel_config("sms", "sms"), "max_segments": limit}})
    options = ("--config", str(config), "--title", "Payments failing", "--status", "investigating",
               "--message", LONG[encoding], "--channel", "sms")  # fmt: skip
    shown = cli("preview", *options)
    assert shown.code == 0, shown.stderr
    plural = "s" if limit > 1 else ""
    cut = re.search(
        rf"warning: cut to {limit} segment{plural} \(max_segments; the full text takes (\d+)\)", shown.stdout
    )
    assert cut and int(cut.group(1)) >= 7, shown.stdout
    assert f"segments: {limit}, encoding: {encoding}" in shown.stdout
    assert f"full_segments: {cut.group(1)}" in shown.stdout
    assert re.search(r"https://status\.example\.com/incidents/[0-9A-Z]{26}", shown.stdout)

    sent = cli("send", *options, "--json")
    assert sent.code == 0, sent.stderr
    received = sandbox.http.received("twilio.message")
    assert len(received) == len(sandbox.channel_config("sms")["recipients"])
    ellipsis = "…" if encoding == "UCS-2" else "..."  # "…" is not GSM-7: it would make the whole SMS UCS-2
    for request in received:
        body = request.form["Body"][0]
        link = LINK_AT_END.search(body)
        assert link and link.group(1) == f"{PUBLIC_URL}/incidents/{sent.json['incident_id']}", body
        assert body[: link.start()].endswith(ellipsis), body
        assert billed_segments(body, encoding) <= limit, body
        if limit > 1:  # the ceiling is used, not undershot
            assert billed_segments(body, encoding) == limit
            assert body.startswith("Investigating: Payments failing\n")


# --- 3. impact "none" reads as no customer impact --------------------------------------------------------

IMPACT_EVENTS = [("incident.update", "investigating"), ("incident.update", "resolved"),
                 ("incident.reminder", "reminder"), ("incident.holding", "holding")]  # fmt: skip


def shown_texts(message: Message) -> str:
    html = [_Page(t).text for p, t in message.parts.items() if "html" in p]
    plain = [t for p, t in message.parts.items() if "html" not in p]
    return "\n".join([*html, *plain, *mrkdwn_texts(message.data.get("blocks", []))])


@pytest.mark.parametrize(("event", "folder"), IMPACT_EVENTS, ids=[f for _, f in IMPACT_EVENTS])
def test_impact_none_says_no_customer_impact_on_every_channel_that_shows_impact(
    sandbox: Sandbox, tmp_path: Path, event: str, folder: str
) -> None:
    settings = channel_settings(sandbox, tmp_path)
    for kind in KINDS:
        none = shown_texts(render_event(settings, kind, event, folder, impact="none"))
        major = shown_texts(render_event(settings, kind, event, folder, impact="major"))
        assert not re.search(r"(?i)impact\W{0,3}none", none), none
        assert "None" not in none
        shows_impact = re.search(r"(?i)impact\W{0,3}major", major)
        assert bool(shows_impact) == bool(re.search(r"(?i)no customer impact", none)), (kind, none)
        if kind in ("email", "webhook", "slack"):
            assert shows_impact, (kind, major)


def test_slack_preview_with_impact_none(cli: Callable[..., Result], embedded_config: Callable[..., Path]) -> None:
    result = cli(
        "preview", "--config", str(embedded_config()), "--title", "Slow dashboard", "--status", "monitoring",
        "--message", "Dashboards load slowly.", "--impact", "none", "--channel", "slack", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    slack = result.json["slack"]
    assert "*Impact*\nNo customer impact" in [f["text"] for f in slack["data"]["blocks"][1]["fields"]]
    assert "No customer impact" in slack["parts"]["text"]


# --- 4. the shipped example ------------------------------------------------------------------------------


def example_env() -> dict[str, str]:
    """config/example.env as a process manager reads it."""
    pairs = (line.partition("=") for line in (ROOT / "config" / "example.env").read_text().splitlines())
    return {key.strip(): value.strip() for key, sep, value in pairs if sep and not key.lstrip().startswith("#")}


def test_the_example_configuration_loads_as_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("BROADCASTER_") and k != "BROADCASTER_TEST_POSTGRES_URL"]:
        monkeypatch.delenv(key)
    for key, value in example_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT)

    settings = load_settings(os.environ["BROADCASTER_CONFIG"])

    assert list(settings.channels) == ["blog", "customers", "x", "ops", "sms"]
    assert settings.broker_url == "redis://localhost:6379/0"
    assert settings.channels["sms"].max_segments == 3


def test_check_of_the_example_says_what_is_not_ready_channel_by_channel(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    """Every provider host replaced by a closed loopback port: one line per channel, no traceback, no secret."""
    port = free_port()
    closed = f"127.0.0.1:{port}"
    env = {
        **example_env(),
        "BROADCASTER_DATABASE_URL": f"sqlite:///{tmp_path / 'broadcaster.db'}",
        "BROADCASTER_BROKER_URL": f"redis://{closed}/0",
        "BROADCASTER_CHANNELS__BLOG__URL": f"http://{closed}/hooks/status",
        "BROADCASTER_CHANNELS__CUSTOMERS__HOST": "127.0.0.1",
        "BROADCASTER_CHANNELS__CUSTOMERS__PORT": str(port),
        "BROADCASTER_CHANNELS__X__API_BASE_URL": f"http://{closed}",
        "BROADCASTER_CHANNELS__OPS__API_BASE_URL": f"http://{closed}/api/",
        "BROADCASTER_CHANNELS__SMS__API_BASE_URL": f"http://{closed}",
        "COLUMNS": "60",  # a narrow terminal must not wrap a channel's line
    }

    result = cli("check", "--config", "config/broadcaster.example.toml", env=env, cwd=ROOT, timeout=60)

    assert result.code == 1, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        "blog (webhook)", "customers (email)", "x (twitter)", "ops (slack)", "sms (sms)"
    ]  # fmt: skip
    assert all(line.split(": ")[1] == "not ready" and closed in line for line in lines), lines
    assert "Traceback" not in result.stdout + result.stderr and result.stderr == ""
    secrets = {v for k, v in example_env().items() if k.endswith(("TOKEN", "SECRET", "PASSWORD", "KEY"))}
    assert all(secret not in result.stdout for secret in secrets)
