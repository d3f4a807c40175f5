"""The slack channel through the real slack-sdk, over HTTP, against the sandbox's Slack emulator."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broadcaster.core.errors import PermanentError, RateLimited, TransientError
from broadcaster.domain.broadcasts import incident_view, update_view
from broadcaster.rendering import render
from broadcaster.sandbox import Answer, Sandbox
from broadcaster.sandbox.smtp import free_port
from broadcaster.store.models import Impact, Incident, IncidentStatus, Update, new_id, utcnow
from broadcaster.testing import Result
from channels import Channel, Message, SendContext, SendResult, channel_types
from channels.slack.emulator import POST_ONLY_TOKEN, REVOKED_TOKEN, TOKEN, WEBHOOK_PATH

PUBLIC_URL = "https://status.example.com"
TITLE = "Checkout is failing"
SLACK: Any = channel_types()["slack"]
MESSAGE = "Payments fail for some customers. We found the cause & are rolling back."


def make_context(
    message: str = MESSAGE,
    title: str = TITLE,
    components: list[str] | None = None,
    status: IncidentStatus = IncidentStatus.identified,
) -> dict[str, Any]:
    """The template context, built from the models as ``broadcaster.domain.broadcasts.render_all`` builds it."""
    now = utcnow()
    incident = Incident(
        id=new_id(), title=title, status=status, impact=Impact.major,
        components=["Checkout", "API"] if components is None else components, created_at=now,
    )  # fmt: skip
    update = Update(id=new_id(), incident_id=incident.id, status=status, message=message, created_at=now)
    return {
        "event": "incident.update",
        "incident": incident_view(incident, PUBLIC_URL),
        "update": update_view(update),
        "timeline": [update_view(update)],
        "public_url": PUBLIC_URL,
    }


def slack(sandbox: Sandbox, **overrides: Any) -> Channel:  # type: ignore[type-arg]
    """A bot-mode slack channel named "ops" pointing at the sandbox."""
    table = {**sandbox.channel_config("slack", "ops"), **overrides}
    return SLACK("ops", SLACK.Config.model_validate(table))


def webhook_slack(sandbox: Sandbox, **overrides: Any) -> Channel:  # type: ignore[type-arg]
    """An incoming-webhook slack channel pointing at the sandbox."""
    table = {**sandbox.emulators["slack"].webhook_config("ops"), **overrides}  # type: ignore[attr-defined]
    return SLACK("ops", SLACK.Config.model_validate(table))


def rendered(channel: Channel, **context: Any) -> Message:  # type: ignore[type-arg]
    return render(channel, "investigating", make_context(**context))


def send(channel: Channel, message: Message | None = None) -> SendResult:  # type: ignore[type-arg]
    message = message or rendered(channel)
    return channel.send(message, channel.targets()[0], SendContext(delivery_id=new_id(), attempt=1))


def mrkdwn_texts(blocks: list[dict[str, Any]]) -> list[str]:
    texts = []
    for block in blocks:
        if isinstance(block.get("text"), dict):
            texts.append(block["text"]["text"])
        texts += [item["text"] for item in block.get("fields", []) + block.get("elements", [])]
    return texts


# --- posting with a bot token ------------------------------------------------------------------------------


def test_bot_posts_block_kit_message_and_records_its_ts(sandbox: Sandbox) -> None:
    """One chat.postMessage with the bearer token, fallback text and valid blocks; the provider id is the ts."""
    channel = slack(sandbox)
    assert channel.targets() == ["#incidents"]
    message = rendered(channel)
    result = send(channel, message)

    (post,) = sandbox.http.received("slack.post")
    assert post.path == "/api/chat.postMessage"
    assert post.header("Authorization") == f"Bearer {TOKEN}"
    assert post.status == 200
    body = post.json
    assert body["channel"] == "#incidents"
    assert body["text"].startswith(f"[Identified] {TITLE}\n")
    assert "the cause &amp; are rolling back" in body["text"]
    blocks = body["blocks"]
    assert blocks == message.data["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": TITLE, "emoji": True}}
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields == ["*Status*\n:large_orange_circle: Identified", "*Impact*\nMajor", "*Components*\nCheckout, API"]
    assert blocks[2]["text"] == {"type": "mrkdwn", "text": MESSAGE.replace("&", "&amp;")}
    link = blocks[3]["elements"][0]["text"]
    assert re.match(rf"<{PUBLIC_URL}/incidents/[0-9A-Z]{{26}}\|Follow the incident> · posted ", link)

    assert re.fullmatch(r"\d{10}\.\d{6}", post.note["ts"])
    assert result.provider_id == post.note["ts"]
    assert result.note == "posted in C0123"
    again = send(channel, message)
    assert float(again.provider_id or 0) > float(result.provider_id or 0)


def test_channel_may_be_given_by_id(sandbox: Sandbox) -> None:
    channel = slack(sandbox, channel="C0123")
    result = send(channel)
    (post,) = sandbox.http.received("slack.post")
    assert post.json["channel"] == "C0123"
    assert result.provider_id == post.note["ts"]


def test_user_text_cannot_mention_everyone_or_make_links(sandbox: Sandbox) -> None:
    """&, < and > in what people write reach Slack as entities: no @channel, no disguised link."""
    channel = slack(sandbox)
    message = rendered(
        channel,
        title="Login <broken> & slow",
        message="<!channel> see <https://evil.example|the fix> & retry",
        components=["<Auth>"],
    )
    send(channel, message)
    body = sandbox.http.received("slack.post")[0].json
    for text in [body["text"], *mrkdwn_texts(body["blocks"])]:
        assert "<!channel>" not in text and "<https://evil" not in text
    assert body["blocks"][2]["text"]["text"] == (
        "&lt;!channel&gt; see &lt;https://evil.example|the fix&gt; &amp; retry"
    )
    assert body["blocks"][1]["fields"][2]["text"] == "*Components*\n&lt;Auth&gt;"
    # The header is plain_text, which Slack shows as written.
    assert body["blocks"][0]["text"]["text"] == "Login <broken> & slow"
    assert body["text"].startswith("[Identified] Login &lt;broken&gt; &amp; slow")
    # What people read in a preview is the plain text; only what Slack receives is escaped.
    assert message.parts["text"].startswith("[Identified] Login <broken> & slow")
    assert "<!channel> see <https://evil.example|the fix> & retry" in message.parts["text"]


def test_long_update_is_split_over_sections_and_long_title_shortened(sandbox: Sandbox) -> None:
    """Nothing written is lost to Slack's 3,000-character section limit; the header keeps to 150."""
    channel = slack(sandbox)
    paragraphs = [f"Paragraph {n}: " + "the payment provider is degraded; " * 40 for n in range(8)]
    long_message = "\n\n".join(paragraphs)
    message = rendered(channel, title="Checkout " * 30, message=long_message)

    sections = [b for b in message.data["blocks"] if b["type"] == "section" and "text" in b]
    assert len(sections) > 3
    assert all(len(s["text"]["text"]) <= 3000 for s in sections)
    assert "\n\n".join(s["text"]["text"] for s in sections).split() == long_message.split()
    header = message.data["blocks"][0]["text"]["text"]
    assert len(header) <= 150 and header.endswith("…")
    assert any("title shortened to 150" in w for w in message.warnings)
    assert any("notification text shortened to 4000" in w for w in message.warnings)
    assert message.size["text_chars"] <= 4000
    assert message.size["blocks"] == len(message.data["blocks"])

    result = send(channel, message)  # the emulator checks Block Kit's limits independently
    (post,) = sandbox.http.received("slack.post")
    assert result.provider_id == post.note["ts"]
    assert len(post.json["text"]) == message.size["text_chars"] and post.json["text"].endswith("…")


