"""What a failed backup leaves behind: the chunks it wrote that nothing references.

A backup that fails has stored chunks no committed backup references; left alone they
hold disk space that `billing.used` does not show until garbage collection (hours). This
removes them at once, but only the chunks this backup itself created (its store put
wrote them), and only when invariant 2 allows: no other writer of the vault is under way
(one may have found such a chunk present and be about to index it) and no new one can
start meanwhile (the vault is held, `gc_until`, while the chunks go). When another
writer runs, the chunks are left to garbage collection, which also sweeps what a
crashed backup left.

Order: index rows (and `used_bytes`) first, files last, so a crash in between leaves
only unindexed files (swept by garbage collection), never an index row without its file.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db.backups import Backup, BackupChunk, VaultChunk
from opencbr.db.chunks import batched
from opencbr.db.status import BackupStatus
from opencbr.db.vaults import Vault, settle_capacity
from opencbr.services.runtime import Runtime
from opencbr.storage.store import StorageError

log = structlog.get_logger(__name__)


def hold_for_cleanup(
    session: Session, rt: Runtime, vault_id: str, own_ids: Collection[str]
) -> bool:
    """In the failing backup's transaction: hold the vault for the cleanup if no other
    writer is under way in it; False leaves the chunks to garbage collection."""
    vault = session.get(Vault, vault_id, with_for_update=True)
    if vault is None or (vault.gc_until is not None and vault.gc_until > clock.now()):
        return False
    if _other_writer(session, vault_id, own_ids):
        return False
    vault.gc_until = clock.now() + timedelta(seconds=rt.settings.lease_seconds * 20)
    return True


def _other_writer(session: Session, vault_id: str, own_ids: Collection[str]) -> bool:
    """A backup or replica being written into the vault, other than ours. A backup not yet
    claimed (no lease ever taken) has written nothing, and the hold keeps it from
    starting; a replica's lease lives on its record, so every protecting replica counts."""
    claimed = Backup.lease_until.is_not(None) | (Backup.image_type == "replication")
    other = session.scalar(
        select(Backup.id)
        .where(
            Backup.vault_id == vault_id,
            Backup.status == BackupStatus.PROTECTING,
            Backup.id.not_in(list(own_ids)),
            claimed,
        )
        .limit(1)
    )
    return other is not None


def remove_orphans(rt: Runtime, region: str, vault_id: str, created: Collection[str]) -> int:
    """Delete the `created` chunks nothing references, then release the vault's hold.

    Call only after `hold_for_cleanup` returned True. Returns how many chunks went.
    """
    removed = 0
    try:
        store = rt.stores.vault(region, vault_id)
        for batch in batched(sorted(created)):
            with rt.db.transaction() as session:
                orphans = _forget_unreferenced(session, vault_id, batch)
            for digest in orphans:
                removed += int(store.delete_chunk(digest))
    except StorageError as exc:
        log.warning("failed backup cleanup stopped", vault_id=vault_id, error=type(exc).__name__)
    finally:
        with rt.db.transaction() as session:
            vault = session.get(Vault, vault_id, with_for_update=True)
            if vault is not None:
                vault.gc_until = None
    return removed


def _forget_unreferenced(session: Session, vault_id: str, digests: list[str]) -> list[str]:
    """Of `digests`, those no backup of the vault references; their index rows (if a unit
    of the failed backup had committed them) are dropped and `used_bytes` follows."""
    referenced = set(
        session.scalars(
            select(BackupChunk.digest)
            .join(Backup, Backup.id == BackupChunk.backup_id)
            .where(Backup.vault_id == vault_id, BackupChunk.digest.in_(digests))
        )
    )
    orphans = [d for d in digests if d not in referenced]
    if not orphans:
        return []
    indexed = (VaultChunk.vault_id == vault_id) & VaultChunk.digest.in_(orphans)
    freed = session.scalar(
        select(func.coalesce(func.sum(VaultChunk.stored_size), 0)).where(indexed)
    )
    session.execute(delete(VaultChunk).where(indexed))
    if freed:
        settle_capacity(session, vault_id, used=-int(freed))
    return orphans
