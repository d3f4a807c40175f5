"""Slack: one Block Kit message per update, posted by a bot token (``chat.postMessage``) or an incoming webhook.

Two modes, exactly one per channel table:

- bot: ``token`` (``xoxb-...``) and ``channel`` (an ID like ``C0123ABCD``, or a name like ``#incidents``).
  The provider id of a delivery is the message's ``ts``. IDs are the safer choice: a renamed channel keeps its ID.
- incoming webhook: ``webhook_url``. Slack returns no message id, so deliveries carry none.

The SDK's own retry handlers are switched off: the delivery pipeline decides when to try again.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import SecretStr, field_validator, model_validator
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient, WebhookResponse

from broadcaster.core.errors import DeliveryError, PermanentError, RenderError, TransientError
from channels.base import Channel, HttpChannelConfig, Message, SendContext, SendResult, public_url
from channels.slack.errors import api_error, granted_scopes, one_line, webhook_error
from channels.slack.text import block_texts, cut, mrkdwn_escape, mrkdwn_unescape, parse_blocks, split_text, utf16_len

DEFAULT_API_BASE_URL = "https://slack.com/api/"
WEBHOOK_TARGET = "incoming-webhook"

_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")  # names are lower-case, so upper-case means an ID
_CHANNEL_NAME = re.compile(r"^#?[a-z0-9][a-z0-9._-]{0,79}$")


class SlackConfig(HttpChannelConfig):
    """``token`` and ``channel`` (a bot), or ``webhook_url`` (an incoming webhook); never both."""

    token: SecretStr | None = None
    channel: str | None = None
    webhook_url: SecretStr | None = None
    api_base_url: str = DEFAULT_API_BASE_URL

    @field_validator("token")
    @classmethod
    def _bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("xoxb-", "xoxp-")):
            raise ValueError("must be a Slack bot token (xoxb-...)")
        return value

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not (_CHANNEL_ID.match(value) or _CHANNEL_NAME.match(value)):
            raise ValueError("must be a channel ID like C0123ABCD or a channel name like #incidents")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("must be the incoming webhook's URL (https://hooks.slack.com/services/...)")
        return value

    @field_validator("api_base_url")
    @classmethod
    def _api_base_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with http:// or https://")
        return value if value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _one_mode(self) -> SlackConfig:
        bot = self.token is not None or self.channel is not None
        if self.webhook_url is not None and bot:
            raise ValueError(
                "webhook_url: give token and channel (a bot) or webhook_url (an incoming webhook), not both; "
                "an incoming webhook always posts to the channel it was created for"
            )
        if self.webhook_url is None and not bot:
            raise ValueError(
                "token: a slack channel needs token and channel (a bot) or webhook_url (an incoming webhook)"
            )
        if bot and self.token is None:
            raise ValueError("token: a slack bot needs its bot token (xoxb-...) to post in the channel")
        if bot and self.channel is None:
            raise ValueError("channel: a slack bot needs the channel to post in (an ID like C0123ABCD, or #name)")
        return self

    @property
    def is_webhook(self) -> bool:
        return self.webhook_url is not None


class SlackChannel(Channel[SlackConfig]):
    type: ClassVar[str] = "slack"
    Config = SlackConfig
    templates: ClassVar[dict[str, str]] = {"text": "text.txt", "blocks": "blocks.json"}
    emulator = "channels.slack.emulator:SlackEmulator"

    # Block Kit's limits (docs.slack.dev/reference/block-kit), counted in UTF-16 code units: never fewer
    # than the characters Slack counts, so a message within them is never refused for its length.
    header_max: ClassVar[int] = 150
    section_text_max: ClassVar[int] = 3000
    field_max: ClassVar[int] = 2000
    fields_max: ClassVar[int] = 10
    context_elements_max: ClassVar[int] = 10
    blocks_max: ClassVar[int] = 50
    #: the notification text; Slack cuts ``text`` at 40,000 but advises 4,000 (the blocks carry the message)
    text_max: ClassVar[int] = 4000

    def targets(self) -> list[str]:
        return [WEBHOOK_TARGET if self.config.is_webhook else str(self.config.channel)]

    # --- rendering ---------------------------------------------------------------------------------------

    def shape(self, parts: dict[str, str], context: dict[str, Any]) -> Message:
        """Parse the blocks and fit them and the fallback text to Slack's limits.

        ``parts["text"]`` stays plain text, as people read it in a preview; ``send`` escapes it for mrkdwn.
        Its length is measured escaped, as Slack receives it.
        """
        warnings: list[str] = []
        escaped = mrkdwn_escape(parts["text"].strip())
        if utf16_len(escaped) > self.text_max:
            escaped = cut(escaped, self.text_max)
            warnings.append(f"notification text shortened to {self.text_max} characters (the blocks hold it all)")
        blocks = self.fit_blocks(parse_blocks(parts["blocks"]), warnings)
        size = {
            "blocks": len(blocks),
            "text_chars": utf16_len(escaped),
            "block_chars": sum(utf16_len(t) for t in block_texts(blocks)),
        }
        text = mrkdwn_unescape(escaped)
        return Message(parts={"text": text}, data={"blocks": blocks}, size=size, warnings=warnings)

    def fit_blocks(self, blocks: list[dict[str, Any]], warnings: list[str]) -> list[dict[str, Any]]:
        """Split long sections into several, shorten what cannot be split, and refuse what cannot fit."""
        fitted: list[dict[str, Any]] = []
        for block in blocks:
            kind = block.get("type")
            if kind == "header" and isinstance(block.get("text"), dict):
                title = str(block["text"].get("text", ""))
                if utf16_len(title) > self.header_max:
                    block["text"]["text"] = cut(title, self.header_max, entities=False)
                    warnings.append(f"title shortened to {self.header_max} characters (Slack's header limit)")
            elif kind == "section":
                fitted.extend(self.fit_section(block, warnings))
                continue
            elif kind == "context" and len(block.get("elements", [])) > self.context_elements_max:
                block["elements"] = block["elements"][: self.context_elements_max]
                warnings.append(f"context block cut to {self.context_elements_max} elements")
            fitted.append(block)
        if len(fitted) > self.blocks_max:
            raise RenderError(
                f"the slack blocks template made {len(fitted)} blocks; Slack takes at most {self.blocks_max}"
            )
        return fitted

    def fit_section(self, block: dict[str, Any], warnings: list[str]) -> list[dict[str, Any]]:
        fields = block.get("fields")
        if isinstance(fields, list):
            if len(fields) > self.fields_max:
                warnings.append(f"section fields cut to {self.fields_max}")
                block["fields"] = fields = fields[: self.fields_max]
            for field in fields:
                if isinstance(field, dict) and utf16_len(str(field.get("text", ""))) > self.field_max:
                    field["text"] = cut(str(field["text"]), self.field_max)
                    warnings.append(f"a section field shortened to {self.field_max} characters")
        text = block.get("text")
        if not isinstance(text, dict) or utf16_len(str(text.get("text", ""))) <= self.section_text_max:
            return [block]
        # A long update is split over consecutive sections rather than cut: nothing the writer wrote is lost.
        chunks = split_text(str(text["text"]), self.section_text_max)
        first = {**block, "text": {**text, "text": chunks[0]}}
        rest = [{"type": "section", "text": {**text, "text": chunk}} for chunk in chunks[1:]]
        return [first, *rest]

    # --- sending -----------------------------------------------------------------------------------------

    def send(self, message: Message, target: str, context: SendContext) -> SendResult:
        text = mrkdwn_escape(message.parts["text"])
        blocks = message.data.get("blocks") or None
        if self.config.is_webhook:
            return self.send_webhook(text, blocks)
        client = self.web_client()
        response = self.call(
            "chat.postMessage", target, lambda: client.chat_postMessage(channel=target, text=text, blocks=blocks)
        )
        ts = response.get("ts")
        return SendResult(provider_id=str(ts) if ts else None, note=f"posted in {response.get('channel', target)}")

    def send_webhook(self, text: str, blocks: list[dict[str, Any]] | None) -> SendResult:
        client = self.webhook_client()
        response = self.call_webhook(lambda: client.send(text=text, blocks=blocks))
        if response.status_code == 200:
            # Slack answers "ok" and no message id: there is nothing to record as the provider id.
            return SendResult(provider_id=None, note=f"incoming webhook answered {response.body or 'ok'}")
        raise webhook_error(response, self.webhook_host())

    def web_client(self) -> WebClient:
        return WebClient(
            token=self.config.token.get_secret_value() if self.config.token else None,
            base_url=self.config.api_base_url,
            # urllib takes float seconds; the SDK's ``int`` hint is narrower than what it passes through.
            timeout=self.config.timeout.total_seconds(),  # type: ignore[arg-type]
            retry_handlers=[],
        )

    def webhook_client(self) -> WebhookClient:
        url = self.config.webhook_url.get_secret_value() if self.config.webhook_url else ""
        return WebhookClient(url, timeout=self.config.timeout.total_seconds(), retry_handlers=[])  # type: ignore[arg-type]

    def webhook_host(self) -> str:
        """The webhook's host, which is no secret (the path is, and any ``user:password@``)."""
        url = self.config.webhook_url.get_secret_value() if self.config.webhook_url else ""
        return urlsplit(url).netloc.rpartition("@")[2] or "the incoming webhook"

    def call(self, method: str, target: str, request: Callable[[], SlackResponse]) -> SlackResponse:
        """Make one Web API call; every failure comes back as one of our DeliveryErrors."""
        with self._transport_errors(self.config.api_base_url):
            try:
                return request()
            except SlackApiError as exc:
                raise api_error(method, target, exc.response) from exc

    def call_webhook(self, request: Callable[[], WebhookResponse]) -> WebhookResponse:
        with self._transport_errors(self.webhook_host()):
            return request()

    @contextmanager
    def _transport_errors(self, where: str) -> Iterator[None]:
        where = public_url(where) if "://" in where else where  # an api_base_url may carry credentials
        timeout = self.config.timeout.total_seconds()
        try:
            yield
        except (DeliveryError, SlackApiError):
            raise
        except TimeoutError as exc:
            raise TransientError(f"no answer from Slack at {where} within {timeout:g}s") from exc
        except OSError as exc:  # urllib.error.URLError, refused and reset connections
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise TransientError(f"no answer from Slack at {where} within {timeout:g}s") from exc
            raise TransientError(f"cannot reach Slack at {where}: {type(reason).__name__}: {reason}") from exc
        except http.client.HTTPException as exc:  # a connection closed mid-answer
            raise TransientError(f"Slack at {where} broke off its answer: {type(exc).__name__}") from exc
        except SlackClientError as exc:  # the SDK refused the request before sending it (e.g. a bad URL)
            raise PermanentError(f"the Slack client refused the request: {type(exc).__name__}") from exc

    # --- checking ----------------------------------------------------------------------------------------

    def check(self) -> str:
        """Bot: the token (``auth.test``) and the bot's membership of the channel. Webhook: see ``check_webhook``."""
        if self.config.is_webhook:
            return self.check_webhook()
        client = self.web_client()
        auth = self.call("auth.test", "the workspace", client.auth_test)
        who = f"authenticated as {auth.get('user')} in {auth.get('team')}"
        scopes = granted_scopes(auth)
        channel = str(self.config.channel)
        try:
            found = self.find_channel(client, channel, scopes)
        except SlackApiError as exc:
            if exc.response.get("error") != "missing_scope":
                raise api_error("conversations", channel, exc.response) from exc
            needed = exc.response.get("needed") or "channels:read"
            return f"{who}; cannot see {channel} without the {needed} scope, so the bot's membership is unchecked"
        if found is None:
            raise PermanentError(
                f"{who}, but channel {channel} was not found (a private channel must invite the app first)"
            )
        name = f"#{found.get('name')} ({found.get('id')})"
        if found.get("is_archived"):
            raise PermanentError(f"{who}, but {name} is archived")
        if found.get("is_member"):
            return f"{who}; a member of {name}"
        if not found.get("is_private") and "chat:write.public" in scopes:
            return f"{who}; may post in {name} without joining it (chat:write.public)"
        raise PermanentError(
            f"{who}, but not a member of {name}: invite it (/invite @{auth.get('user')}) "
            "or grant the app the chat:write.public scope"
        )

    def find_channel(self, client: WebClient, channel: str, scopes: set[str]) -> dict[str, Any] | None:
        """The conversation by ID (``conversations.info``) or by name (paging through ``conversations.list``).

        Raises ``SlackApiError`` for the caller to read ``missing_scope``; maps everything else.
        """
        if _CHANNEL_ID.match(channel):
            try:
                with self._transport_errors(self.config.api_base_url):
                    info = client.conversations_info(channel=channel)
            except SlackApiError as exc:
                if exc.response.get("error") == "channel_not_found":
                    return None
                raise
            conversation = info.get("channel")
            return conversation if isinstance(conversation, dict) else None
        name = channel.removeprefix("#")
        # Private channels are listed only with groups:read; without it, ask for public ones rather than fail.
        types = "public_channel,private_channel" if "groups:read" in scopes else "public_channel"
        cursor: str | None = None
        while True:
            with self._transport_errors(self.config.api_base_url):
                page = client.conversations_list(types=types, limit=200, cursor=cursor)
            for conversation in page.get("channels") or []:
                if conversation.get("name") == name:
                    return dict(conversation)
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return None

    def check_webhook(self) -> str:
        """Probe the webhook with an empty text, which Slack refuses (``no_text``) without posting anything.

        A 400 therefore means the URL is live; 403/404/410 mean it was revoked, removed or its channel archived.
        Which channel it posts to cannot be seen without posting.
        """
        client = self.webhook_client()
        response = self.call_webhook(lambda: client.send_dict({"text": ""}))
        host = self.webhook_host()
        if response.status_code == 400:
            return (
                f"incoming webhook on {host} is live (it refused an empty probe: {one_line(response.body)}); "
                "its channel cannot be checked without posting"
            )
        if response.status_code == 200:
            return f"incoming webhook on {host} accepted an empty probe; its channel cannot be checked without posting"
        raise webhook_error(response, host)
