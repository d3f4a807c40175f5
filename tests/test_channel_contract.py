"""One contract for every adapter: success, rate limiting, server errors, timeouts and permanent errors.

Each channel goes through its real SDK (httpx, tweepy, slack-sdk, twilio, smtplib) to the sandbox's emulator,
which answers as the provider would; the adapter must map each answer into our error hierarchy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import pytest

from broadcaster.broadcasts import render_context
from broadcaster.errors import DeliveryError, PermanentError, RateLimited, TransientError
from broadcaster.models import Incident, Update
from broadcaster.rendering import render
from broadcaster.sandbox import Answer, Sandbox
from broadcaster.settings import load_settings
from channels import Channel, SendContext, channel_types


@dataclass(frozen=True)
class Provider:
    """How one provider says each thing, as the sandbox scripts it."""

    endpoint: str
    rate_limited: Answer
    server_error: Answer
    permanent: Answer


def reset_in(seconds: int) -> str:
    return str(int(time.time()) + seconds)


PROVIDERS: dict[str, Provider] = {
    "webhook": Provider(
        "webhook",
        Answer(429, {"error": "slow down"}, headers={"Retry-After": "3"}),
        Answer(503, {"error": "maintenance"}),
        Answer(400, {"error": "bad payload"}),
    ),
    "twitter": Provider(
        "twitter.tweet",
        Answer(429, {"title": "Too Many Requests", "status": 429}, headers={"x-rate-limit-reset": ""}),
        Answer(503, {"title": "Service Unavailable", "status": 503}),
        Answer(401, {"title": "Unauthorized", "status": 401, "detail": "Unauthorized"}),
    ),
    "slack": Provider(
        "slack.post",
        Answer(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "3"}),
        Answer(503, "Service Unavailable"),
        Answer(200, {"ok": False, "error": "channel_not_found"}),
    ),
    "sms": Provider(
        "twilio.message",
        Answer(429, {"code": 20429, "message": "Too Many Requests", "status": 429}, headers={"Retry-After": "3"}),
        Answer(503, {"code": 20500, "message": "Service Unavailable", "status": 503}),
        Answer(400, {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}),
    ),
}


def build(sandbox: Sandbox, kind: str) -> Channel:  # type: ignore[type-arg]
    config = channel_types()[kind].Config.model_validate({**sandbox.channel_config(kind), "timeout": "1s"})
    return channel_types()[kind](kind, config)


def send(channel: Channel) -> Any:  # type: ignore[type-arg]
    settings = load_settings(public_url="https://status.example.com")
    now = datetime.now(UTC)
    incident = Incident(
        id="01INCIDENT", title="API errors", status="investigating", impact="major", components=["API"], created_at=now
    )
    update = Update(id="01UPDATE", status="investigating", message="Errors on the API.", created_at=incident.created_at)
    message = render(channel, "investigating", render_context(settings, "incident.update", incident, update, [update]))
    try:
        return channel.send(message, channel.targets()[0], SendContext(delivery_id="01DELIVERY", attempt=1))
    finally:
        channel.close()


def answer(provider: Provider, case: str) -> Answer:
    scripted = getattr(provider, case)
    if "x-rate-limit-reset" in scripted.headers:
        return Answer(scripted.status, scripted.body, headers={"x-rate-limit-reset": reset_in(3)})
    return scripted


@pytest.mark.parametrize("kind", sorted(PROVIDERS))
def test_success_reaches_the_provider(sandbox: Sandbox, kind: str) -> None:
    result = send(build(sandbox, kind))
    received = sandbox.http.received(PROVIDERS[kind].endpoint)
    assert len(received) == 1 and received[0].status < 300
    assert "https://status.example.com/incidents/01INCIDENT" in unquote_plus(received[0].body.decode())
    assert result.provider_id or kind == "webhook"


@pytest.mark.parametrize(
    ("case", "error", "retry_after"),
    [("rate_limited", RateLimited, 3.0), ("server_error", TransientError, None), ("permanent", PermanentError, None)],
)
@pytest.mark.parametrize("kind", sorted(PROVIDERS))
def test_provider_answers_map_to_our_errors(
    sandbox: Sandbox, kind: str, case: str, error: type[DeliveryError], retry_after: float | None
) -> None:
    provider = PROVIDERS[kind]
    sandbox.http.script(provider.endpoint, answer(provider, case))
    with pytest.raises(error) as raised:
        send(build(sandbox, kind))
    if error is not RateLimited:
        assert not isinstance(raised.value, RateLimited)
    if error is TransientError:
        assert not isinstance(raised.value, PermanentError)
    if retry_after is not None:
        assert isinstance(raised.value, RateLimited)
        assert raised.value.retry_after is not None and retry_after - 1.5 <= raised.value.retry_after <= retry_after
    assert len(sandbox.http.received(provider.endpoint)) == 1  # no retry inside the SDK: our policy decides


@pytest.mark.parametrize("kind", sorted(PROVIDERS))
def test_a_hung_provider_is_a_timely_transient_error(sandbox: Sandbox, kind: str) -> None:
    sandbox.http.script(PROVIDERS[kind].endpoint, Answer(hang=True))
    started = time.monotonic()
    with pytest.raises(TransientError):
        send(build(sandbox, kind))
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("reply", "error"),
    [("421 4.7.0 too many connections, slow down", TransientError), ("451 4.3.0 try again later", TransientError),
     ("554 5.7.1 message rejected", PermanentError)],
)  # fmt: skip
def test_smtp_replies_map_to_our_errors(sandbox: Sandbox, reply: str, error: type[DeliveryError]) -> None:
    sandbox.smtp.script(reply)
    with pytest.raises(error) as raised:
        send(build(sandbox, "email"))
    assert reply.split()[0] in str(raised.value)
    assert sandbox.smtp.received() == []
