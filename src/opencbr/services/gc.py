"""Garbage collection of one vault: delete chunks no backup references.

Invariant 2: never delete a chunk a committed backup, or a backup or replica in progress,
may reference. Collection and writers exclude each other per vault: collection starts only
when no backup or replica is being written into the vault, and no migration is copying
into it (services/migrations.py), and holds `vault.gc_until`
while it runs; writers refuse to start while it is held. Chunks in the store that the index
does not know (leftovers of a crash) are deleted only when older than the safety margin.

Memory does not grow with the vault: the store's listing is streamed and checked against
the index a batch of `batch_size` digests (one query) at a time, and chunks are deleted a
batch at a time (`delete_chunks`: one request per 1000 chunks on S3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from opencbr import clock
from opencbr.db import chunks
from opencbr.db.backups import Backup
from opencbr.db.status import COPYING_MIGRATION, BackupStatus
from opencbr.db.vaults import Vault, VaultMigration
from opencbr.services.runtime import Runtime
from opencbr.storage.store import ChunkStore

BATCH_SIZE = 1000  # store-listed digests checked against the index per query


@dataclass(frozen=True)
class Collected:
    chunks_deleted: int
    bytes_freed: int
    skipped: bool = False


def _hold(rt: Runtime, vault_id: str) -> str | None:
    """Take the vault for collection; None when it is gone or being written to."""
    with rt.db.transaction() as session:
        vault = session.get(Vault, vault_id, with_for_update=True)
        if vault is None:
            return None
        writing = session.scalar(
            select(Backup.id)
            .where(Backup.vault_id == vault_id, Backup.status == BackupStatus.PROTECTING)
            .limit(1)
        )
        # A migration into the vault indexes chunks before any backup there references them.
        migrating = session.scalar(
            select(VaultMigration.id)
            .where(
                VaultMigration.destination_vault_id == vault_id,
                VaultMigration.status.in_(COPYING_MIGRATION),
            )
            .limit(1)
        )
        if writing is not None or migrating is not None:
            return None
        if vault.gc_until is not None and vault.gc_until > clock.now():
            return None
        vault.gc_until = clock.now() + timedelta(seconds=rt.settings.lease_seconds * 20)
        return vault.region


def _release(rt: Runtime, vault_id: str, freed: int) -> None:
    with rt.db.transaction() as session:
        vault = session.get(Vault, vault_id)
        if vault is not None:
            vault.gc_until = None
            vault.used_bytes = max(0, vault.used_bytes - freed)


def collect(rt: Runtime, vault_id: str, batch_size: int = BATCH_SIZE) -> Collected:
    region = _hold(rt, vault_id)
    if region is None:
        return Collected(0, 0, skipped=True)
    freed = deleted = 0
    try:
        store = rt.stores.vault(region, vault_id)
        with rt.db.transaction() as session:
            garbage = chunks.unreferenced_chunks(session, vault_id)
        for batch in chunks.batched(garbage, batch_size):
            store.delete_chunks([digest for digest, _ in batch])
            freed += sum(stored for _, stored in batch)
            deleted += len(batch)
        with rt.db.transaction() as session:
            chunks.forget_chunks(session, vault_id, [d for d, _ in garbage])
        deleted += _sweep_unindexed(rt, store, vault_id, batch_size)
    finally:
        _release(rt, vault_id, freed)
    return Collected(deleted, freed)


def _sweep_unindexed(rt: Runtime, store: ChunkStore, vault_id: str, batch_size: int) -> int:
    """Delete store chunks the index does not know, once older than the safety margin."""
    cutoff = time.time() - rt.settings.gc_safety_margin_seconds
    deleted = 0
    for listed in chunks.batched(store.list_chunks(), batch_size):
        with rt.db.reading() as session:
            indexed = chunks.indexed_among(session, vault_id, listed)
        # chunk_mtime only for chunks the index lacks: crash leftovers, rare.
        doomed = [d for d in listed if d not in indexed and store.chunk_mtime(d) < cutoff]
        if doomed:
            store.delete_chunks(doomed)
            deleted += len(doomed)
    return deleted


def vaults_with_garbage(rt: Runtime) -> list[str]:
    with rt.db.reading() as session:
        return list(session.scalars(select(Vault.id)))
