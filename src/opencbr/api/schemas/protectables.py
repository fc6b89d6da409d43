"""Protectable instances (cbr-api.md §2.8) and opencbr's registration extension."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from opencbr.api.schemas.common import QueryModel, RequestModel, ResponseModel
from opencbr.api.schemas.vaults import VaultOut, vault_out
from opencbr.db.vaults import Protectable, VaultResource
from opencbr.services.protectables import ProtectableFilter, ProtectableSpec, VolumeSpec

GB = 1024**3

ResourceName = Annotated[str, Field(min_length=1, max_length=255)]
PathText = Annotated[str, Field(min_length=1, max_length=4096)]


class InstanceQuery(QueryModel):
    """GET /protectables/{type}/instances."""

    name: str | None = None
    status: str | None = None
    id: list[str] | None = None
    server_id: str | None = None

    def filters(self) -> ProtectableFilter:
        return ProtectableFilter(
            name=self.name, ids=tuple(self.id or ()), status=self.status, server_id=self.server_id
        )


class VolumeIn(RequestModel):
    name: ResourceName
    path: PathText


class InstanceIn(RequestModel):
    name: ResourceName
    path: PathText | None = None
    volumes: Annotated[list[VolumeIn], Field(max_length=64)] = []

    def spec(self) -> ProtectableSpec:
        volumes = tuple(VolumeSpec(volume.name, volume.path) for volume in self.volumes)
        return ProtectableSpec(name=self.name, path=self.path, volumes=volumes)


class InstanceBody(RequestModel):
    instance: InstanceIn


class ProtectableResult(ResponseModel):
    result: bool
    code: str | None
    reason: str | None
    message: str | None
    vault: VaultOut | None  # the vault the resource is bound to, as GET /vaults/{id} shows it


class ProtectableOut(ResponseModel):
    id: str
    name: str
    type: str
    children: list[dict[str, Any]]
    protectable: ProtectableResult
    size: int
    status: str
    detail: dict[str, Any]


class InstanceResponse(ResponseModel):
    instance: ProtectableOut


class InstanceListResponse(ResponseModel):
    instances: list[ProtectableOut]


def _gb(size_bytes: int) -> int:
    return -(-size_bytes // GB)


def protectable_out(
    row: Protectable,
    binding: VaultResource | None,
    stats: dict[str, tuple[int, int]] | None = None,
) -> ProtectableOut:
    """`stats`: the bound vault's usage by resource (services.backups.usage_by_resource)."""
    children = [
        {
            "id": volume.id,
            "name": volume.name,
            "type": "OS::Cinder::Volume",
            "size": _gb(volume.size_bytes),
            "detail": {"path": volume.path, "kind": volume.kind},
            "children": [],
            "protectable": {"result": True},
        }
        for volume in row.volumes
    ]
    vault = vault_out(binding.vault, stats) if binding is not None else None
    result = ProtectableResult(
        result=binding is None,
        code=None if binding is None else "BackupService.6103",
        reason=None if binding is None else "The resource has been associated with a vault.",
        message=None,
        vault=vault,
    )
    return ProtectableOut(
        id=row.id,
        name=row.name,
        type=row.type,
        children=children,
        protectable=result,
        size=_gb(row.size_bytes),
        status="active",
        detail={"path": row.path} if row.path else {},
    )