def test_emoji_count_double_against_the_limits(sandbox: Sandbox) -> None:
    """Lengths are counted in UTF-16 units, never fewer than Slack counts: an emoji title stays within 150."""
    channel = slack(sandbox)
    message = rendered(channel, title="🔥" * 100)
    header = message.data["blocks"][0]["text"]["text"]
    assert len(header.encode("utf-16-le")) // 2 <= 150
    assert header == "🔥" * 74 + "…"
    send(channel, message)


# --- error mapping -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        Answer(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "2"}),
        Answer(200, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "2"}),
    ],
    ids=["http-429", "ratelimited-body"],
)
def test_rate_limit_waits_as_long_as_slack_asks(sandbox: Sandbox, answer: Answer) -> None:
    sandbox.http.script("slack.post", answer)
    with pytest.raises(RateLimited) as caught:
        send(slack(sandbox))
    assert caught.value.retry_after == 2
    assert "ratelimited" in str(caught.value)
    assert len(sandbox.http.received("slack.post")) == 1  # the SDK did not retry on its own


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"token": "xoxb-not-a-real-token"}, "invalid_auth"),
        ({"token": REVOKED_TOKEN}, "token_revoked"),
        ({"channel": "#no-such-channel"}, "channel_not_found"),
        ({"channel": "#general"}, "not_in_channel"),
        ({"channel": "#old-incidents"}, "is_archived"),
    ],
)
def test_slack_refusals_are_permanent(sandbox: Sandbox, overrides: dict[str, str], error: str) -> None:
    """What the emulator answers like Slack does (HTTP 200, ok false) fails at once and says why."""
    channel = slack(sandbox, **overrides)
    with pytest.raises(PermanentError) as caught:
        send(channel)
    reason = str(caught.value)
    assert f"Slack chat.postMessage for {channel.targets()[0]}: {error}" in reason
    assert overrides.get("token", TOKEN) not in reason
    assert len(sandbox.http.received("slack.post")) == 1


