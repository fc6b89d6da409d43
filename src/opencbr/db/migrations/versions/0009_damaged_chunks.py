"""vault chunks: damaged_at, set when a read of the chunk fails verification

A damaged chunk no longer counts as present in its vault: the next backup or replication
that needs it writes it again and clears the mark.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DAMAGED = sa.text("damaged_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("vault_chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("damaged_at", sa.DateTime(), nullable=True))
        batch_op.create_index(
            "ix_vault_chunks_damaged",
            ["vault_id"],
            unique=False,
            sqlite_where=DAMAGED,
            postgresql_where=DAMAGED,
        )


def downgrade() -> None:
    with op.batch_alter_table("vault_chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_vault_chunks_damaged")
        batch_op.drop_column("damaged_at")
