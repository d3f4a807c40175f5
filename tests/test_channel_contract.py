"""One contract for every adapter: success, rate limiting, server errors, timeouts and permanent errors.

Each channel type the registry knows goes through its real SDK (httpx, tweepy, slack-sdk, twilio, smtplib) to
its emulator in the sandbox, which answers as the provider would (``Emulator.faults``: how it says each case);
the adapter must map each answer into our error hierarchy.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import pytest

from broadcaster.core.errors import DeliveryError, PermanentError, RateLimited, TransientError
from broadcaster.domain.broadcasts import render_context
from broadcaster.rendering import render
from broadcaster.sandbox import Answer, Emulator, Faults, Sandbox
from broadcaster.settings import load_settings
from broadcaster.store.models import Incident, Update
from channels import Channel, SendContext, channel_types
from channels.registry import emulator_types

#: every registered type whose emulator is reached over HTTP, and so says how its provider answers each case
KINDS = sorted(kind for kind, emulator in emulator_types().items() if emulator.faults is not Emulator.faults)


def faults(sandbox: Sandbox, kind: str) -> Faults:
    """How ``kind``'s provider says each thing, as its emulator scripts it (computed now: X's reset is a time)."""
    found = sandbox.emulators[kind].faults()
    assert found is not None, f"the {kind} emulator names no faults"
    return found


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


def test_every_built_in_type_over_http_is_driven() -> None:
    """The contract covers each built-in HTTP channel; email has its own SMTP cases below."""
    assert {"sms", "slack", "twitter", "webhook"} <= set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_success_reaches_the_provider(sandbox: Sandbox, kind: str) -> None:
    result = send(build(sandbox, kind))
    received = sandbox.http.received(faults(sandbox, kind).endpoint)
    assert len(received) == 1 and received[0].status < 300
    assert "https://status.example.com/incidents/01INCIDENT" in unquote_plus(received[0].body.decode())
    assert result.provider_id or kind == "webhook"


@pytest.mark.parametrize(
    ("case", "error", "retry_after"),
    [("rate_limited", RateLimited, 3.0), ("server_error", TransientError, None), ("permanent", PermanentError, None)],
)
@pytest.mark.parametrize("kind", KINDS)
def test_provider_answers_map_to_our_errors(
    sandbox: Sandbox, kind: str, case: str, error: type[DeliveryError], retry_after: float | None
) -> None:
    provider = faults(sandbox, kind)
    sandbox.http.script(provider.endpoint, getattr(provider, case))
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


@pytest.mark.parametrize("kind", KINDS)
def test_a_hung_provider_is_a_timely_transient_error(sandbox: Sandbox, kind: str) -> None:
    sandbox.http.script(faults(sandbox, kind).endpoint, Answer(hang=True))
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
