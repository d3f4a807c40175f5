"""Subscribers: who gets status updates by email or SMS, what they follow, and whether they still want them.

A subscriber is an email address or an E.164 phone number, the components it follows (none: all of them),
and a status:

    confirmed      receives every broadcast of an `email`/`sms` channel with ``audience = "subscribers"``
                   about one of its components (an incident that names no component reaches everyone)
    unsubscribed   asked to stop: the signed one-click link in every email, SMS STOP, Twilio's own opt-out
                   (error 21610), or an operator; only SMS START or an operator (``add --resubscribe``) undoes it
    quarantined    its address failed permanently ``[subscribers] quarantine_after`` times in a row (a mailbox
                   refused at RCPT, a number Twilio calls invalid); SMS START or an operator's ``add`` ends it

Audiences are resolved when a broadcast is created, in its transaction (``audience_targets``): one delivery
row per recipient, so a later unsubscribe or import does not change a broadcast in flight.

Unsubscribe links are ``{api_url}/unsubscribe/{id}.{mac}``, mac = base64url(HMAC-SHA256(key, "unsubscribe:" + id)).
They do not expire (mail stays in inboxes for years). The key is ``[subscribers] signing_key``, else a random
one generated once and kept in the log's ``signing_keys`` table, so every process sharing the log (workers
signing, the API verifying) agrees on it without configuration.

Imports are bulk upserts (one multi-row ``INSERT ... ON CONFLICT`` per thousand rows): an import sets the
components of subscribers it already knows and never changes anyone's status.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import logging
import os
import re
import secrets
import smtplib
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from enum import StrEnum
from typing import Any

import phonenumbers
from sqlalchemy import (
    JSON,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    case,
    delete,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column
from twilio.base.exceptions import TwilioRestException

from broadcaster import limits
from broadcaster.db import session_scope, sessions
from broadcaster.errors import ConfigError, DeliveryError, InputError, PermanentError
from broadcaster.models import Base, UTCDateTime, new_id, utcnow
from broadcaster.settings import Settings
from channels.base import UNSUBSCRIBE_STATE

log = logging.getLogger(__name__)

#: the one audience there is: every confirmed subscriber of the channel's kind
SUBSCRIBERS = "subscribers"
# The shared limits (broadcaster.limits), under the names this module's callers know.
MAX_COMPONENTS = limits.MAX_COMPONENTS
MAX_COMPONENT_LENGTH = limits.MAX_COMPONENT
MAX_EMAIL_LENGTH = limits.MAX_EMAIL


class Kind(StrEnum):
    email = "email"
    phone = "phone"


class SubscriberStatus(StrEnum):
    confirmed = "confirmed"
    unsubscribed = "unsubscribed"
    quarantined = "quarantined"


#: the kind of subscriber each channel type sends to
KIND_OF_CHANNEL: dict[str, Kind] = {"email": Kind.email, "sms": Kind.phone}


class Subscriber(Base):
    """One address and what it follows; ``failures`` counts permanent failures in a row."""

    __tablename__ = "subscribers"
    __table_args__ = (
        UniqueConstraint("kind", "address", name="uq_subscriber_address"),
        Index("ix_subscribers_kind_status", "kind", "status"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(8))
    #: an email address (lower-cased) or an E.164 number: the delivery target
    address: Mapped[str] = mapped_column(String(320))
    #: component names; empty: every component
    components: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.confirmed)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    quarantined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SigningKey(Base):
    """Keys generated for this deployment when the configuration names none."""

    __tablename__ = "signing_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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
        row = _find(session, kind, address)
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
                created, row = False, _find(session, kind, address)
                assert row is not None
        row.components = components
        row.updated_at = now
        if row.status == SubscriberStatus.quarantined or (row.status == SubscriberStatus.unsubscribed and resubscribe):
            _confirm(row, now)
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
                "resubscribe: must be true to confirm a subscriber who unsubscribed (do that only at their request)"
            )
        if components is not None:
            row.components = clean_components(components)
        if status == SubscriberStatus.confirmed:
            _confirm(row, now)
        elif status == SubscriberStatus.unsubscribed:
            _unsubscribe(row, now)
        elif status is not None:
            raise InputError(f"status: must be confirmed or unsubscribed, not {status!r}")
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
            row = _find(session, kind, address)
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


def _find(session: Session, kind: Kind | str, address: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.kind == kind, Subscriber.address == address))


def _confirm(row: Subscriber, now: datetime) -> None:
    row.status = SubscriberStatus.confirmed
    row.failures = 0
    row.unsubscribed_at = row.quarantined_at = None
    row.updated_at = now


def _unsubscribe(row: Subscriber, now: datetime) -> None:
    if row.status != SubscriberStatus.unsubscribed:
        row.status = SubscriberStatus.unsubscribed
        row.unsubscribed_at = now
        row.updated_at = now


# --- CSV import --------------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did: subscribers added and updated, and each skipped row with its line number."""

    created: int = 0
    updated: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "skipped": [{"line": line, "error": error} for line, error in self.skipped],
            "ignored_columns": self.ignored_columns,
        }


