"""State of the service as a whole, shared by every process of one database: named values
(the secret-key check) and the claims of cluster-wide housekeeping cadences."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Float, String, Table, Text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from opencbr.db.base import Base

KEY_CHECK = "secret_key_check"


class ServiceValue(Base):
    """A named value of the installation (`KEY_CHECK`: a constant sealed with the secret
    key, so a process with another key file is refused at start)."""

    __tablename__ = "service_values"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class HousekeepingClaim(Base):
    """When a cluster-wide housekeeping step (garbage-collection cadence, retention sweep)
    may next run; the worker that moves `due_at` forward runs it."""

    __tablename__ = "housekeeping_claims"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    due_at: Mapped[datetime]


class ReplicationThrottle(Base):
    """The shared token bucket of the copies into one region (services/throttle.py), kept
    as the one moment it needs: the Unix time by which every byte taken so far is paid for
    at the region's rate (the generic cell rate algorithm)."""

    __tablename__ = "replication_throttles"

    region: Mapped[str] = mapped_column(String(255), primary_key=True)
    paid_until: Mapped[float] = mapped_column(Float(precision=53))


def insert_if_absent(session: Session, model: Any, **values: Any) -> bool:
    """INSERT a row unless its key exists (another process's concurrent insert included);
    True when this one inserted it."""
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    table = cast(Table, model.__table__)
    statement = module.insert(table).values(**values).on_conflict_do_nothing()
    # RETURNING, not rowcount: psycopg reports a skipped row as inserted.
    inserted = session.execute(statement.returning(*table.primary_key.columns)).first()
    return inserted is not None


def claim(session: Session, name: str, now: datetime, next_due: datetime) -> bool:
    """Take the step `name` if it is due (or has never run): move its `due_at` to
    `next_due` with one conditional write. Of several processes claiming at once, one
    wins."""
    moved = session.execute(
        update(HousekeepingClaim)
        .where(HousekeepingClaim.name == name, HousekeepingClaim.due_at <= now)
        .values(due_at=next_due)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount:  # type: ignore[attr-defined]
        return True
    return insert_if_absent(session, HousekeepingClaim, name=name, due_at=next_due)
