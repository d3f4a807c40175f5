"""The ``broadcaster.post_update`` Celery task: services that already run Celery post updates by name.

The sender needs neither this package nor its configuration, only the broker the workers use:

    from celery import Celery

    Celery(broker="redis://broker:6379/0").send_task("broadcaster.post_update", kwargs={
        "title": "Checkout errors", "status": "investigating", "message": "We are looking into it.",
        "impact": "major", "components": ["checkout"],
        "idempotency_key": "alertmanager-4711",   # optional: the same key and payload broadcast once
    })

The payload is an update's keys (``incident_id`` to update an incident or ``title`` to open one, ``status``,
``message``, ``impact``, ``components``, ``channels``) and an optional ``idempotency_key``, as keyword
arguments or as one dict argument. A bad payload is logged and dropped: no retry can fix it. Without a key the
task's own id serves as one, so a message that the broker delivers twice still broadcasts once.
The task returns the broadcast summary (kept only where the sender configured a result backend).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from pydantic import Field, ValidationError
from sqlalchemy.exc import OperationalError

from broadcaster.core.errors import InputError
from broadcaster.delivery.queue import app, get_settings
from broadcaster.domain.broadcasts import UpdateRequest
from broadcaster.domain.idempotency import MAX_KEY_LENGTH, InFlight
from broadcaster.service import submit

log = logging.getLogger(__name__)
TASK_NAME = "broadcaster.post_update"
#: idempotency keys of this task live apart from the HTTP API's and the Python API's
SCOPE = "celery"


class PostUpdatePayload(UpdateRequest):
    """An update as the task receives it."""

    idempotency_key: str | None = Field(default=None, min_length=1, max_length=MAX_KEY_LENGTH)


def parse_payload(payload: dict[str, Any]) -> PostUpdatePayload:
    try:
        return PostUpdatePayload.model_validate(payload)
    except ValidationError as exc:
        raise InputError.from_validation(exc) from None


@app.task(
    name=TASK_NAME,
    bind=True,
    acks_late=True,
    throws=(InputError,),
    # The database or a first attempt still holding the key: worth another try; the key keeps it to one broadcast.
    autoretry_for=(OperationalError, InFlight),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=10,
)
def post_update(self: Task, payload: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:  # type: ignore[type-arg]
    """Record the update, create its broadcast and enqueue the deliveries; the broadcast summary."""
    try:
        if payload is not None and not isinstance(payload, dict):
            raise InputError("the payload must be a JSON object")
        request = parse_payload({**(payload or {}), **fields})
        key = request.idempotency_key or f"task:{self.request.id}"
        update = UpdateRequest.model_validate(request.model_dump(exclude={"idempotency_key"}))
        answer = submit(get_settings(), update, scope=SCOPE, key=key)
    except InputError as exc:
        log.error("%s %s: dropped: %s", TASK_NAME, self.request.id, exc)
        raise
    summary: dict[str, Any] = answer.body
    log.info(
        "%s %s: broadcast %s of incident %s%s",
        TASK_NAME,
        self.request.id,
        summary["broadcast_id"],
        summary["incident_id"],
        " (replayed: already broadcast)" if answer.replayed else "",
    )
    return summary
