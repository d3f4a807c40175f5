"""The one door: every entry point (the CLI, the HTTP API, the Python API, the Celery task) writes and reads here.

One write path (``submit``, with its idempotency rule), one ``retry``, one set of reads (summaries, incidents),
and the lifecycle's steps (reminders, maintenance, post-mortems), each recording through the domain and then
handing the deliveries to the workers (``dispatch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from broadcaster.core.errors import InputError
from broadcaster.delivery.queue import dispatch
from broadcaster.domain import maintenance, postmortem, reminders
from broadcaster.domain.broadcasts import UpdateRequest, create_broadcast, incident_view, retry_failed
from broadcaster.domain.idempotency import Answer, fingerprint, once
from broadcaster.settings import Settings
from broadcaster.store.db import sessions
from broadcaster.store.models import Base, Broadcast, Delivery, Incident, IncidentStatus, Maintenance, Update
from broadcaster.store.queries import broadcast_summary, find_deliveries, overall_status, wait_for


class NotFound(InputError):
    """No incident, broadcast or delivery has this id; ``field`` names the id (``incident_id``, ...)."""


# --- what the log answers (the contract's JSON shapes; new fields pass through) ---------------------------


class DeliveryView(BaseModel):
    """One delivery in a broadcast summary."""

    model_config = ConfigDict(extra="allow")
    id: str
    channel: str
    type: str
    target: str
    status: str
    attempts: int
    provider_id: str | None = None
    error: str | None = None
    fallback_for: str | None = None


class DeliveryRecord(DeliveryView):
    """One delivery in a listing: with the broadcast and incident it belongs to."""

    broadcast_id: str
    incident_id: str
    updated_at: datetime | None = None


class BroadcastSummary(BaseModel):
    """The contract's broadcast summary; ``status`` is ``delivered``, ``failed`` or ``pending``."""

    model_config = ConfigDict(extra="allow")
    incident_id: str
    update_id: str | None  # none for events about the incident (reminders, maintenance)
    broadcast_id: str
    status: str
    deliveries: list[DeliveryView]


