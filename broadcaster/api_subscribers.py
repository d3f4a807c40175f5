"""HTTP endpoints for subscribers: /v1/subscribers, one-click unsubscribe, Twilio's inbound STOP/START.

    GET    /v1/subscribers[?status=&email=&phone=&component=&after=&limit=]     read
    POST   /v1/subscribers          {"email" | "phone", "components", "resubscribe"}   write (201 new, 200 known)
    GET    /v1/subscribers/{id}                                                  read
    PATCH  /v1/subscribers/{id}     {"components"?, "status"?: confirmed | unsubscribed}   write
    DELETE /v1/subscribers/{id}                                                  write

Open (no bearer token; the signature is the authentication):

    GET    /unsubscribe/{token}     a page asking to confirm: mail scanners follow links, so GET changes nothing
    POST   /unsubscribe/{token}     with the body List-Unsubscribe=One-Click: unsubscribes (RFC 8058)
    POST   /webhooks/twilio         Twilio's "a message comes in" webhook, signed with the account's auth token
                                    (X-Twilio-Signature); STOP words unsubscribe the sender, START words confirm it

The Twilio signature covers the URL Twilio called: ``[subscribers] api_url`` + the path when set (behind a
proxy), and only then; else the URL as this server saw it. Each MessageSid is acted on once (a replay changes
nothing; ``broadcaster.sms_inbound``). The answer is TwiML without a reply: Twilio's own opt-out handling
already answers STOP and START.

This module is imported by ``broadcaster.api`` before that module is complete, so it reaches the API's
authentication and problem types at request time, and names the ``ProblemDetails`` schema by reference.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import datetime
from email import message_from_bytes, policy
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.datastructures import ImmutableMultiDict

from broadcaster import limits, sms_inbound, subscribers
from broadcaster.api_guard import AuthFirstRoute
from broadcaster.idempotency import MAX_KEY_LENGTH
from broadcaster.settings import Settings
from broadcaster.subscribers import Kind, NoSuchSubscriber, SubscriberStatus

router = APIRouter(route_class=AuthFirstRoute)  # the token is checked before a body is read

_ID = r"^[0-9A-Za-z][0-9A-Za-z_.:-]*$"
_KEY = r"^[\x21-\x7e][\x20-\x7e]*$"
_TOKEN = r"^[0-9A-Za-z_.-]+$"
ONE_CLICK = ("List-Unsubscribe", "One-Click")
TWIML = "application/xml"


# --- authentication and problems, from broadcaster.api at request time ----------------------------------------

_bearer = HTTPBearer(auto_error=False, description="A token from `[api] tokens` in the configuration.")


def _scope(scope: str) -> Callable[..., Any]:
    """``broadcaster.api.needs(scope)``: the caller's ``Principal``, which must hold ``scope``."""

    def check(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Any:
        from broadcaster.api import needs

        return needs(scope)(request, credentials)

    check.required_scope = scope  # type: ignore[attr-defined]
    return check


Reader = Annotated[Any, Depends(_scope("read"))]
Writer = Annotated[Any, Depends(_scope("write"))]


def _problem(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/ProblemDetails"}
    return {"description": description, "content": {"application/problem+json": {"schema": schema}}}


PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: _problem("No valid bearer token."),
    403: _problem("The token lacks the scope this endpoint needs."),
    422: _problem("A bad body, parameter or header; `errors` names each field."),
    503: _problem("The delivery log is unreachable."),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _problem("No subscriber has this id.")}
PAGE_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "The link is not valid (mangled, or its subscriber was removed).",
        "content": {"text/html": {}},
    }
}


def _not_found(exc: NoSuchSubscriber) -> Exception:
    from broadcaster.client import NotFound

    return NotFound(str(exc))


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# --- bodies and answers --------------------------------------------------------------------------------------

Component = Annotated[str, Field(min_length=1, max_length=limits.MAX_COMPONENT)]
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


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=_KEY,
        max_length=MAX_KEY_LENGTH,
        description="Repeat a request safely: the same key and body within 24 h return the first answer.",
    ),
]
SubscriberId = Annotated[str, Path(pattern=_ID, max_length=64, description="A subscriber id.")]
Token = Annotated[str, Path(pattern=_TOKEN, max_length=200, description="The signed token of the link.")]


