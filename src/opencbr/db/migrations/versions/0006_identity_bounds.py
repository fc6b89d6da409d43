"""identity bounds: keys scoped to their minter's projects, rescoped tokens know their parent

Keys that exist before this revision stay unscoped: who minted them was not recorded.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("project_scoped", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "credential_projects",
        sa.Column("access", sa.String(length=20), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["access"],
            ["credentials.access"],
            name=op.f("fk_credential_projects_access_credentials"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_credential_projects_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("access", "project_id", name=op.f("pk_credential_projects")),
    )
    with op.batch_alter_table("credential_projects", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credential_projects_project_id"), ["project_id"], unique=False
        )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_digest", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_tokens_parent_digest"), ["parent_digest"])
        batch_op.create_foreign_key(
            batch_op.f("fk_tokens_parent_digest_tokens"),
            "tokens",
            ["parent_digest"],
            ["digest"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_tokens_parent_digest_tokens"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_tokens_parent_digest"))
        batch_op.drop_column("parent_digest")
    with op.batch_alter_table("credential_projects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credential_projects_project_id"))
    op.drop_table("credential_projects")
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.drop_column("project_scoped")
