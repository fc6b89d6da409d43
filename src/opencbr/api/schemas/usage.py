"""Wire models of usage and project-wide vault calls: storage_usage, vaults/summary,
vaults/batch-update, vaults/external (cbr-sdk-models.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from opencbr.api.schemas.common import RequestModel, ResponseModel
from opencbr.api.schemas.vaults import VaultOut
from opencbr.services.usage import ResourceUsage, UsagePage


class SummaryResponse(ResponseModel):
    size: int  # GB, the capacity of every vault of the project
    used_size: int  # GB, what they store (rounded up)


class StorageUsageOut(ResponseModel):
    resource_id: str
    resource_name: str
    resource_type: str
    backup_count: int
    backup_size: int  # MB, as a vault resource's backup_size
    backup_size_multiaz: int  # opencbr has no multi-AZ backups: always 0


class StorageUsageResponse(ResponseModel):
    storage_usage: list[StorageUsageOut]
    resource_count: int


def usage_out(item: ResourceUsage) -> StorageUsageOut:
    return StorageUsageOut(
        resource_id=item.resource_id,
        resource_name=item.resource_name,
        resource_type=item.resource_type,
        backup_count=item.backup_count,
        backup_size=item.backup_size_mb,
        backup_size_multiaz=0,
    )


def storage_usage_out(page: UsagePage) -> StorageUsageResponse:
    return StorageUsageResponse(
        storage_usage=[usage_out(item) for item in page.items], resource_count=page.count
    )


class VaultBatchUpdate(RequestModel):
    smn_notify: bool | None = None
    threshold: Annotated[int, Field(ge=1, le=100)] | None = None


class BatchUpdateBody(RequestModel):
    vault: VaultBatchUpdate


class BatchUpdateResponse(ResponseModel):
    updated_vaults_id: list[str]


class ExternalVaultListResponse(ResponseModel):
    vaults: list[VaultOut]
    count: int
    limit: int
    offset: int