def test_not_authed_and_invalid_blocks_are_permanent(sandbox: Sandbox) -> None:
    sandbox.http.script(
        "slack.post",
        Answer(200, {"ok": False, "error": "not_authed"}),
        Answer(200, {"ok": False, "error": "invalid_blocks", "errors": ["must be less than 151 characters"]}),
        Answer(200, {"ok": False, "error": "something_new"}),
    )
    channel = slack(sandbox)
    with pytest.raises(PermanentError, match="not_authed"):
        send(channel)
    with pytest.raises(PermanentError, match="invalid_blocks .*must be less than 151 characters"):
        send(channel)
    with pytest.raises(PermanentError, match="something_new"):
        send(channel)


@pytest.mark.parametrize(
    "answer",
    [
        Answer(500, "<html>Internal Server Error</html>"),
        Answer(503, {"ok": False, "error": "service_unavailable"}),
        Answer(200, {"ok": False, "error": "internal_error"}),
        Answer(200, {"ok": False, "error": "fatal_error"}),
        Answer(200, {"ok": False, "error": "request_timeout"}),
        Answer(close=True),
    ],
    ids=["500-html", "503", "internal_error", "fatal_error", "request_timeout", "connection-closed"],
)
def test_slack_outages_are_transient(sandbox: Sandbox, answer: Answer) -> None:
    sandbox.http.script("slack.post", answer)
    with pytest.raises(TransientError) as caught:
        send(slack(sandbox))
    assert not isinstance(caught.value, RateLimited)
    assert len(sandbox.http.received("slack.post")) == 1


def test_a_hang_is_transient_after_the_timeout(sandbox: Sandbox) -> None:
    sandbox.http.script("slack.post", Answer(hang=True))
    channel = slack(sandbox, timeout="1s")
    started = time.monotonic()
    with pytest.raises(TransientError, match="within 1s"):
        send(channel)
    assert time.monotonic() - started < 5


