"""Replication planning: validate a replicate request and create, in one transaction, a
replication record, a `protecting` replica (with its own checkpoint, and one child per
volume of a server backup) and a `replication` operation log per backup to copy.

Planning costs a constant number of statements whatever the number of backups: the
eligible backups, the records that exclude some of them and their volumes are read in one
query each, and the planned rows are inserted with one Core statement per table.

The copy itself runs in `replication_runs`, one task per record. Exactly one replica per
(source backup, destination vault) is guaranteed by a unique key on backups (invariant 4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, and_, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from opencbr import clock
from opencbr.db.backups import Backup, Checkpoint, ReplicationRecord
from opencbr.db.identity import WRITING_ROLES, Project
from opencbr.db.session import Database
from opencbr.db.vaults import Vault
from opencbr.errors import (
    ALREADY_REPLICATED,
    CROSS_ACCOUNT_UNSUPPORTED,
    DESTINATION_VAULT_FULL,
    DESTINATION_VAULT_NOT_FOUND,
    DESTINATION_VAULT_NOT_REPLICATION,
    NOTHING_TO_BACKUP,
    PROJECT_CANNOT_REPLICATE,
    REGION_CANNOT_REPLICATE,
    REPLICATION_BAD_STATUS,
    REPLICATION_TYPE_FORBIDDEN,
    VAULT_TYPE_FORBIDS_REPLICATION,
    CbrError,
)
from opencbr.services import backups, identity, operation_logs, vaults
from opencbr.services.identity import AuthContext
from opencbr.settings import Settings

GB = 1024**3
LIVE_STATUSES = ("waiting_replicate", "replicating")


@dataclass(frozen=True)
class Destination:
    region: str
    project_id: str
    vault_id: str
    auto_trigger: bool = False
    cross_account_urn: str | None = None


@dataclass(frozen=True)
class Planned:
    backup_id: str
    record_id: str


@dataclass(frozen=True)
class Plan:
    source_vault_id: str
    provider_id: str
    source_region: str
    planned: list[Planned]


def _check_destination(
    session: Session, settings: Settings, ctx: AuthContext, source: Vault, dest: Destination
) -> Vault:
    if dest.cross_account_urn:
        raise CbrError(CROSS_ACCOUNT_UNSUPPORTED)
    if source.protect_type != "backup":
        raise CbrError(VAULT_TYPE_FORBIDS_REPLICATION, "Only backup vaults can be replicated.")
    if dest.region == source.region or dest.region not in settings.replication_destinations(
        source.region
    ):
        raise CbrError(
            REGION_CANNOT_REPLICATE, f"Region {source.region} cannot replicate to {dest.region!r}."
        )
    project = session.get(Project, dest.project_id)
    if project is None or project.region != dest.region:
        raise CbrError(
            PROJECT_CANNOT_REPLICATE,
            f"Project {dest.project_id} is not a project of region {dest.region}.",
        )
    if not WRITING_ROLES.intersection(identity.roles_in(session, ctx.user_id, project.id)):
        raise CbrError(
            PROJECT_CANNOT_REPLICATE, f"You hold no writing role in project {dest.project_id}."
        )
    vault = vaults.find_in_project(session, project.id, dest.vault_id)
    if vault is None:
        raise CbrError(
            DESTINATION_VAULT_NOT_FOUND,
            f"The destination vault {dest.vault_id} does not exist in that project.",
        )
    if vault.protect_type != "replication" or vault.object_type != source.object_type:
        raise CbrError(
            DESTINATION_VAULT_NOT_REPLICATION,
            f"The destination vault must be a {source.object_type} replication vault.",
        )
    if vault.used_bytes >= vault.size_gb * GB:
        raise CbrError(DESTINATION_VAULT_FULL)
    return vault


def replicated_or_replicating(session: Session, backup_id: str, region: str) -> bool:
    """True when a live record, or a successful one whose replica still exists, exists."""
    return bool(_already_replicated(session, [backup_id], region))


def _already_replicated(
    session: Session, backup_ids: list[str] | Select[Any], region: str
) -> set[str]:
    """The backups among `backup_ids` (a list or a subquery of ids) that are replicated
    or being replicated to `region`: one query, whatever their number."""
    replica = aliased(Backup)
    rows = session.scalars(
        select(ReplicationRecord.source_backup_id)
        .outerjoin(replica, replica.id == ReplicationRecord.destination_backup_id)
        .where(
            ReplicationRecord.source_backup_id.in_(backup_ids),
            ReplicationRecord.destination_region == region,
            or_(
                ReplicationRecord.status.in_(LIVE_STATUSES),
                and_(ReplicationRecord.status == "success", replica.id.is_not(None)),
            ),
        )
        .distinct()
    )
    return set(rows)


def replicate_vault(
    db: Database,
    settings: Settings,
    ctx: AuthContext,
    vault_id: str,
    dest: Destination,
    request_id: str | None,
) -> Plan:
    """Plan the replication of every eligible backup of a vault (checkpoints/replicate)."""
    for attempt in range(2):
        try:
            return _plan_vault(db, settings, ctx, vault_id, dest, request_id)
        except IntegrityError:
            # A concurrent request planned the same backup first; plan again without it.
            if attempt:
                raise CbrError(
                    NOTHING_TO_BACKUP, "Every backup is already being replicated."
                ) from None
    raise AssertionError("unreachable")


def _plan_vault(
    db: Database,
    settings: Settings,
    ctx: AuthContext,
    vault_id: str,
    dest: Destination,
    request_id: str | None,
) -> Plan:
    with db.transaction() as session:
        source = vaults.get_in_session(session, ctx, vault_id)
        target = _check_destination(session, settings, ctx, source, dest)
        eligible = (
            Backup.vault_id == source.id,
            Backup.parent_id.is_(None),
            Backup.image_type == "backup",
            Backup.status == "available",
        )
        eligible_ids = select(Backup.id).where(*eligible)
        done = _already_replicated(session, eligible_ids, dest.region)
        candidates = session.execute(
            select(*_COPIED).where(*eligible).order_by(Backup.created_at, Backup.id)
        )
        chosen = [b for b in candidates if b.id not in done]
        if not chosen:
            raise CbrError(NOTHING_TO_BACKUP, "No backup of the vault is left to replicate.")
        volumes = _volumes_of(session, eligible_ids)
        planned = _insert_plans(
            session, ctx, source, target, chosen, volumes, dest, None, None, request_id
        )
        return Plan(source.id, source.provider_id, source.region, planned)


def replicate_backup(
    db: Database,
    settings: Settings,
    ctx: AuthContext,
    backup_id: str,
    dest: Destination,
    name: str | None,
    description: str | None,
    request_id: str | None,
) -> tuple[Plan, Planned]:
    """Plan the replication of one backup (backups/{id}/replicate)."""
    try:
        with db.transaction() as session:
            backup = backups.get_in_session(session, ctx, backup_id)
            if backup.image_type != "backup" or backup.parent_id is not None:
                raise CbrError(
                    REPLICATION_TYPE_FORBIDDEN, "Replicas and volume backups cannot be replicated."
                )
            if backup.status != "available":
                raise CbrError(REPLICATION_BAD_STATUS, f"The backup is {backup.status}.")
            source = session.get(Vault, backup.vault_id)
            assert source is not None
            target = _check_destination(session, settings, ctx, source, dest)
            if replicated_or_replicating(session, backup.id, dest.region):
                raise CbrError(ALREADY_REPLICATED)
            [row] = session.execute(select(*_COPIED).where(Backup.id == backup.id))
            [planned] = _insert_plans(
                session,
                ctx,
                source,
                target,
                [row],
                _volumes_of(session, [backup.id]),
                dest,
                name,
                description,
                request_id,
            )
            return Plan(source.id, source.provider_id, source.region, [planned]), planned
    except IntegrityError:
        raise CbrError(ALREADY_REPLICATED) from None


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
    Backup.auto_trigger,
    Backup.protected_at,
    Backup.expired_at,
)


def _volumes_of(
    session: Session, parent_ids: list[str] | Select[Any]
) -> dict[str, list[SourceRow]]:
    """The volume backups of server backups, by parent, in the order of `children`."""
    result: dict[str, list[SourceRow]] = {}
    rows = session.execute(
        select(*_COPIED).where(Backup.parent_id.in_(parent_ids)).order_by(Backup.name)
    )
    for row in rows:
        result.setdefault(row.parent_id, []).append(row)
    return result


def _uuids(count: int) -> list[str]:
    """`count` UUIDv4 strings (as `new_uuid` makes them) from one read of the OS's RNG."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # RFC 4122 variant
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, len(h), 32)
    ]


