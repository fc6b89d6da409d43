"""vault tags: one row per (vault, key) instead of a JSON list on the vault

The tag API changes one key at a time, and tag queries (resource_instances) ask which of a
project's vaults carry a key or value: rows with an index on (key, value) answer both
without reading every vault. Existing tags move into the table (a repeated key keeps its
last value) and the JSON column goes.

Revision ID: 0011
Revises: 0010 (to be 0010_policies once that revision exists)
Create Date: 2026-12-10 10:00:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY_LENGTH = 36
VALUE_LENGTH = 43

_vaults = sa.table("vaults", sa.column("id", sa.String(36)), sa.column("tags", sa.JSON()))


def upgrade() -> None:
    tags = op.create_table(
        "vault_tags",
        sa.Column("vault_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=KEY_LENGTH), nullable=False),
        sa.Column("value", sa.String(length=VALUE_LENGTH), nullable=False),
        sa.ForeignKeyConstraint(["vault_id"], ["vaults.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("vault_id", "key"),
    )
    op.create_index("ix_vault_tags_key_value", "vault_tags", ["key", "value", "vault_id"])
    rows: list[dict[str, Any]] = []
    for vault_id, listed in op.get_bind().execute(sa.select(_vaults.c.id, _vaults.c.tags)):
        by_key = {
            str(tag["key"])[:KEY_LENGTH]: str(tag.get("value") or "")[:VALUE_LENGTH]
            for tag in listed or []
            if isinstance(tag, dict) and tag.get("key")
        }
        rows.extend({"vault_id": vault_id, "key": k, "value": v} for k, v in by_key.items())
    if rows:
        op.bulk_insert(tags, rows)
    # A plain ALTER TABLE on both backends (SQLite >= 3.35): a batch rebuild of `vaults`
    # would drop the table, and with foreign keys on that deletes every row referencing it.
    op.drop_column("vaults", "tags")


def downgrade() -> None:
    op.add_column("vaults", sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"))
    tags = sa.table("vault_tags", sa.column("vault_id"), sa.column("key"), sa.column("value"))
    by_vault: dict[str, list[dict[str, str]]] = {}
    query = sa.select(tags.c.vault_id, tags.c.key, tags.c.value).order_by(
        tags.c.vault_id, tags.c.key
    )
    for vault_id, key, value in op.get_bind().execute(query):
        by_vault.setdefault(vault_id, []).append({"key": key, "value": value})
    for vault_id, listed in by_vault.items():
        op.execute(_vaults.update().where(_vaults.c.id == vault_id).values(tags=listed))
    op.drop_index("ix_vault_tags_key_value", table_name="vault_tags")
    op.drop_table("vault_tags")
