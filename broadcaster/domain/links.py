"""Signed one-click unsubscribe links: ``{api_url}/unsubscribe/{id}.{mac}``, and the signing key behind them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import threading
from typing import Any

from sqlalchemy import (
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broadcaster.domain.subscribers import mark_unsubscribed, subscriber_view
from broadcaster.settings import Settings
from broadcaster.store.db import session_scope, sessions
from broadcaster.store.models import SigningKey, Subscriber, utcnow

log = logging.getLogger(__name__)

UNSUBSCRIBE_KEY_NAME = "unsubscribe"
_keys: dict[tuple[int, str], bytes] = {}
_keys_lock = threading.Lock()


def signing_key(settings: Settings, session: Session | None = None) -> bytes:
    """``[subscribers] signing_key``; else the key kept in the database (made on first use)."""
    configured = settings.subscribers.signing_key
    if configured is not None:
        return configured.get_secret_value().encode()
    cache_key = (os.getpid(), settings.database_url)
    with _keys_lock:
        if cache_key in _keys:
            return _keys[cache_key]
    if session is None:
        with session_scope(settings.database_url) as own:
            key, _ = _stored_key(own)
        settled = True
    else:
        # A key this transaction adds is not settled until it commits (it may yet roll back).
        key, settled = _stored_key(session)
    if settled:
        with _keys_lock:
            _keys[cache_key] = key
    return key


def _stored_key(session: Session) -> tuple[bytes, bool]:
    """The database's key, and whether it was there before this call."""
    query = select(SigningKey.secret).where(SigningKey.name == UNSUBSCRIBE_KEY_NAME)
    found = session.scalar(query)
    if found:
        return found.encode(), True
    secret = secrets.token_urlsafe(32)
    try:
        with session.begin_nested():
            session.add(SigningKey(name=UNSUBSCRIBE_KEY_NAME, secret=secret, created_at=utcnow()))
    except IntegrityError:  # another process made it first
        found = session.scalar(query)
        assert found
        return found.encode(), True
    log.info("generated the unsubscribe signing key (kept in the database; set [subscribers] signing_key to choose)")
    return secret.encode(), False


def sign(key: bytes, subscriber_id: str) -> str:
    """The token in a subscriber's unsubscribe link: its id and a MAC of it."""
    mac = hmac.new(key, f"unsubscribe:{subscriber_id}".encode(), hashlib.sha256).digest()
    return f"{subscriber_id}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def verify(settings: Settings, token: str) -> str | None:
    """The subscriber id a token was signed for; None for a forged or mangled token."""
    subscriber_id, dot, _ = token.partition(".")
    if not dot or not subscriber_id or len(token) > 200:
        return None
    expected = sign(signing_key(settings), subscriber_id).encode()
    presented = token.encode("utf-8", "surrogateescape")
    return subscriber_id if hmac.compare_digest(expected, presented) else None


def api_url(settings: Settings) -> str:
    """Where the public reaches ``broadcaster api``: ``[subscribers] api_url``, else ``public_url``."""
    return (settings.subscribers.api_url or settings.public_url).rstrip("/")


def unsubscribe_url(settings: Settings, token: str) -> str:
    return f"{api_url(settings)}/unsubscribe/{token}"


def subscriber_by_token(settings: Settings, token: str) -> dict[str, Any] | None:
    subscriber_id = verify(settings, token)
    if subscriber_id is None:
        return None
    with sessions(settings.database_url)() as session:
        row = session.get(Subscriber, subscriber_id)
        return subscriber_view(row) if row is not None else None


def unsubscribe_by_token(settings: Settings, token: str) -> dict[str, Any] | None:
    """Unsubscribe the token's subscriber (again is fine); None when the token is not ours or it was removed."""
    subscriber_id = verify(settings, token)
    if subscriber_id is None:
        return None
    with session_scope(settings.database_url) as session:
        row = session.get(Subscriber, subscriber_id)
        if row is None:
            return None
        mark_unsubscribed(row, utcnow())
        return subscriber_view(row)


# Replies that unsubscribe or subscribe again (an SMS STOP, START): channels' inbound webhooks, through
# broadcaster.domain.inbound
