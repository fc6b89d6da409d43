"""replication records: two indexes fewer for a plan's insert to maintain

A vault plan inserts a record per backup (10,000 for a 10,000-backup vault), and each
index of the table costs that insert about 8 ms per 10,000 records.

- `ix_replication_records_source_vault_id` goes: `ix_replication_records_pair` leads with
  the source vault (and `ix_replication_records_live` does for live records), so every
  query by source vault had an index without it.
- `ix_replication_records_regions_finished` (the recent settled records between two
  regions: the measured replication rate) now holds settled records only
  (`finished_at IS NOT NULL`): a plan's records, not settled, are no longer written to it.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-21 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SETTLED = sa.text("finished_at IS NOT NULL")
_REGIONS = ["source_region", "destination_region", "finished_at"]


def upgrade() -> None:
    op.drop_index("ix_replication_records_source_vault_id", table_name="replication_records")
    op.drop_index("ix_replication_records_regions_finished", table_name="replication_records")
    op.create_index(
        "ix_replication_records_regions_finished",
        "replication_records",
        _REGIONS,
        sqlite_where=_SETTLED,
        postgresql_where=_SETTLED,
    )


def downgrade() -> None:
    op.drop_index("ix_replication_records_regions_finished", table_name="replication_records")
    op.create_index("ix_replication_records_regions_finished", "replication_records", _REGIONS)
    op.create_index(
        "ix_replication_records_source_vault_id", "replication_records", ["source_vault_id"]
    )