COLUMNS = ("email", "phone", "components")
#: rows upserted per call while importing (each call sends them in multi-row statements of a thousand)
IMPORT_SLICE = 10_000


def read_csv(lines: Iterable[str]) -> tuple[list[tuple[Kind, str, list[str]]], ImportReport]:
    """The subscribers a CSV file names, and a report of the rows skipped (by the line each starts on).

    ``lines`` is the file opened with ``newline=""``. The header row needs an ``email`` or ``phone`` column
    (both may be there: a row with both is two subscribers) and may have ``components`` (``;``-separated).
    A header without either column is bad input (InputError); a bad row is skipped and reported.
    """
    report = ImportReport()
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("the file is empty: it needs a header row with an email or phone column") from None
    except csv.Error as exc:
        raise InputError(f"line 1: not CSV: {exc}") from None
    columns = [name.strip().lower().lstrip("\ufeff") for name in header]
    if "email" not in columns and "phone" not in columns:
        found = ", ".join(repr(c) for c in columns) or "nothing"
        raise InputError(f"line 1: the header row needs an email or phone column (found {found})")
    for name in COLUMNS:
        if columns.count(name) > 1:
            raise InputError(f"line 1: the header row names the {name} column twice")
    index = {name: columns.index(name) for name in COLUMNS if name in columns}
    report.ignored_columns = [c for c in columns if c not in COLUMNS]
    found_rows: list[tuple[Kind, str, list[str]]] = []
    first_seen: dict[tuple[Kind, str], int] = {}
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.skipped.append((line, f"not CSV: {exc}"))
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            report.skipped.append((line, f"{len(row)} fields, but the header row has {len(header)}"))
            continue
        cells = {name: row[i].strip() if i < len(row) else "" for name, i in index.items()}
        try:
            entries = _row_entries(cells)
        except ValueError as exc:
            report.skipped.append((line, str(exc)))
            continue
        for kind, address, components in entries:
            first = first_seen.setdefault((kind, address), line)
            if first != line:
                report.skipped.append((line, f"{kind} {address} repeats line {first} (line {first} is kept)"))
                continue
            found_rows.append((kind, address, components))
    return found_rows, report


def _row_entries(cells: dict[str, str]) -> list[tuple[Kind, str, list[str]]]:
    try:
        # A spreadsheet formula cannot be meant as a component name or an address (CSV injection).
        components = [limits.not_formula(c) for c in clean_components(cells.get("components", "").split(";"))]
    except ValueError as exc:
        raise ValueError(f"components: {exc}") from None
    entries = []
    for kind in (Kind.email, Kind.phone):
        value = cells.get(kind.value, "")
        if value:
            try:
                if kind == Kind.email:
                    limits.not_formula(value)  # a phone number's leading + is E.164's
                entries.append((kind, normalise(kind, value), components))
            except ValueError as exc:
                raise ValueError(f"{kind}: {exc}") from None
    if not entries:
        raise ValueError("no email or phone")
    return entries


