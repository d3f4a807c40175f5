"""The HTTP API (``broadcaster api``): open incidents, post updates and read the delivery log, for ops tooling.

Every ``/v1`` endpoint needs ``Authorization: Bearer TOKEN`` with a token from ``[api] tokens``: scope ``read``
for GETs and previews, ``write`` for the POSTs that broadcast or retry. ``/healthz``, ``/readyz`` and the
OpenAPI document are open; ``/metrics`` is open unless a token has the ``metrics`` scope, and then needs one.
Errors are RFC 9457 problem details. POSTs take an ``Idempotency-Key`` (``broadcaster.idempotency``).

Broadcasting POSTs record the update, enqueue its deliveries and answer 202 with the broadcast summary
(status ``pending``); with ``?wait=true`` they answer once every delivery has finished (201) or the timeout
ran out (202). In embedded mode (no ``broker_url``) the deliveries run on a worker thread of this process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broadcaster import api_subscribers, client, limits
from broadcaster.api_guard import (
    AuthFirstRoute,
    BodyLimit,
    install_docs,
    mask_tokens,
    mask_uvicorn_logs,
    uvicorn_log_config,
)
from broadcaster.broadcasts import UpdateRequest
from broadcaster.db import sessions
from broadcaster.errors import ConfigError, InputError
from broadcaster.idempotency import MAX_KEY_LENGTH, Answer, InFlight, KeyReused, fingerprint, once
from broadcaster.metrics import HttpMetrics, build_registry
from broadcaster.models import DeliveryStatus, Impact, IncidentStatus
from broadcaster.settings import ApiSettings, Settings, load_settings
from channels import Message as Rendering

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
SCOPES = ("read", "write", "metrics")
#: the longest ``?wait=true`` a request may ask for (an idempotency claim outlives it by far)
MAX_WAIT = 120.0
# Patterns without counted repetition (lengths are separate limits): far cheaper for schema-driven fuzzers.
_ID = r"^[0-9A-Za-z][0-9A-Za-z_.:-]*$"
_ID_LENGTH = limits.MAX_ID
_CHANNEL = r"^[a-z0-9-]+$"
_CHANNEL_LENGTH = limits.MAX_CHANNEL_NAME
_KEY = r"^[\x21-\x7e][\x20-\x7e]*$"


# --- problem details (RFC 9457) ----------------------------------------------------------------------------


class FieldProblem(BaseModel):
    field: str = Field(description="The offending field, dotted for nested ones (e.g. `components.0`).")
    location: str = Field(alias="in", description="`body`, `query`, `path` or `header`.")
    message: str

    model_config = ConfigDict(populate_by_name=True)


def field_problem(field: str, where: str, message: str) -> FieldProblem:
    return FieldProblem.model_validate({"field": field, "in": where, "message": message})


class ProblemDetails(BaseModel):
    """An RFC 9457 problem: what went wrong, for people (title, detail) and programs (type, status, errors)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] | None = Field(default=None, description="With 422: each offending field.")


class Problem(Exception):
    """An error answer; raised anywhere in a request, written by the app's handler."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        kind: str | None = None,
        errors: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.body = ProblemDetails(
            type=f"urn:broadcaster:problem:{kind}" if kind else "about:blank",
            title=title,
            status=status,
            detail=detail,
            errors=errors,
        )
        self.headers = headers or {}


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    body = problem.body.model_copy(update={"instance": request.url.path})
    return JSONResponse(
        body.model_dump(mode="json", by_alias=True, exclude_none=True),
        status_code=body.status,
        headers=problem.headers,
        media_type=PROBLEM_JSON,
    )


def field_problems(errors: Any, default_location: str = "body") -> list[FieldProblem]:
    """Pydantic's errors as (field, where, message), without the location prefix in the field name."""
    problems = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        where = loc[0] if loc and loc[0] in ("body", "query", "path", "header") else default_location
        parts = loc[1:] if loc and loc[0] == where else loc
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if error.get("type") == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == r"\S":
            message = "must not be blank"
        if error.get("type") == "json_invalid":  # the location is a character offset, not a field
            message, parts = f"not valid JSON (at character {parts[0] if parts else 0})", []
        problems.append(field_problem(".".join(parts) or where, where, message))
    return problems


