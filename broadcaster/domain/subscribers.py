"""Subscribers: who gets status updates by email or SMS, what they follow, and whether they still want them.

A subscriber is an email address or an E.164 phone number, the components it follows (none: all of them),
and a status:

    confirmed      receives every broadcast of a channel of its kind (``Channel.subscriber_kind``: email, sms)
                   with ``audience = "subscribers"`` about one of its components (an incident that names no
                   component reaches everyone)
    unsubscribed   asked to stop: the signed one-click link in every email, SMS STOP, the provider's own opt-out
                   (``PermanentError.recipient == "unsubscribed"``), or an operator; only SMS START or an
                   operator (``add --resubscribe``) undoes it
    quarantined    its address failed permanently ``[subscribers] quarantine_after`` times in a row
                   (``PermanentError.recipient == "invalid"``: a mailbox refused at RCPT, a number the provider
                   calls invalid); SMS START or an operator's ``add`` ends it

Audiences are resolved when a broadcast is created, in its transaction (``audience_targets``): one delivery
row per recipient, so a later unsubscribe or import does not change a broadcast in flight.

Unsubscribe links are ``{api_url}/unsubscribe/{id}.{mac}``, mac = base64url(HMAC-SHA256(key, "unsubscribe:" + id)).
They do not expire (mail stays in inboxes for years). The key is ``[subscribers] signing_key``, else a random
one generated once and kept in the log's ``signing_keys`` table, so every process sharing the log (workers
signing, the API verifying) agrees on it without configuration.

Imports are bulk upserts (one multi-row ``INSERT ... ON CONFLICT`` per thousand rows): an import sets the
components of subscribers it already knows and never changes anyone's status.

This module: validation, views and one subscriber at a time; ``subscriber_import`` the CSV import, ``links``
the unsubscribe links and their key, ``audiences`` the audiences and quarantine.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from email.utils import parseaddr
from typing import Any

import phonenumbers
from sqlalchemy import (
    delete,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broadcaster.core import limits
from broadcaster.core.errors import InputError
from broadcaster.settings import Settings
from broadcaster.store.db import session_scope, sessions
from broadcaster.store.models import Kind, Subscriber, SubscriberStatus, new_id, utcnow
from channels.registry import subscriber_kinds

log = logging.getLogger(__name__)

#: the one audience there is: every confirmed subscriber of the channel's kind
SUBSCRIBERS = "subscribers"
# The shared limits (broadcaster.core.limits), under the names this module's callers know.
MAX_COMPONENTS = limits.MAX_COMPONENTS
MAX_COMPONENT_LENGTH = limits.MAX_COMPONENT
MAX_EMAIL_LENGTH = limits.MAX_EMAIL


def kind_of_channel(channel_type: str) -> Kind | None:
    """The kind of subscriber a channel type sends to (its ``subscriber_kind``); None when it takes none."""
    kind = subscriber_kinds().get(channel_type)
    return Kind(kind) if kind else None


class NoSuchSubscriber(InputError):
    """No subscriber has this id or address."""


class Unsubscribed(InputError):
    """The subscriber unsubscribed, and the change would subscribe it again without ``resubscribe``."""


# --- validation --------------------------------------------------------------------------------------------

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")
_LOCAL_FORBIDDEN = set('<>()[]\\,;:"@')


def normalise_email(value: str) -> str:
    """A bare address (``ana@example.com``, no display name), lower-cased so that each person is one subscriber."""
    # Control characters are named (white space is simply not part of an address: refused below).
    text = limits.multi_line(value).strip()
    problem = f"not an email address: {value!r}"
    if not text or len(text) > MAX_EMAIL_LENGTH or not text.isprintable() or any(c.isspace() for c in text):
        raise ValueError(problem)
    name, address = parseaddr(text)
    local, _, domain = address.rpartition("@")
    if name or address != text or not local or len(local) > 64 or _LOCAL_FORBIDDEN & set(local):
        raise ValueError(problem)
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(problem) from None
    if not _DOMAIN.match(ascii_domain):
        raise ValueError(problem)
    return text.lower()


def normalise_phone(value: str) -> str:
    """An E.164 number (``+14155550100``) that ``phonenumbers`` knows to be valid."""
    text = limits.multi_line(value).strip()
    if not _E164.match(text):
        raise ValueError(
            f"not an E.164 phone number: {value!r} (write + and the country code and number, digits only, "
            "e.g. +14155550100)"
        )
    try:
        valid = phonenumbers.is_valid_number(phonenumbers.parse(text, None))
    except phonenumbers.NumberParseException:
        valid = False
    if not valid:
        raise ValueError(f"not a valid phone number: {value!r}")
    return text


def normalise(kind: Kind, value: str) -> str:
    return normalise_email(value) if kind == Kind.email else normalise_phone(value)


def clean_components(names: Iterable[str]) -> list[str]:
    """Component names with their spacing tidied, each once; empty names are dropped (none left: all)."""
    cleaned: list[str] = []
    for number, raw in enumerate(names, 1):
        try:
            name = " ".join(limits.multi_line(raw).split())  # white space tidied, control characters refused
        except ValueError as exc:
            raise ValueError(f"name {number} {exc}") from None
        if not name:
            continue
        if len(name) > MAX_COMPONENT_LENGTH or not name.isprintable():
            raise ValueError(f"not a component name: {raw[:40]!r}")
        if name not in cleaned:
            cleaned.append(name)
    if len(cleaned) > MAX_COMPONENTS:
        raise ValueError(f"at most {MAX_COMPONENTS} components")
    return cleaned


def follows(followed: Sequence[str], components: Sequence[str]) -> bool:
    """A subscriber of ``followed`` (empty: all) hears about an incident on ``components`` (empty: everyone)."""
    if not followed or not components:
        return True
    wanted = {c.casefold() for c in components}
    return any(c.casefold() in wanted for c in followed)


# --- views -------------------------------------------------------------------------------------------------


def subscriber_view(row: Subscriber) -> dict[str, Any]:
    """A subscriber as the CLI's ``--json`` and the API show it."""

    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": row.id,
        "email": row.address if row.kind == Kind.email else None,
        "phone": row.address if row.kind == Kind.phone else None,
        "components": list(row.components),
        "status": row.status,
        "failures": row.failures,
        "last_error": row.last_error,
        "created_at": when(row.created_at),
        "updated_at": when(row.updated_at),
        "unsubscribed_at": when(row.unsubscribed_at),
        "quarantined_at": when(row.quarantined_at),
    }


