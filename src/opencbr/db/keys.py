"""Data keys of encryption at rest, wrapped by the master key (which is never stored here).

Row `NAMING_KEY_ID` (0, no project) is the deployment's naming secret (keyed chunk names);
every other row is a data key of one project, its id the key id written in the headers of
what it seals. A project's current key is its newest. `master_id` names the master key
that wrapped `wrapped`; during a master-key rotation `next_wrapped` holds the wrapping by
the new master key (`next_master_id`) until one transaction switches every row over.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from opencbr.db.base import Base, utcnow

NAMING_KEY_ID = 0


class DataKey(Base):
    __tablename__ = "data_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True, default=None
    )
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    master_id: Mapped[str] = mapped_column(String(16))
    next_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    next_master_id: Mapped[str | None] = mapped_column(String(16), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