class IncidentView(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    title: str
    status: str
    impact: str
    components: list[str]
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None = None
    url: str


class UpdateView(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    status: str
    message: str
    created_at: datetime
    broadcast_ids: list[str]


class IncidentDetail(IncidentView):
    """An incident with its timeline, oldest update first."""

    updates: list[UpdateView]


@dataclass(frozen=True)
class Submitted(Answer):
    """``submit``'s answer, and how many of its deliveries the broker did not take (it was unreachable: they stay
    pending, and the sweeper sends them once it is back). A replayed answer sent nothing: 0."""

    undispatched: int = 0


@dataclass(frozen=True)
class Resent:
    """The failed deliveries put back to pending, and how many of them the broker did not take (as for submit)."""

    delivery_ids: list[str]
    undispatched: int = 0


# --- plain functions, shared by this class, the HTTP API and the Celery task -------------------------------


def exists(settings: Settings, model: type[Base], id_: str) -> bool:
    with sessions(settings.database_url)() as session:
        return session.get(model, id_) is not None


def summary(settings: Settings, broadcast_id: str) -> BroadcastSummary:
    if not exists(settings, Broadcast, broadcast_id):
        raise NotFound(f"no broadcast with id {broadcast_id!r}", field="broadcast_id")
    return BroadcastSummary.model_validate(broadcast_summary(settings, broadcast_id))


def submit(
    settings: Settings,
    request: UpdateRequest,
    *,
    scope: str,
    key: str | None = None,
    wait: bool = False,
    timeout: float | None = None,
) -> Submitted:
    """Record the update and broadcast it, once per idempotency key; the answer's body is the summary.

    The status code is 201 when the broadcast has finished (``wait``), else 202 (accepted, still sending).
    """
    if request.incident_id and not exists(settings, Incident, request.incident_id):
        raise NotFound(f"no incident with id {request.incident_id!r}", field="incident_id")
    undispatched = 0

    def action() -> tuple[int, Any]:
        nonlocal undispatched
        broadcast_id, delivery_ids = create_broadcast(settings, request)
        undispatched = _dispatch(settings, delivery_ids)
        if wait:
            wait_for(settings, [broadcast_id], timeout)
        result = summary(settings, broadcast_id).model_dump(mode="json")
        return (202 if result["status"] == "pending" else 201), result

    answer = once(settings, scope, key, fingerprint("POST", "broadcast", request.model_dump(mode="json")), action)
    return Submitted(answer.status_code, answer.body, answer.replayed, undispatched)


def resend(settings: Settings, delivery_id: str | None = None, broadcast_id: str | None = None) -> Resent:
    """Put failed deliveries back to pending with a fresh retry budget and hand them to the workers (no waiting)."""
    if delivery_id is not None and not exists(settings, Delivery, delivery_id):
        raise NotFound(f"no delivery with id {delivery_id!r}", field="delivery_id")
    if broadcast_id is not None and not exists(settings, Broadcast, broadcast_id):
        raise NotFound(f"no broadcast with id {broadcast_id!r}", field="broadcast_id")
    ids = retry_failed(settings, delivery_id=delivery_id, broadcast_id=broadcast_id)
    return Resent(ids, _dispatch(settings, ids))


def _dispatch(settings: Settings, delivery_ids: list[str]) -> int:
    """Hand committed deliveries to the workers; how many the broker did not take (all of them, or none)."""
    return 0 if dispatch(settings, delivery_ids) else len(delivery_ids)


def retry(
    settings: Settings,
    delivery_id: str | None = None,
    broadcast_id: str | None = None,
    wait: bool = False,
    timeout: float | None = None,
) -> list[DeliveryRecord]:
    """Send failed deliveries again with a fresh retry budget; the deliveries as they stand afterwards."""
    ids = resend(settings, delivery_id, broadcast_id).delivery_ids
    if ids and wait:
        broadcasts = sorted({row["broadcast_id"] for row in find_deliveries(settings, ids=ids)})
        wait_for(settings, broadcasts, timeout)
    return [DeliveryRecord.model_validate(row) for row in find_deliveries(settings, ids=ids)] if ids else []


def list_incidents(settings: Settings, status: str | None = None, limit: int = 100) -> list[IncidentView]:
    """Incidents, newest first; ``status`` is one of the incident statuses, or ``open`` (not yet resolved)."""
    query = select(Incident).order_by(Incident.created_at.desc(), Incident.id.desc()).limit(limit)
    if status == "open":
        query = query.where(Incident.status != IncidentStatus.resolved)
    elif status:
        query = query.where(Incident.status == status)
    with sessions(settings.database_url)() as session:
        return [IncidentView.model_validate(_incident_fields(settings, i)) for i in session.scalars(query)]


def incident_detail(settings: Settings, incident_id: str) -> IncidentDetail:
    with sessions(settings.database_url)() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise NotFound(f"no incident with id {incident_id!r}", field="incident_id")
        broadcasts: dict[str, list[str]] = {}
        for update_id, broadcast_id in session.execute(
            select(Broadcast.update_id, Broadcast.id)
            .where(Broadcast.incident_id == incident_id, Broadcast.update_id.is_not(None))
            .order_by(Broadcast.id)
        ):
            broadcasts.setdefault(str(update_id), []).append(broadcast_id)
        updates = [
            UpdateView(
                id=u.id,
                status=u.status,
                message=u.message,
                created_at=u.created_at,
                broadcast_ids=broadcasts.get(u.id, []),
            )
            for u in incident.updates
        ]
        return IncidentDetail.model_validate({**_incident_fields(settings, incident), "updates": updates})


def _incident_fields(settings: Settings, incident: Incident) -> dict[str, Any]:
    return {
        **incident_view(incident, settings.public_url),
        "updated_at": incident.updated_at,
        "resolved_at": incident.resolved_at,
    }


def incident_listing(settings: Settings, open_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
    """``list_incidents`` as JSON, each with ``kind`` (incident or maintenance), ``last_update_at`` and
    ``next_update_by``; ``open_only`` also leaves maintenance windows out."""
    found = list_incidents(settings, "open" if open_only else None, limit)
    ids = [i.id for i in found]
    with sessions(settings.database_url)() as session:
        maintenance_ids = set(session.scalars(select(Maintenance.incident_id).where(Maintenance.incident_id.in_(ids))))
        latest: dict[str, Update] = {}
        query = select(Update).where(Update.incident_id.in_(ids)).order_by(Update.created_at, Update.id)
        for update in session.scalars(query):
            latest[update.incident_id] = update
    rows = []
    for view in found:
        if open_only and view.id in maintenance_ids:
            continue
        last = latest.get(view.id)
        row = view.model_dump(mode="json")
        row["kind"] = "maintenance" if view.id in maintenance_ids else "incident"
        row["last_update_at"] = last.created_at.isoformat() if last else None
        row["next_update_by"] = last.next_update_by.isoformat() if last and last.next_update_by else None
        rows.append(row)
    return rows


def incident_timeline(settings: Settings, incident_id: str) -> dict[str, Any]:
    """``incident_detail`` as JSON, with each update's broadcasts and deliveries, and the other events
    (reminders, maintenance steps...) under ``events``."""
    detail = incident_detail(settings, incident_id).model_dump(mode="json")
    deliveries: dict[str, list[dict[str, Any]]] = {}
    for row in find_deliveries(settings, incident=incident_id, limit=100_000):
        deliveries.setdefault(row["broadcast_id"], []).append(
            {k: v for k, v in row.items() if k not in ("broadcast_id", "incident_id")}
        )
    with sessions(settings.database_url)() as session:
        window = session.scalar(select(Maintenance).where(Maintenance.incident_id == incident_id))
        query = (
            select(Broadcast).where(Broadcast.incident_id == incident_id).order_by(Broadcast.created_at, Broadcast.id)
        )
        broadcasts = list(session.scalars(query))
        promised = {
            u.id: u.next_update_by for u in session.scalars(select(Update).where(Update.incident_id == incident_id))
        }
    by_update: dict[str, list[dict[str, Any]]] = {}
    events = []
    for broadcast in broadcasts:
        rows = deliveries.get(broadcast.id, [])
        view = {
            "broadcast_id": broadcast.id,
            "event": broadcast.event,
            "created_at": broadcast.created_at.isoformat(),
            "status": overall_status([d["status"] for d in rows]) if rows else "delivered",
            "rendered": {name: _headline(message) for name, message in broadcast.renderings.items()},
            "deliveries": rows,
        }
        if broadcast.update_id:
            by_update.setdefault(broadcast.update_id, []).append(view)
        else:
            events.append(view)
    for update in detail["updates"]:
        when = promised.get(update["id"])
        update["next_update_by"] = when.isoformat() if when else None
        update["broadcasts"] = by_update.get(update["id"], [])
    detail["kind"] = "maintenance" if window is not None else "incident"
    detail["maintenance"] = maintenance.view(settings, window) if window is not None else None
    detail["events"] = events
    return detail


def _headline(message: dict[str, Any]) -> str:
    """The first line a channel's recipients saw: the title, subject or text."""
    parts = message.get("parts") or {}
    for key in ("title", "subject", "text", "body"):
        if parts.get(key):
            return str(parts[key]).strip().splitlines()[0]
    return ""


def broadcast_events(settings: Settings, broadcast_ids: list[str]) -> dict[str, str]:
    """What each broadcast announced (``incident.update``, ``incident.reminder``...), by broadcast id."""
    with sessions(settings.database_url)() as session:
        query = select(Broadcast.id, Broadcast.event).where(Broadcast.id.in_(broadcast_ids))
        return {broadcast_id: event for broadcast_id, event in session.execute(query)}


# --- the lifecycle's steps ---------------------------------------------------------------------------------


def remind(settings: Settings, now: datetime | None = None) -> list[str]:
    """One reminder pass (what the beat runs): the new broadcast ids."""
    return reminders.remind(settings, now, dispatch=dispatch)


def advance_maintenance(
    settings: Settings, now: datetime | None = None, *, wait: bool = False, timeout: float | None = None
) -> list[str]:
    """One maintenance pass (what the beat runs): the new broadcast ids."""
    return maintenance.advance(settings, now, dispatch=dispatch, wait=wait, timeout=timeout)


def schedule_maintenance(
    settings: Settings,
    title: str,
    starts: str | datetime,
    ends: str | datetime,
    components: list[str] | None = None,
    message: str | None = None,
    channels: list[str] | None = None,
    remind_before: timedelta | None = None,
    now: datetime | None = None,
) -> maintenance.Scheduled:
    return maintenance.schedule(
        settings, title, starts, ends, components, message, channels, remind_before, now, dispatch=dispatch
    )


def complete_maintenance(
    settings: Settings, ident: str, now: datetime | None = None, *, timeout: float | None = None
) -> list[str]:
    return maintenance.complete(settings, ident, now, dispatch=dispatch, timeout=timeout)


def publish_postmortem(
    settings: Settings, incident_id: str, markdown: str, url: str | None = None, channels: list[str] | None = None
) -> postmortem.Published:
    return postmortem.publish(settings, incident_id, markdown, url, channels, dispatch=dispatch)