# --- one subscriber ----------------------------------------------------------------------------------------


def add_subscriber(
    settings: Settings, kind: Kind, address: str, components: Sequence[str], resubscribe: bool = False
) -> tuple[dict[str, Any], bool]:
    """Add a subscriber, or set the components of a known one; return it and whether it is new.

    A quarantined subscriber is confirmed again (the operator vouches for the address); an unsubscribed one
    only with ``resubscribe`` (they asked to be subscribed again).
    """
    address = normalise(kind, address)
    components = clean_components(components)
    now = utcnow()
    with session_scope(settings.database_url) as session:
        row = find_row(session, kind, address)
        created = row is None
        if row is None:
            row = Subscriber(
                id=new_id(),
                kind=kind,
                address=address,
                components=components,
                status=SubscriberStatus.confirmed,
                failures=0,
                created_at=now,
                updated_at=now,
            )
            try:
                with session.begin_nested():
                    session.add(row)
            except IntegrityError:  # added by someone else meanwhile
                created, row = False, find_row(session, kind, address)
                assert row is not None
        row.components = components
        row.updated_at = now
        if row.status == SubscriberStatus.quarantined or (row.status == SubscriberStatus.unsubscribed and resubscribe):
            confirm_row(row, now)
        session.flush()
        return subscriber_view(row), created


def get_subscriber(settings: Settings, subscriber_id: str) -> dict[str, Any]:
    with sessions(settings.database_url)() as session:
        row = session.get(Subscriber, subscriber_id)
        if row is None:
            raise NoSuchSubscriber(f"no subscriber with id {subscriber_id!r}")
        return subscriber_view(row)


