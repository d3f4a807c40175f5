"""Read the delivery log: broadcast summaries, delivery listings, and waiting for a broadcast to finish."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, select

from broadcaster.core.errors import InputError
from broadcaster.settings import Settings
from broadcaster.store.db import sessions
from broadcaster.store.models import Broadcast, Delivery, DeliveryStatus

#: a delivery as the contract shows it (without ``with_ids``): these columns, by their names, in this order
VIEW_COLUMNS = (
    Delivery.id,
    Delivery.channel,
    Delivery.type,
    Delivery.target,
    Delivery.status,
    Delivery.attempts,
    Delivery.provider_id,
    Delivery.error,
    Delivery.fallback_for,
)


def delivery_view(delivery: Delivery | Row[*tuple[Any, ...]], with_ids: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {column.key: getattr(delivery, column.key) for column in VIEW_COLUMNS}
    if with_ids:
        view["broadcast_id"] = delivery.broadcast_id
        view["incident_id"] = delivery.incident_id
        view["updated_at"] = delivery.updated_at.isoformat()
    return view


def overall_status(statuses: Sequence[str]) -> str:
    if any(not DeliveryStatus(s).finished for s in statuses):
        return "pending"
    return "failed" if DeliveryStatus.failed in statuses else "delivered"


def broadcast_summary(settings: Settings, broadcast_id: str) -> dict[str, Any]:
    """The contract's broadcast summary."""
    with sessions(settings.database_url)() as session:
        broadcast = session.get(Broadcast, broadcast_id)
        if broadcast is None:
            raise InputError(f"no broadcast with id {broadcast_id!r}")
        # Only the summary's columns, as rows rather than ORM objects: a large fan-out has 10,000 of them.
        rows = session.execute(select(*VIEW_COLUMNS).where(Delivery.broadcast_id == broadcast_id).order_by(Delivery.id))
        deliveries = [delivery_view(row) for row in rows]
        return {
            "incident_id": broadcast.incident_id,
            "update_id": broadcast.update_id,
            "broadcast_id": broadcast.id,
            "status": overall_status([d["status"] for d in deliveries]),
            "deliveries": deliveries,
        }


def find_deliveries(
    settings: Settings,
    incident: str | None = None,
    broadcast: str | None = None,
    status: str | None = None,
    channel: str | None = None,
    ids: Sequence[str] | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Deliveries matching every given filter, oldest first (the newest ``limit`` of them)."""
    query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
    if ids is not None:
        query = query.where(Delivery.id.in_(ids))
    if incident:
        query = query.where(Delivery.incident_id == incident)
    if broadcast:
        query = query.where(Delivery.broadcast_id == broadcast)
    if status:
        query = query.where(Delivery.status == status)
    if channel:
        query = query.where(Delivery.channel == channel)
    with sessions(settings.database_url)() as session:
        return [delivery_view(d, with_ids=True) for d in reversed(list(session.scalars(query)))]


def wait_for(settings: Settings, broadcast_ids: Sequence[str], timeout: float | None) -> bool:
    """Poll the log until every delivery of the broadcasts has finished; False when ``timeout`` ran out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.02
    unfinished = [DeliveryStatus.pending, DeliveryStatus.sending, DeliveryStatus.retrying]
    while True:
        with sessions(settings.database_url)() as session:
            left = session.scalar(
                select(Delivery.id)
                .where(Delivery.broadcast_id.in_(broadcast_ids), Delivery.status.in_(unfinished))
                .limit(1)
            )
        if left is None:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)
