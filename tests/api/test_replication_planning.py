"""Replication planning at the database level, on both backends: the records a vault plan
inserts, the uniqueness of live records, and the replicas the worker adds afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from opencbr import clock
from opencbr.db.backups import (
    Backup,
    Checkpoint,
    OperationLog,
    ReplicationRecord,
)
from opencbr.db.base import new_uuid
from opencbr.db.session import Database
from opencbr.services import planned_records, replicas
from opencbr.services.planned_records import RecordsOf

# A whole second, so that a value without microseconds is among those written.
NOW = datetime(2026, 11, 27, 8, 0, 0)


@pytest.fixture
def fixed_clock() -> Iterator[None]:
    clock.set_clock(lambda: NOW)
    yield
    clock.reset_clock()


def _record(**overrides: Any) -> dict[str, Any]:
    values = {
        "id": new_uuid(),
        "source_backup_id": "b" * 36,
        "source_checkpoint_id": "c" * 36,
        "source_project_id": "p" * 32,
        "source_region": "region1",
        "source_vault_id": "v" * 36,
        "destination_project_id": "q" * 32,
        "destination_region": "region2",
        "destination_vault_id": "w" * 36,
    }
    return {**values, **overrides}


def _add(database: Database, **overrides: Any) -> str:
    row = _record(**overrides)
    with database.transaction() as session:
        session.execute(insert(ReplicationRecord), [row])
    return str(row["id"])


def test_one_live_record_per_backup_and_region(database: Database) -> None:
    first = _add(database)
    with pytest.raises(IntegrityError):
        _add(database)
    _add(database, destination_region="region3")  # another region is another copy
    with database.transaction() as session:
        session.execute(
            update(ReplicationRecord).where(ReplicationRecord.id == first).values(status="fail")
        )
    _add(database)  # the failed record no longer holds the backup


def test_vault_plan_records_keep_the_backups_order_and_every_default(
    database: Database, fixed_clock: None
) -> None:
    source = SimpleNamespace(id="v" * 36, region="region1")
    target = SimpleNamespace(id="w" * 36, region="region2", project_id="q" * 32)
    of = RecordsOf(
        source.region, source.id, target.project_id, target.region, target.id, True, "req-1"
    )
    chosen = [(f"{n:036d}", f"c{n:035d}", "p" * 32) for n in (3, 1, 2)]  # oldest first
    with database.transaction() as session:
        record_ids = planned_records.insert_records(session, of, chosen)
    with database.reading() as session:
        rows = list(
            session.scalars(select(ReplicationRecord).order_by(ReplicationRecord.created_at))
        )
    # Ordered as chosen: the stored times compare like the datetimes they came from.
    assert [(r.source_backup_id, r.source_checkpoint_id, r.source_project_id) for r in rows] == (
        chosen
    )
    assert [r.id for r in rows] == record_ids
    for n, row in enumerate(rows):
        assert row.created_at == NOW + timedelta(microseconds=n) and row.updated_at == NOW
        assert (row.status, row.progress, row.attempts, row.fail_code) == (
            "waiting_replicate",
            0,
            0,
            "",
        )
        assert row.auto_trigger is True and row.request_id == "req-1"
        assert row.destination_backup_id is None and row.operation_log_id is None
        assert (row.source_vault_id, row.destination_vault_id) == (source.id, target.id)


def test_values_shared_by_a_plan_are_stored_exactly_as_given(database: Database) -> None:
    """The values all records of a plan share go into the statement once (SQLite: as
    literals, PostgreSQL: bound once): quotes, percent signs and backslashes come back
    unchanged, and the record ids are handed out in ascending order."""
    awkward = "req-'quoted' %(name)s %s %% \\ \\' ;--"
    source = SimpleNamespace(id="v'%s" + "v" * 32, region="region'1%")
    target = SimpleNamespace(id="w" * 36, region="region2", project_id="q%%" + "q" * 29)
    of = RecordsOf(
        source.region, source.id, target.project_id, target.region, target.id, False, awkward
    )
    chosen = [(f"{n:036d}", f"c{n:035d}", "p" * 32) for n in range(5)]
    with database.transaction() as session:
        record_ids = planned_records.insert_records(session, of, chosen)
    assert record_ids == sorted(record_ids) and len(set(record_ids)) == len(chosen)
    with database.reading() as session:
        rows = list(session.scalars(select(ReplicationRecord)))
    assert {row.id for row in rows} == set(record_ids)
    for row in rows:
        assert (row.request_id, row.source_vault_id, row.source_region) == (
            awkward,
            source.id,
            source.region,
        )
        assert row.destination_project_id == target.project_id and row.policy_id is None
        assert row.auto_trigger is False


def test_adding_replicas_skips_records_whose_rows_are_gone(
    database: Database,
) -> None:
    record_id = _add(database)  # its source backup and vaults do not exist
    with database.transaction() as session:
        replicas.add_missing_replicas(session, [record_id])
    with database.reading() as session:
        record = session.get(ReplicationRecord, record_id)
        assert record is not None and record.destination_backup_id is None
        assert record.status == "waiting_replicate"  # replication_runs fails it
        assert session.scalar(select(Backup.id).limit(1)) is None
        assert session.scalar(select(Checkpoint.id).limit(1)) is None
        assert session.scalar(select(OperationLog.id).limit(1)) is None


# --- vault plans: one row until expanded (the rest in test_replication.py) ------------

_OF = RecordsOf("region1", "v" * 36, "q" * 32, "region2", "w" * 36, False, "req-9")


def _plan(database: Database, backup_ids: list[str]) -> tuple[str, list[str]]:
    with database.transaction() as session:
        return planned_records.add_plan(session, _OF, backup_ids)


def test_one_pending_plan_per_source_vault_and_region(database: Database) -> None:
    plan_id, record_ids = _plan(database, ["b" * 36, "d" * 36])
    assert record_ids == [f"{plan_id}00000000", f"{plan_id}00000001"]  # oldest first
    assert {planned_records.plan_of_record(r) for r in record_ids} == {plan_id}
    with pytest.raises(IntegrityError):
        _plan(database, ["e" * 36])
