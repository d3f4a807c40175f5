"""Alembic runs on the connection that ``broadcaster.db.migrate`` hands it."""

from alembic import context

import broadcaster.idempotency  # noqa: F401  (its table, for autogenerate)
from broadcaster import (
    lifecycle,  # noqa: F401  (reminders, maintenance, postmortems)
    subscribers,  # noqa: F401  (subscribers, signing keys)
)
from broadcaster.models import Base  # the log's own tables, inbound_messages (0008) among them

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
