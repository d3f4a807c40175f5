"""The servers the tests run on besides the private Redis: PostgreSQL and RabbitMQ, where they run."""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from broadcaster.store.db import dispose_all
from broadcaster.testing import rabbitmq_vhost

POSTGRES_URL = os.environ.get("BROADCASTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_URL = os.environ.get("BROADCASTER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
#: databases 16-63 of the private Redis (it runs with 64): 0-15 are left to tests that name one
_next_redis_db = itertools.cycle(range(16, 64))


def postgres_available() -> bool:
    try:
        import psycopg  # the optional PostgreSQL driver

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database named ``<prefix>_<random>``; its URL. Dropped afterwards."""
    import psycopg  # the optional PostgreSQL driver

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        dispose_all()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rabbitmq_available() -> bool:
    try:
        import kombu

        with kombu.Connection(RABBITMQ_URL, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
        return shutil.which("rabbitmqctl") is not None
    except Exception:
        return False


@dataclass
class Broker:
    """One kind of broker; ``fresh()`` gives an empty namespace on it (a Redis database, a RabbitMQ vhost)."""

    kind: str
    redis_server: str
    made: list[str]

    def fresh(self) -> dict[str, str]:
        """The ``broker_url`` (and ``redis_url`` for the shared guards) of an empty namespace."""
        if self.kind == "redis":
            url = f"{self.redis_server}/{next(_next_redis_db)}"
            redis.Redis.from_url(url).flushdb()
            return {"broker_url": url}
        name = f"broadcaster_test_{uuid.uuid4().hex[:10]}"
        self.made.append(name)
        # Rate limits and circuits live in Redis beside RabbitMQ, as the README asks of such a deployment.
        guards = f"{self.redis_server}/{next(_next_redis_db)}"
        redis.Redis.from_url(guards).flushdb()
        return {"broker_url": rabbitmq_vhost(RABBITMQ_URL, name), "redis_url": guards}
