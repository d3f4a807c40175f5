"""The sms channel through the real twilio SDK, against the sandbox's Twilio emulator."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broadcaster.core.errors import PermanentError, RateLimited, TransientError
from broadcaster.rendering import render
from broadcaster.sandbox import Answer, Sandbox
from broadcaster.sandbox.smtp import free_port
from channels import Message, SendContext, channel_types
from channels.sms import SmsChannel, SmsConfig
from channels.sms.emulator import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    MESSAGING_SERVICE_SID,
    RECIPIENTS,
    TwilioEmulator,
)

MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
SID = re.compile(r"^SM[0-9a-f]{32}$")
URL = "https://status.example.com/incidents/01J0000000000000000000000"


@pytest.fixture
def twilio(sandbox: Sandbox) -> Iterator[TwilioEmulator]:
    """The Twilio emulator with no rejected numbers, left that way for the next test."""
    emulator = sandbox.emulators["sms"]
    assert isinstance(emulator, TwilioEmulator)
    emulator.reset()
    yield emulator
    emulator.reset()


def make_channel(sandbox: Sandbox, **overrides: Any) -> SmsChannel:
    table = {**sandbox.channel_config("sms"), **overrides}
    cls = channel_types()["sms"]
    assert cls is SmsChannel and cls.Config is SmsConfig
    return SmsChannel("sms", SmsConfig.model_validate({k: v for k, v in table.items() if v is not None}))


def update_context(
    message: str, title: str = "Elevated API error rates", status: str = "investigating"
) -> dict[str, Any]:
    """A rendering context shaped like the one ``broadcaster.domain.broadcasts.render_all`` builds."""
    update = {
        "id": "01J0000000000000000000000U",
        "status": status,
        "message": message,
        "created_at": "2024-05-01T10:00:00+00:00",
    }
    return {
        "event": "incident.update",
        "incident": {
            "id": "01J0000000000000000000000",
            "title": title,
            "status": status,
            "impact": "major",
            "components": ["API"],
            "created_at": "2024-05-01T10:00:00+00:00",
            "url": URL,
        },
        "update": update,
        "timeline": [update],
        "public_url": "https://status.example.com",
    }


def send(channel: SmsChannel, message: Message, target: str = RECIPIENTS[0]) -> str | None:
    return channel.send(message, target, SendContext(delivery_id="01J00000000000000000000DLV", attempt=1)).provider_id


def sms(channel: SmsChannel, body: str) -> Message:
    """Shape a body exactly as written (no template), to measure it."""
    return channel.shape({"body": body}, update_context("unused"))


# --- sending ---------------------------------------------------------------------------------------------


def test_one_message_per_recipient_with_basic_auth_and_twilio_sid(sandbox: Sandbox, twilio: TwilioEmulator) -> None:
    """Each recipient gets one POST to the account's Messages.json; the provider id is Twilio's SM sid."""
    channel = make_channel(sandbox)
    message = render(channel, "investigating", update_context("We are investigating failed logins."))
    assert channel.targets() == RECIPIENTS

    ids = [send(channel, message, number) for number in channel.targets()]

    received = sandbox.http.received("twilio.message")
    assert [r.path for r in received] == [MESSAGES_PATH] * 3
    basic = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert all(r.header("Authorization") == basic for r in received)
    assert [r.form["To"] for r in received] == [[n] for n in RECIPIENTS]
    assert all(r.form["From"] == [FROM_NUMBER] and "MessagingServiceSid" not in r.form for r in received)
    assert received[0].form["Body"] == [
        f"Investigating: Elevated API error rates\nWe are investigating failed logins.\n{URL}"
    ]
    assert ids == [r.note["sid"] for r in received]
    assert all(SID.match(i or "") for i in ids)


def test_messaging_service_instead_of_a_number(sandbox: Sandbox, twilio: TwilioEmulator) -> None:
    """With only messaging_service_sid, Twilio picks the sender from the service's pool."""
    channel = make_channel(sandbox, from_number=None, messaging_service_sid=MESSAGING_SERVICE_SID)
    provider_id = send(channel, sms(channel, "Resolved: all systems normal."))

    (request,) = sandbox.http.received("twilio.message")
    assert request.form["MessagingServiceSid"] == [MESSAGING_SERVICE_SID]
    assert "From" not in request.form
    assert provider_id == request.note["sid"]


# --- errors ----------------------------------------------------------------------------------------------


