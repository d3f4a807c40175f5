"""Scheduled maintenance: announced, reminded, started and completed, each step posted exactly once, in order.

A maintenance window is a row in ``maintenance`` linked to an incident of its own (impact ``none``, status
``monitoring`` until it is completed, then ``resolved``): the incident carries its broadcasts and its page
(``{public_url}/incidents/{id}``), and is kept out of reminders and ``broadcaster incidents --open``.

    step  name       when                                    event (templates/<type>/<folder>/)
    1     announced  ``maintenance schedule``                incident.maintenance-scheduled
    2     upcoming   ``[maintenance] remind_before`` before  incident.maintenance-upcoming
                     the start (skipped once the start has
                     come: a late reminder would be noise)
    3     started    ``starts_at``                           incident.maintenance-started
    4     completed  ``ends_at``, or ``maintenance complete`` incident.maintenance-completed

``step`` moves forward only by a conditional UPDATE (``step = n`` where ``step = n - 1``) in the transaction
that records the step's broadcast, so two passes never post a step twice. A step waits until every delivery
of the previous ones has finished, so each channel gets them in order; a pass that runs late (a stopped
beat) catches up one step after the other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from broadcaster.core.errors import InputError
from broadcaster.core.limits import MAX_CHANNEL_NAME, MAX_COMPONENT, MAX_COMPONENTS, MAX_MESSAGE, MAX_TITLE, checked
from broadcaster.domain.broadcasts import Dispatch, broadcast_event, incident_view, select_channels
from broadcaster.domain.lifecycle import at_text, customer_channels, human_duration, parse_when
from broadcaster.settings import Settings
from broadcaster.store.db import changed, session_scope, sessions
from broadcaster.store.models import (
    Delivery,
    DeliveryStatus,
    Impact,
    Incident,
    IncidentStatus,
    Maintenance,
    new_id,
    utcnow,
)
from broadcaster.store.queries import wait_for

log = logging.getLogger(__name__)

SCHEDULED, ANNOUNCED, UPCOMING, STARTED, COMPLETED = range(5)
STEPS = {
    SCHEDULED: "scheduled",
    ANNOUNCED: "announced",
    UPCOMING: "upcoming",
    STARTED: "started",
    COMPLETED: "completed",
}
EVENTS = {
    ANNOUNCED: "incident.maintenance-scheduled",
    UPCOMING: "incident.maintenance-upcoming",
    STARTED: "incident.maintenance-started",
    COMPLETED: "incident.maintenance-completed",
}
#: the column that records when each step was taken
STAMPS = {ANNOUNCED: "announced_at", UPCOMING: "reminded_at", STARTED: "started_at", COMPLETED: "completed_at"}
_UNFINISHED = (DeliveryStatus.pending, DeliveryStatus.sending, DeliveryStatus.retrying)


@dataclass(frozen=True)
class Scheduled:
    """What ``schedule`` made: the window, its incident, and the announcement's broadcast."""

    maintenance_id: str
    incident_id: str
    broadcast_id: str
    delivery_ids: list[str]


def schedule(
    settings: Settings,
    title: str,
    starts: str | datetime,
    ends: str | datetime,
    components: list[str] | None = None,
    message: str | None = None,
    channels: list[str] | None = None,
    remind_before: timedelta | None = None,
    now: datetime | None = None,
    *,
    dispatch: Dispatch,
) -> Scheduled:
    """Record a maintenance window and its announcement in one transaction, then dispatch the announcement."""
    now = now or utcnow()
    title = checked("--title", title, max_length=MAX_TITLE)
    if not title:
        raise InputError("--title: must not be empty")
    message = checked("--message", message, multiline=True, max_length=MAX_MESSAGE) if message else message
    components = [checked("--component", c, max_length=MAX_COMPONENT) for c in components or []]
    if len(set(components)) > MAX_COMPONENTS:
        raise InputError(f"--component: {len(set(components))} components, more than the {MAX_COMPONENTS} allowed")
    channels = [checked("--channel", c, max_length=MAX_CHANNEL_NAME) for c in channels or []]
    starts_at = starts if isinstance(starts, datetime) else parse_when(starts, now, "--starts")
    ends_at = ends if isinstance(ends, datetime) else parse_when(ends, now, "--ends")
    if ends_at <= starts_at:
        raise InputError(f"--ends ({at_text(ends_at)}) must be after --starts ({at_text(starts_at)})")
    if ends_at <= now:
        raise InputError(f"--ends ({at_text(ends_at)}) is in the past: the maintenance is already over")
    names = select_channels(settings, channels or audience(settings))
    before = settings.maintenance.remind_before if remind_before is None else remind_before
    # No reminder when the announcement itself comes that close to the start.
    remind_at = starts_at - before if before and starts_at - before > now else None
    with session_scope(settings.database_url) as session:
        incident = Incident(
            id=new_id(),
            title=title,
            status=IncidentStatus.monitoring,
            impact=Impact.none,
            components=list(dict.fromkeys(components or [])),
            created_at=now,
            updated_at=now,
        )
        window = Maintenance(
            id=new_id(),
            incident_id=incident.id,
            title=title,
            message=(message or "").strip() or None,
            components=list(incident.components),
            channels=names,
            starts_at=starts_at,
            ends_at=ends_at,
            remind_at=remind_at,
            step=ANNOUNCED,
            created_at=now,
            updated_at=now,
            announced_at=now,
        )
        session.add(incident)
        session.flush()  # the incident before its window: no ORM relationship orders the two
        session.add(window)
        session.flush()
        extra = context(settings, window, incident, ANNOUNCED, now)
        broadcast_id, delivery_ids = broadcast_event(
            settings, incident.id, EVENTS[ANNOUNCED], names, extra, session=session
        )
    dispatch(settings, delivery_ids)
    return Scheduled(window.id, incident.id, broadcast_id, delivery_ids)


