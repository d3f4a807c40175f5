"""Subscribers for the audience tests: API tokens, channels with ``audience = "subscribers"``, the CLI's list."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from broadcaster.sandbox import Sandbox
from broadcaster.testing import Result

WRITER = "subscribers-writer-0123456789"
READER = "subscribers-reader-0123456789"
TOKENS = {
    "tokens": [
        {"name": "admin", "token": WRITER, "scopes": ["read", "write"]},
        {"name": "dashboard", "token": READER, "scopes": ["read"]},
    ]
}


def audience_channels(
    sandbox: Sandbox, emails: list[str] | None = None, phones: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """`news` (email) and `texts` (sms) to the sandbox, each with ``audience = "subscribers"``."""
    news = {**sandbox.channel_config("email", "news"), "recipients": emails or [], "audience": "subscribers"}
    texts = {**sandbox.channel_config("sms", "texts"), "recipients": phones or [], "audience": "subscribers"}
    return {"news": news, "texts": texts}


def listed(cli: Callable[..., Result], config: Path, *args: str) -> list[dict[str, Any]]:
    """``broadcaster subscribers list --json`` (with ``args``), which must succeed."""
    result = cli("subscribers", "list", "--json", "--config", str(config), *args)
    assert result.code == 0, result.stderr
    rows: list[dict[str, Any]] = result.json
    return rows
