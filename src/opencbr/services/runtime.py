"""What long-running use cases need: the database, the settings, the vault stores, and
the event that tells them the service is stopping."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from opencbr.db.session import Database
from opencbr.services.stores import StoreRegistry
from opencbr.settings import Settings


@dataclass
class Runtime:
    db: Database
    settings: Settings
    stores: StoreRegistry = field(init=False)
    # Set when the service stops: long work ends at its next safe point and hands its row
    # back (services/leases.py), so the next start resumes it at once.
    stopping: threading.Event = field(init=False, default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.stores = StoreRegistry.of(self.settings.regions)

    def close(self) -> None:
        self.stores.close()
