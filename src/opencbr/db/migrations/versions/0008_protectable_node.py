"""protectables and their volumes record the node a disk was registered as

A backup opens a registered disk only as what registration saw: a regular image file or
a block device (a file swapped for a device node must not expose the device). NULL for
trees and for disks registered before this revision (either kind accepted).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 02:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("protectables", "protectable_volumes"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("node", sa.String(length=8), nullable=True))


def downgrade() -> None:
    for table in ("protectables", "protectable_volumes"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("node")
