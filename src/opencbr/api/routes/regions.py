"""Replication capabilities: /v3/{project_id}/replication-capabilities (cbr-api.md §2.7)."""

from __future__ import annotations

from fastapi import APIRouter

from opencbr.api.deps import CallerDep, SettingsDep
from opencbr.api.schemas.common import ResponseModel
from opencbr.services.regions import replication_capabilities

router = APIRouter(prefix="/v3/{project_id}", tags=["replication"])


class RegionOut(ResponseModel):
    name: str
    replication_destinations: list[str]


class CapabilitiesResponse(ResponseModel):
    regions: list[RegionOut]


@router.get("/replication-capabilities", response_model=CapabilitiesResponse)
def show_replication_capabilities(ctx: CallerDep, settings: SettingsDep) -> CapabilitiesResponse:
    regions = replication_capabilities(settings, ctx.region)
    return CapabilitiesResponse(
        regions=[
            RegionOut(name=r.name, replication_destinations=r.replication_destinations)
            for r in regions
        ]
    )
