"""Slack's text: mrkdwn escaping, lengths in UTF-16 units as Block Kit counts them, cutting and splitting
without breaking an entity or a link, and the blocks template's JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from broadcaster.core.errors import RenderError


def mrkdwn_escape(text: str) -> str:
    """Slack's three control characters as entities, so user text never becomes a link or an @channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn_unescape(text: str) -> str:
    """The inverse of ``mrkdwn_escape`` (and only of it: other entities stay as written)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _prefix(text: str, limit: int) -> str:
    """The longest prefix of at most ``limit`` UTF-16 units, never splitting a character."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:index]
    return text


def _safe_end(prefix: str) -> str:
    """Drop a trailing partial entity (``&am``) or unclosed ``<link``, which Slack would show broken."""
    amp = prefix.rfind("&")
    if amp != -1 and ";" not in prefix[amp:] and len(prefix) - amp < 8:
        prefix = prefix[:amp]
    angle = prefix.rfind("<")
    if angle > 0 and ">" not in prefix[angle:]:
        prefix = prefix[:angle]
    return prefix


def cut(text: str, limit: int, entities: bool = True) -> str:
    """Shorten to at most ``limit`` UTF-16 units, ending in an ellipsis; ``entities``: the text is mrkdwn."""
    if utf16_len(text) <= limit:
        return text
    prefix = _prefix(text, limit - 1)
    return (_safe_end(prefix) if entities else prefix).rstrip() + "…"


def split_text(text: str, limit: int) -> list[str]:
    """Split into chunks of at most ``limit`` UTF-16 units, at a paragraph, line or word break when one is near."""
    chunks: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        head = _safe_end(_prefix(rest, limit))
        for separator in ("\n\n", "\n", " "):
            at = head.rfind(separator)
            if at > len(head) // 2:
                head = head[:at]
                break
        if not head:  # a single unbreakable token longer than the limit
            head = _prefix(rest, limit)
        chunks.append(head.rstrip())
        rest = rest[len(head) :].lstrip()
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def parse_blocks(rendered: str) -> list[dict[str, Any]]:
    """The blocks template's output: a JSON array of Block Kit blocks."""
    try:
        blocks = json.loads(rendered)
    except json.JSONDecodeError as exc:
        raise RenderError(
            f"the slack blocks template (blocks.json.j2) made invalid JSON: {exc.msg} at line {exc.lineno}"
        ) from None
    if not isinstance(blocks, list) or not all(isinstance(b, dict) and "type" in b for b in blocks):
        raise RenderError("the slack blocks template (blocks.json.j2) must make a JSON array of blocks with a type")
    return blocks


def block_texts(blocks: list[dict[str, Any]]) -> Iterator[str]:
    for block in blocks:
        text = block.get("text")
        if isinstance(text, dict):
            yield str(text.get("text", ""))
        for item in [*block.get("fields", []), *block.get("elements", [])]:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                yield item["text"]
