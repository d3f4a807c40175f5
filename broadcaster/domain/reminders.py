"""Update reminders and holding statements: silence is noticed by the responders before the customers.

An open incident (not resolved, not a maintenance window) whose impact has a cadence (``[reminders]
after``) is *silent* once its next update is due: at its latest update's "next update by" (by default the
update's time plus the cadence). Silence is then counted in periods of the cadence:

    level 1   at next update by (default: latest update + after)   a reminder on [reminders] channels
    level 2   one period later                                    escalated: also on [reminders] escalate
    level n   each further period                                 escalated, again

Each level happens once per silence (a row in ``reminders``, unique per latest update, level and kind,
written in the transaction that records its broadcast). A pass that runs late sends only the current
level, never the ones it slept through. Any new update (or resolving the incident) ends the silence.
Where ``[reminders] holding`` allows it for the impact, each level also posts a holding statement to the
customers ("we are still working on it, next update by ...").

``remind`` is one pass; the ``broadcaster.remind`` task runs it on the beat schedule, every
``[reminders] check_every``, and ``broadcaster remind`` runs it from cron in embedded mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broadcaster.core.errors import InputError
from broadcaster.core.units import format_duration
from broadcaster.domain.broadcasts import Dispatch, broadcast_event, select_channels
from broadcaster.domain.lifecycle import at_text, customer_channels, human_duration, maintenance_incidents
from broadcaster.settings import Settings
from broadcaster.store.db import session_scope, sessions
from broadcaster.store.models import Incident, IncidentStatus, Reminder, Update, utcnow

log = logging.getLogger(__name__)

REMINDER = "incident.reminder"
HOLDING = "incident.holding"
#: the row kinds in ``reminders``
KINDS = {REMINDER: "reminder", HOLDING: "holding"}


@dataclass(frozen=True)
class Silence:
    """An open incident's time since its latest update, measured in periods of its cadence."""

    incident_id: str
    update_id: str
    status: str
    impact: str
    since: datetime
    first_due: datetime
    period: timedelta

    def level(self, now: datetime) -> int:
        """0 while the next update is not yet due; then 1, 2, ... one per period."""
        if now < self.first_due:
            return 0
        return 1 + int((now - self.first_due) / self.period)

    def due(self, level: int) -> datetime:
        return self.first_due + (level - 1) * self.period


class _Stale(Exception):
    """The incident changed (a new update, resolved) between finding the silence and acting on it."""


def silences(session: Session, settings: Settings) -> list[Silence]:
    """Every open incident with a cadence, and its latest update."""
    incidents = list(
        session.scalars(
            select(Incident).where(
                Incident.status != IncidentStatus.resolved, Incident.id.not_in(maintenance_incidents())
            )
        )
    )
    found: list[Silence] = []
    for incident in incidents:
        period = settings.reminders.after_for(incident.impact)
        latest = _latest_update(session, incident.id)
        if period is None or latest is None:
            continue
        first_due = latest.next_update_by or latest.created_at + period
        found.append(
            Silence(incident.id, latest.id, incident.status, incident.impact, latest.created_at, first_due, period)
        )
    return found


def _latest_update(session: Session, incident_id: str) -> Update | None:
    query = select(Update).where(Update.incident_id == incident_id).order_by(Update.created_at.desc(), Update.id.desc())
    return session.scalars(query.limit(1)).first()


def remind(settings: Settings, now: datetime | None = None, *, dispatch: Dispatch) -> list[str]:
    """One pass: remind about every silent incident (and post holding statements); the new broadcast ids."""
    now = now or utcnow()
    with sessions(settings.database_url)() as session:
        found = silences(session, settings)
    created: list[str] = []
    for silence in found:
        level = silence.level(now)
        if level < 1:
            continue
        reminded = _once(settings, silence, level, REMINDER, reminder_channels(settings, level), now, dispatch)
        created += [reminded] if reminded else []
        if settings.reminders.holds_for(silence.impact):
            held = _once(settings, silence, level, HOLDING, holding_channels(settings), now, dispatch)
            created += [held] if held else []
    return created


