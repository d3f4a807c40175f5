"""Subscribers, for ops tooling: list, add, read, change and delete them.

    GET    /v1/subscribers[?status=&email=&phone=&component=&after=&limit=]     read
    POST   /v1/subscribers          {"email" | "phone", "components", "resubscribe"}   write (201 new, 200 known)
    GET    /v1/subscribers/{id}                                                  read
    PATCH  /v1/subscribers/{id}     {"components"?, "status"?: confirmed | unsubscribed}   write
    DELETE /v1/subscribers/{id}                                                  write

The subscribers' own ways out (the one-click unsubscribe link, a channel's inbound STOP) are in
``unsubscribe`` and ``inbound``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from broadcaster.core import limits
from broadcaster.domain import subscribers
from broadcaster.interfaces.api.deps import (
    ID_PATTERN,
    Component,
    IdempotencyKeyHeader,
    Reader,
    SettingsDep,
    Writer,
    idempotent_post,
)
from broadcaster.interfaces.api.guard import AuthFirstRoute
from broadcaster.interfaces.api.problems import (
    IN_FLIGHT,
    STANDARD_ERRORS,
    ProblemDetails,
    field_problem,
    input_problem,
    validation_problem,
)
from broadcaster.store.models import Kind, SubscriberStatus

router = APIRouter(route_class=AuthFirstRoute)  # the token is checked before a body is read

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ProblemDetails, "description": "No subscriber has this id."}
}


# --- bodies and answers --------------------------------------------------------------------------------------

Components = Annotated[
    list[Component],
    Field(max_length=limits.MAX_COMPONENTS, description="Components followed; empty: all of them."),
]


class SubscriberView(BaseModel):
    """A subscriber: exactly one of ``email`` and ``phone``."""

    model_config = ConfigDict(extra="allow")
    id: str
    email: str | None
    phone: str | None
    components: list[str]
    status: SubscriberStatus
    failures: int = Field(description="Permanent failures in a row (a bounced address, an invalid number).")
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    unsubscribed_at: datetime | None
    quarantined_at: datetime | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("components", mode="after", check_fields=False)
    @classmethod
    def _components(cls, value: list[str] | None) -> list[str] | None:
        return subscribers.clean_components(value) if value is not None else None


class SubscriberCreate(_Body):
    """A new subscriber (or new components for a known one): give ``email`` or ``phone``."""

    email: Annotated[str, Field(max_length=limits.MAX_EMAIL)] | None = None
    phone: Annotated[str, Field(max_length=16, description="E.164, e.g. +14155550100.")] | None = None
    components: Components = []
    resubscribe: bool = Field(default=False, description="Subscribe again one who unsubscribed (at its request).")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return subscribers.normalise_email(value) if value is not None else None

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return subscribers.normalise_phone(value) if value is not None else None

    @model_validator(mode="after")
    def _one_address(self) -> SubscriberCreate:
        if (self.email is None) == (self.phone is None):
            raise ValueError("give exactly one of email or phone")
        return self


class SubscriberChange(_Body):
    """What to change: the components followed, and/or the status (``confirmed`` also ends a quarantine;
    for one who unsubscribed it needs ``resubscribe``)."""

    components: Components | None = None
    status: Literal["confirmed", "unsubscribed"] | None = None
    resubscribe: bool = Field(
        default=False, description="With `status: confirmed`: subscribe again one who unsubscribed (at its request)."
    )


SubscriberId = Annotated[str, Path(pattern=ID_PATTERN, max_length=limits.MAX_ID, description="A subscriber id.")]


def _query_address(kind: Kind, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return subscribers.normalise(kind, value)
    except ValueError as exc:
        raise validation_problem([field_problem(kind.value, "query", str(exc))]) from None


# --- /v1/subscribers -----------------------------------------------------------------------------------------


@router.get(
    "/v1/subscribers",
    response_model=list[SubscriberView],
    responses=STANDARD_ERRORS,
    summary="List subscribers matching every given filter, oldest first",
    tags=["subscribers"],
)
def list_subscribers(
    settings: SettingsDep,
    _: Reader,
    status: SubscriberStatus | None = None,
    email: Annotated[str | None, Query(max_length=limits.MAX_EMAIL)] = None,
    phone: Annotated[str | None, Query(max_length=16)] = None,
    component: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=limits.MAX_COMPONENT,
            pattern=r"^[^\x00-\x1f\x7f]+$",
            description="Those an incident on this component reaches (its followers and those following all).",
        ),
    ] = None,
    after: Annotated[
        str | None, Query(pattern=ID_PATTERN, max_length=limits.MAX_ID, description="Continue after this id.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    if email is not None and phone is not None:
        raise validation_problem([field_problem("phone", "query", "give email or phone, not both")])
    kind = Kind.email if email is not None else Kind.phone if phone is not None else None
    address = _query_address(kind, email if email is not None else phone) if kind else None
    return subscribers.list_subscribers(
        settings, status=status, kind=kind, address=address, component=component, after=after, limit=limit
    )


@router.post(
    "/v1/subscribers",
    status_code=201,
    response_model=SubscriberView,
    responses={
        200: {"model": SubscriberView, "description": "Already a subscriber: its components were set."},
        **IN_FLIGHT,
        **STANDARD_ERRORS,
    },
    summary="Add a subscriber (or set a known one's components)",
    tags=["subscribers"],
)
def add_subscriber(
    body: SubscriberCreate,
    request: Request,
    settings: SettingsDep,
    principal: Writer,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    kind, address = (Kind.email, body.email) if body.email is not None else (Kind.phone, body.phone)
    assert address is not None

    def action() -> tuple[int, Any]:
        view, created = subscribers.add_subscriber(settings, kind, address, body.components, body.resubscribe)
        return (201 if created else 200), view

    return idempotent_post(
        request, principal.name, idempotency_key, action, body.model_dump(mode="json"), "/v1/subscribers/{id}"
    )


@router.get(
    "/v1/subscribers/{subscriber_id}",
    response_model=SubscriberView,
    responses={**NOT_FOUND, **STANDARD_ERRORS},
    summary="A subscriber",
    tags=["subscribers"],
)
def get_subscriber(subscriber_id: SubscriberId, settings: SettingsDep, _: Reader) -> dict[str, Any]:
    return subscribers.get_subscriber(settings, subscriber_id)


@router.patch(
    "/v1/subscribers/{subscriber_id}",
    response_model=SubscriberView,
    responses={
        **NOT_FOUND,
        409: {
            "model": ProblemDetails,
            "description": "The subscriber unsubscribed: confirming it needs `resubscribe: true`; nothing changed.",
        },
        **STANDARD_ERRORS,
    },
    summary="Change a subscriber's components or status",
    tags=["subscribers"],
)
def change_subscriber(
    subscriber_id: SubscriberId, body: SubscriberChange, settings: SettingsDep, _: Writer
) -> dict[str, Any]:
    try:
        return subscribers.change_subscriber(settings, subscriber_id, body.components, body.status, body.resubscribe)
    except subscribers.Unsubscribed as exc:
        raise input_problem(exc, 409, "Conflict", "unsubscribed") from None


@router.delete(
    "/v1/subscribers/{subscriber_id}",
    status_code=204,
    response_class=Response,
    responses={**NOT_FOUND, **STANDARD_ERRORS},
    summary="Delete a subscriber",
    tags=["subscribers"],
)
def delete_subscriber(subscriber_id: SubscriberId, settings: SettingsDep, _: Writer) -> Response:
    subscribers.remove_subscriber(settings, subscriber_id=subscriber_id)
    return Response(status_code=204)
