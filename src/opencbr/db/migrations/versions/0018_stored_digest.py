"""vault chunks: stored_digest, the BLAKE3 of a chunk's stored bytes

Recorded by the writer that verified the chunk's content when it first stored it, so a
copy to another store (replication, migration) verifies the stored bytes against it
without decompressing or decrypting them. Null for chunks stored before: those are
verified by their content digest, as before.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-13 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vault_chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stored_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vault_chunks", schema=None) as batch_op:
        batch_op.drop_column("stored_digest")
