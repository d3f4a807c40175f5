"""Slack's answers as our errors: ``ratelimited`` and 429 wait, 5xx and platform errors retry, the rest is final."""

from __future__ import annotations

from typing import Any

from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookResponse

from broadcaster.core.errors import DeliveryError, PermanentError, RateLimited, TransientError
from channels.base import retry_after_seconds

#: Slack errors that say "later": the platform, not the request, is at fault
TRANSIENT_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
#: ``rate_limited`` is chat.postMessage's "too many messages in this channel"; ``ratelimited`` the API tier limit
RATE_LIMIT_ERRORS = frozenset({"ratelimited", "rate_limited"})
#: what an operator can do about the common permanent errors
HINTS = {
    "not_authed": "no bot token reached Slack",
    "invalid_auth": "check the bot token (xoxb-...)",
    "account_inactive": "the token's user or workspace is deactivated",
    "token_revoked": "the token was revoked: reinstall the app and use its new bot token",
    "token_expired": "the token expired: use a non-rotating bot token or refresh it",
    "channel_not_found": "check the channel name or ID; a private channel needs the app invited first",
    "not_in_channel": "invite the app to the channel (/invite @app), or grant it the chat:write.public scope",
    "is_archived": "the channel is archived",
    "msg_too_long": "the message is longer than Slack accepts",
    "invalid_blocks": "Slack rejected the Block Kit blocks (see the slack templates)",
    "invalid_blocks_format": "the blocks are not a JSON array of Block Kit blocks",
    "missing_scope": "the app lacks a scope it needs",
    # incoming webhooks
    "no_service": "the incoming webhook was removed or disabled: create a new one",
    "invalid_token": "the incoming webhook's URL is not valid any more: create a new one",
    "channel_is_archived": "the webhook's channel is archived",
    "action_prohibited": "the workspace does not allow this webhook to post there",
}


def api_error(method: str, target: str, response: SlackResponse) -> DeliveryError:
    """Map a Web API failure: 429 or ``ratelimited`` waits, 5xx and platform errors retry, the rest is final."""
    status = response.status_code
    data = response.data if isinstance(response.data, dict) else {}
    error = one_line(str(data.get("error") or f"HTTP {status}"))
    detail = _detail(error, data)
    reason = f"Slack {method} for {target}: {error}" + (f" ({detail})" if detail else "")
    if status == 429 or error in RATE_LIMIT_ERRORS:
        return RateLimited(reason, retry_after=retry_after_seconds(header(response.headers, "retry-after")))
    if status >= 500 or status == 408 or error in TRANSIENT_ERRORS:
        return TransientError(reason)
    return PermanentError(reason)


def webhook_error(response: WebhookResponse, host: str) -> DeliveryError:
    """Map an incoming webhook's answer (a status and a short text like ``no_service``); never names the URL."""
    status = response.status_code
    body = one_line(response.body or "")
    hint = HINTS.get(body)
    reason = f"Slack incoming webhook on {host} answered HTTP {status}" + (f": {body}" if body else "")
    reason += f" ({hint})" if hint else ""
    if status == 429:
        return RateLimited(reason, retry_after=retry_after_seconds(header(response.headers, "retry-after")))
    if status >= 500 or status == 408:
        return TransientError(reason)
    return PermanentError(reason)


def _detail(error: str, data: dict[str, Any]) -> str:
    details = [HINTS[error]] if error in HINTS else []
    if data.get("needed"):
        details.append(f"needs {data['needed']}")
    if isinstance(data.get("errors"), list):
        details.append("; ".join(one_line(str(e)) for e in data["errors"][:3]))
    return "; ".join(details)


def header(headers: dict[str, Any] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return str(value[0] if isinstance(value, list) else value)
    return None


def granted_scopes(response: SlackResponse) -> set[str]:
    raw = header(response.headers, "x-oauth-scopes") or ""
    return {scope.strip() for scope in raw.split(",") if scope.strip()}


def one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
