"""What long-running use cases need: the database, the settings, the vault stores, and
the event that tells them the service is stopping."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy import select

from opencbr.db.backups import Backup
from opencbr.db.session import Database
from opencbr.services.keys import Keyring
from opencbr.services.stores import StoreRegistry, VaultCodec
from opencbr.settings import Settings


@dataclass
class Runtime:
    db: Database
    settings: Settings
    stores: StoreRegistry = field(init=False)
    keys: Keyring = field(init=False)
    # Set when the service stops: long work ends at its next safe point and hands its row
    # back (services/leases.py), so the next start resumes it at once.
    stopping: threading.Event = field(init=False, default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.stores = StoreRegistry.of(self.settings.regions)
        self.keys = Keyring(self.db, self.settings.master_key_path)

    @property
    def reader(self) -> VaultCodec:
        """Reads any chunk or manifest (sealed or not); writes plain ones."""
        return VaultCodec(self.keys)

    def codec(self, project_id: str, encrypted: bool) -> VaultCodec:
        """How a backup of `project_id` is written: sealed with the project's current data
        key, under keyed chunk names, when `encrypted`."""
        sealing = self.keys.sealing(project_id) if encrypted else None
        return VaultCodec(self.keys, sealing, keyed=encrypted)

    def backup_codec(self, backup_id: str, *, writing: bool = True) -> VaultCodec:
        """How the backup (or replica) `backup_id` is written, or only read (its row says
        whether it is encrypted)."""
        with self.db.reading() as session:
            row = session.execute(
                select(Backup.project_id, Backup.encrypted).where(Backup.id == backup_id)
            ).one()
        if not writing:
            return VaultCodec(self.keys, keyed=row.encrypted)
        return self.codec(row.project_id, row.encrypted)

    def close(self) -> None:
        self.stores.close()
