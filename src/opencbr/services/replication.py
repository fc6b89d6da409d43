"""Replication planning: validate a replicate request and create, in one transaction, a
replication record, a `protecting` replica (with its own checkpoint, and one child per
volume of a server backup) and a `replication` operation log per backup to copy.

The copy itself runs in `replication_runs`, one task per record. Exactly one replica per
(source backup, destination vault) is guaranteed by a unique key on backups (invariant 4).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db.backups import Backup, Checkpoint, OperationLog, ReplicationRecord
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
    records = session.scalars(
        select(ReplicationRecord).where(
            ReplicationRecord.source_backup_id == backup_id,
            ReplicationRecord.destination_region == region,
        )
    )
    for record in records:
        if record.status in LIVE_STATUSES:
            return True
        if (
            record.status == "success"
            and record.destination_backup_id
            and session.get(Backup, record.destination_backup_id) is not None
        ):
            return True
    return False


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
        candidates = session.scalars(
            select(Backup)
            .where(
                Backup.vault_id == source.id,
                Backup.parent_id.is_(None),
                Backup.image_type == "backup",
                Backup.status == "available",
            )
            .order_by(Backup.created_at, Backup.id)
        )
        chosen = [
            b for b in candidates if not replicated_or_replicating(session, b.id, dest.region)
        ]
        if not chosen:
            raise CbrError(NOTHING_TO_BACKUP, "No backup of the vault is left to replicate.")
        planned = [
            _plan_one(session, ctx, source, target, b, dest, None, None, request_id) for b in chosen
        ]
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
            planned = _plan_one(
                session, ctx, source, target, backup, dest, name, description, request_id
            )
            return Plan(source.id, source.provider_id, source.region, [planned]), planned
    except IntegrityError:
        raise CbrError(ALREADY_REPLICATED) from None


def _plan_one(
    session: Session,
    ctx: AuthContext,
    source: Vault,
    target: Vault,
    backup: Backup,
    dest: Destination,
    name: str | None,
    description: str | None,
    request_id: str | None,
) -> Planned:
    now = clock.now()
    checkpoint = Checkpoint(
        project_id=target.project_id,
        vault_id=target.id,
        status="protecting",
        name=name or backup.name,
        description=description or backup.description,
        auto_trigger=dest.auto_trigger,
        created_at=now,
        updated_at=now,
    )
    session.add(checkpoint)
    session.flush()
    replica = _replica_of(backup, target, checkpoint, name, description, source.region, now)
    session.add(replica)
    session.flush()  # the unique (source backup, vault) key fires here, not at commit
    for child in backup.children:
        session.add(
            _replica_of(
                child, target, checkpoint, None, None, source.region, now, parent_id=replica.id
            )
        )
    record = ReplicationRecord(
        source_backup_id=backup.id,
        source_checkpoint_id=backup.checkpoint_id,
        source_project_id=backup.project_id,
        source_region=source.region,
        source_vault_id=source.id,
        destination_backup_id=replica.id,
        destination_checkpoint_id=checkpoint.id,
        destination_project_id=target.project_id,
        destination_region=target.region,
        destination_vault_id=target.id,
        auto_trigger=dest.auto_trigger,
        created_at=now,
        updated_at=now,
    )
    session.add(record)
    session.flush()
    record.operation_log_id = _open_log(
        session, ctx, source, backup, replica, record, request_id
    ).id
    return Planned(backup.id, record.id)


def _replica_of(
    backup: Backup,
    target: Vault,
    checkpoint: Checkpoint,
    name: str | None,
    description: str | None,
    source_region: str,
    now: object,
    parent_id: str | None = None,
) -> Backup:
    return Backup(
        project_id=target.project_id,
        vault_id=target.id,
        checkpoint_id=checkpoint.id,
        parent_id=parent_id,
        name=name or backup.name,
        description=description if description is not None else backup.description,
        image_type="replication",
        status="protecting",
        resource_id=backup.resource_id,
        resource_name=backup.resource_name,
        resource_type=backup.resource_type,
        resource_size_gb=backup.resource_size_gb,
        provider_id=backup.provider_id,
        kind=backup.kind,
        volume_path=None,
        incremental=backup.incremental,
        auto_trigger=backup.auto_trigger,
        source_backup_id=backup.id,
        source_region=source_region,
        protected_at=backup.protected_at,
        expired_at=backup.expired_at,
        created_at=now,
        updated_at=now,
    )


def _open_log(
    session: Session,
    ctx: AuthContext,
    source: Vault,
    backup: Backup,
    replica: Backup,
    record: ReplicationRecord,
    request_id: str | None,
) -> OperationLog:
    return operation_logs.open_log(
        session,
        project_id=ctx.project_id,
        operation_type="replication",
        status="waiting",
        subject=backups.backup_subject(backup, source),
        details={
            "source_backup_id": backup.id,
            "source_checkpoint_id": backup.checkpoint_id,
            "source_project_id": backup.project_id,
            "source_region": source.region,
            "destination_backup_id": replica.id,
            "destination_checkpoint_id": replica.checkpoint_id,
            "destination_project_id": record.destination_project_id,
            "destination_region": record.destination_region,
            "source_backup_name": backup.name,
            "destination_backup_name": replica.name,
        },
        request_id=request_id,
        checkpoint_id=backup.checkpoint_id,
        backup_id=backup.id,
    )
