"""replication records: request id, one live record per (source backup, region)

A vault plan now inserts only the records; the worker creates the replicas. The partial
unique index takes over, for concurrent plans, the role the replicas' unique key played.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 07:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("status IN ('waiting_replicate', 'replicating')")


def upgrade() -> None:
    with op.batch_alter_table("replication_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ix_replication_records_live",
            ["source_vault_id", "source_backup_id", "destination_region"],
            unique=True,
            sqlite_where=LIVE,
            postgresql_where=LIVE,
        )


def downgrade() -> None:
    with op.batch_alter_table("replication_records", schema=None) as batch_op:
        batch_op.drop_index("ix_replication_records_live")
        batch_op.drop_column("request_id")
