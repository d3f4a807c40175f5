"""Slack's Web API (the methods the slack channel calls) and an incoming webhook, with Slack's own answers.

Like Slack, every Web API method answers HTTP 200 with ``{"ok": false, "error": ...}`` for a bad token, an
unknown channel or invalid blocks; only rate limits (429) and outages (5xx) change the status, and those are
scripted by the tests: ``sandbox.http.script("slack.post", Answer(429, {...}, headers={"Retry-After": "2"}))``.
Block Kit is checked against Slack's published limits, independently of the channel's own fitting.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from channels.emulation import Answer, Emulator, Faults, Handler, Request

#: a Web API method: the request, its arguments, the token's scopes
Method = Callable[[Request, dict[str, Any], set[str]], Answer]

#: the bot token of the sandbox app, with every scope the channel can use
TOKEN = "xoxb-sandbox-token"
#: a bot token that may post but not list channels (no channels:read): check() cannot see membership
POST_ONLY_TOKEN = "xoxb-sandbox-post-only"
#: a token Slack knows but has revoked
REVOKED_TOKEN = "xoxb-sandbox-revoked"
SCOPES = {TOKEN: "chat:write,channels:read,groups:read", POST_ONLY_TOKEN: "chat:write"}
#: the secret part of the incoming webhook's URL (``/slack/webhook/<path>``)
WEBHOOK_PATH = "T0SANDBOX/B0SANDBOX/c2FuZGJveC13ZWJob29rLTAwMDE"
TEAM = {
    "team": "Sandbox",
    "team_id": "T0SANDBOX",
    "user": "broadcaster",
    "user_id": "U0BROADCAST",
    "bot_id": "B0BROADCAST",
}
#: first message ts: seconds.microseconds, growing by 100 µs per message like Slack's
FIRST_TS = 1_700_000_000_000_100
#: Slack may return fewer conversations per page than asked; a small page makes clients follow the cursor
PAGE_MAX = 2


@dataclass(frozen=True)
class Conversation:
    id: str
    name: str
    is_member: bool = True
    is_private: bool = False
    is_archived: bool = False

    def info(self) -> dict[str, Any]:
        return {**asdict(self), "is_channel": not self.is_private, "is_group": self.is_private}


CONVERSATIONS = (
    Conversation("C0123", "incidents"),
    Conversation("C0456", "general", is_member=False),
    Conversation("C0789", "old-incidents", is_archived=True),
    Conversation("G0PRIV", "ops-private", is_private=True, is_member=False),
)


class SlackEmulator(Emulator):
    type = "slack"
    demo_name = "ops"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._messages = 0

    def install(self) -> None:
        http = self.sandbox.http
        for method, endpoint, handler in (
            ("chat.postMessage", "slack.post", self.post_message),
            ("auth.test", "slack.auth", self.auth_test),
            ("conversations.info", "slack.conversations.info", self.conversations_info),
            ("conversations.list", "slack.conversations.list", self.conversations_list),
        ):
            for verb in ("POST", "GET"):
                http.route(verb, "/api/" + re.escape(method), endpoint, self._authorized(handler))
        http.route("POST", r"/slack/webhook/(?P<path>.+)", "slack.webhook", self.webhook)

    def channel_config(self, name: str) -> dict[str, Any]:
        return {
            "type": "slack",
            "api_base_url": f"{self.sandbox.http.url}/api/",
            "token": TOKEN,
            "channel": "#incidents",
        }

    def faults(self) -> Faults:
        return Faults(
            "slack.post",
            Answer(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "3"}),
            Answer(503, "Service Unavailable"),
            Answer(200, {"ok": False, "error": "channel_not_found"}),  # Slack's errors come with a 200
        )

    def webhook_config(self, name: str) -> dict[str, Any]:
        """An incoming-webhook channel table pointing at this emulator."""
        return {"type": "slack", "webhook_url": self.webhook_url()}

    def webhook_url(self) -> str:
        return f"{self.sandbox.http.url}/slack/webhook/{WEBHOOK_PATH}"

    # --- the Web API -------------------------------------------------------------------------------------

    def _authorized(self, handler: Method) -> Handler:
        """Slack's token check, before any method: not_authed, token_revoked, invalid_auth."""

        def serve(request: Request, match: re.Match[str]) -> Answer:
            params = _params(request)
            bearer = (request.header("Authorization") or "").removeprefix("Bearer ").strip()
            token = bearer or str(params.get("token") or "")
            if not token:
                return _failed("not_authed")
            if token == REVOKED_TOKEN:
                return _failed("token_revoked")
            if token not in SCOPES:
                return _failed("invalid_auth")
            request.note["token"] = token
            answer = handler(request, params, set(SCOPES[token].split(",")))
            answer.headers.setdefault("x-oauth-scopes", SCOPES[token])
            return answer

        return serve

    def auth_test(self, request: Request, params: dict[str, Any], scopes: set[str]) -> Answer:
        return Answer(200, {"ok": True, "url": "https://sandbox.slack.com/", **TEAM, "is_enterprise_install": False})

    def post_message(self, request: Request, params: dict[str, Any], scopes: set[str]) -> Answer:
        conversation = _find(str(params.get("channel") or ""))
        if conversation is None:
            return _failed("channel_not_found")
        if conversation.is_archived:
            return _failed("is_archived")
        if not conversation.is_member and (conversation.is_private or "chat:write.public" not in scopes):
            return _failed("not_in_channel")
        text = params.get("text")
        blocks = params.get("blocks")
        if isinstance(blocks, str):  # a form body carries blocks as a JSON string
            try:
                blocks = json.loads(blocks)
            except json.JSONDecodeError:
                return _failed("invalid_blocks_format")
        if not text and not blocks:
            return _failed("no_text")
        if isinstance(text, str) and len(text) > 40_000:
            return _failed("msg_too_long")
        if blocks is not None:
            errors = block_errors(blocks)
            if errors:
                return Answer(200, {"ok": False, "error": "invalid_blocks", "errors": errors})
        with self._lock:
            self._messages += 1
            micros = FIRST_TS + 100 * (self._messages - 1)
        ts = f"{micros // 1_000_000}.{micros % 1_000_000:06d}"
        request.note.update(ts=ts, channel=conversation.id)
        message = {"type": "message", "user": TEAM["user_id"], "bot_id": TEAM["bot_id"], "text": text, "ts": ts}
        if blocks:
            message["blocks"] = blocks
        return Answer(200, {"ok": True, "channel": conversation.id, "ts": ts, "message": message})

    def conversations_info(self, request: Request, params: dict[str, Any], scopes: set[str]) -> Answer:
        # Like Slack, an ID only: a name is not found.
        conversation = next((c for c in CONVERSATIONS if c.id == params.get("channel")), None)
        if conversation is None:
            return _failed("channel_not_found")
        needed = "groups:read" if conversation.is_private else "channels:read"
        if needed not in scopes:
            return _missing_scope(needed, scopes)
        return Answer(200, {"ok": True, "channel": conversation.info()})

    def conversations_list(self, request: Request, params: dict[str, Any], scopes: set[str]) -> Answer:
        types = set(str(params.get("types") or "public_channel").split(","))
        for kind, needed in (("public_channel", "channels:read"), ("private_channel", "groups:read")):
            if kind in types and needed not in scopes:
                return _missing_scope(needed, scopes)
        wanted = [c for c in CONVERSATIONS if ("private_channel" if c.is_private else "public_channel") in types]
        start = int(base64.b64decode(params["cursor"]).decode()) if params.get("cursor") else 0
        size = min(int(params.get("limit") or 100), PAGE_MAX)
        page = wanted[start : start + size]
        more = start + size < len(wanted)
        next_cursor = base64.b64encode(str(start + size).encode()).decode() if more else ""
        return Answer(
            200,
            {"ok": True, "channels": [c.info() for c in page], "response_metadata": {"next_cursor": next_cursor}},
        )

    # --- the incoming webhook ----------------------------------------------------------------------------

    def webhook(self, request: Request, match: re.Match[str]) -> Answer:
        """Answers like Slack's: a short text, ``ok`` or an error code, with an HTTP status."""
        if match.group("path") != WEBHOOK_PATH:
            return Answer(404, "no_service")
        try:
            payload = _params(request, strict=True)
        except ValueError:
            return Answer(400, "invalid_payload")
        if not payload.get("text") and not payload.get("blocks"):
            return Answer(400, "no_text")
        if payload.get("blocks") is not None and block_errors(payload["blocks"]):
            request.note["errors"] = block_errors(payload["blocks"])
            return Answer(400, "invalid_blocks")
        return Answer(200, "ok")


