"""Engines and sessions for the delivery log, one engine per process (safe across Celery's fork)."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import CursorResult, Engine, Update, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from broadcaster.core.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
_lock = threading.Lock()
_cache: dict[tuple[int, str], sessionmaker[Session]] = {}


def normalise_url(url: str) -> str:
    """``postgresql://`` means the psycopg 3 driver, which is the one we ship."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_log_engine(url: str) -> Engine:
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        raise ConfigError("database_url: not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            owner_only(parsed.database)
        engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)


def owner_only(database: str) -> None:
    """Create the SQLite file readable by its owner only (0600): it holds the unsubscribe signing key.

    SQLite gives the ``-wal`` and ``-shm`` files it makes the main file's mode, so they follow; files left by an
    older version lose the permissions others had. A file that cannot be made or changed here (no such folder,
    another owner) is left to SQLite, which reports what is wrong when it opens it.
    """
    if database == ":memory:" or database.startswith("file:"):
        return
    with suppress(OSError):  # FileExistsError: it is there already
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for path in (database, f"{database}-wal", f"{database}-shm"):
        with suppress(OSError):
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                os.chmod(path, mode & 0o700)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL and a busy timeout let several worker processes write one file without "database is locked".
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def sessions(url: str) -> sessionmaker[Session]:
    """This process's session factory for ``url``, migrated to the latest schema on first use."""
    key = (os.getpid(), url)
    with _lock:
        if key not in _cache:
            engine = create_log_engine(url)
            migrate(engine)
            _cache[key] = sessionmaker(engine, expire_on_commit=False)
        return _cache[key]


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    with sessions(url)() as session, session.begin():
        yield session


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest Alembic revision; concurrent callers wait for each other."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(73110427)"))
            elif engine.dialect.name == "sqlite":
                # Take the write lock before Alembic reads the schema version: a second process waits, then
                # finds the schema current, instead of creating the same tables again.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            config.attributes["connection"] = connection
            command.upgrade(config, "heads")
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "cannot connect"
        raise ConfigError(f"database_url: cannot open the delivery log: {reason}") from None


def dispose_all() -> None:
    with _lock:
        for factory in _cache.values():
            bind = factory.kw["bind"]
            bind.dispose()
        _cache.clear()


def changed(session: Session, statement: Update) -> int:
    """Run a conditional UPDATE; return how many rows it changed (0: the condition no longer held)."""
    result = session.execute(statement.execution_options(synchronize_session=False))
    return int(cast(CursorResult[Any], result).rowcount)
