"""Open incidents, record updates and create their broadcasts: render everything, then commit, then enqueue."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from broadcaster.core.errors import InputError
from broadcaster.core.limits import MAX_COMPONENTS, Channels, Components, Identifier, Text, Title
from broadcaster.core.units import Duration
from broadcaster.domain.audiences import audience_targets
from broadcaster.rendering import render
from broadcaster.settings import Settings
from broadcaster.store.db import session_scope, sessions
from broadcaster.store.models import (
    Broadcast,
    Delivery,
    DeliveryStatus,
    Impact,
    Incident,
    IncidentStatus,
    Update,
    new_id,
    utcnow,
)
from channels import Channel, Message, channel_types
from channels.base import UNSUBSCRIBE_MARK

INCIDENT_UPDATE = "incident.update"
#: the request's field that names the channels (what an InputError about the choice of channels names)
CHANNELS = "channels"
#: hands committed deliveries to the workers (broadcaster.delivery.queue.dispatch): the domain records
#: broadcasts, the layer above sends them; False when the broker is unreachable (the sweeper sends them later)
Dispatch = Callable[[Settings, Sequence[str]], bool]


class UpdateRequest(BaseModel):
    """One update as ops tooling writes it (CLI, API, Python, or the ``broadcaster.post_update`` task).

    Every entry point validates through this model, so the limits and text checks of ``broadcaster.core.limits``
    hold for all of them alike (a field set afterwards is checked too).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    incident_id: Identifier | None = None
    title: Title | None = None
    status: IncidentStatus
    message: Text
    impact: Impact | None = None
    components: Components = []
    channels: Channels = []
    #: when the next update is promised: a time, or how long from now (default: the impact's reminder cadence)
    next_update_by: datetime | None = None
    next_update_in: Duration | None = None
    #: an update to a resolved incident reopens it only when asked to
    reopen: bool = False

    @field_validator("next_update_by")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # a time without an offset is UTC
        return value

    @field_validator("message", "title")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _incident_or_title(self) -> UpdateRequest:
        if not self.incident_id and not self.title:
            raise ValueError("give --incident ID to update an incident, or --title TEXT to open one")
        if self.next_update_by is not None and self.next_update_in is not None:
            raise ValueError("give the next update as a time or as a duration from now, not both")
        promised = self.next_update_by is not None or self.next_update_in is not None
        if promised and self.status == IncidentStatus.resolved:
            raise ValueError("a resolved update promises no next update: leave out --next-update")
        return self


def parse_request(data: dict[str, Any]) -> UpdateRequest:
    try:
        return UpdateRequest.model_validate(data)
    except ValidationError as exc:
        raise InputError.from_validation(exc) from None


def build_channel(settings: Settings, name: str) -> Channel:  # type: ignore[type-arg]
    config = settings.channels[name]
    return channel_types()[config.type](name, config)


def select_channels(settings: Settings, names: Sequence[str]) -> list[str]:
    """The named channels, or every enabled one; an unknown or disabled name is bad input (of ``channels``)."""
    if not settings.channels:
        raise InputError("no channels are configured: add a [channels.NAME] table to the configuration", field=CHANNELS)
    for name in names:
        if name not in settings.channels:
            known = ", ".join(sorted(settings.channels))
            raise InputError(f"unknown channel {name!r} (configured: {known})", field=CHANNELS)
        if not settings.channels[name].enabled:
            raise InputError(f"channel {name!r} is disabled (enabled = false in its configuration)", field=CHANNELS)
    chosen = list(dict.fromkeys(names)) or [n for n, c in settings.channels.items() if c.enabled]
    if not chosen:
        raise InputError("every configured channel is disabled", field=CHANNELS)
    return chosen


def incident_view(incident: Incident, public_url: str) -> dict[str, Any]:
    return {
        "id": incident.id,
        "title": incident.title,
        "status": incident.status,
        "impact": incident.impact,
        "components": list(incident.components),
        "created_at": incident.created_at.isoformat(),
        "url": f"{public_url.rstrip('/')}/incidents/{incident.id}",
    }


def update_view(update: Update) -> dict[str, Any]:
    return {
        "id": update.id,
        "status": update.status,
        "message": update.message,
        "created_at": update.created_at.isoformat(),
        "next_update_by": update.next_update_by.astimezone(UTC).isoformat() if update.next_update_by else None,
    }


