"""What stands in front of the HTTP API's routes: a body limit, the token checked before any body is read,
and link tokens masked in logs.

- ``BodyLimit`` refuses a request body over ``[api] max_body_bytes`` with 413 (problem+json): by its
  Content-Length before a byte of it is read, and by counting the chunks of one sent without a length
  (chunked), so nothing is buffered past the limit; the connection is then closed.
- ``AuthFirstRoute`` runs a route's bearer-token dependencies before FastAPI reads and parses its body: a
  request without a valid token gets its 401 (or 403) and its body is never read.
- ``mask_tokens`` and ``TokenMask`` hide the secret part of link paths (``/unsubscribe/{token}`` and the
  other token paths in ``TOKEN_PATHS``) in uvicorn's access log and in our own log lines.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import LOGGING_CONFIG

#: the media type of every error answer (RFC 9457)
PROBLEM_JSON = "application/problem+json"

# --- the body limit ----------------------------------------------------------------------------------------


class BodyLimit:
    """Pure ASGI middleware: request bodies of at most ``limit`` bytes reach the app; larger ones get a 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(scope, send)  # before reading a byte of it
            return
        received = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Answer now and tell the app the client left: it stops reading, and what it still
                    # sends is dropped. The server closes the connection, so the rest is never read.
                    refused = True
                    if not started:
                        await self._refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not refused:  # the app's error about the "disconnect" we made up is no error
                raise

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "type": "urn:broadcaster:problem:too-large",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"the request body is larger than {self.limit} bytes",
                "instance": scope.get("path", ""),
            }
        ).encode()
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# --- the token before the body -----------------------------------------------------------------------------

#: reads ``Authorization: Bearer TOKEN`` (None without one); the token checks of ``deps`` take it
bearer = HTTPBearer(auto_error=False, description="A token from `[api] tokens` in the configuration.")
#: the attribute that marks a dependency as a token check (``deps.needs``), with its scope
SCOPE_ATTRIBUTE = "required_scope"


def token_checks(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    """The token checks among a route's dependencies (and theirs)."""
    for dependency in dependant.dependencies:
        if dependency.call is not None and hasattr(dependency.call, SCOPE_ATTRIBUTE):
            yield dependency.call
        yield from token_checks(dependency)


class AuthFirstRoute(APIRoute):
    """An API route whose token checks run before FastAPI reads the body (they run again as dependencies,
    which costs one hash)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        checks = list(token_checks(self.dependant))
        if not checks:
            return handler

        async def authenticated(request: Request) -> Response:
            credentials = await bearer(request)
            for check in checks:
                check(request, credentials)  # raises the 401 or 403 problem
            return await handler(request)

        return authenticated


# --- tokens in logs ----------------------------------------------------------------------------------------

#: the paths whose last part is a secret (a signed link): /unsubscribe/{token} and the self-service links
TOKEN_PATHS = re.compile(r"(/(?:unsubscribe|subscribe/confirm|subscriptions)/)[^/?#\s\"']+")
MASK = "***"


def mask_tokens(text: str) -> str:
    """``text`` with the token of every link path in it replaced by ``***``."""
    return TOKEN_PATHS.sub(rf"\g<1>{MASK}", text)


class TokenMask(logging.Filter):
    """Masks link tokens in a record's arguments (uvicorn's access log passes the path as one) and message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(mask_tokens(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: mask_tokens(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if isinstance(record.msg, str) and TOKEN_PATHS.search(record.msg):
            # A token written into the message itself (not as an argument): keep the formatted, masked text.
            record.msg, record.args = mask_tokens(record.getMessage()), None
        return True


def mask_uvicorn_logs() -> None:
    """Put ``TokenMask`` on uvicorn's loggers (once), for an app that uvicorn itself started (``--factory``)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenMask) for f in logger.filters):
            logger.addFilter(TokenMask())


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with ``TokenMask`` on its handlers (the access log and errors)."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["mask_tokens"] = {"()": f"{__name__}.TokenMask"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("mask_tokens")
    return config
