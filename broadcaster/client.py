"""The Python API: open incidents, post updates and read the delivery log from a tool's own process.

    from broadcaster import Broadcaster

    broadcaster = Broadcaster()          # the configuration the `broadcaster` command would read
    first = broadcaster.open_incident("Checkout errors", status="investigating", message="We are looking into it.")
    broadcaster.post_update(first.incident_id, status="resolved", message="Fixed.", wait=True)

It writes to the same delivery log and enqueues on the same broker as the command line, so the workers send
what it records. In embedded mode (no ``broker_url``) it runs a worker thread in this process, as
``broadcaster send`` does. A process has one configuration at a time: the Celery app is process-wide.

From a process without this package, post through the HTTP API, or enqueue the ``broadcaster.post_update``
Celery task (see ``broadcaster.worker.tasks``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from broadcaster.core.errors import InputError
from broadcaster.domain.broadcasts import UpdateRequest, parse_request, preview
from broadcaster.service import (
    BroadcastSummary,
    DeliveryRecord,
    DeliveryView,
    IncidentDetail,
    IncidentView,
    NotFound,
    UpdateView,
    exists,
    incident_detail,
    list_incidents,
    retry,
    submit,
    summary,
)
from broadcaster.settings import Settings, load_settings
from broadcaster.store.models import Broadcast
from broadcaster.store.queries import find_deliveries, wait_for
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
