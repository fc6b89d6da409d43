"""Protectables: /v3/{project_id}/protectables/{type}/instances (list, show, and opencbr's
registration extension: POST to register a path, DELETE to unregister)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from opencbr.api.deps import CallerDep, DbDep, SettingsDep, WriterDep
from opencbr.api.schemas.common import page_request
from opencbr.api.schemas.protectables import (
    InstanceBody,
    InstanceListResponse,
    InstanceQuery,
    InstanceResponse,
    protectable_out,
)
from opencbr.db.paging import PageRequest
from opencbr.services import backups, protectables

router = APIRouter(
    prefix="/v3/{project_id}/protectables/{protectable_type}/instances", tags=["protectables"]
)


@router.post("", response_model=InstanceResponse)
def register_instance(
    protectable_type: str, body: InstanceBody, ctx: WriterDep, db: DbDep, settings: SettingsDep
) -> InstanceResponse:
    row = protectables.register(db, settings, ctx, protectable_type, body.instance.spec())
    return InstanceResponse(instance=protectable_out(row, None))


@router.get("", response_model=InstanceListResponse)
def list_instances(
    protectable_type: str,
    ctx: CallerDep,
    db: DbDep,
    query: Annotated[InstanceQuery, Query()],
    page: Annotated[PageRequest, Depends(page_request)],
) -> InstanceListResponse:
    result = protectables.list_with_bindings(db, ctx, protectable_type, query.filters(), page)
    stats = backups.usage_by_resource(db, [bound.vault_id for _, bound in result if bound])
    return InstanceListResponse(
        instances=[protectable_out(row, bound, stats) for row, bound in result]
    )


@router.get("/{instance_id}", response_model=InstanceResponse)
def show_instance(
    protectable_type: str, instance_id: str, ctx: CallerDep, db: DbDep
) -> InstanceResponse:
    row, bound = protectables.get_with_binding(db, ctx, protectable_type, instance_id)
    stats = backups.usage_by_resource(db, [bound.vault_id] if bound else [])
    return InstanceResponse(instance=protectable_out(row, bound, stats))


@router.delete("/{instance_id}", status_code=204, response_class=Response)
def unregister_instance(
    protectable_type: str, instance_id: str, ctx: WriterDep, db: DbDep
) -> Response:
    protectables.unregister(db, ctx, protectable_type, instance_id)
    return Response(status_code=204)