def import_subscribers(settings: Settings, lines: Iterable[str]) -> ImportReport:
    """Read a CSV file and upsert its subscribers in one transaction (bad rows skipped and reported)."""
    found, report = read_csv(lines)
    with session_scope(settings.database_url) as session:
        before = session.scalar(select(func.count()).select_from(Subscriber)) or 0
        # In slices, so that a large file's rows are not all held as parameters at once.
        for start in range(0, len(found), IMPORT_SLICE):
            upsert(session, found[start : start + IMPORT_SLICE])
        after = session.scalar(select(func.count()).select_from(Subscriber)) or 0
    report.created = after - before
    report.updated = len(found) - report.created
    return report


def upsert(session: Session, entries: Sequence[tuple[Kind, str, list[str]]]) -> None:
    """Insert new subscribers and set the components of known ones, in multi-row statements.

    With RETURNING, SQLAlchemy sends a list of rows as multi-row INSERTs of up to 1,000 rows each
    ("insertmanyvalues"), compiled once; without it, SQLite and psycopg would get one row per statement.
    """
    if not entries:
        return
    insert = _dialect_insert(session)
    now = utcnow()
    rows = [
        {
            "id": new_id(),
            "kind": kind.value,
            "address": address,
            "components": components,
            "status": SubscriberStatus.confirmed.value,
            "failures": 0,
            "created_at": now,
            "updated_at": now,
        }
        for kind, address, components in entries
    ]
    statement = insert(Subscriber)
    statement = statement.on_conflict_do_update(
        index_elements=["kind", "address"],
        set_={"components": statement.excluded.components, "updated_at": statement.excluded.updated_at},
    ).returning(Subscriber.id)
    session.execute(statement, rows)


def _dialect_insert(session: Session) -> Callable[..., Any]:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise ConfigError(f"database_url: subscribers need SQLite or PostgreSQL, not {dialect}")


# --- unsubscribe links -------------------------------------------------------------------------------------

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
        _unsubscribe(row, utcnow())
        return subscriber_view(row)


# SMS keywords (STOP, START) from Twilio's inbound webhook: broadcaster.sms_inbound


# --- audiences ---------------------------------------------------------------------------------------------


def audience_of(settings: Settings, channel: str) -> Kind | None:
    """The kind of subscriber ``channel`` also sends to, or None when it has no audience."""
    config = settings.channels[channel]
    audience = getattr(config, "audience", None)
    if audience is None:
        return None
    if audience != SUBSCRIBERS:
        raise InputError(f'channels.{channel}.audience: must be "{SUBSCRIBERS}", not {audience!r}')
    kind = KIND_OF_CHANNEL.get(config.type)
    if kind is None:
        raise InputError(f"channels.{channel}.audience: {config.type} channels have no subscribers (email and sms do)")
    return kind


def audience_targets(
    session: Session, settings: Settings, channel: str, configured: Sequence[str], components: Sequence[str]
) -> list[tuple[str, dict[str, Any]]]:
    """Each target of ``channel`` with its delivery's first state: its recipients, then its audience.

    An email subscriber's state carries its signed unsubscribe link (``UNSUBSCRIBE_STATE``). A subscriber who
    is also a configured recipient gets one delivery, as a recipient.
    """
    targets: dict[str, dict[str, Any]] = {target: {} for target in configured}
    kind = audience_of(settings, channel)
    if kind is None:
        return list(targets.items())
    known = {_bare(kind, target) for target in configured}
    key = signing_key(settings, session) if kind == Kind.email else None
    query = (
        select(Subscriber.id, Subscriber.address, Subscriber.components)
        .where(Subscriber.kind == kind, Subscriber.status == SubscriberStatus.confirmed)
        .order_by(Subscriber.id)
    )
    for subscriber_id, address, followed in session.execute(query):
        if address in known or not follows(followed or [], components):
            continue
        state = {UNSUBSCRIBE_STATE: unsubscribe_url(settings, sign(key, subscriber_id))} if key else {}
        targets[address] = state
    return list(targets.items())


def _bare(kind: Kind, target: str) -> str:
    return parseaddr(target)[1].lower() if kind == Kind.email else target


# --- quarantine --------------------------------------------------------------------------------------------

#: Twilio errors that blame the number itself (invalid, not a mobile, unreachable by SMS)
TWILIO_BAD_NUMBER = frozenset({21211, 21217, 21401, 21421, 21612, 21614})
TWILIO_UNSUBSCRIBED = 21610


