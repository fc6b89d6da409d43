"""Replication records as plans write them, and vault plans pending as one row.

Every record is inserted here (`insert_records`: one statement for any number). A
checkpoints/replicate call does not insert its records: it writes one `ReplicationPlan`
row holding the chosen backups and answers with the ids its records will have (the plan's
id followed by each record's number: `record_ids`). The plan is then expanded into those
records, and deleted, in one transaction (`expand`): by the API process right after the
answer, by the worker's fan-out task, or by whoever first reads or writes the vault's
records (`expand_pending` inside a writer's transaction, `settle` before a reader's). So
no query ever sees a plan as anything else than its records, and the call writes one row
whatever the number of backups.

A record of the plan whose backup has meanwhile got a live record from another request
(PostgreSQL: a single-backup call that committed between the plan and its expansion) is
inserted failed, ALREADY_REPLICATED: every id the call answered with names a record.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db.backups import Backup, ReplicationPlan, ReplicationRecord
from opencbr.db.base import new_uuid, new_uuids
from opencbr.db.bulk import insert_many, table_of
from opencbr.db.session import Database, large_page_cache
from opencbr.db.status import LIVE_RECORD, RecordStatus
from opencbr.db.vaults import Vault
from opencbr.errors import ALREADY_REPLICATED

# A plan's id: the first 28 characters of a UUID ("xxxxxxxx-xxxx-4xxx-yxxx-xxxx"); its
# records' ids append 8 hex digits, so they are UUID-shaped and name their plan.
PLAN_ID_LENGTH = 28
# Records from which an insert takes a larger SQLite page cache (`large_page_cache`).
LARGE_INSERT = 1_000
# An expansion that lost to a concurrent insert (PostgreSQL) is tried again this often.
EXPAND_ATTEMPTS = 3

Chosen = tuple[str, str, str]  # (backup id, checkpoint id, project id)


@dataclass(frozen=True)
class RecordsOf:
    """What the records of one plan share: their source and destination, and why."""

    source_region: str
    source_vault_id: str
    destination_project_id: str
    destination_region: str
    destination_vault_id: str
    auto_trigger: bool
    request_id: str | None
    policy_id: str | None = None

    def columns(self) -> dict[str, Any]:
        return {
            "source_region": self.source_region,
            "source_vault_id": self.source_vault_id,
            "destination_project_id": self.destination_project_id,
            "destination_region": self.destination_region,
            "destination_vault_id": self.destination_vault_id,
            "auto_trigger": self.auto_trigger,
            "request_id": self.request_id,
            "policy_id": self.policy_id,
        }


def insert_records(
    session: Session,
    of: RecordsOf,
    chosen: Sequence[Chosen],
    record_ids: list[str] | None = None,
    created_at: datetime | None = None,
    refused: Collection[str] = (),
) -> list[str]:
    """A `waiting_replicate` record per chosen backup, oldest first, in one statement;
    their ids, in the same order (new ones unless given). A backup in `refused` gets a
    failed record instead (ALREADY_REPLICATED). The partial unique index on live records
    fires when a concurrent plan of the same backup won."""
    now = clock.now()
    created_at = created_at or now
    if record_ids is None:
        record_ids = _ascending_by_backup(new_uuids(len(chosen)), chosen)
    keys = ("id", "source_backup_id", "source_checkpoint_id", "source_project_id", "created_at")
    # The rows go in by source backup id: each index keyed by the backup (the source's,
    # the live records') takes them in key order, one pass over its pages, where random
    # order touched a page per row. New ids ascend with the backups too
    # (`_ascending_by_backup`), so the primary key does the same; a plan's ids all start
    # with the plan's, so they land side by side in it whatever their order.
    by_backup = sorted(range(len(chosen)), key=lambda n: chosen[n][0])
    # One microsecond apart, oldest backup first: runs into a vault go oldest first.
    rows = [(record_ids[n], *chosen[n], created_at + timedelta(microseconds=n)) for n in by_backup]
    if len(rows) >= LARGE_INSERT:
        large_page_cache(session)
    common = of.columns() | {"updated_at": now}
    waiting = [row for row in rows if row[1] not in refused] if refused else rows
    insert_many(session, table_of(ReplicationRecord), common, keys, waiting)
    if refused:
        failed = common | {
            "status": RecordStatus.FAIL,
            "fail_code": ALREADY_REPLICATED.code,
            "fail_reason": "Another request planned the replication of this backup first.",
        }
        lost = [row for row in rows if row[1] in refused]
        insert_many(session, table_of(ReplicationRecord), failed, keys, lost)
    return record_ids


def _ascending_by_backup(ids: list[str], chosen: Sequence[Chosen]) -> list[str]:
    """`ids` handed out so that they ascend with the chosen backups' ids."""
    by_backup = sorted(range(len(chosen)), key=lambda n: chosen[n][0])
    given = [""] * len(chosen)
    for n, record_id in zip(by_backup, sorted(ids), strict=True):
        given[n] = record_id
    return given


