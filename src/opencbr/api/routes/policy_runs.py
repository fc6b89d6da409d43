"""Run a policy now: `POST /v3/{project_id}/policies/{policy_id}/run` (an opencbr
extension; CBR has no such call). It does what a scheduled slot does, on every vault bound
to the policy, and answers 202 with what it started; the backups and copies run in the
background, then the policy's retention."""

from __future__ import annotations

from fastapi import APIRouter

from opencbr.api.deps import JobsDep, WriterDep
from opencbr.api.schemas.common import ResponseModel
from opencbr.jobs import tasks
from opencbr.services import policy_runs

router = APIRouter(prefix="/v3/{project_id}", tags=["policies"])


class PolicyRunStarted(ResponseModel):
    policy_id: str
    checkpoint_ids: list[str]
    replication_record_ids: list[str]


class PolicyRunResponse(ResponseModel):
    policy_run: PolicyRunStarted


@router.post("/policies/{policy_id}/run", status_code=202, response_model=PolicyRunResponse)
def run_policy(policy_id: str, ctx: WriterDep, jobs: JobsDep) -> PolicyRunResponse:
    started = policy_runs.run_now(
        jobs.runtime, ctx, policy_id, lambda batch: tasks.enqueue_started(jobs, batch)
    )
    jobs.enqueue(tasks.prune_policy, policy_id)
    return PolicyRunResponse(
        policy_run=PolicyRunStarted(
            policy_id=policy_id,
            checkpoint_ids=started.checkpoint_ids,
            replication_record_ids=started.record_ids,
        )
    )
