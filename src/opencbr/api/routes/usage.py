"""Storage usage per backed-up resource: /v3/{project_id}/storage_usage (cbr-api.md §2.9)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from opencbr.api.deps import CallerDep, DbDep
from opencbr.api.schemas.usage import StorageUsageResponse, storage_usage_out
from opencbr.db.paging import MAX_LIMIT
from opencbr.services import usage

router = APIRouter(prefix="/v3/{project_id}", tags=["usage"])


@router.get("/storage_usage", response_model=StorageUsageResponse)
def show_storage_usage(
    ctx: CallerDep,
    db: DbDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
    offset: Annotated[int, Query(ge=0)] = 0,
    resource_id: Annotated[str | None, Query(max_length=64)] = None,
    resource_type: Annotated[str | None, Query(max_length=64)] = None,
) -> StorageUsageResponse:
    filters = usage.UsageFilter(resource_id=resource_id, resource_type=resource_type)
    return storage_usage_out(usage.storage_usage(db, ctx, filters, limit, offset))