def _query_address(kind: Kind, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return subscribers.normalise(kind, value)
    except ValueError as exc:
        from broadcaster.api import field_problem, validation_problem

        raise validation_problem([field_problem(kind.value, "query", str(exc))]) from None


# --- /v1/subscribers -----------------------------------------------------------------------------------------


@router.get(
    "/v1/subscribers",
    response_model=list[SubscriberView],
    responses=PROBLEMS,
    summary="List subscribers matching every given filter, oldest first",
    tags=["subscribers"],
)
def list_subscribers(
    request: Request,
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
    after: Annotated[str | None, Query(pattern=_ID, max_length=64, description="Continue after this id.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    if email is not None and phone is not None:
        from broadcaster.api import field_problem, validation_problem

        raise validation_problem([field_problem("phone", "query", "give email or phone, not both")])
    kind = Kind.email if email is not None else Kind.phone if phone is not None else None
    address = _query_address(kind, email if email is not None else phone) if kind else None
    return subscribers.list_subscribers(
        _settings(request), status=status, kind=kind, address=address, component=component, after=after, limit=limit
    )


@router.post(
    "/v1/subscribers",
    status_code=201,
    response_model=SubscriberView,
    responses={
        200: {"model": SubscriberView, "description": "Already a subscriber: its components were set."},
        409: _problem("The first request with this Idempotency-Key is still running."),
        **PROBLEMS,
    },
    summary="Add a subscriber (or set a known one's components)",
    tags=["subscribers"],
)
def add_subscriber(
    body: SubscriberCreate, request: Request, principal: Writer, idempotency_key: IdempotencyKeyHeader = None
) -> JSONResponse:
    from broadcaster.api import idempotent_post

    settings = _settings(request)
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
    responses={**NOT_FOUND, **PROBLEMS},
    summary="A subscriber",
    tags=["subscribers"],
)
def get_subscriber(subscriber_id: SubscriberId, request: Request, _: Reader) -> dict[str, Any]:
    try:
        return subscribers.get_subscriber(_settings(request), subscriber_id)
    except NoSuchSubscriber as exc:
        raise _not_found(exc) from None


@router.patch(
    "/v1/subscribers/{subscriber_id}",
    response_model=SubscriberView,
    responses={
        **NOT_FOUND,
        409: _problem("The subscriber unsubscribed: confirming it needs `resubscribe: true`; nothing changed."),
        **PROBLEMS,
    },
    summary="Change a subscriber's components or status",
    tags=["subscribers"],
)
def change_subscriber(
    subscriber_id: SubscriberId, body: SubscriberChange, request: Request, _: Writer
) -> dict[str, Any]:
    try:
        return subscribers.change_subscriber(
            _settings(request), subscriber_id, body.components, body.status, body.resubscribe
        )
    except NoSuchSubscriber as exc:
        raise _not_found(exc) from None
    except subscribers.Unsubscribed as exc:
        from broadcaster.api import Problem, field_problem

        field = field_problem("resubscribe", "body", str(exc).removeprefix("resubscribe: "))
        raise Problem(409, "Conflict", str(exc), "unsubscribed", errors=[field]) from None


@router.delete(
    "/v1/subscribers/{subscriber_id}",
    status_code=204,
    response_class=Response,
    responses={**NOT_FOUND, **PROBLEMS},
    summary="Delete a subscriber",
    tags=["subscribers"],
)
def delete_subscriber(subscriber_id: SubscriberId, request: Request, _: Writer) -> Response:
    try:
        subscribers.remove_subscriber(_settings(request), subscriber_id=subscriber_id)
    except NoSuchSubscriber as exc:
        raise _not_found(exc) from None
    return Response(status_code=204)


# --- one-click unsubscribe (RFC 8058) ------------------------------------------------------------------------

_FORM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {
                "schema": {
                    "type": "object",
                    "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}},
                    "required": ["List-Unsubscribe"],
                }
            }
            for media in ("application/x-www-form-urlencoded", "multipart/form-data")
        },
    }
}


@router.get(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    responses={**PAGE_NOT_FOUND, 422: PROBLEMS[422], 503: PROBLEMS[503]},
    summary="The page an unsubscribe link opens: it asks to confirm (GET changes nothing)",
    tags=["subscribers"],
)
def unsubscribe_page(token: Token, request: Request) -> HTMLResponse:
    found = subscribers.subscriber_by_token(_settings(request), token)
    if found is None:
        return _invalid_link()
    who = html.escape(_masked(found))
    if found["status"] == SubscriberStatus.unsubscribed:
        return _page("Unsubscribed", f"<p>{who} is unsubscribed: it gets no more status updates.</p>")
    form = (
        f"<p>Stop sending status updates to {who}?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", form)