def _find(channel: str) -> Conversation | None:
    """chat.postMessage takes an ID or a name, with or without '#'."""
    name = channel.removeprefix("#")
    return next((c for c in CONVERSATIONS if channel == c.id or name == c.name), None)


def _failed(error: str) -> Answer:
    return Answer(200, {"ok": False, "error": error})


def _missing_scope(needed: str, scopes: set[str]) -> Answer:
    return Answer(200, {"ok": False, "error": "missing_scope", "needed": needed, "provided": ",".join(sorted(scopes))})


def _params(request: Request, strict: bool = False) -> dict[str, Any]:
    """A Web API call's arguments: query string, then a JSON or form body (``payload=`` for webhooks)."""
    params: dict[str, Any] = dict(request.params)
    content_type = (request.header("Content-Type") or "").lower()
    if not request.body:
        return params
    if "json" in content_type or request.body.lstrip().startswith(b"{"):
        try:
            body = json.loads(request.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if strict:
                raise ValueError("not JSON") from None
            return params
        if not isinstance(body, dict):
            if strict:
                raise ValueError("not an object")
            return params
        return {**params, **body}
    form = {k: v[0] for k, v in request.form.items()}
    if "payload" in form:
        try:
            return {**params, **json.loads(form["payload"])}
        except json.JSONDecodeError:
            if strict:
                raise ValueError("payload is not JSON") from None
    return {**params, **form}


# --- Block Kit, as Slack checks it --------------------------------------------------------------------------


def _text_errors(
    value: Any, pointer: str, maximum: int, kinds: tuple[str, ...] = ("plain_text", "mrkdwn")
) -> list[str]:
    if not isinstance(value, dict) or value.get("type") not in kinds:
        return [f"must be a text object of type {' or '.join(kinds)} [json-pointer:{pointer}]"]
    text = value.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{pointer}/text]"]
    if len(text) > maximum:
        return [f"must be less than {maximum + 1} characters [json-pointer:{pointer}/text]"]
    return []


