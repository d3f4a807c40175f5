"""Fallback channels: when a delivery finally fails, its update goes out once on the channel's fallbacks."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broadcaster.core.errors import InputError
from broadcaster.domain.broadcasts import build_channel, render_context
from broadcaster.rendering import render
from broadcaster.settings import Settings
from broadcaster.store.db import session_scope
from broadcaster.store.models import Broadcast, Delivery, DeliveryStatus, Incident, Update, new_id

log = logging.getLogger(__name__)


def fall_back(settings: Settings, delivery_id: str, session: Session | None = None) -> list[str]:
    """Create the fallback deliveries standing in for ``delivery_id``; return the new ids to enqueue.

    Once per broadcast and fallback target: a target that already has a delivery in the broadcast
    (the unique constraint on broadcast, channel and target) is not sent to again. Fallbacks do not
    fall back further. Pass the ``session`` that records the failure, so that nobody sees the broadcast
    finished before its fallbacks exist.
    """
    if session is None:
        with session_scope(settings.database_url) as own:
            return fall_back(settings, delivery_id, own)
    failed = session.get(Delivery, delivery_id)
    config = settings.channels.get(failed.channel) if failed else None
    if failed is None or config is None or failed.fallback_for or not config.fallback:
        return []
    if session.scalar(select(Delivery.id).where(Delivery.fallback_for == failed.id).limit(1)):
        return []
    broadcast = session.get(Broadcast, failed.broadcast_id)
    incident = session.get(Incident, failed.incident_id)
    if broadcast is None or incident is None:
        return []
    # Rendered as the broadcast was: its update (or, for events, the timeline so far) and its extra context.
    update = session.get(Update, broadcast.update_id) if broadcast.update_id else None
    timeline = [u for u in incident.updates if update is None or u.created_at <= update.created_at]
    rendered_as = broadcast.context or {}
    folder = rendered_as.get("folder") or (update.status if update else "default")
    context = render_context(
        settings, broadcast.event, incident, update or (timeline[-1] if timeline else None), timeline
    )
    context.update(rendered_as.get("extra") or {})
    context["fallback"] = {"channel": failed.channel, "type": failed.type, "delivery_id": failed.id}
    created: list[str] = []
    for name in config.fallback:
        if not settings.channels[name].enabled:
            continue
        channel = build_channel(settings, name)
        try:
            message = render(channel, folder, context, settings.templates_dir)
        except InputError as exc:
            log.error("cannot render fallback %s for delivery %s: %s", name, failed.id, exc)
            continue
        for target in channel.targets():
            delivery = Delivery(
                id=new_id(),
                broadcast_id=broadcast.id,
                incident_id=incident.id,
                channel=name,
                type=channel.type,
                target=target,
                status=DeliveryStatus.pending,
                fallback_for=failed.id,
                message=message.model_dump(mode="json"),
            )
            try:
                with session.begin_nested():
                    session.add(delivery)
            except IntegrityError:
                continue  # that target already has this broadcast
            created.append(delivery.id)
    if created:
        log.info("delivery %s failed; falling back with %d deliveries", delivery_id, len(created))
    return created
