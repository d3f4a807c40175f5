"""A delivery's own rendering (fallback deliveries are rendered for their channel when they are created).

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.add_column(sa.Column("message", sa.JSON(), nullable=True))
        batch_op.create_index("ix_deliveries_fallback_for", ["fallback_for"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.drop_index("ix_deliveries_fallback_for")
        batch_op.drop_column("message")
