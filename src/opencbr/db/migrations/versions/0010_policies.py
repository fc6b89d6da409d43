"""policies: backup and replication policies, their vault bindings and scheduled runs

Backups and replication records name the policy whose run made them (the set its
retention may prune).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("operation_type", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("operation_definition", sa.JSON(), nullable=False),
        sa.Column("patterns", sa.JSON(), nullable=False),
        sa.Column("start_window_minutes", sa.Integer(), nullable=True),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        sa.Column("trigger_id", sa.String(length=36), nullable=False),
        sa.Column("next_run_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_policies_project_id_projects"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_policies"),
    )
    op.create_index("ix_policies_project_created", "policies", ["project_id", "created_at", "id"])
    op.create_index("ix_policies_next_run", "policies", ["next_run_at"])
    op.create_table(
        "policy_bindings",
        sa.Column("policy_id", sa.String(length=36), nullable=False),
        sa.Column("vault_id", sa.String(length=36), nullable=False),
        sa.Column("destination_vault_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name="fk_policy_bindings_policy_id_policies",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["vault_id"],
            ["vaults.id"],
            name="fk_policy_bindings_vault_id_vaults",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("policy_id", "vault_id", name="pk_policy_bindings"),
    )
    op.create_index("ix_policy_bindings_vault_id", "policy_bindings", ["vault_id"])
    op.create_table(
        "policy_runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("policy_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("slot_at", sa.DateTime(), nullable=False),
        sa.Column("manual", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.String(length=36), nullable=True),
        sa.Column("started", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=1024), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name="fk_policy_runs_policy_id_policies",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_policy_runs"),
        sa.UniqueConstraint("policy_id", "slot_at", name="uq_policy_runs_policy_id"),
    )
    op.create_index("ix_policy_runs_status", "policy_runs", ["status"])
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("policy_id", sa.String(length=36), nullable=True))
        batch_op.create_index("ix_backups_policy_id", ["policy_id"], unique=False)
    with op.batch_alter_table("replication_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("policy_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replication_records", schema=None) as batch_op:
        batch_op.drop_column("policy_id")
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.drop_index("ix_backups_policy_id")
        batch_op.drop_column("policy_id")
    op.drop_index("ix_policy_runs_status", table_name="policy_runs")
    op.drop_table("policy_runs")
    op.drop_index("ix_policy_bindings_vault_id", table_name="policy_bindings")
    op.drop_table("policy_bindings")
    op.drop_index("ix_policies_next_run", table_name="policies")
    op.drop_index("ix_policies_project_created", table_name="policies")
    op.drop_table("policies")