def test_a_refused_connection_is_transient(sandbox: Sandbox) -> None:
    channel = slack(sandbox, api_base_url=f"http://127.0.0.1:{free_port()}/api/")
    with pytest.raises(TransientError, match="cannot reach Slack at http://127.0.0.1:\\d+/api/"):
        send(channel)


# --- incoming webhooks -------------------------------------------------------------------------------------


def test_webhook_posts_the_same_message(sandbox: Sandbox) -> None:
    channel = webhook_slack(sandbox)
    assert channel.targets() == ["incoming-webhook"]
    message = rendered(channel)
    result = send(channel, message)
    (hook,) = sandbox.http.received("slack.webhook")
    assert hook.path == f"/slack/webhook/{WEBHOOK_PATH}"
    assert hook.status == 200
    assert hook.json["text"] == message.parts["text"].replace("&", "&amp;")
    assert hook.json["blocks"] == message.data["blocks"]
    assert result.provider_id is None  # incoming webhooks answer "ok" and no message id
    assert not sandbox.http.received("slack.post")


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (Answer(404, "no_service"), PermanentError, "HTTP 404: no_service (the incoming webhook was removed"),
        (Answer(403, "invalid_token"), PermanentError, "HTTP 403: invalid_token"),
        (Answer(404, "channel_not_found"), PermanentError, "HTTP 404: channel_not_found"),
        (Answer(410, "channel_is_archived"), PermanentError, "HTTP 410: channel_is_archived"),
        (Answer(500, "rollup_error"), TransientError, "HTTP 500: rollup_error"),
        (Answer(503, "service unavailable"), TransientError, "HTTP 503"),
    ],
)
def test_webhook_errors(sandbox: Sandbox, answer: Answer, error: type[Exception], text: str) -> None:
    sandbox.http.script("slack.webhook", answer)
    with pytest.raises(error) as caught:
        send(webhook_slack(sandbox))
    assert text in str(caught.value)
    assert not isinstance(caught.value, RateLimited)
    assert WEBHOOK_PATH not in str(caught.value) and "webhook/" not in str(caught.value)


def test_webhook_rate_limit(sandbox: Sandbox) -> None:
    sandbox.http.script("slack.webhook", Answer(429, "rate_limited", headers={"Retry-After": "2"}))
    with pytest.raises(RateLimited) as caught:
        send(webhook_slack(sandbox))
    assert caught.value.retry_after == 2
    assert len(sandbox.http.received("slack.webhook")) == 1


def test_unknown_webhook_url_is_permanent_and_not_repeated(sandbox: Sandbox) -> None:
    wrong = sandbox.http.url + "/slack/webhook/T0SANDBOX/B0SANDBOX/revoked-secret"
    with pytest.raises(PermanentError) as caught:
        send(webhook_slack(sandbox, webhook_url=wrong))
    assert "no_service" in str(caught.value)
    assert "revoked-secret" not in str(caught.value)


def test_webhook_unreachable_is_transient(sandbox: Sandbox) -> None:
    url = f"http://127.0.0.1:{free_port()}/slack/webhook/{WEBHOOK_PATH}"
    with pytest.raises(TransientError, match="cannot reach Slack at 127.0.0.1") as caught:
        send(webhook_slack(sandbox, webhook_url=url))
    assert WEBHOOK_PATH not in str(caught.value)


# --- check -------------------------------------------------------------------------------------------------


