"""replication_plans: checkpoints/replicate writes one row, not a record per backup

A vault's replicate call inserted one record per backup into five indexes in the request
(10,000 backups: ~66 ms of its ~130 ms). It now writes one plan row with the chosen
backups; the plan becomes its records right after the answer (or first when anything
reads the vault's records), with ids derived from the plan's.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-23 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replication_plans",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("source_region", sa.String(length=255), nullable=False),
        sa.Column("source_vault_id", sa.String(length=36), nullable=False),
        sa.Column("destination_project_id", sa.String(length=32), nullable=False),
        sa.Column("destination_region", sa.String(length=255), nullable=False),
        sa.Column("destination_vault_id", sa.String(length=36), nullable=False),
        sa.Column("auto_trigger", sa.Boolean(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("backups", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replication_plans")),
        sa.UniqueConstraint(
            "source_vault_id",
            "destination_region",
            name=op.f("uq_replication_plans_source_vault_id"),
        ),
    )
    op.create_index(
        "ix_replication_plans_destination_vault",
        "replication_plans",
        ["destination_vault_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_replication_plans_destination_vault", table_name="replication_plans")
    op.drop_table("replication_plans")
