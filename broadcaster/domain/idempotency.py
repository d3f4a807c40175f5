"""Idempotency keys: a retried request gets the first answer back and broadcasts nothing new.

A key is held in the delivery log's database, so it holds across API processes, the Python API and the
``broadcaster.post_update`` task alike. Each key lives in a *scope* (the API token's name, ``python``,
``celery``), so one client can neither replay nor block another's requests.

    first request      claim the key (INSERT; the primary key makes two claimants race safely)
                       run the action; store its answer (status code and JSON body)
    same key and body  the stored answer, replayed                   (within RETENTION)
    same key, new body KeyReused                                     -> HTTP 422
    first still runs   InFlight                                      -> HTTP 409
    the action failed  the claim is released: the client may try again with the same key

A claim whose process died keeps the key for ``LEASE``; after that another request may take it over.
The broadcast and the stored answer are two transactions, so a process that dies between them (a window of
one commit) leaves a key that is taken over after ``LEASE``, and would broadcast again: ``LEASE`` is long
enough that no client retries that late by accident.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError

from broadcaster.core.errors import BroadcasterError, InputError
from broadcaster.settings import Settings
from broadcaster.store.db import session_scope, sessions
from broadcaster.store.models import IDEMPOTENCY_KEY_LENGTH, IdempotencyKey, new_id, utcnow

log = logging.getLogger(__name__)
#: how long a key remembers its answer
RETENTION = timedelta(hours=24)
#: how long an unfinished claim keeps its key from other requests (longer than any request may run)
LEASE = timedelta(minutes=5)
MAX_KEY_LENGTH = IDEMPOTENCY_KEY_LENGTH
IN_FLIGHT, DONE = "in_flight", "done"
#: expired keys are deleted at most this often per process
_PRUNE_EVERY = 600.0
_pruned_at: dict[str, float] = {}
_prune_lock = threading.Lock()


class KeyReused(InputError):
    """The key was first used for a different request."""


class InFlight(BroadcasterError):
    """The first request with this key has not finished yet."""


@dataclass(frozen=True)
class Answer:
    """What the action answered (or, replayed, what it first answered)."""

    status_code: int
    body: Any
    replayed: bool = False


def fingerprint(method: str, path: str, body: Any) -> str:
    """A digest of the request: the same method, path and JSON body (keys in any order) give the same one."""
    canonical = json.dumps([method.upper(), path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    """A usable key: 1 to 255 visible characters."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InputError(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")
    return key


def once(settings: Settings, scope: str, key: str | None, digest: str, action: Callable[[], tuple[int, Any]]) -> Answer:
    """Run ``action`` once per (scope, key); replay its stored answer for a repeat of the same request."""
    if key is None:
        return Answer(*action())
    check_key(key)
    claimed = _claim(settings, scope, key, digest)
    if isinstance(claimed, Answer):
        return claimed
    try:
        status_code, body = action()
    except BaseException:
        try:
            _release(settings, scope, key, claimed)
        except Exception:
            log.warning("could not release idempotency key %r of %s; it frees itself after %s", key, scope, LEASE)
        raise
    _complete(settings, scope, key, claimed, status_code, body)
    return Answer(status_code, body)


def _claim(settings: Settings, scope: str, key: str, digest: str) -> str | Answer:
    """Our claim id on the key; or the stored answer to replay. Raises KeyReused or InFlight."""
    _prune(settings)
    claim = new_id()
    for _ in range(3):
        now = utcnow()
        try:
            with session_scope(settings.database_url) as session:
                session.add(
                    IdempotencyKey(
                        scope=scope,
                        key=key,
                        fingerprint=digest,
                        state=IN_FLIGHT,
                        claim=claim,
                        created_at=now,
                        lease_until=now + LEASE,
                        expires_at=now + RETENTION,
                    )
                )
            return claim
        except IntegrityError:
            pass
        with session_scope(settings.database_url) as session:
            row = session.get(IdempotencyKey, (scope, key))
            if row is None:  # released or pruned meanwhile: try to claim it again
                continue
            expired = row.expires_at <= now
            if not expired and row.fingerprint != digest:
                raise KeyReused(
                    "this Idempotency-Key was first used for a different request; use a new key for a new request"
                )
            if not expired and row.state == DONE:
                return Answer(row.status_code or 200, row.response, replayed=True)
            if not expired and row.lease_until > now:
                raise InFlight("a request with this Idempotency-Key is still being processed; try again shortly")
            # An expired key, or a claim whose process died: take it over, unless someone else just did.
            taken = cast(
                "CursorResult[Any]",
                session.execute(
                    update(IdempotencyKey)
                    .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key, IdempotencyKey.claim == row.claim)
                    .values(
                        fingerprint=digest,
                        state=IN_FLIGHT,
                        claim=claim,
                        status_code=None,
                        response=None,
                        created_at=now,
                        lease_until=now + LEASE,
                        expires_at=now + RETENTION,
                    )
                    .execution_options(synchronize_session=False)
                ),
            ).rowcount
            if taken:
                return claim
    raise InFlight("a request with this Idempotency-Key is still being processed; try again shortly")


def _complete(settings: Settings, scope: str, key: str, claim: str, status_code: int, body: Any) -> None:
    with session_scope(settings.database_url) as session:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key, IdempotencyKey.claim == claim)
            .values(state=DONE, status_code=status_code, response=body)
            .execution_options(synchronize_session=False)
        )


def _release(settings: Settings, scope: str, key: str, claim: str) -> None:
    with session_scope(settings.database_url) as session:
        session.execute(
            delete(IdempotencyKey)
            .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key, IdempotencyKey.claim == claim)
            .execution_options(synchronize_session=False)
        )


def _prune(settings: Settings) -> None:
    """Delete expired keys, now and then (every process does it, so no scheduler is needed)."""
    with _prune_lock:
        last = _pruned_at.get(settings.database_url, 0.0)
        if time.monotonic() - last < _PRUNE_EVERY:
            return
        _pruned_at[settings.database_url] = time.monotonic()
    with session_scope(settings.database_url) as session:
        session.execute(
            delete(IdempotencyKey)
            .where(IdempotencyKey.expires_at <= utcnow())
            .execution_options(synchronize_session=False)
        )


def stored(settings: Settings, scope: str, key: str) -> IdempotencyKey | None:
    """The key's row as it stands (for inspection and tests)."""
    with sessions(settings.database_url)() as session:
        return session.scalar(select(IdempotencyKey).where(IdempotencyKey.scope == scope, IdempotencyKey.key == key))
