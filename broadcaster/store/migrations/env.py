"""Alembic runs on the connection that ``broadcaster.store.db.migrate`` hands it."""

from alembic import context

from broadcaster.store.models import Base  # every table

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
