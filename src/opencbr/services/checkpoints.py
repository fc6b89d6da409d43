"""Checkpoints: one backup run of a vault, one backup per resource (cbr-api.md §2.2).

Creating a checkpoint only writes rows (checkpoint, backups in `protecting`, one running
operation log per resource) and answers at once; `backup_runs` does the work.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db.backups import Backup, Checkpoint
from opencbr.db.base import new_uuid
from opencbr.db.session import Database
from opencbr.db.status import (
    BackupStatus,
    CheckpointStatus,
    ProtectStatus,
    VaultStatus,
)
from opencbr.db.vaults import Protectable, Vault, VaultResource
from opencbr.errors import (
    CHECKPOINT_NOT_FOUND,
    NOTHING_TO_BACKUP,
    RESOURCE_BEING_BACKED_UP,
    RESOURCE_NOT_IN_VAULT,
    RESOURCE_RESTORING,
    VAULT_BUSY_BACKING_UP,
    VAULT_FULL,
    VAULT_STATUS_FORBIDS_BACKUP,
    VAULT_TYPE_FORBIDS_BACKUP,
    CbrError,
)
from opencbr.services import operation_logs, vaults
from opencbr.services.identity import AuthContext

GB = 1024**3
# (vault id, resource id) of the resources that have an available backup in the vault: what
# an incremental backup builds on (`built_on`).
BuiltOn = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class CheckpointParams:
    name: str | None = None
    description: str | None = None
    incremental: bool = True
    resources: tuple[str, ...] = ()
    auto_trigger: bool = False
    policy_id: str | None = None
    retention_duration_days: int = -1


@dataclass
class CheckpointView:
    checkpoint: Checkpoint
    vault: Vault
    resources: list[VaultResource] = field(default_factory=list)


def _chosen(vault: Vault, wanted: tuple[str, ...]) -> list[VaultResource]:
    if not wanted:
        return list(vault.resources)
    bound = {binding.resource_id: binding for binding in vault.resources}
    missing = [rid for rid in wanted if rid not in bound]
    if missing:
        raise CbrError(
            RESOURCE_NOT_IN_VAULT, f"Resources {', '.join(missing)} does not exist in vault."
        )
    return [bound[rid] for rid in dict.fromkeys(wanted)]


def _check_vault(vault: Vault) -> None:
    if vault.protect_type != "backup":
        raise CbrError(
            VAULT_TYPE_FORBIDS_BACKUP, "A replication vault receives replicas; it cannot back up."
        )
    if vault.status != VaultStatus.AVAILABLE:
        raise CbrError(VAULT_STATUS_FORBIDS_BACKUP)
    if vault.used_bytes >= vault.size_gb * GB:
        raise CbrError(VAULT_FULL)


def create(
    db: Database,
    ctx: AuthContext,
    vault_id: str,
    params: CheckpointParams,
    request_id: str | None = None,
) -> CheckpointView:
    with db.transaction() as session:
        vault = vaults.get_in_session(session, ctx, vault_id)
        return plan(session, vault, _chosen(vault, params.resources), params, request_id)


def plan(
    session: Session,
    vault: Vault,
    chosen: list[VaultResource],
    params: CheckpointParams,
    request_id: str | None = None,
) -> CheckpointView:
    """Write a checkpoint of the `chosen` resources of the vault: its backups in
    `protecting` and their running operation logs (a request's checkpoint, or a policy
    run's with `auto_trigger` and the policy's id)."""
    view = begin(session, vault, chosen, params, request_id)
    session.flush()  # the backups reference the checkpoint: it is inserted first
    add_backups(session, view, params, request_id)
    return view


def begin(
    session: Session,
    vault: Vault,
    chosen: list[VaultResource],
    params: CheckpointParams,
    request_id: str | None = None,
) -> CheckpointView:
    """`plan`'s first half: check, then add the checkpoint row (not flushed). A policy run
    begins the checkpoints of a whole batch of vaults, flushes once, then adds their
    backups: one flush per batch instead of one per vault, which was most of its time."""
    _check_vault(vault)
    if not chosen:
        raise CbrError(NOTHING_TO_BACKUP, "The vault has no resources to back up.")
    ready = [b for b in chosen if b.protect_status == ProtectStatus.AVAILABLE]
    skipped = [b for b in chosen if b.protect_status != ProtectStatus.AVAILABLE]
    if not ready:
        raise CbrError(
            VAULT_BUSY_BACKING_UP, "Every chosen resource is being backed up or restored."
        )
    checkpoint = Checkpoint(
        id=new_uuid(),  # known before the insert: the backups can be added before it is
        project_id=vault.project_id,
        vault_id=vault.id,
        status=CheckpointStatus.PROTECTING,
        name=params.name,
        description=params.description,
        incremental=params.incremental,
        auto_trigger=params.auto_trigger,
        policy_id=params.policy_id,
        retention_duration=params.retention_duration_days,
        request_id=request_id,
        skipped_resources=[_skip_entry(b) for b in skipped],
    )
    session.add(checkpoint)
    return CheckpointView(checkpoint, vault, ready)


def add_backups(
    session: Session,
    view: CheckpointView,
    params: CheckpointParams,
    request_id: str | None = None,
    bases: BuiltOn | None = None,
) -> None:
    """`plan`'s second half, once the checkpoint is inserted: a backup in `protecting` and a
    running operation log per resource; the resources become `protecting`. `bases`: what
    `built_on` answered for a batch of checkpoints including this one (None: asked here)."""
    if bases is None:
        bases = built_on(session, [view]) if params.incremental else frozenset()
    for binding in view.resources:
        resource = binding.protectable
        _plan_backup(session, view, resource, params, request_id, bases)
        vaults.begin_protecting(binding)


def built_on(session: Session, views: Sequence[CheckpointView]) -> BuiltOn:
    """Which resources of these checkpoints (servers' volumes included) have an available
    backup in their vault to build on: one query for a policy run's batch of vaults,
    where each backup asked for its own."""
    vault_ids = {view.vault.id for view in views}
    resource_ids = {
        resource_id
        for view in views
        for binding in view.resources
        for resource_id in (binding.protectable.id, *(v.id for v in binding.protectable.volumes))
    }
    if not vault_ids or not resource_ids:
        return frozenset()
    found = session.execute(
        select(Backup.vault_id, Backup.resource_id)
        .where(
            Backup.vault_id.in_(vault_ids),
            Backup.resource_id.in_(resource_ids),
            Backup.status == BackupStatus.AVAILABLE,
        )
        .distinct()
    )
    return frozenset((vault_id, resource_id) for vault_id, resource_id in found)


def _skip_entry(binding: VaultResource) -> dict[str, str]:
    """A resource left out of the checkpoint, with CBR's code for why (0002 is raised only
    here: CBR reports it per skipped resource, not as the answer)."""
    error = RESOURCE_BEING_BACKED_UP
    if binding.protect_status == ProtectStatus.RESTORING:
        error = RESOURCE_RESTORING
    resource = binding.protectable
    return {
        "id": resource.id,
        "type": resource.type,
        "name": resource.name,
        "code": error.code,
        "reason": error.message,
    }


def backup_name(params: CheckpointParams) -> str:
    prefix = "autobk" if params.auto_trigger else "manualbk"
    return params.name or f"{prefix}_{secrets.token_hex(2)}"


def _plan_backup(
    session: Session,
    view: CheckpointView,
    resource: Protectable,
    params: CheckpointParams,
    request_id: str | None,
    bases: BuiltOn,
) -> Backup:
    vault, checkpoint = view.vault, view.checkpoint
    now = clock.now()
    name = backup_name(params)
    expires = (
        now + timedelta(days=params.retention_duration_days)
        if params.retention_duration_days > 0
        else None
    )
    common = dict(
        project_id=vault.project_id,
        vault_id=vault.id,
        checkpoint_id=checkpoint.id,
        description=params.description,
        provider_id=vault.provider_id,
        encrypted=vault.encrypted,
        auto_trigger=params.auto_trigger,
        policy_id=params.policy_id,
        status=BackupStatus.PROTECTING,
        expired_at=expires,
        created_at=now,
        updated_at=now,
    )
    backup = Backup(
        id=new_uuid(),  # known before the insert: one flush per checkpoint, not per backup
        name=name,
        resource_id=resource.id,
        resource_name=resource.name,
        resource_type=resource.type,
        resource_size_gb=-(-resource.size_bytes // GB),
        kind="server" if resource.volumes else _kind(resource),
        volume_path=resource.path,
        incremental=_builds_on_previous(vault, resource.id, params, bases),
        **common,
    )
    session.add(backup)
    if resource.volumes:
        session.flush()  # the volumes' backups reference it: it must be inserted first
    for volume in resource.volumes:
        session.add(
            Backup(
                name=f"{name}-{volume.name}",
                resource_id=volume.id,
                resource_name=volume.name,
                resource_type="OS::Cinder::Volume",
                resource_size_gb=-(-volume.size_bytes // GB),
                kind=volume.kind,
                volume_path=volume.path,
                parent_id=backup.id,
                incremental=_builds_on_previous(vault, volume.id, params, bases),
                **common,
            )
        )
    operation_logs.open_log(
        session,
        project_id=vault.project_id,
        operation_type="backup",
        subject=operation_logs.Subject(
            resource.id, resource.type, resource.name, vault.id, vault.name, vault.provider_id
        ),
        details={
            "backup_id": backup.id,
            "backup_name": name,
            "incremental": str(backup.incremental).lower(),
        },
        request_id=request_id,
        checkpoint_id=checkpoint.id,
        backup_id=backup.id,
        policy_id=params.policy_id,
    )
    return backup


def _builds_on_previous(
    vault: Vault,
    resource_id: str,
    params: CheckpointParams,
    bases: BuiltOn,
) -> bool:
    """What `incremental` will be, as far as it is known now: asked for, and the resource
    has an available backup in the vault to build on (the run settles it)."""
    return params.incremental and (vault.id, resource_id) in bases


def _kind(resource: Protectable) -> str:
    return "tree" if resource.type == "OS::Sfs::Turbo" else "disk"


def get(db: Database, ctx: AuthContext, checkpoint_id: str) -> CheckpointView:
    with db.reading() as session:
        checkpoint = session.get(Checkpoint, checkpoint_id)
        if checkpoint is None or checkpoint.project_id != ctx.project_id:
            raise CbrError(
                CHECKPOINT_NOT_FOUND, f"The restore point {checkpoint_id} does not exist."
            )
        vault = session.get(Vault, checkpoint.vault_id)
        assert vault is not None  # checkpoints are deleted with their vault
        backed_up = set(
            session.scalars(
                select(Backup.resource_id).where(
                    Backup.checkpoint_id == checkpoint.id, Backup.parent_id.is_(None)
                )
            )
        )
        resources = [b for b in vault.resources if b.resource_id in backed_up]
        return CheckpointView(checkpoint, vault, resources)


def settle(session: Session, checkpoint_id: str | None) -> None:
    """Derive the checkpoint's status from its top-level backups once none is in progress:
    `available` if any is available (or none is left), else `error`.

    The one place a checkpoint's status changes after its creation, for a vault's own
    checkpoints and for the checkpoint a replica is received into alike (its one backup is
    the replica).
    """
    checkpoint = session.get(Checkpoint, checkpoint_id) if checkpoint_id else None
    if checkpoint is None:
        return
    statuses = set(
        session.scalars(
            select(Backup.status).where(
                Backup.checkpoint_id == checkpoint_id, Backup.parent_id.is_(None)
            )
        )
    )
    checkpoint.status = settled_status(statuses) or checkpoint.status


def settled_status(backup_statuses: set[str]) -> CheckpointStatus | None:
    """The status of a checkpoint whose top-level backups have these statuses; None while
    one is still being written."""
    if backup_statuses & {BackupStatus.PROTECTING, BackupStatus.WAITING_PROTECT}:
        return None
    if backup_statuses - {BackupStatus.ERROR} or not backup_statuses:
        return CheckpointStatus.AVAILABLE
    return CheckpointStatus.ERROR