def reminder_channels(settings: Settings, level: int) -> list[str]:
    """The responders' channels that exist and are enabled; escalation channels too from level 2."""
    wanted = [*settings.reminders.channels, *(settings.reminders.escalate if level >= 2 else [])]
    return _usable(settings, list(dict.fromkeys(wanted)), "reminders.channels")


def holding_channels(settings: Settings) -> list[str]:
    return _usable(settings, customer_channels(settings, settings.reminders.holding_channels), "holding channels")


def _usable(settings: Settings, names: list[str], what: str) -> list[str]:
    usable = [n for n in names if n in settings.channels and settings.channels[n].enabled]
    if len(usable) < len(names):
        missing = ", ".join(n for n in names if n not in usable)
        log.warning("%s: %s not configured or disabled; skipped", what, missing)
    return usable


def check_channels(settings: Settings) -> None:
    """Bad input when a configured reminder channel does not exist (for ``broadcaster remind``)."""
    names = [*settings.reminders.channels, *settings.reminders.escalate, *settings.reminders.holding_channels]
    for name in names:
        if name not in settings.channels:
            known = ", ".join(sorted(settings.channels)) or "none"
            raise InputError(f"[reminders] names channel {name!r}, which is not configured (configured: {known})")


def _once(
    settings: Settings,
    silence: Silence,
    level: int,
    event: str,
    channels: list[str],
    now: datetime,
    dispatch: Dispatch,
) -> str | None:
    """Record and dispatch this level's broadcast unless another pass already did; its id, or None."""
    if not channels:
        return None
    try:
        with session_scope(settings.database_url) as session:
            # The unique row first: a racing pass blocks here until we commit, then fails (and rolls back).
            row = Reminder(
                incident_id=silence.incident_id,
                update_id=silence.update_id,
                level=level,
                kind=KINDS[event],
                due_at=silence.due(level),
                created_at=now,
            )
            session.add(row)
            session.flush()
            # Read the incident again under the row (PostgreSQL: locked against a concurrent update).
            incident = session.get(Incident, silence.incident_id, with_for_update=True, populate_existing=True)
            latest = _latest_update(session, silence.incident_id)
            if incident is None or incident.status == IncidentStatus.resolved or latest is None:
                raise _Stale
            if latest.id != silence.update_id:
                raise _Stale
            extra = _context(settings, silence, incident, level, now, event)
            broadcast_id, delivery_ids = broadcast_event(
                settings, incident.id, event, select_channels(settings, channels), extra, session=session
            )
            row.broadcast_id = broadcast_id
    except (IntegrityError, _Stale):
        return None
    except InputError as exc:  # a template or channel that cannot be used: the next pass tries again
        log.error("%s for incident %s (level %d) not sent: %s", event, silence.incident_id, level, exc)
        return None
    log.info("%s for incident %s, level %d: broadcast %s", event, silence.incident_id, level, broadcast_id)
    dispatch(settings, delivery_ids)
    return broadcast_id


def _context(
    settings: Settings, silence: Silence, incident: Incident, level: int, now: datetime, event: str
) -> dict[str, Any]:
    """What the reminder and holding templates see, besides the incident and its latest update."""
    silent_for = now - silence.since
    next_at = silence.due(level + 1)
    command = f'broadcaster send --incident {incident.id} --status {incident.status} --message "..."'
    details = {
        "level": level,
        "escalated": level >= 2,
        "silent_for": human_duration(silent_for),
        "silent_seconds": int(silent_for.total_seconds()),
        "silent_since": silence.since.isoformat(),
        "silent_since_text": at_text(silence.since),
        "period": format_duration(silence.period),
        "next_at": next_at.isoformat(),
        "next_at_text": at_text(next_at),
        "command": command,
    }
    if event == HOLDING:
        return {"holding": {**details, "next_update_by": next_at.isoformat(), "next_update_by_text": at_text(next_at)}}
    return {"reminder": details}
