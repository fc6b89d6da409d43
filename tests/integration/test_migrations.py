"""The Alembic migrations produce exactly the schema the models describe, on both backends."""

from __future__ import annotations

from datetime import datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, insert, inspect, select, text

from opencbr.db.bulk import table_of
from opencbr.db.migrate import alembic_config
from opencbr.db.models import Base, ReplicationRecord
from opencbr.db.session import Database
from opencbr.services.replication_plan import measured_rate, rate_sample


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


def _record_indexes(database: Database) -> dict[str, list[str | None]]:
    indexes = inspect(database.engine).get_indexes("replication_records")
    return {index["name"] or "": index["column_names"] for index in indexes}


def test_0020_drops_a_record_index_and_keeps_the_records(database: Database) -> None:
    config = alembic_config(database)
    command.downgrade(config, "0019")
    try:
        assert "ix_replication_records_source_vault_id" in _record_indexes(database)
        with database.engine.begin() as connection:
            connection.execute(
                insert(table_of(ReplicationRecord)),
                {
                    "id": "r-1",
                    "source_backup_id": "b-1",
                    "source_checkpoint_id": "c-1",
                    "source_project_id": "p-1",
                    "source_region": "region1",
                    "source_vault_id": "v-1",
                    "destination_project_id": "p-2",
                    "destination_region": "region2",
                    "destination_vault_id": "v-2",
                    "status": "success",
                    "finished_at": datetime(2026, 12, 1),
                },
            )
    finally:
        command.upgrade(config, "head")
    indexes = _record_indexes(database)
    assert "ix_replication_records_source_vault_id" not in indexes
    assert indexes["ix_replication_records_pair"][0] == "source_vault_id"  # what serves it now
    with database.engine.begin() as connection:
        kept = connection.execute(select(ReplicationRecord.finished_at)).scalars().all()
        connection.execute(delete(ReplicationRecord))
    assert kept == [datetime(2026, 12, 1)]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_the_measured_rate_reads_settled_records_from_their_partial_index(
    database: Database,
) -> None:
    with database.reading() as session:
        measured_rate(session, "region1", "region2")  # runs; the plan below is its query's
        definition = session.execute(
            text("SELECT sql FROM sqlite_master WHERE name = :name"),
            {"name": "ix_replication_records_regions_finished"},
        ).scalar_one()
    assert definition.endswith("WHERE finished_at IS NOT NULL")
    query = str(
        rate_sample("region1", "region2").compile(
            dialect=database.engine.dialect, compile_kwargs={"literal_binds": True}
        )
    )
    with database.engine.connect() as connection:
        plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}").all()
    assert any("ix_replication_records_regions_finished" in row[3] for row in plan), plan
