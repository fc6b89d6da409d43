"""Operation logs (tasks): /v3/{project_id}/operation-logs (cbr-api.md §2.6)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from opencbr.api.deps import CallerDep, DbDep, query_time
from opencbr.api.schemas.backups import (
    OperationLogListResponse,
    OperationLogResponse,
    operation_log_out,
)
from opencbr.api.schemas.common import page_request
from opencbr.db.paging import PageRequest
from opencbr.services import operation_logs

router = APIRouter(prefix="/v3/{project_id}/operation-logs", tags=["operation-logs"])


def _filters(
    operation_type: str | None = None,
    status: str | None = None,
    vault_id: str | None = None,
    vault_name: str | None = None,
    resource_id: str | None = None,
    resource_name: str | None = None,
    provider_id: str | None = None,
    start_time: str | None = None,
    end_time: str | None = None,
) -> operation_logs.LogFilter:
    return operation_logs.LogFilter(
        operation_type=operation_type,
        status=status,
        vault_id=vault_id,
        vault_name=vault_name,
        resource_id=resource_id,
        resource_name=resource_name,
        provider_id=provider_id,
        start_time=query_time(start_time, "start_time"),
        end_time=query_time(end_time, "end_time"),
    )


@router.get("", response_model=OperationLogListResponse)
def list_operation_logs(
    ctx: CallerDep,
    db: DbDep,
    filters: Annotated[operation_logs.LogFilter, Depends(_filters)],
    page: Annotated[PageRequest, Depends(page_request)],
) -> OperationLogListResponse:
    result = operation_logs.list_page(db, ctx, filters, page)
    return OperationLogListResponse(
        operation_logs=[operation_log_out(entry) for entry in result.items],
        count=result.count,
        limit=result.limit,
        offset=result.offset,
    )


@router.get("/{operation_log_id}", response_model=OperationLogResponse)
def show_operation_log(operation_log_id: str, ctx: CallerDep, db: DbDep) -> OperationLogResponse:
    return OperationLogResponse(
        operation_log=operation_log_out(operation_logs.get(db, ctx, operation_log_id))
    )
