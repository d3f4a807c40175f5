"""Broadcasts of events that are not updates (reminders, maintenance, post-mortems); "next update by".

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("broadcasts") as batch_op:
        batch_op.alter_column("update_id", existing_type=sa.String(length=26), nullable=True)
        batch_op.add_column(sa.Column("context", sa.JSON(), nullable=True))
    with op.batch_alter_table("updates") as batch_op:
        batch_op.add_column(sa.Column("next_update_by", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("updates") as batch_op:
        batch_op.drop_column("next_update_by")
    with op.batch_alter_table("broadcasts") as batch_op:
        batch_op.drop_column("context")
        batch_op.alter_column("update_id", existing_type=sa.String(length=26), nullable=False)