def block_errors(blocks: Any) -> list[str]:
    """Slack's ``invalid_blocks`` messages for the block types the channel uses (and a few more)."""
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    if len(blocks) > 50:
        return ["no more than 50 items allowed [json-pointer:/blocks]"]
    errors: list[str] = []
    for index, block in enumerate(blocks):
        at = f"/blocks/{index}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "header":
            errors += _text_errors(block.get("text"), f"{at}/text", 150, ("plain_text",))
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                errors.append(f"must provide text or fields [json-pointer:{at}]")
            if "text" in block:
                errors += _text_errors(block["text"], f"{at}/text", 3000)
            if "fields" in block:
                fields = block["fields"]
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    errors.append(f"must have 1 to 10 items [json-pointer:{at}/fields]")
                else:
                    for number, field in enumerate(fields):
                        errors += _text_errors(field, f"{at}/fields/{number}", 2000)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                errors.append(f"must have 1 to 10 items [json-pointer:{at}/elements]")
            else:
                for number, element in enumerate(elements):
                    if isinstance(element, dict) and element.get("type") != "image":
                        errors += _text_errors(element, f"{at}/elements/{number}", 3000)
        elif kind not in ("divider", "actions", "image", "rich_text"):
            errors.append(f"unsupported type: {kind} [json-pointer:{at}/type]")
    return errors
