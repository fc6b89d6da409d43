"""Verify (and repair) a vault's stored chunks: `POST /v3/{project_id}/vaults/{vault_id}/verify`,
an opencbr extension (CBR has no such call). Answers 202 once the job is recorded; a worker
re-reads the chunks and reports in the operation log the answer names (type `verify`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import Field

from opencbr.api.deps import JobsDep, RequestIdDep, WriterDep
from opencbr.api.routes.backups import OPERATION_LOG_HEADER
from opencbr.api.schemas.common import RequestModel, ResponseModel
from opencbr.jobs import tasks
from opencbr.services import verify

router = APIRouter(prefix="/v3/{project_id}", tags=["vaults"])


class VerifyParams(RequestModel):
    # Integers only (strict: no "10", no 10.0, no true); every chunk by default.
    sample_percent: Annotated[int, Field(ge=1, le=100)] = 100
    repair: bool = False


class VerifyBody(RequestModel):
    verify: VerifyParams


class VerifyStarted(ResponseModel):
    operation_log_id: str
    vault_id: str
    sample_percent: int
    repair: bool


class VerifyResponse(ResponseModel):
    verify: VerifyStarted


@router.post("/vaults/{vault_id}/verify", status_code=202, response_model=VerifyResponse)
def verify_vault(
    vault_id: str,
    body: VerifyBody,
    ctx: WriterDep,
    jobs: JobsDep,
    request_id: RequestIdDep,
    response: Response,
) -> VerifyResponse:
    params = body.verify
    request = verify.VerifyRequest(params.sample_percent, params.repair)
    log_id = verify.start(jobs.runtime.db, ctx, vault_id, request, request_id)
    jobs.enqueue(tasks.run_verify, log_id)
    response.headers[OPERATION_LOG_HEADER] = log_id
    return VerifyResponse(
        verify=VerifyStarted(
            operation_log_id=log_id,
            vault_id=vault_id,
            sample_percent=params.sample_percent,
            repair=params.repair,
        )
    )
