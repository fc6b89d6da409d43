"""backup members: a backup shared with another project of its region

One row per (backup, member project): the member's answer (pending, accepted, rejected)
and the vault it named on accepting. Rows go with their backup or their project.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-12 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backup_members",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("backup_id", sa.String(length=36), nullable=False),
        sa.Column("dest_project_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("vault_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["backup_id"],
            ["backups.id"],
            name="fk_backup_members_backup_id_backups",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["dest_project_id"],
            ["projects.id"],
            name="fk_backup_members_dest_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_backup_members"),
        sa.UniqueConstraint("backup_id", "dest_project_id", name="uq_backup_members_backup_id"),
    )
    op.create_index(
        "ix_backup_members_dest_project",
        "backup_members",
        ["dest_project_id", "status", "backup_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_backup_members_dest_project", table_name="backup_members")
    op.drop_table("backup_members")
