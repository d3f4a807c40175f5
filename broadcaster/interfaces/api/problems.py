"""Every error answer of the API: an RFC 9457 problem (``application/problem+json``), written by one handler.

401, 403   a missing or wrong token, a missing scope (``deps.needs``)
404        ``service.NotFound``, ``NoSuchSubscriber``
409        an Idempotency-Key still in flight (``InFlight``), and what a route says is a conflict
413        a body over ``[api] max_body_bytes`` (``guard.BodyLimit``, before any handler)
422        a bad body, parameter or header (pydantic's errors), or an ``InputError``, naming each field in
           ``errors``: pydantic's location, or the error's own ``field``
503        the delivery log unreachable, or a configuration error found while serving
500        anything else, logged; the answer says no more
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from broadcaster.core.errors import ConfigError, InputError, field_and_message
from broadcaster.domain.idempotency import InFlight, KeyReused
from broadcaster.domain.subscribers import NoSuchSubscriber
from broadcaster.interfaces.api.guard import PROBLEM_JSON, mask_tokens
from broadcaster.service import NotFound

log = logging.getLogger(__name__)

#: where a request's field is, as pydantic's locations name it
LOCATIONS = ("body", "query", "path", "header")
UNPROCESSABLE = "Unprocessable Content"


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


# --- 422: the fields at fault ------------------------------------------------------------------------------


def field_problems(errors: Iterable[Mapping[str, Any]], default_location: str = "body") -> list[FieldProblem]:
    """Pydantic's errors as (field, where, message), without the location prefix in the field name."""
    problems = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        where = loc[0] if loc and loc[0] in LOCATIONS else default_location
        skip = 1 if loc and loc[0] == where else 0
        field, message = field_and_message(error, skip)
        if error.get("type") == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == r"\S":
            message = "must not be blank"
        if error.get("type") == "json_invalid":  # the location is a character offset, not a field
            message, field = f"not valid JSON (at character {loc[skip] if len(loc) > skip else 0})", ""
        problems.append(field_problem(field or where, where, message))
    return problems


def validation_problem(problems: list[FieldProblem]) -> Problem:
    """The 422 of these fields: its detail is one line naming the first (``field: message (and 2 more)``)."""
    first = problems[0] if problems else None
    detail = f"{first.field}: {first.message}" if first else "the request is not valid"
    if len(problems) > 1:
        detail += f" (and {len(problems) - 1} more)"
    return Problem(422, UNPROCESSABLE, detail, "validation", errors=problems)


def invalid_body(exc: ValidationError) -> Problem:
    """A model's refusal of the request body (``UpdateRequest``'s own rules) as the 422 of its fields."""
    return validation_problem(field_problems(exc.errors(include_url=False, include_input=False)))


def input_problem(
    exc: InputError, status: int = 422, title: str = UNPROCESSABLE, kind: str = "invalid-input"
) -> Problem:
    """Bad input found past the schema, as a problem naming the body field the error names (``exc.field``)."""
    text = str(exc)
    if exc.field is None:
        return Problem(status, title, text, kind, errors=[])
    named = f"{exc.field}: "
    field = field_problem(exc.field, "body", text.removeprefix(named))
    detail = text if text.startswith(named) else f"{named}{text}"
    return Problem(status, title, detail, kind, errors=[field])


# --- the documented answers --------------------------------------------------------------------------------

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


def problem(description: str) -> dict[str, Any]:
    """A documented problem answer for a route whose own answers are not JSON (FastAPI would give a ``model``
    the route's media type): the ``ProblemDetails`` schema named by reference."""
    schema = {"$ref": "#/components/schemas/ProblemDetails"}
    return {"description": description, "content": {PROBLEM_JSON: {"schema": schema}}}


def by_reference(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """``responses`` (of ``ProblemDetails``) as ``problem`` documents them."""
    return {status: problem(response["description"]) for status, response in responses.items()}


def as_problem_json(document: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI document with every error answer of ``ProblemDetails`` declared as ``application/problem+json``."""
    for operation in (op for path in document["paths"].values() for op in path.values()):
        for status, response in operation.get("responses", {}).items():
            content = response.get("content", {})
            schema = content.get("application/json", {}).get("schema", {})
            if status[0] in "45" and schema.get("$ref", "").endswith("/ProblemDetails"):
                content[PROBLEM_JSON] = content.pop("application/json")
    return document


# --- the handlers ------------------------------------------------------------------------------------------


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc, request)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return problem_response(validation_problem(field_problems(exc.errors())), request)


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot decode (e.g. not UTF-8): a bad body, like any other.
        field = field_problem("body", "body", "not valid JSON text")
        return problem_response(validation_problem([field]), request)
    try:
        title = HTTPStatus(exc.status_code).phrase
    except ValueError:
        title = "Error"
    problem = Problem(exc.status_code, title, str(exc.detail) if exc.detail else None, headers=dict(exc.headers or {}))
    return problem_response(problem, request)


async def _on_input(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InputError)
    if isinstance(exc, NotFound | NoSuchSubscriber):
        problem = Problem(404, "Not Found", str(exc), "not-found")
    elif isinstance(exc, KeyReused):
        field = field_problem("Idempotency-Key", "header", str(exc))
        problem = Problem(422, UNPROCESSABLE, str(exc), "idempotency-key-reused", errors=[field])
    elif isinstance(exc, ConfigError):
        log.error("configuration error while serving %s: %s", mask_tokens(request.url.path), exc)
        problem = Problem(503, "Service Unavailable", str(exc), "unavailable")
    else:
        problem = input_problem(exc)
    return problem_response(problem, request)


async def _on_in_flight(request: Request, exc: Exception) -> Response:
    return problem_response(
        Problem(409, "Conflict", str(exc), "idempotency-key-in-flight", headers={"Retry-After": "1"}), request
    )


async def _on_database(request: Request, exc: Exception) -> Response:
    log.error("the delivery log failed while serving %s: %s", mask_tokens(request.url.path), exc)
    unavailable = Problem(
        503, "Service Unavailable", "the delivery log is unreachable", "unavailable", headers={"Retry-After": "5"}
    )
    return problem_response(unavailable, request)


async def _on_anything(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error while serving %s", mask_tokens(request.url.path))
    return problem_response(Problem(500, "Internal Server Error", "an unexpected error; see the server log"), request)


def install_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(InFlight, _on_in_flight)
    app.add_exception_handler(InputError, _on_input)
    # Only the database being away is a 503; any other database error is a bug, a 500 like the rest.
    for unreachable in (OperationalError, InterfaceError, SQLAlchemyTimeoutError):
        app.add_exception_handler(unreachable, _on_database)
    app.add_exception_handler(Exception, _on_anything)