def test_check_reports_the_bot_and_its_channel(sandbox: Sandbox) -> None:
    """By name the channel is found by paging conversations.list; by ID with conversations.info."""
    assert slack(sandbox).check() == "authenticated as broadcaster in Sandbox; a member of #incidents (C0123)"
    assert len(sandbox.http.received("slack.conversations.list")) >= 1
    assert slack(sandbox, channel="C0123").check().endswith("a member of #incidents (C0123)")
    (info,) = sandbox.http.received("slack.conversations.info")
    assert info.form["channel"] == ["C0123"]
    assert not sandbox.http.received("slack.post")  # a check posts nothing


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"channel": "#general"}, "not a member of #general (C0456): invite it (/invite @broadcaster)"),
        ({"channel": "#ops-private"}, "not a member of #ops-private (G0PRIV)"),  # found on a later page
        ({"channel": "#old-incidents"}, "#old-incidents (C0789) is archived"),
        ({"channel": "#no-such-channel"}, "channel #no-such-channel was not found"),
        ({"channel": "C0999999"}, "channel C0999999 was not found"),
        ({"token": "xoxb-not-a-real-token"}, "Slack auth.test for the workspace: invalid_auth"),
    ],
)
def test_check_says_what_would_stop_a_post(sandbox: Sandbox, overrides: dict[str, str], text: str) -> None:
    with pytest.raises(PermanentError) as caught:
        slack(sandbox, **overrides).check()
    assert text in str(caught.value)
    assert not sandbox.http.received("slack.post")


def test_check_without_channels_read_scope_still_checks_the_token(sandbox: Sandbox) -> None:
    verdict = slack(sandbox, token=POST_ONLY_TOKEN).check()
    assert verdict == (
        "authenticated as broadcaster in Sandbox; cannot see #incidents without the channels:read scope, "
        "so the bot's membership is unchecked"
    )


def test_check_webhook_probes_without_posting(sandbox: Sandbox) -> None:
    """An empty text is refused by Slack (no_text): the URL is live and nothing reached the channel."""
    verdict = webhook_slack(sandbox).check()
    assert verdict.startswith("incoming webhook on 127.0.0.1:")
    assert "is live (it refused an empty probe: no_text); its channel cannot be checked without posting" in verdict
    (probe,) = sandbox.http.received("slack.webhook")
    assert probe.json == {"text": ""} and probe.status == 400
    wrong = sandbox.http.url + "/slack/webhook/T0SANDBOX/B0SANDBOX/revoked-secret"
    with pytest.raises(PermanentError, match="no_service"):
        webhook_slack(sandbox, webhook_url=wrong).check()


# --- the command line --------------------------------------------------------------------------------------


def test_send_through_the_command_line(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    """Embedded mode: one post to Slack, delivered, its ts as the provider id."""
    result = cli(
        "send", "--config", str(embedded_config()), "--title", TITLE, "--status", "identified",
        "--message", MESSAGE, "--component", "Checkout", "--channel", "slack", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = result.json
    assert summary["status"] == "delivered"
    (delivery,) = summary["deliveries"]
    assert delivery["type"] == "slack" and delivery["target"] == "#incidents"
    assert delivery["status"] == "delivered" and delivery["attempts"] == 1
    (post,) = sandbox.http.received("slack.post")
    assert delivery["provider_id"] == post.note["ts"]
    body = post.json
    assert body["blocks"][0]["text"]["text"] == TITLE
    assert f"{PUBLIC_URL}/incidents/{summary['incident_id']}|Follow the incident>" in json.dumps(body["blocks"])


def test_command_line_waits_out_a_rate_limit(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    """A 429 with Retry-After: 1 is retried no sooner than a second later, then delivered."""
    sandbox.http.script("slack.post", Answer(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "1"}))
    result = cli(
        "send", "--config", str(embedded_config()), "--title", TITLE, "--status", "identified",
        "--message", MESSAGE, "--channel", "slack", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    (delivery,) = result.json["deliveries"]
    assert delivery["status"] == "delivered" and delivery["attempts"] == 2
    first, second = sandbox.http.received("slack.post")
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 1.0
    assert delivery["provider_id"] == second.note["ts"]


def test_check_through_the_command_line(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    result = cli("check", "--config", str(embedded_config()))
    line = next(line for line in result.stdout.splitlines() if line.startswith("slack (slack)"))
    assert line == "slack (slack): ready: authenticated as broadcaster in Sandbox; a member of #incidents (C0123)"