def validation_problem(problems: list[FieldProblem]) -> Problem:
    first = problems[0] if problems else None
    detail = f"{first.field}: {first.message}" if first else "the request is not valid"
    if len(problems) > 1:
        detail += f" (and {len(problems) - 1} more)"
    return Problem(422, "Unprocessable Content", detail, "validation", errors=problems)


STANDARD_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ProblemDetails, "description": "No valid bearer token."},
    403: {"model": ProblemDetails, "description": "The token lacks the scope this endpoint needs."},
    422: {"model": ProblemDetails, "description": "A bad body, parameter or header; `errors` names each field."},
    503: {"model": ProblemDetails, "description": "The delivery log is unreachable."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ProblemDetails, "description": "No such id."}}
IN_FLIGHT: dict[int | str, dict[str, Any]] = {
    409: {"model": ProblemDetails, "description": "The first request with this Idempotency-Key is still running."}
}


# --- authentication ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's configured name (also the scope of its idempotency keys) and its scopes."""

    name: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class _Token:
    name: str
    digest: bytes
    scopes: frozenset[str]


def token_table(api: ApiSettings) -> list[_Token]:
    """Each configured token as the SHA-256 of its secret; the plain secret is not kept."""
    table = []
    for index, token in enumerate(api.tokens):
        where = f"api.tokens.{index}"
        if (token.token is None) == (token.token_sha256 is None):
            raise ConfigError(f"{where}: give exactly one of token or token_sha256")
        if token.token is not None:
            secret = token.token.get_secret_value()
            if len(secret) < 16:
                log.warning("%s.token (%s) is shorter than 16 characters: easy to guess", where, token.name)
            digest = hashlib.sha256(secret.encode()).digest()
        else:
            assert token.token_sha256 is not None
            if not re.fullmatch(r"[0-9a-fA-F]{64}", token.token_sha256):
                raise ConfigError(f"{where}.token_sha256: must be 64 hexadecimal digits (a SHA-256 digest)")
            digest = bytes.fromhex(token.token_sha256)
        unknown = set(token.scopes) - set(SCOPES)
        if unknown:
            raise ConfigError(f"{where}.scopes: unknown scope {min(unknown)!r} (known: {', '.join(SCOPES)})")
        table.append(_Token(token.name, digest, frozenset(token.scopes)))
    return table


def authenticate(table: list[_Token], presented: str) -> Principal | None:
    """The token's principal, comparing digests in constant time against every configured token."""
    digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
    found: _Token | None = None
    for token in table:
        # No early exit: the time taken does not depend on which token (if any) matched.
        if hmac.compare_digest(digest, token.digest):
            found = token
    return Principal(found.name, found.scopes) if found else None


_bearer = HTTPBearer(auto_error=False, description="A token from `[api] tokens` in the configuration.")


def needs(scope: str) -> Callable[..., Principal]:
    """A dependency: the caller's principal, which must hold ``scope``."""

    def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        challenge = 'Bearer realm="broadcaster"'
        if credentials is None:
            raise Problem(
                401,
                "Unauthorized",
                "send Authorization: Bearer TOKEN",
                "unauthorized",
                headers={"WWW-Authenticate": challenge},
            )
        principal = authenticate(request.app.state.tokens, credentials.credentials)
        if principal is None:
            raise Problem(
                401,
                "Unauthorized",
                "the bearer token is not valid",
                "unauthorized",
                headers={"WWW-Authenticate": f'{challenge}, error="invalid_token"'},
            )
        if scope not in principal.scopes:
            raise Problem(
                403,
                "Forbidden",
                f"this token lacks the {scope!r} scope",
                "forbidden",
                headers={"WWW-Authenticate": f'{challenge}, error="insufficient_scope", scope="{scope}"'},
            )
        return principal

    # Marks the check for AuthFirstRoute, which runs it before the body is read.
    check.required_scope = scope  # type: ignore[attr-defined]
    return check