def audience(settings: Settings) -> list[str]:
    """Where maintenance is posted by default: ``[maintenance] channels``, else the customers' channels."""
    names = customer_channels(settings, settings.maintenance.channels)
    if not names:
        raise InputError("no channel reaches customers: every enabled channel is a [reminders] channel")
    return names


def next_step(window: Maintenance, now: datetime, complete: bool = False) -> tuple[int, bool] | None:
    """The step due now after ``window.step``, and whether it is posted; None when nothing is due.

    ``complete`` ends a started window before its ``ends_at`` (``maintenance complete``).
    """
    if window.step < UPCOMING:
        if now >= window.starts_at:
            return UPCOMING, False  # too late to remind: straight on to the start
        if window.remind_at is not None and now >= window.remind_at:
            return UPCOMING, True
        return None
    if window.step == UPCOMING:
        return (STARTED, True) if now >= window.starts_at else None
    if window.step == STARTED:
        return (COMPLETED, True) if complete or now >= window.ends_at else None
    return None


def advance(
    settings: Settings,
    now: datetime | None = None,
    *,
    dispatch: Dispatch,
    wait: bool = False,
    timeout: float | None = None,
) -> list[str]:
    """One pass over every unfinished maintenance window; the new broadcast ids, in the order posted.

    Without ``wait`` a step whose predecessors are still being delivered waits for a later pass (the
    beat's); with ``wait`` the pass waits for them (at most ``timeout`` seconds each), as a command may.
    """
    now = now or utcnow()
    with sessions(settings.database_url)() as session:
        ids = list(
            session.scalars(select(Maintenance.id).where(Maintenance.step < COMPLETED).order_by(Maintenance.starts_at))
        )
    created: list[str] = []
    for maintenance_id in ids:
        created += advance_one(settings, maintenance_id, now, dispatch=dispatch, wait=wait, timeout=timeout)
    return created


def advance_one(
    settings: Settings,
    maintenance_id: str,
    now: datetime,
    *,
    dispatch: Dispatch,
    complete: bool = False,
    wait: bool = False,
    timeout: float | None = None,
) -> list[str]:
    """Take every step of one window that is due, one after the other; the new broadcast ids."""
    created: list[str] = []
    while True:
        with sessions(settings.database_url)() as session:
            window = session.get(Maintenance, maintenance_id)
            if window is None:
                return created
            due = next_step(window, now, complete)
            if due is None:
                return created
            step, post = due
            unfinished = _unfinished_broadcasts(session, window.incident_id)
        if post and unfinished and not (wait and wait_for(settings, unfinished, timeout)):
            return created  # in order: the previous step is still being delivered
        taken = _take_step(settings, maintenance_id, step - 1, step, post, now)
        if taken is None:
            return created  # another pass took it
        broadcast_id, delivery_ids = taken
        if broadcast_id is not None:
            dispatch(settings, delivery_ids)
            created.append(broadcast_id)


def _unfinished_broadcasts(session: Session, incident_id: str) -> list[str]:
    query = select(Delivery.broadcast_id).where(Delivery.incident_id == incident_id, Delivery.status.in_(_UNFINISHED))
    return sorted(set(session.scalars(query)))


