"""Vaults: create, list, show, update, delete, and binding protectable resources to them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import delete as delete_rows
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from opencbr.db.backups import Backup, OperationLog, ReplicationRecord
from opencbr.db.paging import Page, PageRequest, fetch_page
from opencbr.db.policies import PolicyBinding
from opencbr.db.session import Database
from opencbr.db.status import BUSY_BACKUP, LIVE_MIGRATION, LIVE_RECORD, ProtectStatus
from opencbr.db.vaults import RESOURCE_TYPES, Vault, VaultMigration, VaultResource, VaultTag
from opencbr.errors import (
    DUPLICATE_RESOURCE,
    INVALID_PARAMETER,
    RESOURCE_IN_OTHER_VAULT,
    RESOURCE_NOT_FOUND,
    RESOURCE_NOT_IN_VAULT,
    RESOURCE_REMOVING,
    RESOURCE_TYPE_MISMATCH,
    TAGS_OVER_LIMIT,
    VAULT_CANNOT_ADD_RESOURCES,
    VAULT_HAS_RUNNING_BACKUP,
    VAULT_NOT_FOUND,
    VAULT_RESOURCES_OVER_LIMIT,
    VAULT_SIZE_INVALID,
    CbrError,
)
from opencbr.services import backups, operation_logs, planned_records, protectables
from opencbr.services.identity import AuthContext

# The `resource` of a task on a vault itself (vault delete, resource removal): CBR's
# resource types name only what is backed up, so opencbr names the vault in their style.
VAULT_RESOURCE_TYPE = "OS::CBR::Vault"
MAX_RESOURCES = 256
MAX_TAGS = 10  # per vault (cbr-api.md §2.0 Tag)
MIN_SIZE_GB = 1
MAX_SIZE_GB = 10_485_760
GB = 1024**3
MB = 1024**2


@dataclass(frozen=True)
class ResourceBinding:
    id: str
    type: str
    name: str | None = None
    extra_info: dict[str, Any] | None = None


@dataclass
class VaultSpec:
    name: str
    object_type: str
    protect_type: str
    size_gb: int
    consistent_level: str = "crash_consistent"
    cloud_type: str = "public"
    is_multi_az: bool = False
    resources: Sequence[ResourceBinding] = ()
    description: str | None = None
    tags: list[tuple[str, str]] = field(default_factory=list)  # (key, value), keys unique
    enterprise_project_id: str = "0"
    auto_bind: bool = False
    bind_rules: dict[str, Any] | None = None
    auto_expand: bool = False
    smn_notify: bool = True
    threshold: int = 80
    locked: bool = False
    availability_zone: str | None = None
    backup_name_prefix: str | None = None
    sys_lock_source_service: str | None = None
    # Backups made in it are encrypted at rest (its region's `encryption` setting).
    encrypted: bool = True


def create(db: Database, ctx: AuthContext, spec: VaultSpec) -> Vault:
    with db.transaction() as session:
        return insert(session, ctx, spec)


def insert(session: Session, ctx: AuthContext, spec: VaultSpec) -> Vault:
    """Create the vault in the caller's transaction (a vault created with its backup policy
    is bound in the same one)."""
    if spec.object_type not in RESOURCE_TYPES:
        raise CbrError(INVALID_PARAMETER, "billing.object_type must be server, disk or turbo")
    _check_size(spec.size_gb)
    check_tag_count(len(spec.tags))
    if len({key for key, _ in spec.tags}) != len(spec.tags):
        raise CbrError(INVALID_PARAMETER, "tags must not repeat a key")
    vault = Vault(
        project_id=ctx.project_id,
        region=ctx.region,
        user_id=ctx.user_id,
        name=spec.name,
        description=spec.description,
        object_type=spec.object_type,
        protect_type=spec.protect_type,
        consistent_level=spec.consistent_level,
        cloud_type=spec.cloud_type,
        is_multi_az=spec.is_multi_az,
        size_gb=spec.size_gb,
        tags=[VaultTag(key=key, value=value) for key, value in spec.tags],
        enterprise_project_id=spec.enterprise_project_id,
        auto_bind=spec.auto_bind,
        bind_rules=spec.bind_rules,
        auto_expand=spec.auto_expand,
        smn_notify=spec.smn_notify,
        threshold=spec.threshold,
        locked=spec.locked,
        availability_zone=spec.availability_zone,
        backup_name_prefix=spec.backup_name_prefix,
        sys_lock_source_service=spec.sys_lock_source_service,
        encrypted=spec.encrypted,
        resources=[],
    )
    session.add(vault)
    session.flush()
    if spec.resources:
        _bind(session, ctx, vault, spec.resources)
    return vault


def _check_size(size_gb: int) -> None:
    if not MIN_SIZE_GB <= size_gb <= MAX_SIZE_GB:
        raise CbrError(
            VAULT_SIZE_INVALID, f"billing.size must be {MIN_SIZE_GB} to {MAX_SIZE_GB} GB"
        )


def check_tag_count(count: int) -> None:
    if count > MAX_TAGS:
        raise CbrError(TAGS_OVER_LIMIT, f"A vault has at most {MAX_TAGS} tags.")


def find_in_project(session: Session, project_id: str, vault_id: str) -> Vault | None:
    vault = session.get(Vault, vault_id)
    return vault if vault is not None and vault.project_id == project_id else None


def get_in_session(session: Session, ctx: AuthContext, vault_id: str) -> Vault:
    vault = find_in_project(session, ctx.project_id, vault_id)
    if vault is None:
        raise CbrError(VAULT_NOT_FOUND, f"Vault {vault_id} not found")
    return vault


def get(db: Database, ctx: AuthContext, vault_id: str) -> Vault:
    with db.reading() as session:
        return get_in_session(session, ctx, vault_id)


@dataclass(frozen=True)
class VaultFilter:
    name: str | None = None
    cloud_type: str | None = None
    protect_type: str | None = None
    object_type: str | None = None
    enterprise_project_id: str | None = None
    ids: tuple[str, ...] = ()
    status: str | None = None
    resource_ids: tuple[str, ...] = ()
    policy_id: str | None = None


def list_page(
    db: Database, ctx: AuthContext, filters: VaultFilter, page: PageRequest
) -> Page[Vault]:
    query = select(Vault).where(Vault.project_id == ctx.project_id)
    for column, value in (
        (Vault.name, filters.name),
        (Vault.cloud_type, filters.cloud_type),
        (Vault.protect_type, filters.protect_type),
        (Vault.object_type, filters.object_type),
        (Vault.status, filters.status),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.enterprise_project_id not in (None, "all_granted_eps"):
        query = query.where(Vault.enterprise_project_id == filters.enterprise_project_id)
    if filters.ids:
        query = query.where(Vault.id.in_(filters.ids))
    if filters.resource_ids:
        bound = select(VaultResource.vault_id).where(
            VaultResource.resource_id.in_(filters.resource_ids)
        )
        query = query.where(Vault.id.in_(bound))
    if filters.policy_id is not None:
        query = query.where(Vault.id.in_(_vaults_bound_to_policy(filters.policy_id)))
    with db.reading() as session:
        return fetch_page(
            session, query, Vault.created_at, Vault.id, page, Vault.project_id == ctx.project_id
        )


def _vaults_bound_to_policy(policy_id: str) -> Any:
    return select(PolicyBinding.vault_id).where(PolicyBinding.policy_id == policy_id)


@dataclass(frozen=True)
class VaultUpdate:
    name: str | None = None
    size_gb: int | None = None
    consistent_level: str | None = None
    auto_bind: bool | None = None
    bind_rules: dict[str, Any] | None = None
    auto_expand: bool | None = None
    smn_notify: bool | None = None
    threshold: int | None = None
    locked: bool | None = None


def update(db: Database, ctx: AuthContext, vault_id: str, changes: VaultUpdate) -> Vault:
    with db.transaction() as session:
        vault = get_in_session(session, ctx, vault_id)
        if changes.size_gb is not None:
            _check_size(changes.size_gb)
        if changes.size_gb is not None and changes.size_gb * GB < vault.used_bytes:
            raise CbrError(
                VAULT_SIZE_INVALID, "The new capacity is smaller than the used capacity."
            )
        for name in (
            "name",
            "auto_bind",
            "bind_rules",
            "auto_expand",
            "smn_notify",
            "threshold",
            "locked",
            "consistent_level",
            "size_gb",
        ):
            value = getattr(changes, name)
            if value is not None:
                setattr(vault, name, value)
        return vault


def _bind(
    session: Session, ctx: AuthContext, vault: Vault, bindings: Sequence[ResourceBinding]
) -> list[str]:
    if vault.protect_type == "replication":
        raise CbrError(
            VAULT_CANNOT_ADD_RESOURCES,
            "A replication vault receives replicas only; it cannot protect resources.",
        )
    ids = [binding.id for binding in bindings]
    if len(set(ids)) != len(ids):
        raise CbrError(DUPLICATE_RESOURCE)
    if len(vault.resources) + len(ids) > MAX_RESOURCES:
        raise CbrError(
            VAULT_RESOURCES_OVER_LIMIT, f"Resources of vault over limit: {MAX_RESOURCES}."
        )
    for binding in bindings:
        _bind_one(session, ctx, vault, binding)
    session.flush()
    return ids


def _bind_one(session: Session, ctx: AuthContext, vault: Vault, binding: ResourceBinding) -> None:
    resource = protectables.find_in_project(session, ctx.project_id, binding.id)
    if resource is None:
        raise CbrError(RESOURCE_NOT_FOUND, f"The resource {binding.id} does not exist.")
    if binding.type != resource.type or RESOURCE_TYPES[vault.object_type] != resource.type:
        raise CbrError(
            RESOURCE_TYPE_MISMATCH,
            f"Resource {binding.id} is a {resource.type}; "
            f"the vault protects {RESOURCE_TYPES[vault.object_type]}.",
        )
    existing = session.get(VaultResource, resource.id)
    if existing is not None:
        if existing.vault_id == vault.id:
            raise CbrError(DUPLICATE_RESOURCE, f"Resource {binding.id} is already in this vault.")
        raise CbrError(
            RESOURCE_IN_OTHER_VAULT,
            f"Resource {binding.id} is already in vault {existing.vault_id}.",
        )
    vault.resources.append(
        VaultResource(resource_id=resource.id, protectable=resource, extra_info=binding.extra_info)
    )


def add_resources(
    db: Database, ctx: AuthContext, vault_id: str, bindings: Sequence[ResourceBinding]
) -> list[str]:
    with db.transaction() as session:
        vault = get_in_session(session, ctx, vault_id)
        return _bind(session, ctx, vault, bindings)


def remove_resources(
    db: Database,
    ctx: AuthContext,
    vault_id: str,
    resource_ids: Sequence[str],
    request_id: str | None = None,
) -> list[str]:
    """Unbind resources from the vault (their backups stay in it); a `remove_resource`
    operation log records it."""
    with db.transaction() as session:
        vault = get_in_session(session, ctx, vault_id)
        if len(set(resource_ids)) != len(resource_ids):
            raise CbrError(DUPLICATE_RESOURCE)
        bound = {resource.resource_id: resource for resource in vault.resources}
        missing = [rid for rid in resource_ids if rid not in bound]
        if missing:
            raise CbrError(
                RESOURCE_NOT_IN_VAULT, f"Resources {', '.join(missing)} does not exist in vault."
            )
        busy = [rid for rid in resource_ids if bound[rid].protect_status != ProtectStatus.AVAILABLE]
        if busy:
            raise CbrError(
                RESOURCE_REMOVING,
                f"Resource is busy ({', '.join(busy)}); try again when its backup or restore ends.",
            )
        removed = [bound[rid].protectable for rid in resource_ids]
        for rid in resource_ids:
            vault.resources.remove(bound[rid])
        details = {
            "fail_count": 0,
            "total_count": 0,  # backups deleted: none, they stay restorable in the vault
            "resources": [{"id": r.id, "type": r.type, "name": r.name} for r in removed],
        }
        _log_vault_task(session, ctx, vault, "remove_resource", details, request_id)
        return list(resource_ids)


# A bound resource's protect status: available -> protecting (a backup of it runs) or
# restoring (a restore into it runs) -> available. The backup or restore that set it
# releases it when it ends, whatever the outcome.


def begin_protecting(binding: VaultResource) -> None:
    binding.protect_status = ProtectStatus.PROTECTING


def begin_restoring(binding: VaultResource) -> None:
    binding.protect_status = ProtectStatus.RESTORING


def release_resource(session: Session, resource_id: str) -> None:
    """The backup or restore of the resource ended: it is available again (a resource
    removed from its vault meanwhile has nothing to release)."""
    binding = session.get(VaultResource, resource_id)
    if binding is not None and binding.protect_status in (
        ProtectStatus.PROTECTING,
        ProtectStatus.RESTORING,
    ):
        binding.protect_status = ProtectStatus.AVAILABLE


def set_resources(
    db: Database, ctx: AuthContext, vault_id: str, resource_ids: Sequence[str], action: str
) -> list[str]:
    with db.transaction() as session:
        vault = get_in_session(session, ctx, vault_id)
        bound = {resource.resource_id: resource for resource in vault.resources}
        missing = [rid for rid in resource_ids if rid not in bound]
        if missing:
            raise CbrError(
                RESOURCE_NOT_IN_VAULT, f"Resources {', '.join(missing)} does not exist in vault."
            )
        for rid in resource_ids:
            bound[rid].auto_protect = action == "unsuspend"
        return list(resource_ids)


def delete(db: Database, ctx: AuthContext, vault_id: str, request_id: str | None = None) -> Vault:
    """Delete the vault and every backup in it; refused while a backup, a replication or a
    migration runs in the vault (a backup being deleted does not hold it: it goes along).

    Backups, checkpoints and the chunk index go with the vault (foreign keys cascade); the
    caller then purges the vault's store. A `vault_delete` operation log (which outlives
    the vault) counts the backups deleted.
    """
    with db.transaction() as session:
        vault = get_in_session(session, ctx, vault_id)
        busy = session.scalar(
            select(Backup.id)
            .where(Backup.vault_id == vault.id, Backup.status.in_(BUSY_BACKUP))
            .limit(1)
        )
        if busy is not None:
            raise CbrError(VAULT_HAS_RUNNING_BACKUP, "A backup in the vault is in progress.")
        planned_records.expand_pending(session, [vault.id])
        _refuse_while_copying(
            session,
            vault.id,
            ReplicationRecord,
            LIVE_RECORD,
            "A replication of the vault is in progress.",
        )
        _refuse_while_copying(
            session,
            vault.id,
            VaultMigration,
            LIVE_MIGRATION,
            "Resources are being migrated into or out of the vault.",
        )
        # Its own policy bindings go with it (foreign keys cascade); bindings that replicate
        # into it could never run again, so they go too.
        session.execute(
            delete_rows(PolicyBinding).where(PolicyBinding.destination_vault_id == vault.id)
        )
        deleted = session.scalar(
            select(func.count())
            .select_from(Backup)
            .where(Backup.vault_id == vault.id, Backup.parent_id.is_(None))
        )
        backups.end_deletions_with_vault(session, vault.id)
        details = {"fail_count": 0, "total_count": deleted or 0}
        _log_vault_task(session, ctx, vault, "vault_delete", details, request_id)
        session.delete(vault)
        return vault


def _refuse_while_copying(
    session: Session,
    vault_id: str,
    model: type[ReplicationRecord] | type[VaultMigration],
    live: tuple[StrEnum, ...],
    message: str,
) -> None:
    """Refuse with 6203 while a copy of `model` (a replication, a migration) still to end
    has the vault as its source or its destination."""
    running = session.scalar(
        select(model.id)
        .where(
            or_(model.source_vault_id == vault_id, model.destination_vault_id == vault_id),
            model.status.in_(live),
        )
        .limit(1)
    )
    if running is not None:
        raise CbrError(VAULT_HAS_RUNNING_BACKUP, message)


def _log_vault_task(
    session: Session,
    ctx: AuthContext,
    vault: Vault,
    operation_type: str,
    details: dict[str, Any],
    request_id: str | None,
) -> OperationLog:
    """The operation log of a task on the vault itself, done by the time it is written."""
    subject = operation_logs.Subject(
        vault.id, VAULT_RESOURCE_TYPE, vault.name, vault.id, vault.name, vault.provider_id
    )
    log = operation_logs.open_log(
        session,
        project_id=ctx.project_id,
        operation_type=operation_type,
        subject=subject,
        details=details,
        request_id=request_id,
    )
    operation_logs.complete_operation(session, log.id)
    return log


def allocated_gb(vault: Vault) -> int:
    """billing.allocated: the sum of the bound resources' sizes, in GB (rounded up)."""
    total = sum(resource.protectable.size_bytes for resource in vault.resources)
    return -(-total // GB)


def used_mb(vault: Vault) -> int:
    return -(-vault.used_bytes // MB)