Reader = Annotated[Principal, Depends(needs("read"))]
Writer = Annotated[Principal, Depends(needs("write"))]


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


# The shared limits (broadcaster.limits); UpdateRequest checks the text itself (control characters).
Title = Annotated[str, Field(min_length=1, max_length=limits.MAX_TITLE, pattern=r"\S")]
Text = Annotated[str, Field(min_length=1, max_length=limits.MAX_MESSAGE, pattern=r"\S")]
Component = Annotated[str, Field(min_length=1, max_length=limits.MAX_COMPONENT)]
ChannelName = Annotated[str, Field(pattern=_CHANNEL, max_length=_CHANNEL_LENGTH)]
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

    incident_id: Annotated[str, Field(pattern=_ID, max_length=_ID_LENGTH)] | None = None
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
        raise validation_problem(field_problems(exc.errors(include_url=False, include_input=False))) from None


class IncidentFilter(StrEnum):
    open = "open"
    investigating = "investigating"
    identified = "identified"
    monitoring = "monitoring"
    resolved = "resolved"


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=_KEY,
        max_length=MAX_KEY_LENGTH,
        description="Repeat a request safely: the same key and body within 24 h return the first answer.",
    ),
]
Wait = Annotated[bool, Query(description="Answer once every delivery has finished (or `timeout` ran out).")]
Timeout = Annotated[float, Query(gt=0, le=MAX_WAIT, description="Seconds `wait` waits at most.")]
IncidentId = Annotated[str, Path(pattern=_ID, max_length=_ID_LENGTH, description="An incident id.")]
BroadcastId = Annotated[str, Path(pattern=_ID, max_length=_ID_LENGTH, description="A broadcast id.")]
DeliveryId = Annotated[str, Path(pattern=_ID, max_length=_ID_LENGTH, description="A delivery id.")]


# --- the app -----------------------------------------------------------------------------------------------


