"""What long-running use cases need: the database, the settings and the vault stores."""

from __future__ import annotations

from dataclasses import dataclass, field

from opencbr.db.session import Database
from opencbr.services.stores import StoreRegistry
from opencbr.settings import Settings


@dataclass
class Runtime:
    db: Database
    settings: Settings
    stores: StoreRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.stores = StoreRegistry({r.name: r.storage for r in self.settings.regions})

    def close(self) -> None:
        self.stores.close()
