"""Checkpoints: /v3/{project_id}/checkpoints (back up now) and show (cbr-api.md §2.2)."""

from __future__ import annotations

from fastapi import APIRouter

from opencbr.api.deps import CallerDep, DbDep, JobsDep, RequestIdDep, WriterDep
from opencbr.api.schemas.backups import CheckpointBody, CheckpointResponse, checkpoint_out
from opencbr.jobs import tasks
from opencbr.services import backups, checkpoints

router = APIRouter(prefix="/v3/{project_id}/checkpoints", tags=["checkpoints"])


@router.post("", response_model=CheckpointResponse)
def create_checkpoint(
    body: CheckpointBody, ctx: WriterDep, db: DbDep, jobs: JobsDep, request_id: RequestIdDep
) -> CheckpointResponse:
    params = (
        body.checkpoint.parameters.params()
        if body.checkpoint.parameters
        else checkpoints.CheckpointParams()
    )
    view = checkpoints.create(db, ctx, body.checkpoint.vault_id, params, request_id)
    jobs.enqueue(tasks.run_checkpoint, view.checkpoint.id)
    stats = backups.usage_by_resource(db, [view.vault.id])
    return CheckpointResponse(checkpoint=checkpoint_out(view, stats))


@router.get("/{checkpoint_id}", response_model=CheckpointResponse)
def show_checkpoint(checkpoint_id: str, ctx: CallerDep, db: DbDep) -> CheckpointResponse:
    view = checkpoints.get(db, ctx, checkpoint_id)
    stats = backups.usage_by_resource(db, [view.vault.id])
    return CheckpointResponse(checkpoint=checkpoint_out(view, stats))
