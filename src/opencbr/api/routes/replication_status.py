"""GET /v3/{project_id}/replication-status (an opencbr extension): how far each
destination vault lags behind its source vault (services/replication_status.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from opencbr import clock
from opencbr.api.deps import CallerDep, DbDep
from opencbr.api.schemas.replication_status import ReplicationStatusResponse, status_out
from opencbr.services import replication_status

router = APIRouter(prefix="/v3/{project_id}", tags=["replication"])


@router.get("/replication-status", response_model=ReplicationStatusResponse)
def show_replication_status(
    ctx: CallerDep,
    db: DbDep,
    vault_id: Annotated[str | None, Query(max_length=64)] = None,
) -> ReplicationStatusResponse:
    states = replication_status.status(db, ctx, vault_id)
    return status_out(states, clock.now())
