"""content roots, verified replica roots and the scheduled verify's position

`backups.content_root`: the BLAKE3 over the chunks a backup is made of, recorded at
commit (null for older backups); `replication_records.verified_root`: the root the
destination recomputed before publishing the replica; `vault_verify_state`: where the
scheduled verify of each vault resumes.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("backups", sa.Column("content_root", sa.String(length=64), nullable=True))
    op.add_column(
        "replication_records", sa.Column("verified_root", sa.String(length=64), nullable=True)
    )
    op.create_table(
        "vault_verify_state",
        sa.Column("vault_id", sa.String(length=36), nullable=False),
        sa.Column("cursor", sa.String(length=64), nullable=False),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vault_id"],
            ["vaults.id"],
            name="fk_vault_verify_state_vault_id_vaults",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("vault_id", name="pk_vault_verify_state"),
    )


def downgrade() -> None:
    op.drop_table("vault_verify_state")
    op.drop_column("replication_records", "verified_root")
    op.drop_column("backups", "content_root")