def _apply_update(session: Session, request: UpdateRequest) -> tuple[Incident, Update]:
    """The incident as it will be after this update, and the update itself (not yet flushed)."""
    now = utcnow()
    if request.incident_id:
        incident = session.get(Incident, request.incident_id)
        if incident is None:
            raise InputError(f"no incident with id {request.incident_id!r}")
        reopening = incident.status == IncidentStatus.resolved and request.status != IncidentStatus.resolved
        if reopening and not request.reopen:
            raise InputError(
                f"incident {incident.id} is resolved: reopen it explicitly with this update (send --reopen)"
            )
        if request.title:
            incident.title = request.title
    else:
        incident = Incident(id=new_id(), title=request.title, impact=Impact.minor, components=[], created_at=now)
        session.add(incident)
    incident.status = request.status
    incident.updated_at = now
    incident.resolved_at = now if request.status == IncidentStatus.resolved else None
    if request.impact:
        incident.impact = request.impact
    if request.components:
        incident.components = _accumulated(incident, request.components)
    update = Update(
        id=new_id(), incident_id=incident.id, status=request.status, message=request.message, created_at=now
    )
    return incident, update


def _accumulated(incident: Incident, components: Sequence[str]) -> list[str]:
    """The incident's components with the update's added; an update may not take it past the cap."""
    before = list(incident.components or [])
    merged = list(dict.fromkeys([*before, *components]))
    if len(merged) > MAX_COMPONENTS and len(merged) > len(before):
        raise InputError(
            f"components: incident {incident.id} already names {len(before)} components and this update would "
            f"add {len(merged) - len(before)} more: an incident may name at most {MAX_COMPONENTS}",
            field="components",
        )
    return merged


def next_update_by(settings: Settings, request: UpdateRequest, impact: str, at: datetime) -> datetime | None:
    """When the update promises the next one: as asked, else after the impact's reminder cadence."""
    if request.status == IncidentStatus.resolved:
        return None
    if request.next_update_by is not None:
        if request.next_update_by <= at:
            raise InputError(f"next update by {request.next_update_by.isoformat()} is not in the future")
        return request.next_update_by.astimezone(UTC)
    if request.next_update_in is not None:
        if not request.next_update_in:
            raise InputError("next update in: must be longer than 0s")
        return at + request.next_update_in
    cadence = settings.reminders.after_for(impact)
    return at + cadence if cadence is not None else None


def render_context(
    settings: Settings, event: str, incident: Incident, update: Update | None, timeline: Sequence[Update]
) -> dict[str, Any]:
    """What every template sees; ``fallback`` names the unavailable channel when a fallback renders.

    ``audience`` is the channel's (``"subscribers"`` or none; see ``render_channel``); ``unsubscribe_url`` is a
    mark that the email adapter replaces with each subscriber's own link.
    """
    return {
        "event": event,
        "incident": incident_view(incident, settings.public_url),
        "update": update_view(update) if update is not None else None,
        "timeline": [update_view(u) for u in timeline],
        "public_url": settings.public_url,
        "fallback": None,
        "audience": None,
        "unsubscribe_url": UNSUBSCRIBE_MARK,
    }


def render_channel(settings: Settings, name: str, folder: str, context: dict[str, Any]) -> Message:
    """One channel's rendering; its templates also see the channel's ``audience``."""
    audience = getattr(settings.channels[name], "audience", None)
    return render(build_channel(settings, name), folder, {**context, "audience": audience}, settings.templates_dir)


def render_all(
    settings: Settings, names: Sequence[str], event: str, incident: Incident, update: Update, timeline: list[Update]
) -> dict[str, Message]:
    """Every channel's message; the first template error stops everything before anything exists."""
    context = render_context(settings, event, incident, update, timeline)
    # Incident updates are templated per incident status (templates/<type>/<status>/), with `default` behind.
    folder = update.status
    return {name: render_channel(settings, name, folder, context) for name in names}


def prepare(
    session: Session, settings: Settings, request: UpdateRequest
) -> tuple[Incident, Update, dict[str, Message]]:
    """Apply the update in ``session`` (unflushed) and render it for every selected channel."""
    names = select_channels(settings, request.channels)
    incident, update = _apply_update(session, request)
    update.next_update_by = next_update_by(settings, request, incident.impact, update.created_at)
    timeline = [*incident.updates, update] if request.incident_id else [update]
    return incident, update, render_all(settings, names, INCIDENT_UPDATE, incident, update, timeline)


def preview(settings: Settings, request: UpdateRequest) -> dict[str, Message]:
    """What each channel would send; nothing is written."""
    with sessions(settings.database_url)() as session:
        try:
            return prepare(session, settings, request)[2]
        finally:
            session.rollback()


def create_broadcast(settings: Settings, request: UpdateRequest) -> tuple[str, list[str]]:
    """Record the update and its deliveries in one transaction; return the broadcast id and delivery ids.

    Nothing is written when any channel fails to render.
    """
    with session_scope(settings.database_url) as session:
        incident, update, messages = prepare(session, settings, request)
        session.add(update)
        session.flush()
        return record_broadcast(session, settings, incident, update, INCIDENT_UPDATE, messages)


