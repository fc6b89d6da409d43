"""replication throttles: the shared token bucket of the copies into each region

One row per destination region with a rate limit (`replication_rate_limit_mib`): the Unix
time by which every byte taken from its bucket so far is paid for. Every process of the
database takes from the same row, so the limit holds across workers.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replication_throttles",
        sa.Column("region", sa.String(length=255), nullable=False),
        sa.Column("paid_until", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("region", name="pk_replication_throttles"),
    )


def downgrade() -> None:
    op.drop_table("replication_throttles")
