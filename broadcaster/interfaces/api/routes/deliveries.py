"""Deliveries: the delivery log, and sending a failed delivery again.

GET  /v1/deliveries[?status=&channel=&incident=&broadcast=&limit=]   read    oldest first
POST /v1/deliveries/{id}/retry[?wait=&timeout=]                      write   a failed delivery, sent again
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from broadcaster import service
from broadcaster.core import limits
from broadcaster.core.errors import InputError
from broadcaster.interfaces.api.deps import (
    CHANNEL_PATTERN,
    ID_PATTERN,
    IdempotencyKeyHeader,
    Reader,
    SettingsDep,
    Timeout,
    Wait,
    Writer,
    idempotent_post,
)
from broadcaster.interfaces.api.guard import AuthFirstRoute
from broadcaster.interfaces.api.problems import NOT_FOUND, STANDARD_ERRORS, Problem, ProblemDetails
from broadcaster.store.models import DeliveryStatus
from broadcaster.store.queries import find_deliveries

router = APIRouter(route_class=AuthFirstRoute)  # the token is checked before a body is read

DeliveryId = Annotated[str, Path(pattern=ID_PATTERN, max_length=limits.MAX_ID, description="A delivery id.")]
AnId = Annotated[str | None, Query(pattern=ID_PATTERN, max_length=limits.MAX_ID)]


@router.get(
    "/v1/deliveries",
    response_model=list[service.DeliveryRecord],
    responses=STANDARD_ERRORS,
    summary="Deliveries matching every given filter, oldest first",
    tags=["deliveries"],
)
def list_deliveries(
    settings: SettingsDep,
    _: Reader,
    status: DeliveryStatus | None = None,
    channel: Annotated[str | None, Query(pattern=CHANNEL_PATTERN, max_length=limits.MAX_CHANNEL_NAME)] = None,
    incident: AnId = None,
    broadcast: AnId = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> list[service.DeliveryRecord]:
    rows = find_deliveries(
        settings,
        incident=incident,
        broadcast=broadcast,
        status=status.value if status else None,
        channel=channel,
        limit=limit,
    )
    return [service.DeliveryRecord.model_validate(row) for row in rows]


@router.post(
    "/v1/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=service.DeliveryRecord,
    responses={
        200: {"model": service.DeliveryRecord, "description": "Sent again; it has finished (`wait`)."},
        409: {"model": ProblemDetails, "description": "The delivery has not failed, or the key is in flight."},
        **NOT_FOUND,
        **STANDARD_ERRORS,
    },
    summary="Send a failed delivery again, with a fresh retry budget",
    tags=["deliveries"],
)
def retry_delivery(
    delivery_id: DeliveryId,
    request: Request,
    settings: SettingsDep,
    principal: Writer,
    idempotency_key: IdempotencyKeyHeader = None,
    wait: Wait = False,
    timeout: Timeout = 30.0,
) -> JSONResponse:
    def action() -> tuple[int, Any]:
        try:
            rows = service.retry(settings, delivery_id, wait=wait, timeout=timeout)
        except service.NotFound:
            raise
        except InputError as exc:
            raise Problem(409, "Conflict", str(exc), "not-retryable") from None
        row = rows[0].model_dump(mode="json")
        return (200 if DeliveryStatus(row["status"]).finished else 202), row

    return idempotent_post(request, principal.name, idempotency_key, action)
