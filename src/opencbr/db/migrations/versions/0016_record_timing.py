"""replication records: finished_at and copy_seconds, for the measured replication rate

`finished_at` is when a record settled (success or fail): the order of the failure streak
and of the recent records the rate is measured on. `copy_seconds` is how long the attempt
that finished a successful record took, claim to commit: with its `bytes_copied`, the rate
a dry run estimates its duration from. Records settled before this revision take their
`updated_at` as `finished_at` and have no `copy_seconds`. An index on (source vault,
destination vault, status, finished_at) serves /replication-status.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-20 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("replication_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("finished_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("copy_seconds", sa.Float(), nullable=True))
        batch_op.create_index(
            "ix_replication_records_pair",
            ["source_vault_id", "destination_vault_id", "status", "finished_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_replication_records_regions_finished",
            ["source_region", "destination_region", "finished_at"],
            unique=False,
        )
    op.execute(
        "UPDATE replication_records SET finished_at = updated_at"
        " WHERE status IN ('success', 'fail')"
    )


def downgrade() -> None:
    with op.batch_alter_table("replication_records", schema=None) as batch_op:
        batch_op.drop_index("ix_replication_records_regions_finished")
        batch_op.drop_index("ix_replication_records_pair")
        batch_op.drop_column("copy_seconds")
        batch_op.drop_column("finished_at")
