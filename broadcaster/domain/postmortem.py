"""Post-mortems: a resolved incident's report, in full on the blog webhook, as a pointer everywhere else.

One ``incident.postmortem`` broadcast renders ``templates/<type>/postmortem/``: the webhook templates carry
the whole report (``postmortem.markdown`` and ``postmortem.html``, converted here with markdown-it,
CommonMark plus tables, raw HTML escaped); the others a short pointer (``postmortem.title``,
``postmortem.summary``: the report's first paragraph as plain text, and ``postmortem.url``).

A report is published once: the same text again is refused; a changed text is published as the next
revision (``postmortem.revision``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from broadcaster.core.errors import InputError
from broadcaster.core.limits import MAX_CHANNEL_NAME, MAX_REPORT, MAX_URL, checked
from broadcaster.domain.broadcasts import Dispatch, broadcast_event, incident_view, select_channels
from broadcaster.domain.lifecycle import customer_channels
from broadcaster.settings import Settings
from broadcaster.store.db import session_scope
from broadcaster.store.models import Incident, IncidentStatus, Postmortem, new_id, utcnow

POSTMORTEM = "incident.postmortem"
#: how long the pointer's summary may be (a tweet and an SMS hold it with the title and the link)
SUMMARY_MAX = 180


@dataclass(frozen=True)
class Published:
    postmortem_id: str
    incident_id: str
    broadcast_id: str
    delivery_ids: list[str]
    revision: int
    url: str


def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def _plain(token: Token) -> str:
    """An inline token's text without its markup."""
    parts = [
        " " if c.type in ("softbreak", "hardbreak") else c.content
        for c in token.children or []
        if c.type in ("text", "code_inline", "softbreak", "hardbreak")
    ]
    return "".join(parts) or token.content


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:.") + "…"


def read_report(markdown: str, fallback_title: str) -> dict[str, str]:
    """The report's title (its first heading), summary (its first paragraph, plain) and HTML."""
    tokens = _markdown().parse(markdown)
    title = summary = ""
    for before, token in zip(tokens, tokens[1:], strict=False):
        if token.type != "inline":
            continue
        if before.type == "heading_open" and not title:
            title = _plain(token).strip()
        elif before.type == "paragraph_open" and not summary:
            summary = _plain(token).strip()
    return {
        "title": title or f"Post-mortem: {fallback_title}",
        "summary": _cut(summary, SUMMARY_MAX),
        "html": _markdown().render(markdown),
    }


def publish(
    settings: Settings,
    incident_id: str,
    markdown: str,
    url: str | None = None,
    channels: list[str] | None = None,
    *,
    dispatch: Dispatch,
) -> Published:
    """Record the post-mortem and its broadcast in one transaction, then dispatch it."""

    text = checked("report", markdown, multiline=True, max_length=MAX_REPORT).strip()
    if not text:
        raise InputError("the post-mortem report is empty")
    url = checked("--url", url, max_length=MAX_URL) if url is not None else None
    channels = [checked("--channel", c, max_length=MAX_CHANNEL_NAME) for c in channels or []]
    names = channels or customer_channels(settings, [])
    if not names:
        raise InputError("no channel reaches customers: every enabled channel is a [reminders] channel")
    names = select_channels(settings, names)
    digest = hashlib.sha256(text.encode()).hexdigest()
    try:
        with session_scope(settings.database_url) as session:
            incident = session.get(Incident, incident_id)
            if incident is None:
                raise InputError(f"no incident with id {incident_id!r}")
            if incident.status != IncidentStatus.resolved:
                raise InputError(
                    f"incident {incident_id} is {incident.status}, not resolved: "
                    "publish its post-mortem once it is resolved (send --incident ID --status resolved)"
                )
            earlier = session.scalar(
                select(Postmortem).where(Postmortem.incident_id == incident_id, Postmortem.digest == digest)
            )
            if earlier is not None:
                raise InputError(
                    f"this post-mortem was already published for incident {incident_id} "
                    f"(revision {earlier.revision}, broadcast {earlier.broadcast_id}); change the report to revise it"
                )
            revision = 1 + (session.scalar(select(func.count()).where(Postmortem.incident_id == incident_id)) or 0)
            report = read_report(text, incident.title)
            link = url or f"{incident_view(incident, settings.public_url)['url']}/postmortem"
            row = Postmortem(
                id=new_id(),
                incident_id=incident_id,
                digest=digest,
                revision=revision,
                title=report["title"],
                url=link,
                markdown=text,
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            extra: dict[str, Any] = {
                "postmortem": {**report, "markdown": text, "url": link, "revision": revision, "id": row.id}
            }
            broadcast_id, delivery_ids = broadcast_event(
                settings, incident_id, POSTMORTEM, names, extra, session=session
            )
            row.broadcast_id = broadcast_id
    except IntegrityError:
        raise InputError(f"this post-mortem is being published for incident {incident_id} already") from None
    dispatch(settings, delivery_ids)
    return Published(row.id, incident_id, broadcast_id, delivery_ids, revision, link)