def twilio_error(status: int, code: int, message: str, **headers: str) -> Answer:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Answer(status, body, headers=headers)


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        (twilio_error(400, 21211, "The 'To' number +14155550100 is not a valid phone number."), PermanentError, "21211"),
        (twilio_error(400, 21614, "'To' number is not a valid mobile number"), PermanentError, "21614"),
        (twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"), PermanentError, "unsubscribed"),
        (twilio_error(400, 21408, "Permission to send an SMS has not been enabled"), PermanentError, "21408"),
        (twilio_error(404, 20404, "The requested resource was not found"), PermanentError, "HTTP 404"),
        (Answer(429, {"code": 20429, "message": "Too Many Requests", "status": 429}, headers={"Retry-After": "2"}),
         RateLimited, "20429"),
        (Answer(429, "Too Many Requests", headers={"Retry-After": "2"}), RateLimited, "HTTP 429"),
        (twilio_error(500, 20500, "Internal Server Error"), TransientError, "HTTP 500"),
        (Answer(503, "Service Unavailable"), TransientError, "HTTP 503"),
    ],
)  # fmt: skip
def test_twilio_errors_map_to_permanent_rate_limited_or_transient(
    sandbox: Sandbox, twilio: TwilioEmulator, answer: Answer, error: type[Exception], words: str
) -> None:
    channel = make_channel(sandbox)
    sandbox.http.script("twilio.message", answer)

    with pytest.raises(error) as raised:
        send(channel, sms(channel, "Investigating: API errors"))

    assert type(raised.value) is error
    assert words in str(raised.value)
    assert AUTH_TOKEN not in str(raised.value)
    if error is RateLimited:
        assert isinstance(raised.value, RateLimited) and raised.value.retry_after == 2


def test_rejected_number_is_permanent(sandbox: Sandbox, twilio: TwilioEmulator) -> None:
    """The emulator refuses a number as Twilio does (400, error 21211); the others still go out."""
    expectation = twilio.reject_one()
    channel = make_channel(sandbox)
    message = sms(channel, "Investigating: API errors")
    rejected = RECIPIENTS[1]
    assert rejected in expectation

    with pytest.raises(PermanentError, match=rf"21211.*{re.escape(rejected)} is not a valid phone number"):
        send(channel, message, rejected)
    assert SID.match(send(channel, message, RECIPIENTS[0]) or "")


def test_wrong_auth_token_is_permanent_and_never_shown(sandbox: Sandbox, twilio: TwilioEmulator) -> None:
    token = "wrong-token-do-not-print"
    channel = make_channel(sandbox, auth_token=token)

    with pytest.raises(PermanentError) as raised:
        send(channel, sms(channel, "Investigating: API errors"))

    assert "20003" in str(raised.value) and "auth_token" in str(raised.value)
    assert token not in str(raised.value)


def test_a_hanging_twilio_is_transient_after_the_timeout(sandbox: Sandbox, twilio: TwilioEmulator) -> None:
    channel = make_channel(sandbox, timeout="1s")
    sandbox.http.script("twilio.message", Answer(hang=True))
    started = time.monotonic()

    with pytest.raises(TransientError, match="within 1s") as raised:
        send(channel, sms(channel, "Investigating: API errors"))

    assert type(raised.value) is TransientError
    assert time.monotonic() - started < 5


def test_a_refused_connection_is_transient(sandbox: Sandbox, twilio: TwilioEmulator) -> None:
    channel = make_channel(sandbox, api_base_url=f"http://127.0.0.1:{free_port()}")

    with pytest.raises(TransientError, match="cannot reach Twilio") as raised:
        send(channel, sms(channel, "Investigating: API errors"))

    assert type(raised.value) is TransientError


