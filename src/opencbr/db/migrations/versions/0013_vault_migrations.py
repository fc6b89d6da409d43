"""vault migrations: resources and their backups moving to another vault (migrateresources)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-12 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vault_migrations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("source_vault_id", sa.String(length=36), nullable=False),
        sa.Column("destination_vault_id", sa.String(length=36), nullable=False),
        sa.Column("resource_ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("moved_units", sa.JSON(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=False),
        sa.Column("error_message", sa.String(length=1024), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_vault_migrations_project_id_projects"
        ),
        sa.ForeignKeyConstraint(
            ["source_vault_id"],
            ["vaults.id"],
            name="fk_vault_migrations_source_vault_id_vaults",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["destination_vault_id"],
            ["vaults.id"],
            name="fk_vault_migrations_destination_vault_id_vaults",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_vault_migrations"),
    )
    op.create_index("ix_vault_migrations_source_vault_id", "vault_migrations", ["source_vault_id"])
    op.create_index(
        "ix_vault_migrations_destination_vault_id", "vault_migrations", ["destination_vault_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_vault_migrations_destination_vault_id", table_name="vault_migrations")
    op.drop_index("ix_vault_migrations_source_vault_id", table_name="vault_migrations")
    op.drop_table("vault_migrations")