def recipient_verdict(error: DeliveryError) -> str | None:
    """``bounced`` when a permanent failure is the address's fault, ``unsubscribed`` when the provider says
    the recipient opted out; None for every other failure (credentials, content, the provider's state).

    Read from the provider's own exception, kept as the error's ``__cause__`` by the adapters: a mailbox
    refused at RCPT with a 5xx reply; a Twilio error code about the number.
    """
    if not isinstance(error, PermanentError):
        return None
    cause = error.__cause__
    if isinstance(cause, smtplib.SMTPRecipientsRefused):
        return "bounced"
    if isinstance(cause, TwilioRestException):
        if cause.code == TWILIO_UNSUBSCRIBED:
            return "unsubscribed"
        if cause.code in TWILIO_BAD_NUMBER:
            return "bounced"
    return None


def _kept_by_audience(settings: Settings, channel: str) -> Kind | None:
    """The kind of subscriber a channel with an audience sends to; None for any other channel."""
    config = settings.channels.get(channel)
    if config is None or getattr(config, "audience", None) is None:
        return None
    return KIND_OF_CHANNEL.get(config.type)


#: built once: a large fan-out runs it for every batch
_RESET_FAILURES = (
    update(Subscriber)
    .where(
        Subscriber.kind == bindparam("subscriber_kind"),
        Subscriber.address.in_(bindparam("subscriber_addresses", expanding=True)),
        Subscriber.failures > 0,
    )
    .values(failures=0, updated_at=bindparam("reset_at"))
)


def note_successes(session: Session, settings: Settings, channel: str, targets: Sequence[str]) -> None:
    """A success ends a subscriber's run of permanent failures (one statement for a batch of targets)."""
    kind = _kept_by_audience(settings, channel)
    if kind is None or not targets:
        return
    addresses = sorted({_bare(kind, target) for target in targets})
    session.connection().execute(
        _RESET_FAILURES, {"subscriber_kind": kind.value, "subscriber_addresses": addresses, "reset_at": utcnow()}
    )


def note_outcome(
    session: Session, settings: Settings, channel: str, target: str, error: DeliveryError | None, reason: str | None
) -> None:
    """Keep a subscriber's run of permanent failures: reset by a success, quarantining at the limit.

    ``reason`` is the error as the delivery log shows it (its secrets redacted); it becomes ``last_error``.
    Only for channels with an audience; a target that is no subscriber is left alone. Runs in the
    transaction that records the attempt.
    """
    kind = _kept_by_audience(settings, channel)
    if kind is None:
        return
    if error is None:
        note_successes(session, settings, channel, [target])
        return
    now = utcnow()
    this = (Subscriber.kind == kind.value) & (Subscriber.address == _bare(kind, target))
    verdict = recipient_verdict(error)
    if verdict is None:
        return
    reason = (reason or str(error))[:1000]
    if verdict == "unsubscribed":
        statement = (
            update(Subscriber)
            .where(this, Subscriber.status != SubscriberStatus.unsubscribed)
            .values(status=SubscriberStatus.unsubscribed, unsubscribed_at=now, last_error=reason, updated_at=now)
        )
    else:
        reached = (Subscriber.failures + 1 >= settings.subscribers.quarantine_after) & (
            Subscriber.status == SubscriberStatus.confirmed
        )
        statement = (
            update(Subscriber)
            .where(this)
            .values(
                failures=Subscriber.failures + 1,
                last_error=reason,
                updated_at=now,
                status=case((reached, literal(SubscriberStatus.quarantined.value)), else_=Subscriber.status),
                quarantined_at=case((reached, literal(now, UTCDateTime())), else_=Subscriber.quarantined_at),
            )
        )
    session.execute(statement.execution_options(synchronize_session=False))


def purge(settings: Settings) -> int:
    """Delete every subscriber (for tests and drills); return how many there were."""
    with session_scope(settings.database_url) as session:
        result = session.execute(delete(Subscriber).execution_options(synchronize_session=False))
        return int(getattr(result, "rowcount", 0) or 0)
