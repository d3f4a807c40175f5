"""Incidents and their broadcasts: open an incident, post an update, preview one, read incidents and broadcasts.

    POST /v1/incidents                        write   open an incident with its first update, and broadcast it
    POST /v1/incidents/{id}/updates           write   post an update to an incident, and broadcast it
    GET  /v1/incidents[?status=&limit=]       read    incidents, newest first
    GET  /v1/incidents/{id}                   read    an incident and its timeline
    GET  /v1/broadcasts/{id}                  read    a broadcast's summary
    POST /v1/preview                          read    each channel's rendering; nothing is sent

A body is checked twice: by its schema here (lengths, no blank text, no unknown key), then as the core's
``UpdateRequest`` (its text checks and rules), whose refusals are 422s on the body too. The broadcasting POSTs
go through ``service.submit``, which claims the Idempotency-Key itself.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from broadcaster import service
from broadcaster.core import limits
from broadcaster.domain.broadcasts import UpdateRequest
from broadcaster.domain.broadcasts import preview as render_preview
from broadcaster.interfaces.api.deps import (
    CHANNEL_PATTERN,
    ID_PATTERN,
    Component,
    IdempotencyKeyHeader,
    Principal,
    Reader,
    SettingsDep,
    Timeout,
    Wait,
    Writer,
    idempotent_response,
)
from broadcaster.interfaces.api.guard import AuthFirstRoute
from broadcaster.interfaces.api.problems import IN_FLIGHT, NOT_FOUND, STANDARD_ERRORS, invalid_body
from broadcaster.store.models import Impact, Incident, IncidentStatus
from channels import Message as Rendering

router = APIRouter(route_class=AuthFirstRoute)  # the token is checked before a body is read


# --- request bodies ----------------------------------------------------------------------------------------


def _storable(value: str) -> str:
    # The log's databases store neither NUL characters nor unpaired surrogates.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _storable(value)
        if isinstance(value, list):
            return [_storable(v) if isinstance(v, str) else v for v in value]
        return value


# UpdateRequest's fields with the lengths of broadcaster.core.limits, as the schema declares them (and no blank
# text); UpdateRequest then checks the text itself (control characters).
Title = Annotated[limits.TitleLength, Field(min_length=1, pattern=r"\S")]
Text = Annotated[limits.TextLength, Field(min_length=1, pattern=r"\S")]
ChannelName = Annotated[limits.ChannelNameLength, Field(pattern=CHANNEL_PATTERN)]
Components = Annotated[
    list[Component],
    Field(max_length=limits.MAX_COMPONENTS, description="Affected components (added to the incident's)."),
]
Channels = Annotated[
    list[ChannelName],
    Field(max_length=limits.MAX_CHANNELS, description="Send only to these channels; empty: every enabled one."),
]


class IncidentCreate(_Body):
    """A new incident with its first update, broadcast at once."""

    title: Title
    status: IncidentStatus = IncidentStatus.investigating
    message: Text
    impact: Impact | None = None
    components: Components = []
    channels: Channels = []


class UpdateCreate(_Body):
    """An update to an incident; ``title`` renames it, ``impact`` and ``components`` change it."""

    status: IncidentStatus
    message: Text
    title: Title | None = None
    impact: Impact | None = None
    components: Components = []
    channels: Channels = []


class PreviewRequest(_Body):
    """What ``POST /v1/incidents`` (no ``incident_id``) or an update (``incident_id``) would send."""

    incident_id: Annotated[limits.IdentifierLength, Field(pattern=ID_PATTERN)] | None = None
    title: Title | None = None
    status: IncidentStatus
    message: Text
    impact: Impact | None = None
    components: Components = []
    channels: Channels = []


def update_request(data: dict[str, Any]) -> UpdateRequest:
    """The core's request; its own rules (e.g. a title or an incident) come back as a 422 on the body."""
    try:
        return UpdateRequest.model_validate(data)
    except ValidationError as exc:
        raise invalid_body(exc) from None


class IncidentFilter(StrEnum):
    open = "open"
    investigating = "investigating"
    identified = "identified"
    monitoring = "monitoring"
    resolved = "resolved"


