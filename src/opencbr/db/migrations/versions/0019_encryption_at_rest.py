"""encryption at rest: data keys wrapped by the master key; vaults and backups say whether
they are encrypted

`data_keys` row 0 is the deployment's naming secret, every other row a project's data key
(id = the key id in sealed headers). Existing vaults and backups are not encrypted.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-13 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=True),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("master_id", sa.String(length=16), nullable=False),
        sa.Column("next_wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("next_master_id", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_data_keys_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_data_keys"),
    )
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.create_index("ix_data_keys_project_id", ["project_id"], unique=False)
    for table in ("vaults", "backups"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("encrypted", sa.Boolean(), server_default=sa.false(), nullable=False)
            )


def downgrade() -> None:
    for table in ("backups", "vaults"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("encrypted")
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_data_keys_project_id")
    op.drop_table("data_keys")
