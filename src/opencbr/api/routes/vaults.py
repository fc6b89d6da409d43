"""Vaults: /v3/{project_id}/vaults and their resource actions (cbr-api.md §2.1)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from opencbr.api.deps import CallerDep, DbDep, JobsDep, RequestIdDep, SettingsDep, WriterDep
from opencbr.api.schemas.common import page_request
from opencbr.api.schemas.vaults import (
    AddResourcesBody,
    AddResourcesResponse,
    ExpirationBody,
    ExpirationResponse,
    MigrateResourcesBody,
    MigrateResourcesResponse,
    RemoveResourcesBody,
    RemoveResourcesResponse,
    SetResourcesBody,
    SetResourcesResponse,
    VaultCreateBody,
    VaultListResponse,
    VaultQuery,
    VaultResponse,
    VaultUpdateBody,
    vault_out,
)
from opencbr.db.paging import PageRequest
from opencbr.jobs import tasks
from opencbr.services import backups, expiration, migrations, policies, vaults

router = APIRouter(prefix="/v3/{project_id}/vaults", tags=["vaults"])


@router.post("", response_model=VaultResponse)
def create_vault(
    body: VaultCreateBody, ctx: WriterDep, db: DbDep, settings: SettingsDep
) -> VaultResponse:
    policy_id = body.vault.backup_policy_id
    region = settings.region(ctx.region)
    spec = body.vault.spec(encrypted=region is None or region.encryption)
    if policy_id is None:
        vault = vaults.create(db, ctx, spec)
    else:
        vault = policies.create_bound_vault(db, ctx, spec, policy_id)
    bound = {vault.id: policy_id} if policy_id else {}
    return VaultResponse(vault=vault_out(vault, backup_policies=bound))


@router.get("", response_model=VaultListResponse)
def list_vaults(
    ctx: CallerDep,
    db: DbDep,
    query: Annotated[VaultQuery, Query()],
    page: Annotated[PageRequest, Depends(page_request)],
) -> VaultListResponse:
    result = vaults.list_page(db, ctx, query.filters(), page)
    ids = [vault.id for vault in result.items]
    stats = backups.usage_by_resource(db, ids)
    bound = policies.backup_policy_ids(db, ids)
    return VaultListResponse(
        vaults=[vault_out(vault, stats, bound) for vault in result.items],
        count=result.count,
        limit=result.limit,
        offset=result.offset,
    )


@router.get("/{vault_id}", response_model=VaultResponse)
def show_vault(vault_id: str, ctx: CallerDep, db: DbDep) -> VaultResponse:
    vault = vaults.get(db, ctx, vault_id)
    stats = backups.usage_by_resource(db, [vault.id])
    return VaultResponse(vault=vault_out(vault, stats, policies.backup_policy_ids(db, [vault.id])))


@router.put("/{vault_id}", response_model=VaultResponse)
def update_vault(vault_id: str, body: VaultUpdateBody, ctx: WriterDep, db: DbDep) -> VaultResponse:
    vault = vaults.update(db, ctx, vault_id, body.vault.changes())
    stats = backups.usage_by_resource(db, [vault.id])
    return VaultResponse(vault=vault_out(vault, stats, policies.backup_policy_ids(db, [vault.id])))


@router.delete("/{vault_id}", status_code=204, response_class=Response)
def delete_vault(
    vault_id: str, ctx: WriterDep, db: DbDep, jobs: JobsDep, request_id: RequestIdDep
) -> Response:
    vault = vaults.delete(db, ctx, vault_id, request_id)
    jobs.enqueue(tasks.purge_vault, vault.region, vault.id)
    return Response(status_code=204)


@router.post("/{vault_id}/addresources", response_model=AddResourcesResponse)
def add_resources(
    vault_id: str, body: AddResourcesBody, ctx: WriterDep, db: DbDep
) -> AddResourcesResponse:
    bindings = [resource.binding() for resource in body.resources]
    return AddResourcesResponse(add_resource_ids=vaults.add_resources(db, ctx, vault_id, bindings))


@router.post("/{vault_id}/removeresources", response_model=RemoveResourcesResponse)
def remove_resources(
    vault_id: str, body: RemoveResourcesBody, ctx: WriterDep, db: DbDep, request_id: RequestIdDep
) -> RemoveResourcesResponse:
    removed = vaults.remove_resources(db, ctx, vault_id, body.resource_ids, request_id)
    return RemoveResourcesResponse(remove_resource_ids=removed)


@router.post("/{vault_id}/migrateresources", response_model=MigrateResourcesResponse)
def migrate_resources(
    vault_id: str, body: MigrateResourcesBody, ctx: WriterDep, db: DbDep, jobs: JobsDep
) -> MigrateResourcesResponse:
    """Answers once the migration is recorded; a worker moves the resources and their
    backups (they appear in the destination vault when every backup is there, whole)."""
    started = migrations.start(db, ctx, vault_id, body.destination_vault_id, body.resource_ids)
    jobs.enqueue(tasks.migrate_resources, started.migration_id)
    return MigrateResourcesResponse(migrated_resources=started.resource_ids)


@router.put("/{vault_id}/set-resources", response_model=SetResourcesResponse)
def set_resources(
    vault_id: str, body: SetResourcesBody, ctx: WriterDep, db: DbDep
) -> SetResourcesResponse:
    changed = vaults.set_resources(db, ctx, vault_id, body.resource_ids, body.action)
    return SetResourcesResponse(set_resource_ids=changed)


@router.put("/{vault_id}/update-backup-expiration-time", response_model=ExpirationResponse)
def update_expiration_time(
    vault_id: str, body: ExpirationBody, ctx: WriterDep, db: DbDep, request_id: RequestIdDep
) -> ExpirationResponse:
    change = expiration.update_expiration(
        db, ctx, vault_id, body.expect_expiration_date, body.time_zone, request_id
    )
    return ExpirationResponse(
        affected_backups_count=change.affected_backups,
        new_expiration_day=change.day.isoformat() if change.day else None,
        operation_log_id=change.operation_log_id,
    )
