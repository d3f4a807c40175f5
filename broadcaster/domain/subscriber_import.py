"""Importing subscribers from a CSV export: bulk upserts that set components and never change a status."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from broadcaster.core import limits
from broadcaster.core.errors import ConfigError, InputError
from broadcaster.domain.subscribers import clean_components, normalise
from broadcaster.settings import Settings
from broadcaster.store.db import session_scope
from broadcaster.store.models import Kind, Subscriber, SubscriberStatus, new_id, utcnow

log = logging.getLogger(__name__)


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