def create_app(settings: Settings) -> FastAPI:
    """The API on ``settings``; raises ConfigError for an unusable ``[api]`` table."""
    app = FastAPI(
        title="Outage broadcaster",
        version="1",
        description=__doc__,
        docs_url=None,  # install_docs: assets of pinned versions
        redoc_url=None,
    )
    app.router.route_class = AuthFirstRoute
    app.state.settings = settings
    app.state.tokens = token_table(settings.api)
    app.state.metrics_protected = any("metrics" in t.scopes for t in app.state.tokens)
    app.state.registry, http_metrics = build_registry(settings)
    # The body limit inside the metrics, so that its 413s are counted too.
    app.add_middleware(BodyLimit, limit=settings.api.max_body_bytes)
    app.add_middleware(_RequestMetrics, metrics=http_metrics)
    _install_error_handlers(app)
    _install_routes(app)
    app.include_router(api_subscribers.router)
    install_docs(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every error answer declared as ``application/problem+json``."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for operation in (op for path in document["paths"].values() for op in path.values()):
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                schema = content.get("application/json", {}).get("schema", {})
                if status[0] in "45" and schema.get("$ref", "").endswith("/ProblemDetails"):
                    content[PROBLEM_JSON] = content.pop("application/json")
        app.openapi_schema = document
    return app.openapi_schema


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def idempotent_post(
    request: Request,
    scope: str,
    key: str | None,
    action: Callable[[], tuple[int, Any]],
    body: Any = None,
    location: str | None = None,
) -> JSONResponse:
    """Run ``action`` once per Idempotency-Key and answer with its (or, for a repeat, its first) result."""
    digest = fingerprint("POST", request.url.path, body)
    return idempotent_response(once(_settings(request), scope, key, digest, action), location)


def idempotent_response(answer: Answer, location: str | None = None) -> JSONResponse:
    """The answer of an idempotent POST; ``location``, filled in from the body's fields, is its Location header."""
    headers = {"Location": location.format_map(answer.body)} if location else {}
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(answer.body, status_code=answer.status_code, headers=headers)


def _broadcast(
    request: Request, principal: Principal, update: UpdateRequest, key: str | None, wait: bool, timeout: float
) -> JSONResponse:
    # client.submit claims the key itself: its fingerprint is shared with the Python API and the Celery task.
    answer = client.submit(_settings(request), update, scope=principal.name, key=key, wait=wait, timeout=timeout)
    return idempotent_response(answer, "/v1/broadcasts/{broadcast_id}")


def _install_routes(app: FastAPI) -> None:
    broadcasting = {
        201: {"model": client.BroadcastSummary, "description": "Broadcast; every delivery has finished (`wait`)."},
        **NOT_FOUND,
        **IN_FLIGHT,
        **STANDARD_ERRORS,
    }

    @app.post(
        "/v1/incidents",
        status_code=202,
        response_model=client.BroadcastSummary,
        responses={k: v for k, v in broadcasting.items() if k != 404},
        summary="Open an incident and broadcast its first update",
        tags=["incidents"],
    )
    def open_incident(
        body: IncidentCreate,
        request: Request,
        principal: Writer,
        idempotency_key: IdempotencyKeyHeader = None,
        wait: Wait = False,
        timeout: Timeout = 30.0,
    ) -> JSONResponse:
        return _broadcast(request, principal, update_request(body.model_dump()), idempotency_key, wait, timeout)

    @app.post(
        "/v1/incidents/{incident_id}/updates",
        status_code=202,
        response_model=client.BroadcastSummary,
        responses=broadcasting,
        summary="Post an update to an incident and broadcast it",
        tags=["incidents"],
    )
    def post_update(
        incident_id: IncidentId,
        body: UpdateCreate,
        request: Request,
        principal: Writer,
        idempotency_key: IdempotencyKeyHeader = None,
        wait: Wait = False,
        timeout: Timeout = 30.0,
    ) -> JSONResponse:
        update = update_request({**body.model_dump(), "incident_id": incident_id})
        return _broadcast(request, principal, update, idempotency_key, wait, timeout)

    @app.get(
        "/v1/incidents",
        response_model=list[client.IncidentView],
        responses=STANDARD_ERRORS,
        summary="List incidents, newest first",
        tags=["incidents"],
    )
    def list_incidents(
        request: Request,
        _: Reader,
        status: Annotated[IncidentFilter | None, Query(description="`open`: every unresolved incident.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[client.IncidentView]:
        return client.list_incidents(_settings(request), status.value if status else None, limit)

    @app.get(
        "/v1/incidents/{incident_id}",
        response_model=client.IncidentDetail,
        responses={**NOT_FOUND, **STANDARD_ERRORS},
        summary="An incident and its timeline",
        tags=["incidents"],
    )
    def get_incident(incident_id: IncidentId, request: Request, _: Reader) -> client.IncidentDetail:
        return client.incident_detail(_settings(request), incident_id)

    @app.get(
        "/v1/broadcasts/{broadcast_id}",
        response_model=client.BroadcastSummary,
        responses={**NOT_FOUND, **STANDARD_ERRORS},
        summary="A broadcast's summary: its deliveries and their status",
        tags=["broadcasts"],
    )
    def get_broadcast(broadcast_id: BroadcastId, request: Request, _: Reader) -> client.BroadcastSummary:
        return client.summary(_settings(request), broadcast_id)

    @app.get(
        "/v1/deliveries",
        response_model=list[client.DeliveryRecord],
        responses=STANDARD_ERRORS,
        summary="Deliveries matching every given filter, oldest first",
        tags=["deliveries"],
    )
    def list_deliveries(
        request: Request,
        _: Reader,
        status: DeliveryStatus | None = None,
        channel: Annotated[str | None, Query(pattern=_CHANNEL, max_length=_CHANNEL_LENGTH)] = None,
        incident: Annotated[str | None, Query(pattern=_ID, max_length=_ID_LENGTH)] = None,
        broadcast: Annotated[str | None, Query(pattern=_ID, max_length=_ID_LENGTH)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> list[client.DeliveryRecord]:
        from broadcaster.queries import find_deliveries

        rows = find_deliveries(
            _settings(request),
            incident=incident,
            broadcast=broadcast,
            status=status.value if status else None,
            channel=channel,
            limit=limit,
        )
        return [client.DeliveryRecord.model_validate(row) for row in rows]

    @app.post(
        "/v1/deliveries/{delivery_id}/retry",
        status_code=202,
        response_model=client.DeliveryRecord,
        responses={
            200: {"model": client.DeliveryRecord, "description": "Sent again; it has finished (`wait`)."},
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
        principal: Writer,
        idempotency_key: IdempotencyKeyHeader = None,
        wait: Wait = False,
        timeout: Timeout = 30.0,
    ) -> JSONResponse:
        settings = _settings(request)

        def action() -> tuple[int, Any]:
            try:
                rows = client.retry(settings, delivery_id, wait=wait, timeout=timeout)
            except client.NotFound:
                raise
            except InputError as exc:
                raise Problem(409, "Conflict", str(exc), "not-retryable") from None
            row = rows[0].model_dump(mode="json")
            return (200 if DeliveryStatus(row["status"]).finished else 202), row

        return idempotent_post(request, principal.name, idempotency_key, action)

    @app.post(
        "/v1/preview",
        response_model=dict[str, Rendering],
        responses={**NOT_FOUND, **STANDARD_ERRORS},
        summary="Each channel's rendering, with its size and warnings; nothing is sent",
        tags=["incidents"],
    )
    def preview(
        body: PreviewRequest, request: Request, _: Reader, idempotency_key: IdempotencyKeyHeader = None
    ) -> dict[str, Rendering]:
        # A preview writes nothing, so a repeated key needs no stored answer.
        from broadcaster.broadcasts import preview as render_preview

        settings = _settings(request)
        update = update_request(body.model_dump())
        if update.incident_id and not client.exists(settings, client.Incident, update.incident_id):
            raise client.NotFound(f"no incident with id {update.incident_id!r}")
        return render_preview(settings, update)

    @app.get("/healthz", response_model=Health, summary="The process is up", tags=["operations"])
    def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        responses={503: {"model": Health, "description": "The database or the broker is unreachable."}},
        summary="The database and the broker are reachable",
        tags=["operations"],
    )
    def readyz(request: Request) -> JSONResponse:
        checks = readiness(_settings(request))
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            Health(status="ready" if ready else "unavailable", checks=checks).model_dump(),
            status_code=200 if ready else 503,
        )

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_PLAIN_0_0_4.split(";")[0]: {}}, "description": "Prometheus text format."},
            401: STANDARD_ERRORS[401],
            403: STANDARD_ERRORS[403],
            503: STANDARD_ERRORS[503],
        },
        summary="Prometheus metrics",
        tags=["operations"],
    )
    def metrics(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Response:
        if request.app.state.metrics_protected:
            needs("metrics")(request, credentials)
        # Prometheus asks for OpenMetrics or the text format in Accept; answer in the one it prefers.
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(request.app.state.registry), headers={"Content-Type": content_type})


def readiness(settings: Settings) -> dict[str, str]:
    """Each dependency's state: ``ok`` or why not (never a secret: URLs are not echoed)."""
    checks = {"database": "ok", "broker": "ok"}
    try:
        with sessions(settings.database_url)() as session:
            session.execute(text("SELECT 1"))
    except (ConfigError, SQLAlchemyError) as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if not settings.embedded:
        from kombu import Connection

        try:
            with Connection(
                settings.broker_url,
                connect_timeout=2,
                transport_options={"socket_connect_timeout": 2, "socket_timeout": 2, "max_retries": 0},
            ) as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:
            checks["broker"] = f"unreachable: {type(exc).__name__}"
    return checks


def _install_error_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc, request)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(validation_problem(field_problems(exc.errors())), request)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        from http import HTTPStatus

        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode (e.g. not UTF-8): a bad body, like any other.
            field = field_problem("body", "body", "not valid JSON text")
            return problem_response(validation_problem([field]), request)

        try:
            title = HTTPStatus(exc.status_code).phrase
        except ValueError:
            title = "Error"
        problem = Problem(
            exc.status_code, title, str(exc.detail) if exc.detail else None, headers=dict(exc.headers or {})
        )
        return problem_response(problem, request)

    async def on_input(request: Request, exc: Exception) -> Response:
        if isinstance(exc, client.NotFound):
            problem = Problem(404, "Not Found", str(exc), "not-found")
        elif isinstance(exc, KeyReused):
            field = field_problem("Idempotency-Key", "header", str(exc))
            problem = Problem(422, "Unprocessable Content", str(exc), "idempotency-key-reused", errors=[field])
        elif isinstance(exc, ConfigError):
            log.error("configuration error while serving %s: %s", mask_tokens(request.url.path), exc)
            problem = Problem(503, "Service Unavailable", str(exc), "unavailable")
        else:
            fields = _named_field(str(exc))
            detail = str(exc) if not fields or str(exc).startswith(fields[0].field) else f"{fields[0].field}: {exc}"
            problem = Problem(422, "Unprocessable Content", detail, "invalid-input", errors=fields)
        return problem_response(problem, request)

    async def on_in_flight(request: Request, exc: Exception) -> Response:
        return problem_response(
            Problem(409, "Conflict", str(exc), "idempotency-key-in-flight", headers={"Retry-After": "1"}), request
        )

    async def on_database(request: Request, exc: Exception) -> Response:
        log.error("the delivery log failed while serving %s: %s", mask_tokens(request.url.path), exc)
        return problem_response(
            Problem(
                503,
                "Service Unavailable",
                "the delivery log is unreachable",
                "unavailable",
                headers={"Retry-After": "5"},
            ),
            request,
        )

    async def on_anything(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error while serving %s", mask_tokens(request.url.path))
        return problem_response(
            Problem(500, "Internal Server Error", "an unexpected error; see the server log"), request
        )

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(InFlight, on_in_flight)
    app.add_exception_handler(InputError, on_input)
    # Only the database being away is a 503; any other database error is a bug, a 500 like the rest.
    for unreachable in (OperationalError, InterfaceError, SQLAlchemyTimeoutError):
        app.add_exception_handler(unreachable, on_database)
    app.add_exception_handler(Exception, on_anything)


def _named_field(message: str) -> list[FieldProblem]:
    """The field an InputError names, when it names one ("channels: ..." or "unknown channel ...")."""
    if message.startswith(("unknown channel", "channel ", "every configured channel", "no channels")):
        return [field_problem("channels", "body", message)]
    head, sep, rest = message.partition(": ")
    if sep and re.fullmatch(r"[a-z_][a-z0-9_.]*", head):
        return [field_problem(head, "body", rest)]
    return []


class _RequestMetrics:
    """Counts and times each request by its route template (pure ASGI, so streaming stays untouched)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            # The template ("/v1/incidents/{incident_id}"), never the raw path; None when no route matched.
            route = getattr(scope.get("route"), "path", None)
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)


# --- running it --------------------------------------------------------------------------------------------


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API with uvicorn until interrupted (``broadcaster api``)."""
    import uvicorn

    app = create_app(settings)
    if not settings.api.tokens:
        log.warning("no [api] tokens are configured: every /v1 request will be refused with 401")
    # The access log masks the token of every link path (/unsubscribe/...): those links are credentials.
    uvicorn.run(app, host=host, port=port, proxy_headers=True, log_level="info", log_config=uvicorn_log_config())


def app_from_environment() -> FastAPI:
    """For ``uvicorn --factory broadcaster.api:app_from_environment`` (several worker processes)."""
    mask_uvicorn_logs()  # uvicorn configured its logging already, without our filter
    return create_app(load_settings())
