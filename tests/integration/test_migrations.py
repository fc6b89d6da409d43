"""The Alembic migrations produce exactly the schema the models describe, on both backends."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from opencbr.db.models import Base
from opencbr.db.session import Database


def test_models_match_migrations(database: Database) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_every_model_table_exists(database: Database) -> None:
    tables = set(inspect(database.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


# SQLite only: run on that backend alone rather than pass silently on PostgreSQL.
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_sqlite_runs_in_wal_mode_with_foreign_keys(database: Database) -> None:
    assert database.is_sqlite
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
