"""backups: a vault replication's choice walks one index

checkpoints/replicate chooses a vault's available top-level backups, oldest first. With
`ix_backups_vault_status` (vault, status) SQLite read each backup's table row (parent,
kind, created) and sorted them: 31-40 ms for 10,000 backups. The index now carries what
the choice filters and orders by, so the choice reads it alone, in order; lookups by
(vault, status) use its first two columns as before.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-23 11:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["vault_id", "status", "parent_id", "image_type", "created_at", "id"]


def upgrade() -> None:
    op.drop_index("ix_backups_vault_status", table_name="backups")
    op.create_index("ix_backups_vault_status_created", "backups", COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_backups_vault_status_created", table_name="backups")
    op.create_index("ix_backups_vault_status", "backups", ["vault_id", "status"])
