"""service state: the secret-key check and housekeeping claims shared by every process

`service_values` holds a constant sealed with the secret key at first start, so a process
given another key file refuses to start; `housekeeping_claims` lets one worker of many run
each cluster-wide housekeeping step (garbage-collection cadence, retention sweep) per
interval.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-12 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_values",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_service_values"),
    )
    op.create_table(
        "housekeeping_claims",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_housekeeping_claims"),
    )


def downgrade() -> None:
    op.drop_table("housekeeping_claims")
    op.drop_table("service_values")