def broadcast_event(
    settings: Settings,
    incident_id: str,
    event: str,
    channels: Sequence[str],
    extra: dict[str, Any] | None = None,
    session: Session | None = None,
) -> tuple[str, list[str]]:
    """Render and record a broadcast about an incident that is not one of its updates.

    ``event`` names the broadcast (e.g. ``incident.reminder``) and its template folder: the part after the
    dot (``templates/<type>/reminder/``). ``extra`` is added to the template context. Pass ``session`` to
    write in a transaction of your own (e.g. with the row that makes the event happen once).
    """
    folder = event.rsplit(".", 1)[-1]
    if session is None:
        with session_scope(settings.database_url) as own:
            return broadcast_event(settings, incident_id, event, channels, extra, own)
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise InputError(f"no incident with id {incident_id!r}")
    names = select_channels(settings, channels)
    timeline = list(incident.updates)
    context = {
        **render_context(settings, event, incident, timeline[-1] if timeline else None, timeline),
        **(extra or {}),
    }
    messages = {name: render_channel(settings, name, folder, context) for name in names}
    return record_broadcast(
        session, settings, incident, None, event, messages, {"folder": folder, "extra": extra or {}}
    )


def record_broadcast(
    session: Session,
    settings: Settings,
    incident: Incident,
    update: Update | None,
    event: str,
    messages: dict[str, Message],
    context: dict[str, Any] | None = None,
) -> tuple[str, list[str]]:
    """Write a broadcast and one pending delivery per target of each rendered channel.

    A channel's targets are its recipients and, with ``audience = "subscribers"``, its subscribers resolved
    now, in this transaction. The deliveries are written in bulk, as one executemany without RETURNING (the
    ids are ours): with RETURNING, SQLAlchemy builds multi-row INSERTs whose parameters psycopg parses anew
    each time, 3x slower for 10,000 rows.
    """
    broadcast = Broadcast(
        id=new_id(),
        incident_id=incident.id,
        update_id=update.id if update is not None else None,
        event=event,
        channels=list(messages),
        renderings={name: message.model_dump(mode="json") for name, message in messages.items()},
        context=context,
    )
    session.add(broadcast)
    session.flush()
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {
            "id": new_id(),
            "broadcast_id": broadcast.id,
            "incident_id": incident.id,
            "channel": name,
            "type": settings.channels[name].type,
            "target": target,
            "status": DeliveryStatus.pending.value,
            "attempts": 0,
            "budget_from": 0,
            "state": state,
            "created_at": now,
            "updated_at": now,
        }
        for name in messages
        for target, state in audience_targets(
            session, settings, name, build_channel(settings, name).targets(), incident.components
        )
    ]
    if rows:
        session.execute(insert(Delivery), rows)
    # Taken in turns by channel, so every batch of tasks keeps each provider busy and a slow one
    # (a mail server) does not hold the others' deliveries back until its own are done.
    by_channel: dict[str, list[str]] = {}
    for row in rows:
        by_channel.setdefault(row["channel"], []).append(row["id"])
    in_turns = itertools.zip_longest(*by_channel.values())
    return broadcast.id, [delivery_id for turn in in_turns for delivery_id in turn if delivery_id is not None]


def retry_failed(settings: Settings, delivery_id: str | None = None, broadcast_id: str | None = None) -> list[str]:
    """Put failed deliveries back to `pending` with a fresh attempt budget; return their ids."""
    with session_scope(settings.database_url) as session:
        if delivery_id:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:
                raise InputError(f"no delivery with id {delivery_id!r}")
            if delivery.status != DeliveryStatus.failed:
                raise InputError(f"delivery {delivery_id} is {delivery.status}; only failed deliveries are sent again")
            chosen = [delivery]
        else:
            if session.get(Broadcast, broadcast_id) is None:
                raise InputError(f"no broadcast with id {broadcast_id!r}")
            chosen = list(
                session.scalars(
                    select(Delivery).where(
                        Delivery.broadcast_id == broadcast_id, Delivery.status == DeliveryStatus.failed
                    )
                )
            )
        now = utcnow()
        for delivery in chosen:
            delivery.status = DeliveryStatus.pending
            delivery.budget_from = delivery.attempts
            delivery.due_at = None
            delivery.updated_at = now
        return [d.id for d in chosen]


def pending_delivery_ids(settings: Settings, broadcast_id: str) -> list[str]:
    with sessions(settings.database_url)() as session:
        query = select(Delivery.id).where(
            Delivery.broadcast_id == broadcast_id,
            Delivery.status.in_([DeliveryStatus.pending, DeliveryStatus.retrying]),
        )
        return list(session.scalars(query))
