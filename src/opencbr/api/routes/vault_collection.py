"""A project's vaults as a whole: /vaults/summary, /vaults/external, /vaults/batch-update.

Included before the vaults router: its `/vaults/{vault_id}` routes would otherwise take
these names for vault ids and answer 6105.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from opencbr.api.deps import CallerDep, DbDep, WriterDep
from opencbr.api.schemas.common import page_request
from opencbr.api.schemas.usage import (
    BatchUpdateBody,
    BatchUpdateResponse,
    ExternalVaultListResponse,
    SummaryResponse,
)
from opencbr.api.schemas.vaults import vault_out
from opencbr.db.paging import PageRequest
from opencbr.services import backups, policies, usage, vault_collection

router = APIRouter(prefix="/v3/{project_id}/vaults", tags=["vaults"])
Text = Annotated[str, Query(max_length=64)]


@router.get("/summary", response_model=SummaryResponse)
def show_summary(ctx: CallerDep, db: DbDep) -> SummaryResponse:
    result = usage.summary(db, ctx)
    return SummaryResponse(size=result.size_gb, used_size=result.used_gb)


@router.put("/batch-update", response_model=BatchUpdateResponse)
def batch_update_vault(body: BatchUpdateBody, ctx: WriterDep, db: DbDep) -> BatchUpdateResponse:
    ids = vault_collection.batch_update(db, ctx, body.vault.smn_notify, body.vault.threshold)
    return BatchUpdateResponse(updated_vaults_id=ids)


def _external_query(
    external_project_id: Text,
    region_id: Annotated[str, Query(max_length=255)],
    vault_id: Text | None = None,
    protect_type: Text | None = None,
    objcet_type: Text | None = None,  # the SDK's spelling
    object_type: Text | None = None,
    cloud_type: Text | None = None,
) -> vault_collection.ExternalQuery:
    return vault_collection.ExternalQuery(
        project_id=external_project_id,
        region=region_id,
        vault_id=vault_id,
        protect_type=protect_type,
        object_type=objcet_type or object_type,
        cloud_type=cloud_type,
    )


@router.get("/external", response_model=ExternalVaultListResponse)
def list_external_vault(
    ctx: CallerDep,
    db: DbDep,
    query: Annotated[vault_collection.ExternalQuery, Depends(_external_query)],
    page: Annotated[PageRequest, Depends(page_request)],
) -> ExternalVaultListResponse:
    result = vault_collection.list_external(db, ctx, query, page)
    ids = [vault.id for vault in result.items]
    stats = backups.usage_by_resource(db, ids)
    bound = policies.backup_policy_ids(db, ids)
    return ExternalVaultListResponse(
        vaults=[vault_out(vault, stats, bound) for vault in result.items],
        count=result.count,
        limit=result.limit,
        offset=result.offset,
    )