def _insert_plans(
    session: Session,
    ctx: AuthContext,
    source: Vault,
    target: Vault,
    chosen: list[SourceRow],
    volumes_by_parent: dict[str, list[SourceRow]],
    dest: Destination,
    name: str | None,
    description: str | None,
    request_id: str | None,
) -> list[Planned]:
    """Per backup: a checkpoint, a `protecting` replica (and its volumes), a record and an
    operation log, all inserted in one statement per table. The unique (source backup,
    vault) key on backups fires at the replicas' insert when a concurrent plan won."""
    now = clock.now()
    checkpoints: list[dict[str, Any]] = []
    replicas: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    logs: list[dict[str, Any]] = []
    planned: list[Planned] = []
    ids = iter(_uuids(4 * len(chosen) + sum(len(v) for v in volumes_by_parent.values())))
    for index, backup in enumerate(chosen):
        # One microsecond apart, oldest backup first: runs into a vault go oldest first.
        at = now + timedelta(microseconds=index)
        checkpoint_id, replica_id, record_id, log_id = next(ids), next(ids), next(ids), next(ids)
        checkpoints.append(
            {
                "id": checkpoint_id,
                "project_id": target.project_id,
                "vault_id": target.id,
                "status": "protecting",
                "name": name or backup.name,
                "description": description or backup.description,
                "auto_trigger": dest.auto_trigger,
                "created_at": at,
                "updated_at": at,
            }
        )
        replica = _replica_of(
            backup, target, checkpoint_id, replica_id, name, description, source.region, at
        )
        replicas.append(replica)
        volumes += [
            _replica_of(
                child, target, checkpoint_id, next(ids), None, None, source.region, at, replica_id
            )
            for child in volumes_by_parent.get(backup.id, ())
        ]
        records.append(
            {
                "id": record_id,
                "source_backup_id": backup.id,
                "source_checkpoint_id": backup.checkpoint_id,
                "source_project_id": backup.project_id,
                "source_region": source.region,
                "source_vault_id": source.id,
                "destination_backup_id": replica_id,
                "destination_checkpoint_id": checkpoint_id,
                "destination_project_id": target.project_id,
                "destination_region": target.region,
                "destination_vault_id": target.id,
                "auto_trigger": dest.auto_trigger,
                "operation_log_id": log_id,
                "created_at": at,
                "updated_at": at,
            }
        )
        logs.append(_log_row(ctx, source, target, backup, replica, log_id, at, request_id))
        planned.append(Planned(backup.id, record_id))
    for model, rows in (
        (Checkpoint, checkpoints),
        (Backup, replicas),
        (Backup, volumes),  # after their parents: parent_id is a foreign key
        (ReplicationRecord, records),
    ):
        if rows:
            session.execute(insert(cast(Table, model.__table__)), rows)  # Core: no ORM bookkeeping
    operation_logs.insert_logs(session, logs)
    return planned