def record_ids(plan_id: str, count: int) -> list[str]:
    """The ids the `count` records of plan `plan_id` get, oldest backup first."""
    return [plan_id + suffix for suffix in _numbers(count)]


# Each record's number in 8 hex digits, made once: formatting 10,000 of them cost 6 ms of
# every 10,000-backup call, appending them 1 ms. Grown (doubling) to the largest plan yet.
_NUMBERS: list[str] = []
_NUMBERS_LOCK = threading.Lock()


def _numbers(count: int) -> list[str]:
    if len(_NUMBERS) < count:
        with _NUMBERS_LOCK:
            more = range(len(_NUMBERS), max(count, 2 * len(_NUMBERS)))
            _NUMBERS.extend([f"{n:08x}" for n in more])
    return _NUMBERS[:count]


def plan_of_record(record_id: str) -> str:
    """The id of the plan that gave or gives a record this id (if a plan did)."""
    return record_id[:PLAN_ID_LENGTH]


def add_plan(session: Session, of: RecordsOf, backup_ids: list[str]) -> tuple[str, list[str]]:
    """Write the plan of the backups' records (one row: the ids, oldest first); its id
    and the ids its records will have. IntegrityError when the source vault already has a
    pending plan to that region (a concurrent call's)."""
    plan_id = new_uuid()[:PLAN_ID_LENGTH]
    values = of.columns()
    del values["policy_id"]  # plans are the API's; policy runs insert their records
    session.execute(
        insert(ReplicationPlan).values(
            id=plan_id, backups="\n".join(backup_ids), created_at=clock.now(), **values
        )
    )
    return plan_id, record_ids(plan_id, len(backup_ids))


def chosen_rows(session: Session, of: RecordsOf, backup_ids: list[str]) -> list[Chosen]:
    """(backup id, checkpoint id, project id) of the source vault's backups `backup_ids`,
    in their order; a backup no longer there is left out."""
    query = select(Backup.id, Backup.checkpoint_id, Backup.project_id)
    if len(backup_ids) > LARGE_INSERT:  # one pass over the vault's rows, not a huge IN list
        query = query.where(Backup.vault_id == of.source_vault_id)
    else:
        query = query.where(Backup.id.in_(backup_ids))
    found = {
        backup_id: (backup_id, checkpoint, project)
        for backup_id, checkpoint, project in session.execute(query)
    }
    return [found[backup_id] for backup_id in backup_ids if backup_id in found]


def expand(db: Database, plan_id: str) -> None:
    """Turn a plan into its records in a transaction of its own (nothing when it was
    expanded already)."""
    for attempt in range(EXPAND_ATTEMPTS):
        try:
            with db.transaction() as session:
                _expand_in(session, plan_id)
            return
        except IntegrityError:
            # A concurrent request gave one of its backups a live record after the
            # expansion looked (PostgreSQL); look again.
            if attempt == EXPAND_ATTEMPTS - 1:
                raise


