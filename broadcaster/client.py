"""The Python API: open incidents, post updates and read the delivery log from a tool's own process.

    from broadcaster import Broadcaster

    broadcaster = Broadcaster()          # the configuration the `broadcaster` command would read
    first = broadcaster.open_incident("Checkout errors", status="investigating", message="We are looking into it.")
    broadcaster.post_update(first.incident_id, status="resolved", message="Fixed.", wait=True)

It writes to the same delivery log and enqueues on the same broker as the command line, so the workers send
what it records. In embedded mode (no ``broker_url``) it runs a worker thread in this process, as
``broadcaster send`` does. A process has one configuration at a time: the Celery app is process-wide.

From a process without this package, post through the HTTP API, or enqueue the ``broadcaster.post_update``
Celery task (see ``broadcaster.tasks_api``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from broadcaster.broadcasts import UpdateRequest, incident_view, parse_request, retry_failed
from broadcaster.db import sessions
from broadcaster.errors import InputError
from broadcaster.idempotency import Answer, fingerprint, once
from broadcaster.models import Base, Broadcast, Delivery, Incident, IncidentStatus
from broadcaster.queries import broadcast_summary, find_deliveries, wait_for
from broadcaster.settings import Settings, load_settings
from channels import Message

__all__ = [
    "BroadcastSummary",
    "Broadcaster",
    "DeliveryRecord",
    "DeliveryView",
    "IncidentDetail",
    "IncidentView",
    "NotFound",
    "UpdateView",
]

log = logging.getLogger(__name__)


class NotFound(InputError):
    """No incident, broadcast or delivery has this id."""


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


# --- plain functions, shared by this class, the HTTP API and the Celery task -------------------------------


def exists(settings: Settings, model: type[Base], id_: str) -> bool:
    with sessions(settings.database_url)() as session:
        return session.get(model, id_) is not None


def summary(settings: Settings, broadcast_id: str) -> BroadcastSummary:
    if not exists(settings, Broadcast, broadcast_id):
        raise NotFound(f"no broadcast with id {broadcast_id!r}")
    return BroadcastSummary.model_validate(broadcast_summary(settings, broadcast_id))


def submit(
    settings: Settings,
    request: UpdateRequest,
    *,
    scope: str,
    key: str | None = None,
    wait: bool = False,
    timeout: float | None = None,
) -> Answer:
    """Record the update and broadcast it, once per idempotency key; the answer's body is the summary.

    The status code is 201 when the broadcast has finished (``wait``), else 202 (accepted, still sending).
    """
    from broadcaster.broadcasts import create_broadcast

    if request.incident_id and not exists(settings, Incident, request.incident_id):
        raise NotFound(f"no incident with id {request.incident_id!r}")

    def action() -> tuple[int, Any]:
        broadcast_id, delivery_ids = create_broadcast(settings, request)
        from broadcaster.worker import dispatch  # the worker module registers tasks that import this one

        dispatch(settings, delivery_ids)
        if wait:
            wait_for(settings, [broadcast_id], timeout)
        result = summary(settings, broadcast_id).model_dump(mode="json")
        return (202 if result["status"] == "pending" else 201), result

    return once(settings, scope, key, fingerprint("POST", "broadcast", request.model_dump(mode="json")), action)


def retry(
    settings: Settings,
    delivery_id: str | None = None,
    broadcast_id: str | None = None,
    wait: bool = False,
    timeout: float | None = None,
) -> list[DeliveryRecord]:
    """Send failed deliveries again with a fresh retry budget; the deliveries as they stand afterwards."""
    if delivery_id is not None and not exists(settings, Delivery, delivery_id):
        raise NotFound(f"no delivery with id {delivery_id!r}")
    if broadcast_id is not None and not exists(settings, Broadcast, broadcast_id):
        raise NotFound(f"no broadcast with id {broadcast_id!r}")
    ids = retry_failed(settings, delivery_id=delivery_id, broadcast_id=broadcast_id)
    from broadcaster.worker import dispatch

    dispatch(settings, ids)
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
            raise NotFound(f"no incident with id {incident_id!r}")
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


# --- the class ---------------------------------------------------------------------------------------------


class Broadcaster:
    """Open incidents, post updates and read summaries, with the broadcaster's configuration.

    Bad input raises ``InputError`` (``NotFound`` for an unknown id) naming the field, before anything is sent.
    With ``idempotency_key``, a repeated call with the same arguments returns the first call's summary and
    broadcasts nothing new (for 24 hours, across processes sharing the database).
    """

    #: idempotency keys given to this class live apart from the HTTP API's and the Celery task's
    scope = "python"

    def __init__(self, settings: Settings | None = None, *, config: str | Path | None = None) -> None:
        self.settings = settings if settings is not None else load_settings(config)

    def open_incident(
        self,
        title: str,
        *,
        message: str,
        status: str = "investigating",
        impact: str | None = None,
        components: Sequence[str] = (),
        channels: Sequence[str] = (),
        wait: bool = False,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> BroadcastSummary:
        """Open an incident with its first update and broadcast it (to every enabled channel by default)."""
        request = _request(None, title, status, message, impact, components, channels)
        return self.broadcast(request, wait=wait, timeout=timeout, idempotency_key=idempotency_key)

    def post_update(
        self,
        incident_id: str,
        *,
        status: str,
        message: str,
        title: str | None = None,
        impact: str | None = None,
        components: Sequence[str] = (),
        channels: Sequence[str] = (),
        wait: bool = False,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> BroadcastSummary:
        """Add an update to an incident's timeline and broadcast it."""
        request = _request(incident_id, title, status, message, impact, components, channels)
        return self.broadcast(request, wait=wait, timeout=timeout, idempotency_key=idempotency_key)

    def broadcast(
        self,
        request: UpdateRequest,
        *,
        wait: bool = False,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> BroadcastSummary:
        """Record and broadcast an update given as an ``UpdateRequest``."""
        # Checked again: a request made with model_construct() has skipped the limits and text checks.
        request = parse_request(request.model_dump(warnings=False))
        answer = submit(self.settings, request, scope=self.scope, key=idempotency_key, wait=wait, timeout=timeout)
        return BroadcastSummary.model_validate(answer.body)

    def preview(
        self,
        *,
        status: str,
        message: str,
        incident_id: str | None = None,
        title: str | None = None,
        impact: str | None = None,
        components: Sequence[str] = (),
        channels: Sequence[str] = (),
    ) -> dict[str, Message]:
        """Each channel's rendering, with its size and warnings; nothing is written or sent."""
        from broadcaster.broadcasts import preview

        return preview(self.settings, _request(incident_id, title, status, message, impact, components, channels))

    def summary(self, broadcast_id: str) -> BroadcastSummary:
        return summary(self.settings, broadcast_id)

    def wait(self, broadcast_id: str, timeout: float | None = None) -> BroadcastSummary:
        """Wait until every delivery of the broadcast has finished (or ``timeout`` seconds); its summary."""
        if not exists(self.settings, Broadcast, broadcast_id):
            raise NotFound(f"no broadcast with id {broadcast_id!r}")
        wait_for(self.settings, [broadcast_id], timeout)
        return summary(self.settings, broadcast_id)

    def incidents(self, *, open_only: bool = False, limit: int = 100) -> list[IncidentView]:
        return list_incidents(self.settings, "open" if open_only else None, limit)

    def incident(self, incident_id: str) -> IncidentDetail:
        return incident_detail(self.settings, incident_id)

    def deliveries(
        self,
        *,
        incident: str | None = None,
        broadcast: str | None = None,
        status: str | None = None,
        channel: str | None = None,
    ) -> list[DeliveryRecord]:
        rows = find_deliveries(self.settings, incident=incident, broadcast=broadcast, status=status, channel=channel)
        return [DeliveryRecord.model_validate(row) for row in rows]

    def retry(
        self,
        delivery_id: str | None = None,
        *,
        broadcast_id: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> list[DeliveryRecord]:
        """Send a failed delivery, or every failed delivery of a broadcast, again."""
        if (delivery_id is None) == (broadcast_id is None):
            raise InputError("give exactly one of delivery_id or broadcast_id")
        return retry(self.settings, delivery_id, broadcast_id, wait, timeout)


def _request(
    incident_id: str | None,
    title: str | None,
    status: str,
    message: str,
    impact: str | None,
    components: Sequence[str],
    channels: Sequence[str],
) -> UpdateRequest:
    return parse_request(
        {
            "incident_id": incident_id,
            "title": title,
            "status": status,
            "message": message,
            "impact": impact,
            "components": list(components),
            "channels": list(channels),
        }
    )
