"""What the routes share: the settings, the caller's token and scopes, the parameters several routes take, the
request's form, and the answer of an idempotent POST.

Every ``/v1`` endpoint needs ``Authorization: Bearer TOKEN`` with a token from ``[api] tokens``; ``Reader`` and
``Writer`` are the dependencies that check it (scope ``read``, ``write``), before the body is read
(``guard.AuthFirstRoute``). The configured secrets are kept only as SHA-256 digests (``token_table``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import Field
from starlette.datastructures import ImmutableMultiDict

from broadcaster.core import limits
from broadcaster.core.errors import ConfigError
from broadcaster.domain.idempotency import MAX_KEY_LENGTH, Answer, fingerprint, once
from broadcaster.interfaces.api.guard import SCOPE_ATTRIBUTE, bearer
from broadcaster.interfaces.api.problems import Problem
from broadcaster.settings import ApiSettings, Settings

log = logging.getLogger(__name__)

SCOPES = ("read", "write", "metrics")
#: the longest ``?wait=true`` a request may ask for (an idempotency claim outlives it by far)
MAX_WAIT = 120.0
# Patterns without counted repetition (lengths are separate limits): far cheaper for schema-driven fuzzers.
ID_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z_.:-]*$"
CHANNEL_PATTERN = r"^[a-z0-9-]+$"
_KEY = r"^[\x21-\x7e][\x20-\x7e]*$"


# --- the settings ------------------------------------------------------------------------------------------


def app_settings(request: Request) -> Settings:
    """The configuration the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]


# --- tokens and scopes -------------------------------------------------------------------------------------


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


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def needs(scope: str) -> Callable[..., Principal]:
    """A dependency: the caller's principal, which must hold ``scope``."""

    def check(request: Request, credentials: Credentials) -> Principal:
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
    setattr(check, SCOPE_ATTRIBUTE, scope)
    return check


Reader = Annotated[Principal, Depends(needs("read"))]
Writer = Annotated[Principal, Depends(needs("write"))]


# --- parameters several routes take ------------------------------------------------------------------------

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
#: a component name in a request body (an update's, a subscriber's)
Component = Annotated[limits.ComponentLength, Field(min_length=1)]


# --- reading forms -----------------------------------------------------------------------------------------


async def read_form(request: Request) -> ImmutableMultiDict[str, str]:
    """The request's form fields (URL-encoded or multipart), read without the python-multipart package.

    The body is at most ``[api] max_body_bytes`` (``guard.BodyLimit`` answers 413 past it).
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


# --- idempotent POSTs (broadcaster.domain.idempotency) -----------------------------------------------------


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
    return idempotent_response(once(app_settings(request), scope, key, digest, action), location)


def idempotent_response(answer: Answer, location: str | None = None) -> JSONResponse:
    """The answer of an idempotent POST; ``location``, filled in from the body's fields, is its Location header."""
    headers = {"Location": location.format_map(answer.body)} if location else {}
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(answer.body, status_code=answer.status_code, headers=headers)