def change_subscriber(
    settings: Settings,
    subscriber_id: str,
    components: Sequence[str] | None = None,
    status: str | None = None,
    resubscribe: bool = False,
) -> dict[str, Any]:
    """Set a subscriber's components and/or status (``confirmed`` also ends a quarantine).

    Confirming one who unsubscribed needs ``resubscribe`` (they asked for it), as ``add_subscriber`` does;
    without it, nothing changes.
    """
    now = utcnow()
    with session_scope(settings.database_url) as session:
        # Locked (PostgreSQL), so that an unsubscribe committed meanwhile is seen, not overwritten.
        row = session.get(Subscriber, subscriber_id, with_for_update=True)
        if row is None:
            raise NoSuchSubscriber(f"no subscriber with id {subscriber_id!r}")
        if status == SubscriberStatus.confirmed and row.status == SubscriberStatus.unsubscribed and not resubscribe:
            raise Unsubscribed(
                "resubscribe: must be true to confirm a subscriber who unsubscribed (do that only at their request)",
                field="resubscribe",
            )
        if components is not None:
            row.components = clean_components(components)
        if status == SubscriberStatus.confirmed:
            confirm_row(row, now)
        elif status == SubscriberStatus.unsubscribed:
            mark_unsubscribed(row, now)
        elif status is not None:
            raise InputError(f"status: must be confirmed or unsubscribed, not {status!r}", field="status")
        row.updated_at = now
        return subscriber_view(row)


def remove_subscriber(
    settings: Settings, subscriber_id: str | None = None, kind: Kind | None = None, address: str | None = None
) -> dict[str, Any]:
    """Delete a subscriber (by id, or by kind and address); return what it was."""
    with session_scope(settings.database_url) as session:
        if subscriber_id is not None:
            row = session.get(Subscriber, subscriber_id)
            missing = f"no subscriber with id {subscriber_id!r}"
        else:
            assert kind is not None and address is not None
            address = normalise(kind, address)
            row = find_row(session, kind, address)
            missing = f"no subscriber with {kind} {address}"
        if row is None:
            raise NoSuchSubscriber(missing)
        view = subscriber_view(row)
        session.delete(row)
        return view


def list_subscribers(
    settings: Settings,
    status: str | None = None,
    kind: Kind | None = None,
    address: str | None = None,
    component: str | None = None,
    after: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Subscribers matching every filter, oldest first; ``component``: those an incident on it would reach."""
    query = select(Subscriber).order_by(Subscriber.id)
    if status:
        query = query.where(Subscriber.status == status)
    if kind:
        query = query.where(Subscriber.kind == kind)
    if address:
        query = query.where(Subscriber.address == address)
    if after:
        query = query.where(Subscriber.id > after)
    if limit is not None and component is None:
        query = query.limit(limit)
    found: list[dict[str, Any]] = []
    with sessions(settings.database_url)() as session:
        for row in session.scalars(query.execution_options(yield_per=1000)):
            if component is not None and not follows(row.components, [component]):
                continue
            found.append(subscriber_view(row))
            if limit is not None and len(found) >= limit:
                break
    return found


def find_row(session: Session, kind: Kind | str, address: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.kind == kind, Subscriber.address == address))


def confirm_row(row: Subscriber, now: datetime) -> None:
    row.status = SubscriberStatus.confirmed
    row.failures = 0
    row.unsubscribed_at = row.quarantined_at = None
    row.updated_at = now


def mark_unsubscribed(row: Subscriber, now: datetime) -> None:
    if row.status != SubscriberStatus.unsubscribed:
        row.status = SubscriberStatus.unsubscribed
        row.unsubscribed_at = now
        row.updated_at = now


def purge(settings: Settings) -> int:
    """Delete every subscriber (for tests and drills); return how many there were."""
    with session_scope(settings.database_url) as session:
        result = session.execute(delete(Subscriber).execution_options(synchronize_session=False))
        return int(getattr(result, "rowcount", 0) or 0)
