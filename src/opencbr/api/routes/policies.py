"""Policies: /v3/{project_id}/policies, and binding them to vaults with
/vaults/{vault_id}/associatepolicy and /dissociatepolicy (cbr-api.md §2.1.9-2.1.10, §2.5).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from opencbr.api.deps import CallerDep, DbDep, JobsDep, SettingsDep, WriterDep
from opencbr.api.schemas.common import page_request
from opencbr.api.schemas.policies import (
    AssociateBody,
    AssociateResponse,
    DissociateBody,
    DissociateResponse,
    PolicyCreateBody,
    PolicyListResponse,
    PolicyQuery,
    PolicyResponse,
    PolicyUpdateBody,
    policy_out,
    vault_policy,
)
from opencbr.db.paging import PageRequest
from opencbr.services import policies

router = APIRouter(prefix="/v3/{project_id}", tags=["policies"])


@router.post("/policies", response_model=PolicyResponse)
def create_policy(
    body: PolicyCreateBody, ctx: WriterDep, db: DbDep, settings: SettingsDep, jobs: JobsDep
) -> PolicyResponse:
    policy = policies.create(db, settings, ctx, body.policy.spec())
    jobs.wake_for_slot(policy.next_run_at)  # the first slot may come before the next tick
    return PolicyResponse(policy=policy_out(policy))


@router.get("/policies", response_model=PolicyListResponse)
def list_policies(
    ctx: CallerDep,
    db: DbDep,
    query: Annotated[PolicyQuery, Query()],
    page: Annotated[PageRequest, Depends(page_request)],
) -> PolicyListResponse:
    result = policies.list_page(db, ctx, query.filters(), page)
    return PolicyListResponse(
        policies=[policy_out(policy) for policy in result.items], count=result.count
    )


@router.get("/policies/{policy_id}", response_model=PolicyResponse)
def show_policy(policy_id: str, ctx: CallerDep, db: DbDep) -> PolicyResponse:
    return PolicyResponse(policy=policy_out(policies.get(db, ctx, policy_id)))


@router.put("/policies/{policy_id}", response_model=PolicyResponse)
def update_policy(
    policy_id: str,
    body: PolicyUpdateBody,
    ctx: WriterDep,
    db: DbDep,
    settings: SettingsDep,
    jobs: JobsDep,
) -> PolicyResponse:
    policy = policies.update(db, settings, ctx, policy_id, body.policy.changes())
    jobs.wake_for_slot(policy.next_run_at)  # enabled, or new patterns: a sooner slot
    return PolicyResponse(policy=policy_out(policy))


@router.delete("/policies/{policy_id}", status_code=204, response_class=Response)
def delete_policy(policy_id: str, ctx: WriterDep, db: DbDep) -> Response:
    policies.delete(db, ctx, policy_id)
    return Response(status_code=204)


@router.post("/vaults/{vault_id}/associatepolicy", response_model=AssociateResponse)
def associate_vault_policy(
    vault_id: str, body: AssociateBody, ctx: WriterDep, db: DbDep, settings: SettingsDep
) -> AssociateResponse:
    """The answer names one binding (the SDK's VaultPolicyResp): the first policy's."""
    bound = policies.associate(
        db, settings, ctx, vault_id, body.policy_ids(), body.destination_vault_id
    )
    return AssociateResponse(associate_policy=vault_policy(bound[0]))


@router.post("/vaults/{vault_id}/dissociatepolicy", response_model=DissociateResponse)
def disassociate_vault_policy(
    vault_id: str, body: DissociateBody, ctx: WriterDep, db: DbDep
) -> DissociateResponse:
    unbound = policies.dissociate(db, ctx, vault_id, body.policy_id)
    return DissociateResponse(dissociate_policy=vault_policy(unbound))