IncidentId = Annotated[str, Path(pattern=ID_PATTERN, max_length=limits.MAX_ID, description="An incident id.")]
BroadcastId = Annotated[str, Path(pattern=ID_PATTERN, max_length=limits.MAX_ID, description="A broadcast id.")]


# --- the routes --------------------------------------------------------------------------------------------

BROADCASTING: dict[int | str, dict[str, Any]] = {
    201: {"model": service.BroadcastSummary, "description": "Broadcast; every delivery has finished (`wait`)."},
    **NOT_FOUND,
    **IN_FLIGHT,
    **STANDARD_ERRORS,
}


def _broadcast(
    settings: SettingsDep, principal: Principal, update: UpdateRequest, key: str | None, wait: bool, timeout: float
) -> JSONResponse:
    # service.submit claims the key itself: its fingerprint is shared with the Python API and the Celery task.
    answer = service.submit(settings, update, scope=principal.name, key=key, wait=wait, timeout=timeout)
    return idempotent_response(answer, "/v1/broadcasts/{broadcast_id}")


@router.post(
    "/v1/incidents",
    status_code=202,
    response_model=service.BroadcastSummary,
    responses={k: v for k, v in BROADCASTING.items() if k != 404},
    summary="Open an incident and broadcast its first update",
    tags=["incidents"],
)
def open_incident(
    body: IncidentCreate,
    settings: SettingsDep,
    principal: Writer,
    idempotency_key: IdempotencyKeyHeader = None,
    wait: Wait = False,
    timeout: Timeout = 30.0,
) -> JSONResponse:
    return _broadcast(settings, principal, update_request(body.model_dump()), idempotency_key, wait, timeout)


@router.post(
    "/v1/incidents/{incident_id}/updates",
    status_code=202,
    response_model=service.BroadcastSummary,
    responses=BROADCASTING,
    summary="Post an update to an incident and broadcast it",
    tags=["incidents"],
)
def post_update(
    incident_id: IncidentId,
    body: UpdateCreate,
    settings: SettingsDep,
    principal: Writer,
    idempotency_key: IdempotencyKeyHeader = None,
    wait: Wait = False,
    timeout: Timeout = 30.0,
) -> JSONResponse:
    update = update_request({**body.model_dump(), "incident_id": incident_id})
    return _broadcast(settings, principal, update, idempotency_key, wait, timeout)


@router.get(
    "/v1/incidents",
    response_model=list[service.IncidentView],
    responses=STANDARD_ERRORS,
    summary="List incidents, newest first",
    tags=["incidents"],
)
def list_incidents(
    settings: SettingsDep,
    _: Reader,
    status: Annotated[IncidentFilter | None, Query(description="`open`: every unresolved incident.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[service.IncidentView]:
    return service.list_incidents(settings, status.value if status else None, limit)


@router.get(
    "/v1/incidents/{incident_id}",
    response_model=service.IncidentDetail,
    responses={**NOT_FOUND, **STANDARD_ERRORS},
    summary="An incident and its timeline",
    tags=["incidents"],
)
def get_incident(incident_id: IncidentId, settings: SettingsDep, _: Reader) -> service.IncidentDetail:
    return service.incident_detail(settings, incident_id)


@router.get(
    "/v1/broadcasts/{broadcast_id}",
    response_model=service.BroadcastSummary,
    responses={**NOT_FOUND, **STANDARD_ERRORS},
    summary="A broadcast's summary: its deliveries and their status",
    tags=["broadcasts"],
)
def get_broadcast(broadcast_id: BroadcastId, settings: SettingsDep, _: Reader) -> service.BroadcastSummary:
    return service.summary(settings, broadcast_id)


@router.post(
    "/v1/preview",
    response_model=dict[str, Rendering],
    responses={**NOT_FOUND, **STANDARD_ERRORS},
    summary="Each channel's rendering, with its size and warnings; nothing is sent",
    tags=["incidents"],
)
def preview(
    body: PreviewRequest, settings: SettingsDep, _: Reader, idempotency_key: IdempotencyKeyHeader = None
) -> dict[str, Rendering]:
    # A preview writes nothing, so a repeated key needs no stored answer.
    update = update_request(body.model_dump())
    if update.incident_id and not service.exists(settings, Incident, update.incident_id):
        raise service.NotFound(f"no incident with id {update.incident_id!r}", field="incident_id")
    return render_preview(settings, update)
