"""Vault tags: /v3/{project_id}/vault/{vault_id}/tags (one vault's tags),
/vault/tags (the project's) and /vault/resource_instances/action (vaults by tags).

CBR spells these paths with `vault`, singular, unlike every other vault route.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from opencbr.api.deps import CallerDep, DbDep, WriterDep
from opencbr.api.schemas.common import TagOut
from opencbr.api.schemas.tags import (
    BatchTagsBody,
    ProjectTag,
    ProjectTagsResponse,
    ResourceCountResponse,
    ResourceDetail,
    ResourceInstancesBody,
    ResourceInstancesResponse,
    TagCreateBody,
    TagResource,
    VaultTagsResponse,
)
from opencbr.api.schemas.vaults import vault_out
from opencbr.services import backups, tags

router = APIRouter(prefix="/v3/{project_id}/vault", tags=["tags"])


@router.get("/tags", response_model=ProjectTagsResponse)
def show_vault_project_tag(ctx: CallerDep, db: DbDep) -> ProjectTagsResponse:
    found = tags.project_tags(db, ctx)
    return ProjectTagsResponse(tags=[ProjectTag(key=key, values=values) for key, values in found])


@router.post(
    "/resource_instances/action",
    response_model=ResourceInstancesResponse | ResourceCountResponse,
)
def show_vault_resource_instances(
    body: ResourceInstancesBody, ctx: CallerDep, db: DbDep
) -> ResourceInstancesResponse | ResourceCountResponse:
    page = tags.query_vaults(db, ctx, body.query())
    if body.action == "count":
        return ResourceCountResponse(total_count=page.count)
    stats = backups.usage_by_resource(db, [vault.id for vault in page.items])
    resources = [
        TagResource(
            resource_id=vault.id,
            resource_name=vault.name,
            resource_detail=ResourceDetail(vault=vault_out(vault, stats)),
            tags=[TagOut(key=tag.key, value=tag.value) for tag in vault.tags],
            sys_tags=[],
        )
        for vault in page.items
    ]
    return ResourceInstancesResponse(resources=resources, total_count=page.count)


@router.get("/{vault_id}/tags", response_model=VaultTagsResponse)
def show_vault_tag(vault_id: str, ctx: CallerDep, db: DbDep) -> VaultTagsResponse:
    found = tags.list_for_vault(db, ctx, vault_id)
    return VaultTagsResponse(
        tags=[TagOut(key=tag.key, value=tag.value) for tag in found], sys_tags=[]
    )


@router.post("/{vault_id}/tags", status_code=204, response_class=Response)
def create_vault_tags(vault_id: str, body: TagCreateBody, ctx: WriterDep, db: DbDep) -> Response:
    tags.set_tag(db, ctx, vault_id, body.tag.key, body.tag.value)
    return Response(status_code=204)


@router.post("/{vault_id}/tags/action", status_code=204, response_class=Response)
def batch_create_and_delete_vault_tags(
    vault_id: str, body: BatchTagsBody, ctx: WriterDep, db: DbDep
) -> Response:
    if body.action == "create":
        tags.set_tags(db, ctx, vault_id, body.to_set())
    else:
        tags.delete_tags(db, ctx, vault_id, body.to_delete())
    return Response(status_code=204)


@router.delete("/{vault_id}/tags/{key}", status_code=204, response_class=Response)
def delete_vault_tag(vault_id: str, key: str, ctx: WriterDep, db: DbDep) -> Response:
    tags.delete_tag(db, ctx, vault_id, key.strip())
    return Response(status_code=204)
