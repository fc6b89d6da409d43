"""Run Alembic migrations programmatically (the service migrates itself at start-up)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from opencbr.db.session import Database


def alembic_config(db: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", "opencbr.db:migrations")
    config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    config.attributes["engine"] = db.engine
    return config


def upgrade(db: Database) -> None:
    command.upgrade(alembic_config(db), "head")
