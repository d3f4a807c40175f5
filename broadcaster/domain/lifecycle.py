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

from sqlalchemy import select
from sqlalchemy.orm import Session

from broadcaster.core.errors import InputError
from broadcaster.core.units import parse_duration
from broadcaster.settings import Settings
from broadcaster.store.models import Maintenance, utcnow

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
            f"{name}: {value!r} is not a time: write it like 2026-05-01T14:30Z (UTC without an offset) or +2h",
            field=name,
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