def _replica_of(
    backup: SourceRow,
    target: Vault,
    checkpoint_id: str,
    replica_id: str,
    name: str | None,
    description: str | None,
    source_region: str,
    now: datetime,
    parent_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": replica_id,
        "project_id": target.project_id,
        "vault_id": target.id,
        "checkpoint_id": checkpoint_id,
        "parent_id": parent_id,
        "name": name or backup.name,
        "description": description if description is not None else backup.description,
        "image_type": "replication",
        "status": "protecting",
        "resource_id": backup.resource_id,
        "resource_name": backup.resource_name,
        "resource_type": backup.resource_type,
        "resource_size_gb": backup.resource_size_gb,
        "provider_id": backup.provider_id,
        "kind": backup.kind,
        "volume_path": None,
        "incremental": backup.incremental,
        "auto_trigger": backup.auto_trigger,
        "source_backup_id": backup.id,
        "source_region": source_region,
        "protected_at": backup.protected_at,
        "expired_at": backup.expired_at,
        "created_at": now,
        "updated_at": now,
    }


def _log_row(
    ctx: AuthContext,
    source: Vault,
    target: Vault,
    backup: SourceRow,
    replica: dict[str, Any],
    log_id: str,
    now: datetime,
    request_id: str | None,
) -> dict[str, Any]:
    return operation_logs.log_row(
        id=log_id,
        now=now,
        project_id=ctx.project_id,
        operation_type="replication",
        status="waiting",
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
        request_id=request_id,
        checkpoint_id=backup.checkpoint_id,
        backup_id=backup.id,
    )