@router.post(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    responses={
        400: _problem("The body does not hold List-Unsubscribe=One-Click."),
        **PAGE_NOT_FOUND,
        422: PROBLEMS[422],
        503: PROBLEMS[503],
    },
    openapi_extra=_FORM_BODY,
    summary="One-click unsubscribe (RFC 8058): POST List-Unsubscribe=One-Click to the link",
    tags=["subscribers"],
)
async def unsubscribe(token: Token, request: Request) -> Response:
    fields = await _form(request)
    if fields.get(ONE_CLICK[0]) != ONE_CLICK[1]:
        from broadcaster.api import Problem

        raise Problem(400, "Bad Request", "the body must hold List-Unsubscribe=One-Click (RFC 8058)", "not-one-click")
    found = await run_in_threadpool(subscribers.unsubscribe_by_token, _settings(request), token)
    if found is None:
        return _invalid_link()
    return _page("Unsubscribed", f"<p>{html.escape(_masked(found))} gets no more status updates.</p>")


def _masked(view: dict[str, Any]) -> str:
    """The address, partly hidden: a link forwarded to someone else shows little."""
    if view["email"]:
        local, _, domain = str(view["email"]).partition("@")
        return f"{local[:1]}***@{domain}"
    phone = str(view["phone"])
    return f"{phone[:3]}***{phone[-2:]}"


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto">'
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status_code, headers={"Cache-Control": "no-store"})


def _invalid_link() -> HTMLResponse:
    return _page(
        "Link not valid", "<p>This unsubscribe link is not valid. Copy the whole link from the email.</p>", 404
    )


async def _form(request: Request) -> ImmutableMultiDict[str, str]:
    """The request's form fields (URL-encoded or multipart), read without the python-multipart package.

    The body is at most ``[api] max_body_bytes`` (``api_guard.BodyLimit`` answers 413 past it).
    """
    body = b"".join([chunk async for chunk in request.stream()])
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        return _multipart(content_type, body)
    text = body.decode("utf-8", "replace")
    return ImmutableMultiDict(parse_qsl(text, keep_blank_values=True))


def _multipart(content_type: str, body: bytes) -> ImmutableMultiDict[str, str]:
    message = message_from_bytes(
        b"MIME-Version: 1.0\r\nContent-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body,
        policy=policy.HTTP,
    )
    fields: list[tuple[str, str]] = []
    if message.is_multipart():
        for part in message.iter_parts():  # type: ignore[attr-defined]
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str) and part.get_filename() is None:
                payload = part.get_payload(decode=True)
                text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
                fields.append((name, text.strip()))
    return ImmutableMultiDict(fields)


# --- Twilio's inbound messages --------------------------------------------------------------------------------

_TWILIO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        name: {"type": "string"} for name in ("AccountSid", "MessageSid", "From", "To", "Body")
                    },
                }
            }
        },
    }
}


@router.post(
    "/webhooks/twilio",
    response_class=Response,
    responses={
        200: {"description": "TwiML, without a reply.", "content": {TWIML: {}}},
        403: _problem("The X-Twilio-Signature is missing or not valid for any sms channel of the account."),
        413: _problem("The body is larger than `[api] max_body_bytes`."),
        422: _problem("The signed request has no valid MessageSid."),
        503: PROBLEMS[503],
    },
    openapi_extra=_TWILIO_BODY,
    summary="Twilio's inbound-message webhook: STOP unsubscribes, START subscribes again",
    tags=["subscribers"],
)
async def twilio_inbound(
    request: Request,
    signature: Annotated[str | None, Header(alias="X-Twilio-Signature", include_in_schema=False)] = None,
) -> Response:
    from twilio.twiml.messaging_response import MessagingResponse

    from broadcaster.api import Problem, field_problem, validation_problem

    settings = _settings(request)
    params = await _form(request)
    url = request.url
    if not signature or not sms_inbound.signed_by_twilio(settings, str(url), url.path, url.query, params, signature):
        raise Problem(403, "Forbidden", "the request is not signed by Twilio for a configured account", "forbidden")
    sid = params.get("MessageSid", "")
    if not sms_inbound.MESSAGE_SID.fullmatch(sid):
        raise validation_problem([field_problem("MessageSid", "body", "missing, or not a Twilio message SID")])
    await run_in_threadpool(sms_inbound.receive, settings, sid, params.get("From", ""), params.get("Body", ""))
    return Response(str(MessagingResponse()), media_type=TWIML)
