"""Vault capacity for backups in progress: `billing.size` holds however many run at once.

Each backup reserves capacity (`Vault.reserved_bytes`, and its own share in
`Backup.reserved_bytes` so a crashed attempt's share can be given back) before a chunk it
stored counts; the reservation becomes used bytes when a unit commits and is given back
when the backup ends or fails. Reservations are conditional UPDATEs, atomic on SQLite and
PostgreSQL alike.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update

from opencbr.db.backups import Backup
from opencbr.db.session import Database
from opencbr.db.status import BackupStatus
from opencbr.db.vaults import Vault, reserve_capacity
from opencbr.errors import VAULT_FULL, CbrError
from opencbr.services.stores import VaultCodec, VaultSink
from opencbr.storage.store import ChunkStore

GB = 1024**3
MiB = 1024**2
# Capacity is reserved in slabs of at most this (one UPDATE per slab, not per chunk)...
RESERVE_SLAB = 64 * MiB
# ...and at most this share of what is still free, so that near a full vault concurrent
# backups do not hold each other's room.
RESERVE_SHARE = 4
RESERVE_WAIT_SECONDS = 0.2


@dataclass
class CapacityOwner:
    """The backup that reserves capacity (the top-level one; its volumes share it)."""

    backup_id: str
    vault_id: str
    created_at: datetime  # of two backups short of room, the older one waits
    # Digests of the chunks this run stored first (removed again if it fails).
    created: set[str] = field(default_factory=set)


class BudgetSink(VaultSink):
    """Stores within the vault's capacity: every stored byte is covered by a reservation
    (`Vault.reserved_bytes`) before the store returns, so concurrent backups never
    together overshoot `billing.size`; BackupService.6114 when none is left. Remembers
    the chunks it created in `owner.created` (a failed backup removes them).

    Thread rules: `store` runs on the engine's worker threads; reservations are taken
    one at a time under a lock. Lifecycle: one unit of one backup; the caller turns
    `reserved` into used bytes when it commits the unit (`settle_capacity`).
    """

    def __init__(
        self,
        db: Database,
        store: ChunkStore,
        level: int,
        owner: CapacityOwner,
        codec: VaultCodec,
    ) -> None:
        super().__init__(db, store, owner.vault_id, level, codec)
        self._owner = owner
        self._budget_lock = threading.Lock()
        self.stored = 0
        self.reserved = 0

    def store(self, digest: str, data: bytes) -> int:
        written = super().store(digest, data)
        if written:
            with self._budget_lock:
                self._owner.created.add(digest)
                self.stored += written
                if self.stored > self.reserved:
                    self._reserve(self.stored - self.reserved)
        return written

    def _reserve(self, needed: int) -> None:
        """Reserve at least `needed` more bytes, or raise BackupService.6114.

        When the room is held by younger backups still running, wait for them to end
        (they free it by failing or turn it into used bytes): of two backups that do not
        both fit, the older one gets its chance. Younger ones never wait for older ones,
        so two backups never wait for each other.

        The holders are read before each retry, not after it: a younger backup that gives
        its room back between a failed try and that read would otherwise leave the older
        one failing too (both of two backups that fit one at a time would fail).
        """
        if self._try_reserve(needed):
            return
        while True:
            younger_running = self._younger_holder()
            if self._try_reserve(needed):
                return
            if not younger_running:
                raise CbrError(VAULT_FULL, "The backup would exceed the vault's capacity.")
            time.sleep(RESERVE_WAIT_SECONDS)

    def _younger_holder(self) -> bool:
        owner = self._owner
        younger = (Backup.created_at > owner.created_at) | (
            (Backup.created_at == owner.created_at) & (Backup.id > owner.backup_id)
        )
        with self._db.reading() as session:
            holder = session.scalar(
                select(Backup.id)
                .where(
                    Backup.vault_id == owner.vault_id,
                    Backup.status == BackupStatus.PROTECTING,
                    Backup.reserved_bytes > 0,
                    younger,
                )
                .limit(1)
            )
        return holder is not None

    def _try_reserve(self, needed: int) -> bool:
        with self._db.transaction() as session:
            vault = session.get(Vault, self._owner.vault_id)
            assert vault is not None
            free = vault.size_gb * GB - vault.used_bytes - vault.reserved_bytes
            slab = max(needed, min(RESERVE_SLAB, free // RESERVE_SHARE))
            for amount in dict.fromkeys((slab, needed)):
                if reserve_capacity(session, self._owner.vault_id, amount):
                    session.execute(
                        update(Backup)
                        .where(Backup.id == self._owner.backup_id)
                        .values(reserved_bytes=Backup.reserved_bytes + amount)
                    )
                    self.reserved += amount
                    return True
        return False