_PLAN_COLUMNS = (
    ReplicationPlan.source_region,
    ReplicationPlan.source_vault_id,
    ReplicationPlan.destination_project_id,
    ReplicationPlan.destination_region,
    ReplicationPlan.destination_vault_id,
    ReplicationPlan.auto_trigger,
    ReplicationPlan.request_id,
    ReplicationPlan.backups,
    ReplicationPlan.created_at,
)


def _expand_in(session: Session, plan_id: str) -> None:
    """Delete the plan and insert its records, in the caller's transaction. Deleting first
    claims it: of two expansions, the second finds no row (PostgreSQL: after waiting for
    the first to commit)."""
    plan = session.execute(
        delete(ReplicationPlan).where(ReplicationPlan.id == plan_id).returning(*_PLAN_COLUMNS)
    ).one_or_none()
    if plan is None:
        return
    *shared, backups, created_at = plan
    of = RecordsOf(*shared)
    backup_ids = backups.split("\n")
    # A backup is deleted only after its plan is expanded (deleting expands first), so each
    # is found; one that is not (a row removed by hand) gets no record.
    ids = dict(zip(backup_ids, record_ids(plan_id, len(backup_ids)), strict=True))
    chosen = chosen_rows(session, of, backup_ids)
    live = session.scalars(
        select(ReplicationRecord.source_backup_id).where(
            ReplicationRecord.source_vault_id == of.source_vault_id,
            ReplicationRecord.destination_region == of.destination_region,
            ReplicationRecord.status.in_(LIVE_RECORD),
        )
    )
    given = [ids[backup_id] for backup_id, _checkpoint, _project in chosen]
    insert_records(session, of, chosen, given, created_at, refused=set(live))


def _pending(
    vault_ids: Collection[str] | None = None,
    backup_ids: Collection[str] | None = None,
    project_id: str | None = None,
) -> Select[str]:
    """The pending plans from or into these vaults, of the vaults of these backups, or out
    of this project's vaults (all plans when none is given), oldest first."""
    query = select(ReplicationPlan.id).order_by(ReplicationPlan.created_at)
    if project_id is not None:
        own = select(Vault.id).where(Vault.project_id == project_id)
        query = query.where(ReplicationPlan.source_vault_id.in_(own))
    if vault_ids is not None:
        query = query.where(
            or_(
                ReplicationPlan.source_vault_id.in_(vault_ids),
                ReplicationPlan.destination_vault_id.in_(vault_ids),
            )
        )
    if backup_ids is not None:
        vaults = select(Backup.vault_id).where(Backup.id.in_(backup_ids))
        query = query.where(ReplicationPlan.source_vault_id.in_(vaults))
    return query


def expand_pending(
    session: Session,
    vault_ids: Collection[str] | None = None,
    backup_ids: Collection[str] | None = None,
) -> None:
    """Expand, in a writer's transaction, the pending plans that touch these vaults or
    backups (all when neither is given), before it reads or writes their records."""
    for plan_id in session.scalars(_pending(vault_ids, backup_ids)).all():
        _expand_in(session, plan_id)


def settle(
    db: Database,
    vault_ids: Collection[str] | None = None,
    backup_ids: Collection[str] | None = None,
    project_id: str | None = None,
) -> None:
    """`expand_pending` for a reader, before its reading session: one indexed read when
    nothing is pending (the usual case), a transaction per plan otherwise."""
    with db.reading() as session:
        pending = session.scalars(_pending(vault_ids, backup_ids, project_id)).all()
    for plan_id in pending:
        expand(db, plan_id)


def records_of_plan(db: Database, plan_id: str) -> list[str]:
    """The ids of an expanded plan's records, oldest first (a range of the primary key:
    they all start with the plan's id)."""
    with db.reading() as session:
        return list(
            session.scalars(
                select(ReplicationRecord.id)
                .where(
                    ReplicationRecord.id > plan_id,
                    ReplicationRecord.id < plan_id + "g",  # after every hex digit
                )
                .order_by(ReplicationRecord.created_at, ReplicationRecord.id)
            )
        )
