"""Operation logs (tasks): /v3/{project_id}/operation-logs (cbr-api.md §2.6)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from opencbr.api.deps import CallerDep, DbDep
from opencbr.api.schemas.backups import (
    OperationLogListResponse,
    OperationLogQuery,
    OperationLogResponse,
    operation_log_out,
)
from opencbr.api.schemas.common import page_request
from opencbr.db.paging import PageRequest
from opencbr.services import operation_logs

router = APIRouter(prefix="/v3/{project_id}/operation-logs", tags=["operation-logs"])


@router.get("", response_model=OperationLogListResponse)
def list_operation_logs(
    ctx: CallerDep,
    db: DbDep,
    query: Annotated[OperationLogQuery, Query()],
    page: Annotated[PageRequest, Depends(page_request)],
) -> OperationLogListResponse:
    result = operation_logs.list_page(db, ctx, query.filters(), page)
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
