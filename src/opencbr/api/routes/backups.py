"""Backups: list, show, update, delete and restore (cbr-api.md §2.3)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from opencbr.api.deps import CallerDep, DbDep, JobsDep, RequestIdDep, WriterDep
from opencbr.api.schemas.backups import (
    BackupListResponse,
    BackupQuery,
    BackupResponse,
    BackupUpdateBody,
    MetadataResponse,
    RestoreBody,
    backup_out,
    metadata_out,
)
from opencbr.api.schemas.common import page_request
from opencbr.db.paging import PageRequest
from opencbr.jobs import tasks
from opencbr.services import backups, restores

router = APIRouter(prefix="/v3/{project_id}/backups", tags=["backups"])
OPERATION_LOG_HEADER = "X-Opencbr-Operation-Log"


@router.get("", response_model=BackupListResponse, response_model_exclude_none=False)
def list_backups(
    ctx: CallerDep,
    db: DbDep,
    query: Annotated[BackupQuery, Query()],
    page: Annotated[PageRequest, Depends(page_request)],
) -> BackupListResponse:
    result = backups.list_page(db, ctx, query.filters(), page)
    # Replication records are the owner's: a member sees none of a shared backup's.
    own = [b.id for b in result.items if b.project_id == ctx.project_id]
    records = backups.records_for(db, own) if query.show_replication else None
    return BackupListResponse(
        backups=[
            backup_out(b, records.get(b.id, []) if records is not None else None, zone=ctx.region)
            for b in result.items
        ],
        count=result.count,
        limit=result.limit,
        offset=result.offset,
    )


@router.get("/{backup_id}", response_model=BackupResponse)
def show_backup(backup_id: str, ctx: CallerDep, db: DbDep) -> BackupResponse:
    backup = backups.get(db, ctx, backup_id)
    own = backup.project_id == ctx.project_id
    records = backups.records_for(db, [backup.id]).get(backup.id, []) if own else []
    return BackupResponse(backup=backup_out(backup, records, zone=ctx.region))


@router.get("/{backup_id}/metadata", response_model=MetadataResponse)
def show_metadata(backup_id: str, ctx: CallerDep, db: DbDep) -> MetadataResponse:
    backup = backups.with_metadata(db, ctx, backup_id)
    # As show_backup: a member of a shared backup is not told the owner's replication
    # records, nor (here) where the owner's volumes live on the owner's machines.
    own = backup.project_id == ctx.project_id
    records = backups.records_for(db, [backup.id]).get(backup.id, []) if own else []
    return metadata_out(backup, records, zone=ctx.region, with_paths=own)


@router.put("/{backup_id}", response_model=BackupResponse)
def update_backup(
    backup_id: str, body: BackupUpdateBody, ctx: WriterDep, db: DbDep
) -> BackupResponse:
    backup = backups.rename(db, ctx, backup_id, body.backup.name, body.backup.description)
    return BackupResponse(backup=backup_out(backup, zone=ctx.region))


@router.delete("/{backup_id}", status_code=204, response_class=Response)
def delete_backup(
    backup_id: str, ctx: WriterDep, db: DbDep, jobs: JobsDep, request_id: RequestIdDep
) -> Response:
    jobs.enqueue(tasks.delete_backup, backups.start_delete(db, ctx, backup_id, request_id))
    return Response(status_code=204)


@router.post("/{backup_id}/restore", status_code=202, response_class=Response)
def restore_backup(
    backup_id: str,
    body: RestoreBody,
    ctx: WriterDep,
    db: DbDep,
    jobs: JobsDep,
    request_id: RequestIdDep,
) -> Response:
    """202 with no body, as CBR answers; opencbr's extension header
    `X-Opencbr-Operation-Log` names the restore's operation log, to follow it."""
    log_id = restores.start(db, ctx, backup_id, body.restore.request(), request_id)
    jobs.enqueue(tasks.run_restore, log_id)
    return Response(status_code=202, headers={OPERATION_LOG_HEADER: log_id})
