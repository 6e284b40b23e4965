"""exports.progress and deployments.progress: what a worker is doing while an export is built
or a model loads (the phase, and the checkpoint an export of a stopped job starts from)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 06:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows are finished or waiting: nothing in progress, an empty object.
    for table in ("exports", "deployments"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("progress", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
            )


def downgrade() -> None:
    for table in ("exports", "deployments"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("progress")
