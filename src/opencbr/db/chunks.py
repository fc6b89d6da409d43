"""The chunk index: which chunks each vault holds durably, and which each backup references.

These are the queries dedup, garbage collection and replication planning are built on;
each is one indexed statement per batch, never one round trip per chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, TypeVar, cast

from sqlalchemy import Insert, Table, delete, func, literal, select, update
from sqlalchemy import cast as cast_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db.backups import Backup, BackupChunk, VaultChunk

BATCH = 500
T = TypeVar("T")


def batched(items: Iterable[T], size: int = BATCH) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _insert_ignoring_duplicates(session: Session, model: Any) -> Insert:
    """An INSERT of `model`'s table that skips rows whose key exists, to run with a list of
    rows: one executemany, which SQLAlchemy sends as a few multi-row statements. (The ORM's
    `insert(model).values(rows)` spent 50-70 ms compiling 1,000 rows; this takes 4 ms.)"""
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    statement: Insert = module.insert(cast(Table, model.__table__)).on_conflict_do_nothing()
    return statement


def index_chunks(
    session: Session,
    vault_id: str,
    chunks: Iterable[tuple[str, int, int]],
    stored_digests: Mapping[str, str] | None = None,
) -> int:
    """Record durable, verified chunks (digest, plain size, stored size) and, where
    `stored_digests` names it, the digest of each one's stored bytes; return the stored
    bytes this adds to the vault.

    A chunk indexed as damaged that is among them was stored again (or verified) by the
    caller: its mark is cleared and its stored size and digest updated.
    """
    statement = _insert_ignoring_duplicates(session, VaultChunk)
    statement = statement.returning(VaultChunk.__table__.c.stored_size)
    chunks = list(chunks)
    recorded = stored_digests or {}
    added = 0
    for batch in batched(chunks):
        rows = [
            {
                "vault_id": vault_id,
                "digest": d,
                "plain_size": p,
                "stored_size": s,
                "stored_digest": recorded.get(d),
            }
            for d, p, s in batch
        ]
        added += sum(session.scalars(statement, rows))  # only inserted rows are returned
    return added + _repair(session, vault_id, {d: s for d, _p, s in chunks}, recorded)


def _repair(
    session: Session, vault_id: str, stored_sizes: dict[str, int], recorded: Mapping[str, str]
) -> int:
    """Clear the damage mark of the rewritten chunks; return the change in stored bytes."""
    if not stored_sizes:
        return 0
    damaged = session.execute(
        select(VaultChunk.digest, VaultChunk.stored_size).where(
            VaultChunk.vault_id == vault_id, VaultChunk.damaged_at.is_not(None)
        )
    ).all()
    growth = 0
    for digest, old_size in damaged:
        new_size = stored_sizes.get(digest)
        if new_size is None:
            continue
        session.execute(
            update(VaultChunk)
            .where(VaultChunk.vault_id == vault_id, VaultChunk.digest == digest)
            .values(damaged_at=None, stored_size=new_size, stored_digest=recorded.get(digest))
        )
        growth += new_size - old_size
    return growth


def stored_digests(session: Session, vault_id: str, digests: Sequence[str]) -> dict[str, str]:
    """The recorded stored-bytes digests of those of `digests` the vault indexes with one
    (chunks stored before they were recorded are left out): one query per BATCH."""
    found: dict[str, str] = {}
    for batch in batched(digests):
        query = select(VaultChunk.digest, VaultChunk.stored_digest).where(
            VaultChunk.vault_id == vault_id,
            VaultChunk.digest.in_(batch),
            VaultChunk.stored_digest.is_not(None),
        )
        found.update((d, s) for d, s in session.execute(query) if s is not None)
    return found


def stored_digests_of_backup(session: Session, backup_id: str, vault_id: str) -> dict[str, str]:
    """The recorded stored-bytes digests of the chunks `backup_id` references in the
    vault (chunks stored before they were recorded are left out): one query."""
    query = select(VaultChunk.digest, VaultChunk.stored_digest).where(
        VaultChunk.vault_id == vault_id,
        VaultChunk.stored_digest.is_not(None),
        VaultChunk.digest.in_(select(BackupChunk.digest).where(BackupChunk.backup_id == backup_id)),
    )
    return {d: s for d, s in session.execute(query) if s is not None}


def mark_damaged(session: Session, vault_id: str, digest: str) -> bool:
    """Mark an indexed chunk damaged (a read failed verification or found no file).

    Idempotent: the first mark's time is kept. False when the vault does not index the
    chunk or it was marked already.
    """
    result = session.execute(
        update(VaultChunk)
        .where(
            VaultChunk.vault_id == vault_id,
            VaultChunk.digest == digest,
            VaultChunk.damaged_at.is_(None),
        )
        .values(damaged_at=clock.now())
    )
    return bool(getattr(result, "rowcount", 0))


def damaged_digests(session: Session, vault_id: str) -> frozenset[str]:
    """The chunks of a vault marked damaged (usually none: one partial-index lookup)."""
    query = select(VaultChunk.digest).where(
        VaultChunk.vault_id == vault_id, VaultChunk.damaged_at.is_not(None)
    )
    return frozenset(session.scalars(query))


def damaged_in_backup(session: Session, backup_id: str, vault_id: str) -> list[str]:
    """The chunks `backup_id` references that its vault marks damaged, in digest order."""
    referenced = select(BackupChunk.digest).where(
        BackupChunk.backup_id == backup_id, BackupChunk.digest == VaultChunk.digest
    )
    query = (
        select(VaultChunk.digest)
        .where(
            VaultChunk.vault_id == vault_id,
            VaultChunk.damaged_at.is_not(None),
            referenced.exists(),
        )
        .order_by(VaultChunk.digest)
    )
    return list(session.scalars(query))


def link_backup(session: Session, backup_id: str, vault_id: str, digests: Iterable[str]) -> int:
    """Record that `backup_id` references `digests` (all already indexed in the vault).

    Returns how many of them the vault indexes; fewer than given means some chunk is not
    indexed. Each batch is one INSERT ... SELECT from the index: the rows (one per
    chunk, reused ones too: thousands for an incremental of small files) never pass
    through Python. Only a batch that inserted fewer rows than it named (a chunk not
    indexed, or a row linked already) costs a second query, to count them.
    """
    table = cast(Table, BackupChunk.__table__)
    linked = 0
    for batch in batched(sorted(set(digests))):
        indexed = select(
            cast_(literal(backup_id), table.c.backup_id.type),
            VaultChunk.digest,
            VaultChunk.plain_size,
            VaultChunk.stored_size,
        ).where(VaultChunk.vault_id == vault_id, VaultChunk.digest.in_(batch))
        columns = ["backup_id", "digest", "plain_size", "stored_size"]
        statement = _insert_ignoring_duplicates(session, BackupChunk).from_select(columns, indexed)
        inserted = int(getattr(session.execute(statement), "rowcount", 0))
        linked += (
            inserted if inserted == len(batch) else len(indexed_among(session, vault_id, batch))
        )
    return linked


def missing_in_vault(session: Session, backup_id: str, vault_id: str) -> list[tuple[str, int, int]]:
    """The chunks of `backup_id` that `vault_id` does not hold intact: one anti-join."""
    present = select(VaultChunk.digest).where(
        VaultChunk.vault_id == vault_id,
        VaultChunk.digest == BackupChunk.digest,
        VaultChunk.damaged_at.is_(None),
    )
    query = (
        select(BackupChunk.digest, BackupChunk.plain_size, BackupChunk.stored_size)
        .where(BackupChunk.backup_id == backup_id, ~present.exists())
        .order_by(BackupChunk.digest)
    )
    return [(d, p, s) for d, p, s in session.execute(query)]


def backup_totals(session: Session, backup_id: str) -> tuple[int, int, int]:
    """(chunk count, plain bytes, stored bytes) a backup references."""
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(BackupChunk.plain_size), 0),
            func.coalesce(func.sum(BackupChunk.stored_size), 0),
        ).where(BackupChunk.backup_id == backup_id)
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def unreferenced_chunks(session: Session, vault_id: str) -> list[tuple[str, int]]:
    """Indexed chunks of a vault that no backup of the vault references (digest, stored size)."""
    referenced = (
        select(BackupChunk.digest)
        .join(Backup, Backup.id == BackupChunk.backup_id)
        .where(Backup.vault_id == vault_id, BackupChunk.digest == VaultChunk.digest)
    )
    query = select(VaultChunk.digest, VaultChunk.stored_size).where(
        VaultChunk.vault_id == vault_id, ~referenced.exists()
    )
    return [(d, s) for d, s in session.execute(query)]


def referenced_digests(session: Session, vault_id: str) -> set[str]:
    query = (
        select(BackupChunk.digest)
        .join(Backup, Backup.id == BackupChunk.backup_id)
        .where(Backup.vault_id == vault_id)
        .distinct()
    )
    return set(session.scalars(query))


def forget_chunks(session: Session, vault_id: str, digests: Sequence[str]) -> None:
    for batch in batched(digests):
        session.execute(
            delete(VaultChunk).where(VaultChunk.vault_id == vault_id, VaultChunk.digest.in_(batch))
        )


def indexed_among(session: Session, vault_id: str, digests: Sequence[str]) -> set[str]:
    """Those of `digests` (one batch) that the vault's index lists: one query."""
    query = select(VaultChunk.digest).where(
        VaultChunk.vault_id == vault_id, VaultChunk.digest.in_(digests)
    )
    return set(session.scalars(query))
