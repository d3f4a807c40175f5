"""The blog webhook: a JSON POST signed by the Standard Webhooks scheme."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr, field_validator
from standardwebhooks.webhooks import Webhook
from ulid import ULID

from broadcaster.core.errors import PermanentError, RateLimited, TransientError
from channels.base import Channel, HttpChannelConfig, Message, SendContext, SendResult, public_url, retry_after_seconds


class WebhookConfig(HttpChannelConfig):
    url: str
    secret: SecretStr
    headers: dict[str, str] = {}

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        try:
            key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            key = b""
        if not raw.startswith("whsec_") or not key:
            raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64 (broadcaster secret)")
        return value


def new_secret() -> str:
    """A fresh ``whsec_`` secret of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(secret: str, message_id: str, body: bytes, event: str) -> dict[str, str]:
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(message_id, now, body.decode())
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "X-Broadcaster-Event": event,
    }


class WebhookChannel(Channel[WebhookConfig]):
    type: ClassVar[str] = "webhook"
    Config = WebhookConfig
    templates: ClassVar[dict[str, str]] = {"title": "title.txt", "markdown": "body.md", "html": "body.html"}
    emulator = "channels.webhook.emulator:BlogReceiver"

    def targets(self) -> list[str]:
        # The log and every reader see the URL without credentials; ``post`` sends to the full one.
        return [public_url(self.config.url)]

    def shape(self, parts: dict[str, str], context: dict[str, Any]) -> Message:
        message = super().shape(parts, context)
        message.data = {"event": context["event"], "incident": context["incident"], "update": context["update"]}
        message.size = {"markdown_chars": len(message.parts["markdown"])}
        return message

    def body(self, message: Message) -> bytes:
        payload = {**message.data, "rendered": message.parts}
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    def send(self, message: Message, target: str, context: SendContext) -> SendResult:
        body = self.body(message)
        return self.post(body, context.delivery_id, str(message.data.get("event", "incident.update")))

    def post(self, body: bytes, message_id: str, event: str) -> SendResult:
        headers = {
            **self.config.headers,
            **signed_headers(self.config.secret.get_secret_value(), message_id, body, event),
        }
        timeout = self.config.timeout.total_seconds()
        shown = public_url(self.config.url)
        try:
            response = httpx.post(self.config.url, content=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise TransientError(f"no answer from {shown} within {timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach {shown}: {type(exc).__name__}") from exc
        status = response.status_code
        if status < 300:
            return SendResult(provider_id=response.headers.get("x-request-id"), note=f"HTTP {status}")
        reason = f"{shown} answered HTTP {status}"
        if status == 429:
            raise RateLimited(reason, retry_after=retry_after_seconds(response.headers.get("retry-after")))
        if status in (408, 425) or status >= 500:
            raise TransientError(reason)
        raise PermanentError(reason)

    def check(self) -> str:
        body = json.dumps({"event": "ping", "channel": self.name}).encode()
        self.post(body, str(ULID()), "ping")
        return f"{public_url(self.config.url)} accepted a signed ping"
