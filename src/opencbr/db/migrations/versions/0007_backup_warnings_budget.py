"""backup warnings; vault capacity reserved by backups in progress

`backups.warnings` keeps what a backup skipped or saw change while reading (capped by the
service). `vaults.reserved_bytes` is the capacity backups in progress have claimed but not
yet committed, and `backups.reserved_bytes` each backup's share of it, so that concurrent
backups never together overshoot `billing.size` and a crashed backup's share can be given
back when it is run again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("warnings", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.add_column(
            sa.Column("reserved_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("vaults", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reserved_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("vaults", schema=None) as batch_op:
        batch_op.drop_column("reserved_bytes")
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.drop_column("reserved_bytes")
        batch_op.drop_column("warnings")