def test_proxy_variables_of_the_environment_are_honoured(
    sandbox: Sandbox, twilio: TwilioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's requests session reads HTTP_PROXY/NO_PROXY once, when the adapter is made, not per request."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # a proxy that is not there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    through_proxy = make_channel(sandbox)
    with pytest.raises(TransientError, match="cannot reach Twilio"):
        send(through_proxy, sms(through_proxy, "Investigating: API errors"))
    assert sandbox.http.received("twilio.message") == []

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = make_channel(sandbox)
    assert SID.match(send(direct, sms(direct, "Investigating: API errors")) or "")
    assert len(sandbox.http.received("twilio.message")) == 1


# --- rendering and segments ------------------------------------------------------------------------------


def test_rendering_is_status_title_message_link_and_reports_its_size(sandbox: Sandbox) -> None:
    channel = make_channel(sandbox)
    message = render(channel, "investigating", update_context("Logins fail for some users."))

    assert message.parts["body"] == f"Investigating: Elevated API error rates\nLogins fail for some users.\n{URL}"
    assert message.size == {"segments": 1, "encoding": "GSM-7", "characters": len(message.parts["body"])}
    assert message.warnings == []


# The segment counting and GSM-7 stand-ins themselves: tests/unit/channels/test_sms.py


def test_an_overlong_body_is_cut_to_max_segments_keeping_the_link(sandbox: Sandbox) -> None:
    """10 segments at most (under Twilio's 1,600 characters for a body); the cut is on a word, before the link."""
    channel = make_channel(sandbox, max_segments=10)
    message = render(channel, "investigating", update_context("word " * 400))

    body = message.parts["body"]
    assert len(body) <= 10 * 153 < 1600
    assert body.endswith(" word...\n" + URL)
    assert message.size["segments"] == 10 and message.size["full_segments"] == 14
    assert any("cut to 10 segments" in w for w in message.warnings)


# --- check -----------------------------------------------------------------------------------------------


def test_check_reports_account_and_sender_without_sending(sandbox: Sandbox, twilio: TwilioEmulator) -> None:
    verdict = make_channel(sandbox).check()

    assert verdict == f"account Sandbox account active, sender {FROM_NUMBER} owned"
    assert sandbox.http.received("twilio.message") == []
    (numbers,) = sandbox.http.received("twilio.numbers")
    assert numbers.params["PhoneNumber"] == FROM_NUMBER


def test_check_with_a_messaging_service(sandbox: Sandbox, twilio: TwilioEmulator) -> None:
    channel = make_channel(sandbox, from_number=None, messaging_service_sid=MESSAGING_SERVICE_SID)
    assert (
        channel.check()
        == f"account Sandbox account active, messaging service Sandbox notifications ({MESSAGING_SERVICE_SID})"
    )


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"from_number": "+14155550199"}, "sender +14155550199 is not a number of account Sandbox account"),
        ({"auth_token": "not-the-token"}, "20003"),
        ({"from_number": None, "messaging_service_sid": "MG" + "f" * 32}, "20404"),
    ],
)
def test_check_fails_permanently_on_what_is_wrong(
    sandbox: Sandbox, twilio: TwilioEmulator, overrides: dict[str, Any], words: str
) -> None:
    with pytest.raises(PermanentError, match=re.escape(words)) as raised:
        make_channel(sandbox, **overrides).check()
    assert "not-the-token" not in str(raised.value)


# --- end to end through the command line -----------------------------------------------------------------


def send_sms_broadcast(cli: Callable[..., Any], config: Path) -> Any:
    return cli(
        "send", "--config", str(config), "--title", "Elevated API error rates", "--status", "investigating",
        "--message", "We\u2019re investigating failed logins.", "--channel", "sms", "--json",
    )  # fmt: skip


def test_cli_sends_one_sms_per_recipient(
    cli: Callable[..., Any], embedded_config: Callable[..., Path], sandbox: Sandbox, twilio: TwilioEmulator
) -> None:
    result = send_sms_broadcast(cli, embedded_config())

    assert result.code == 0, result.stderr
    deliveries = result.json["deliveries"]
    assert sorted(d["target"] for d in deliveries) == RECIPIENTS
    assert all(d["type"] == "sms" and d["status"] == "delivered" and d["attempts"] == 1 for d in deliveries)
    received = sandbox.http.received("twilio.message")
    assert sorted(r.form["To"][0] for r in received) == RECIPIENTS
    assert sorted(d["provider_id"] for d in deliveries) == sorted(r.note["sid"] for r in received)
    assert all(SID.match(d["provider_id"]) for d in deliveries)
    assert all("We're investigating failed logins." in r.form["Body"][0] for r in received)


def test_cli_reports_a_rejected_number_as_failed(
    cli: Callable[..., Any], embedded_config: Callable[..., Path], sandbox: Sandbox, twilio: TwilioEmulator
) -> None:
    twilio.reject_one()
    rejected = RECIPIENTS[1]

    result = send_sms_broadcast(cli, embedded_config())

    assert result.code == 1, result.stderr
    by_target = {d["target"]: d for d in result.json["deliveries"]}
    assert by_target[rejected]["status"] == "failed"
    assert by_target[rejected]["attempts"] == 1
    assert "21211" in by_target[rejected]["error"]
    assert all(by_target[n]["status"] == "delivered" for n in RECIPIENTS if n != rejected)
    assert result.json["status"] == "failed"
