"""Replicas of planned replication records: for each live record that has none yet, a
`protecting` replica in the destination vault (with its own checkpoint, and one child per
volume of a server backup) and a `waiting` `replication` operation log, linked to the
record (`destination_backup_id`, `destination_checkpoint_id`, `operation_log_id`).

A vault plan (`replication.replicate_vault`) inserts only records, so that the call
answers quickly; the worker's fan-out task calls `create_replicas` for the whole plan, and
`replication_runs` calls `add_missing_replicas` for a record it claims without one (a crash
between the plan and the fan-out). A single-backup plan calls it in its own transaction.
Each call costs a constant number of statements whatever the number of records.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db.backups import Backup, Checkpoint, OperationLog, ReplicationRecord
from opencbr.db.base import new_uuid
from opencbr.db.bulk import insert_rows
from opencbr.db.session import Database
from opencbr.db.status import (
    LIVE_RECORD,
    BackupStatus,
    CheckpointStatus,
    OperationStatus,
    RecordStatus,
)
from opencbr.db.vaults import Vault
from opencbr.errors import ALREADY_REPLICATED
from opencbr.services import operation_logs

# 1,000 records hold SQLite's write lock about 300 ms, which a replicate call arriving
# meanwhile would wait out; 200 hold it about 60 ms.
REPLICAS_PER_TRANSACTION = 200


def create_replicas(db: Database, record_ids: list[str]) -> None:
    """`add_missing_replicas` for a plan's records (the fan-out task's first step), in
    transactions of REPLICAS_PER_TRANSACTION records."""
    for start in range(0, len(record_ids), REPLICAS_PER_TRANSACTION):
        with db.transaction() as session:
            add_missing_replicas(session, record_ids[start : start + REPLICAS_PER_TRANSACTION])


def add_missing_replicas(
    session: Session,
    record_ids: list[str],
    name: str | None = None,
    description: str | None = None,
) -> None:
    """Give every live record among `record_ids` that has no replica yet its `protecting`
    replica (with a checkpoint, and volumes), and its operation log; link them to it.

    Idempotent, and a constant number of statements whatever the number of records. The
    rows take the record's `created_at`, so they list as if the plan had made them. A
    record whose source backup or destination vault is gone is left as it is
    (`replication_runs` fails it); one whose backup already has a replica in the vault
    fails with ALREADY_REPLICATED.
    """
    pending = session.execute(
        select(*_PENDING)
        .where(
            ReplicationRecord.id.in_(record_ids),
            ReplicationRecord.status.in_(LIVE_RECORD),
            ReplicationRecord.destination_backup_id.is_(None),
        )
        .order_by(ReplicationRecord.created_at, ReplicationRecord.id)
        .with_for_update()  # PostgreSQL: a concurrent caller waits, then finds them linked
    ).all()
    if not pending:
        return
    sources = {
        row.id: row
        for row in session.execute(
            select(*_COPIED).where(Backup.id.in_([r.source_backup_id for r in pending]))
        )
    }
    targets = {r.destination_vault_id for r in pending}
    vault_ids = list(targets | {r.source_vault_id for r in pending})
    vaults_by_id = {v.id: v for v in session.scalars(select(Vault).where(Vault.id.in_(vault_ids)))}
    taken = _replicated_into(session, list(sources), list(targets))
    rows = _NewRows(_volumes_of(session, list(sources)), name, description)
    for record in pending:
        backup = sources.get(record.source_backup_id)
        source = vaults_by_id.get(record.source_vault_id)
        target = vaults_by_id.get(record.destination_vault_id)
        if (record.source_backup_id, record.destination_vault_id) in taken:
            rows.refuse(record)
        elif backup is not None and source is not None and target is not None:
            rows.add(record, backup, source, target)
    rows.insert(session)


# The record columns `add_missing_replicas` reads.
_PENDING = (
    ReplicationRecord.id,
    ReplicationRecord.source_backup_id,
    ReplicationRecord.source_vault_id,
    ReplicationRecord.destination_vault_id,
    ReplicationRecord.source_project_id,
    ReplicationRecord.auto_trigger,
    ReplicationRecord.policy_id,
    ReplicationRecord.request_id,
    ReplicationRecord.created_at,
)


def _replicated_into(
    session: Session, backup_ids: list[str], vault_ids: list[str]
) -> set[tuple[str, str]]:
    """(source backup, vault) pairs among these that already have a replica."""
    rows = session.execute(
        select(Backup.source_backup_id, Backup.vault_id).where(
            Backup.source_backup_id.in_(backup_ids), Backup.vault_id.in_(vault_ids)
        )
    )
    return {(backup_id, vault_id) for backup_id, vault_id in rows if backup_id is not None}


# What a replica copies from its source backup (read as plain rows: no ORM objects).
SourceRow = Any  # a Row of _COPIED
_COPIED = (
    Backup.id,
    Backup.parent_id,
    Backup.checkpoint_id,
    Backup.project_id,
    Backup.vault_id,
    Backup.name,
    Backup.description,
    Backup.resource_id,
    Backup.resource_name,
    Backup.resource_type,
    Backup.resource_size_gb,
    Backup.provider_id,
    Backup.kind,
    Backup.incremental,
    Backup.encrypted,
    Backup.auto_trigger,
    Backup.protected_at,
    Backup.expired_at,
)


def _volumes_of(session: Session, parent_ids: list[str]) -> dict[str, list[SourceRow]]:
    """The volume backups of server backups, by parent, in the order of `children`."""
    result: dict[str, list[SourceRow]] = {}
    rows = session.execute(
        select(*_COPIED).where(Backup.parent_id.in_(parent_ids)).order_by(Backup.name)
    )
    for row in rows:
        result.setdefault(row.parent_id, []).append(row)
    return result


class _NewRows:
    """What `add_missing_replicas` inserts, one list per table, and the record updates
    that link each record to its rows; `insert` writes each list with one statement.

    Each row takes its record's `created_at` (so the rows list as if the plan had made
    them) and the current time as `updated_at`.
    """

    def __init__(
        self, volumes: dict[str, list[SourceRow]], name: str | None, description: str | None
    ) -> None:
        self.volumes, self.name, self.description = volumes, name, description
        self.now = clock.now()
        self.checkpoints: list[dict[str, Any]] = []
        self.replicas: list[dict[str, Any]] = []
        self.children: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []

    def add(self, record: Any, backup: SourceRow, source: Vault, target: Vault) -> None:
        checkpoint_id, replica_id, log_id = new_uuid(), new_uuid(), new_uuid()
        self.checkpoints.append(
            {
                "id": checkpoint_id,
                "project_id": target.project_id,
                "vault_id": target.id,
                "status": CheckpointStatus.PROTECTING,
                "name": self.name or backup.name,
                "description": self.description or backup.description,
                "auto_trigger": record.auto_trigger,
                "policy_id": record.policy_id,
                "skipped_resources": [],
                "created_at": record.created_at,
                "updated_at": self.now,
            }
        )
        replica = self._replica(record, backup, source, target, checkpoint_id, replica_id)
        if self.name:
            replica["name"] = self.name
        if self.description is not None:
            replica["description"] = self.description
        self.replicas.append(replica)
        volumes = self.volumes.get(backup.id, ())
        self.children += [
            self._replica(record, child, source, target, checkpoint_id, new_uuid(), replica_id)
            for child in volumes
        ]
        self.logs.append(self._log(record, backup, source, target, replica, log_id))
        self.links.append(
            {
                "id": record.id,
                "destination_backup_id": replica_id,
                "destination_checkpoint_id": checkpoint_id,
                "operation_log_id": log_id,
                "updated_at": self.now,
            }
        )

    def refuse(self, record: Any) -> None:
        """Fail a record whose backup already has a replica in the vault (invariant 4)."""
        self.refused.append(
            {
                "id": record.id,
                "status": RecordStatus.FAIL,
                "fail_code": ALREADY_REPLICATED.code,
                "fail_reason": "The backup already has a replica in the destination vault.",
                "updated_at": self.now,
            }
        )

    def insert(self, session: Session) -> None:
        for model, rows in (
            (Checkpoint, self.checkpoints),
            (Backup, self.replicas),
            (Backup, self.children),  # after their parents: parent_id is a foreign key
            (OperationLog, self.logs),
        ):
            insert_rows(session, model, rows)
        for updates in (self.links, self.refused):
            if updates:  # ORM bulk UPDATE by primary key: one executemany
                session.execute(update(ReplicationRecord), updates)

    def _replica(
        self,
        record: Any,
        backup: SourceRow,
        source: Vault,
        target: Vault,
        checkpoint_id: str,
        replica_id: str,
        parent_id: str | None = None,
    ) -> dict[str, Any]:
        return {
            "id": replica_id,
            "project_id": target.project_id,
            "vault_id": target.id,
            "checkpoint_id": checkpoint_id,
            "parent_id": parent_id,
            "name": backup.name,
            "description": backup.description,
            "image_type": "replication",
            "status": BackupStatus.PROTECTING,
            "resource_id": backup.resource_id,
            "resource_name": backup.resource_name,
            "resource_type": backup.resource_type,
            "resource_size_gb": backup.resource_size_gb,
            "provider_id": backup.provider_id,
            "kind": backup.kind,
            "volume_path": None,
            "incremental": backup.incremental,
            "encrypted": backup.encrypted,  # its chunks are sealed as its source's are
            "auto_trigger": backup.auto_trigger,
            # A policy's replica is pruned by that policy's retention (which also sets its
            # expiry); a manual copy expires with its source.
            "policy_id": record.policy_id,
            "source_backup_id": backup.id,
            "source_region": source.region,
            "protected_at": backup.protected_at,
            "expired_at": None if record.policy_id else backup.expired_at,
            "warnings": [],
            "created_at": record.created_at,
            "updated_at": self.now,
        }

    def _log(
        self,
        record: Any,
        backup: SourceRow,
        source: Vault,
        target: Vault,
        replica: dict[str, Any],
        log_id: str,
    ) -> dict[str, Any]:
        row = operation_logs.log_row(
            id=log_id,
            now=record.created_at,
            project_id=record.source_project_id,
            operation_type="replication",
            status=OperationStatus.WAITING,
            subject=operation_logs.Subject(
                backup.resource_id,
                backup.resource_type,
                backup.resource_name,
                backup.vault_id,
                source.name,
                backup.provider_id,
            ),
            details={
                "source_backup_id": backup.id,
                "source_checkpoint_id": backup.checkpoint_id,
                "source_project_id": backup.project_id,
                "source_region": source.region,
                "destination_backup_id": replica["id"],
                "destination_checkpoint_id": replica["checkpoint_id"],
                "destination_project_id": target.project_id,
                "destination_region": target.region,
                "source_backup_name": backup.name,
                "destination_backup_name": replica["name"],
            },
            request_id=record.request_id,
            checkpoint_id=backup.checkpoint_id,
            backup_id=backup.id,
            policy_id=record.policy_id,
        )
        row["updated_at"] = self.now
        return row
