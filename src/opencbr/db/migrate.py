"""Run Alembic migrations programmatically (the service migrates itself at start-up)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from opencbr.db.session import Database

# pg_advisory_lock key of start-up ("opencbr" in ASCII): API and worker processes starting
# together on one PostgreSQL database migrate and bootstrap one after another.
STARTUP_LOCK = 0x6F70656E636272


def alembic_config(db: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", "opencbr.db:migrations")
    config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    config.attributes["engine"] = db.engine
    return config


def has_schema(db: Database) -> bool:
    """Whether opencbr's migrations ever ran on this database (its version table exists)."""
    with db.engine.connect() as connection:
        return inspect(connection).has_table("alembic_version")


def upgrade(db: Database) -> None:
    with startup_lock(db):
        command.upgrade(alembic_config(db), "head")


@contextmanager
def startup_lock(db: Database) -> Iterator[None]:
    """Hold PostgreSQL's advisory start-up lock (a session lock on a connection of its own)
    while the block runs. SQLite needs none: its writers take turns anyway."""
    if db.is_sqlite:
        yield
        return
    with db.engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": STARTUP_LOCK})
