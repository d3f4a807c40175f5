"""What the incident lifecycle adds to the delivery log, and the helpers its modules share.

Three tables, each making one kind of broadcast happen once:

    reminders     (update_id, level, kind) unique    one reminder, or one holding statement, per period of
                                                     silence after an incident's latest update
    maintenance   one row per maintenance window,    ``step`` only moves forward, by a conditional UPDATE in
                  linked to its own incident          the transaction that records the step's broadcast
    postmortems   (incident_id, digest) unique       one broadcast per published report (a changed report
                                                     is a new revision)

The row and its broadcast are written in one transaction; the deliveries are enqueued after it commits.
Two scheduler passes racing for the same row make one broadcast: the loser's INSERT or UPDATE finds the
winner's row and its transaction is rolled back. The schema is in migration ``0005_lifecycle``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from broadcaster.errors import InputError
from broadcaster.models import Base, UTCDateTime, new_id, utcnow
from broadcaster.settings import Settings
from broadcaster.units import parse_duration


class Reminder(Base):
    """A reminder (to responders) or a holding statement (to customers) about one period of silence."""

    __tablename__ = "reminders"
    __table_args__ = (UniqueConstraint("update_id", "level", "kind", name="uq_reminder_once"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    #: the incident's latest update when the reminder was due: the silence began with it
    update_id: Mapped[str] = mapped_column(ForeignKey("updates.id"))
    #: 1 after one period of silence, 2 after two (escalated), ...
    level: Mapped[int] = mapped_column(Integer)
    #: ``reminder`` or ``holding``
    kind: Mapped[str] = mapped_column(String(16))
    broadcast_id: Mapped[str | None] = mapped_column(ForeignKey("broadcasts.id"))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Maintenance(Base):
    """A scheduled maintenance window; its broadcasts belong to its own incident (impact ``none``)."""

    __tablename__ = "maintenance"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), unique=True)
    title: Mapped[str] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    components: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: where every step is posted, chosen when it was scheduled
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: when subscribers are reminded; none when there is no reminder
    remind_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the last step taken (see broadcaster.maintenance.STEPS); only ever moves forward
    step: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    announced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Postmortem(Base):
    """A published post-mortem report of a resolved incident."""

    __tablename__ = "postmortems"
    __table_args__ = (UniqueConstraint("incident_id", "digest", name="uq_postmortem_report"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    #: SHA-256 of the report: the same report is published once
    digest: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    title: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    markdown: Mapped[str] = mapped_column(Text)
    broadcast_id: Mapped[str | None] = mapped_column(ForeignKey("broadcasts.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- shared helpers ----------------------------------------------------------------------------------------


def responder_channels(settings: Settings) -> set[str]:
    """Channels that reach responders (reminders, escalations): never used for customers by default."""
    return {*settings.reminders.channels, *settings.reminders.escalate}


def customer_channels(settings: Settings, configured: list[str]) -> list[str]:
    """``configured`` when given; else every enabled channel that is not a responder channel."""
    if configured:
        return list(configured)
    responders = responder_channels(settings)
    return [name for name, config in settings.channels.items() if config.enabled and name not in responders]


def maintenance_incidents() -> Any:
    """A subquery of the incident ids that are maintenance windows (kept out of reminders and open lists)."""
    return select(Maintenance.incident_id)


def is_maintenance(session: Session, incident_id: str) -> bool:
    return session.scalar(select(Maintenance.id).where(Maintenance.incident_id == incident_id)) is not None


def human_duration(value: timedelta) -> str:
    """``1h 5m``, ``32m``, ``45s``: how long, as people say it (seconds only under a minute)."""
    seconds = max(0, int(value.total_seconds()))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    if seconds and not parts:
        parts.append(f"{seconds}s")
    return " ".join(parts) or "0s"


def at_text(value: datetime) -> str:
    """``2026-05-01 14:30 UTC``."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


_RELATIVE = re.compile(r"^\s*\+\s*(.+)$")


def parse_when(value: str, now: datetime | None = None, name: str = "time") -> datetime:
    """An ISO 8601 time (no offset: UTC), or ``+DURATION`` from now (``+2h``)."""
    now = now or utcnow()
    relative = _RELATIVE.match(value)
    try:
        if relative:
            return now + parse_duration(relative.group(1))
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InputError(
            f"{name}: {value!r} is not a time: write it like 2026-05-01T14:30Z (UTC without an offset) or +2h"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