def _take_step(
    settings: Settings, maintenance_id: str, current: int, step: int, post: bool, now: datetime
) -> tuple[str | None, list[str]] | None:
    """Move the window from ``current`` to ``step`` and record its broadcast, in one transaction."""
    try:
        with session_scope(settings.database_url) as session:
            moved = changed(
                session,
                update(Maintenance)
                .where(Maintenance.id == maintenance_id, Maintenance.step == current)
                .values({"step": step, "updated_at": now, STAMPS[step]: now}),
            )
            if not moved:
                return None
            window = session.get(Maintenance, maintenance_id, populate_existing=True)
            incident = session.get(Incident, window.incident_id) if window else None
            if window is None or incident is None:
                return None
            if step == COMPLETED:
                incident.status = IncidentStatus.resolved
                incident.resolved_at = incident.updated_at = now
            if not post:
                log.info("maintenance %s: %s skipped (its start has come)", maintenance_id, STEPS[step])
                return None, []
            extra = context(settings, window, incident, step, now)
            # The channels chosen when it was scheduled, as far as they are still configured and enabled.
            names = [n for n in window.channels if n in settings.channels and settings.channels[n].enabled]
            broadcast_id, delivery_ids = broadcast_event(
                settings, incident.id, EVENTS[step], names or audience(settings), extra, session=session
            )
    except InputError as exc:  # a template or channel that cannot be used: the step is not taken
        log.error("maintenance %s: %s not posted: %s", maintenance_id, STEPS[step], exc)
        return None
    log.info("maintenance %s: %s, broadcast %s", maintenance_id, STEPS[step], broadcast_id)
    return broadcast_id, delivery_ids


def complete(
    settings: Settings, ident: str, now: datetime | None = None, *, dispatch: Dispatch, timeout: float | None = None
) -> list[str]:
    """End a window now (posting its start first if no pass has yet); the new broadcast ids."""
    now = now or utcnow()
    window = find(settings, ident)
    if window.step >= COMPLETED:
        raise InputError(f"maintenance {window.id} was already completed at {at_text(window.completed_at or now)}")
    if now < window.starts_at:
        raise InputError(
            f"maintenance {window.id} has not started (it starts at {at_text(window.starts_at)}): "
            "only a started window can be completed"
        )
    created = advance_one(settings, window.id, now, dispatch=dispatch, complete=True, wait=True, timeout=timeout)
    if find(settings, window.id).step < COMPLETED:
        raise InputError(f"maintenance {window.id}: its earlier steps are still being delivered; try again shortly")
    return created


def find(settings: Settings, ident: str) -> Maintenance:
    """A window by its id or its incident's id."""
    with sessions(settings.database_url)() as session:
        window = session.scalar(
            select(Maintenance).where(or_(Maintenance.id == ident, Maintenance.incident_id == ident))
        )
    if window is None:
        raise InputError(f"no maintenance with id {ident!r}")
    return window


def windows(settings: Settings, include_completed: bool = False) -> list[dict[str, Any]]:
    """Maintenance windows, soonest first, as JSON-ready views."""
    query = select(Maintenance).order_by(Maintenance.starts_at, Maintenance.id)
    if not include_completed:
        query = query.where(Maintenance.step < COMPLETED)
    with sessions(settings.database_url)() as session:
        return [view(settings, w) for w in session.scalars(query)]


def view(settings: Settings, window: Maintenance) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": window.id,
        "incident_id": window.incident_id,
        "title": window.title,
        "message": window.message,
        "components": list(window.components),
        "channels": list(window.channels),
        "starts_at": iso(window.starts_at),
        "ends_at": iso(window.ends_at),
        "remind_at": iso(window.remind_at),
        "step": STEPS[window.step],
        "announced_at": iso(window.announced_at),
        "reminded_at": iso(window.reminded_at),
        "started_at": iso(window.started_at),
        "completed_at": iso(window.completed_at),
        "url": f"{settings.public_url.rstrip('/')}/incidents/{window.incident_id}",
    }


def context(settings: Settings, window: Maintenance, incident: Incident, step: int, now: datetime) -> dict[str, Any]:
    """What the maintenance templates see (``maintenance``), besides ``incident``."""
    return {
        "maintenance": {
            **view(settings, window),
            "step": STEPS[step],
            "starts_at_text": at_text(window.starts_at),
            "ends_at_text": at_text(window.ends_at),
            "duration": human_duration(window.ends_at - window.starts_at),
            "starts_in": human_duration(window.starts_at - now),
            "ended_early": step == COMPLETED and now < window.ends_at,
            "now_text": at_text(now),
            "url": incident_view(incident, settings.public_url)["url"],
        }
    }
