"""Replicate request and response models (seed-CopyCheckpoint.rst, cbr-api.md §2.4)."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from opencbr.api.schemas.common import Description, Identifier, Name, RequestModel, ResponseModel
from opencbr.services.replication import Destination

RegionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{0,255}$")]


class CheckpointReplicateParam(RequestModel):
    vault_id: Identifier
    destination_project_id: Identifier
    destination_region: RegionName
    destination_vault_id: Identifier
    auto_trigger: bool = False
    enable_acceleration: bool = False
    cross_account_urn: str | None = None

    def destination(self) -> Destination:
        return Destination(
            self.destination_region,
            self.destination_project_id,
            self.destination_vault_id,
            self.auto_trigger,
            self.cross_account_urn,
        )


class CheckpointReplicateBody(RequestModel):
    replicate: CheckpointReplicateParam


class BackupReplicateParam(RequestModel):
    destination_project_id: Identifier
    destination_region: RegionName
    destination_vault_id: Identifier
    name: Name | None = None
    description: Description | None = None
    enable_acceleration: bool = False
    cross_account_urn: str | None = None

    def destination(self) -> Destination:
        return Destination(
            self.destination_region,
            self.destination_project_id,
            self.destination_vault_id,
            False,
            self.cross_account_urn,
        )


class BackupReplicateBody(RequestModel):
    replicate: BackupReplicateParam


class ReplicatedBackup(ResponseModel):
    backup_id: str
    replication_record_id: str


class CheckpointReplication(ResponseModel):
    backups: list[ReplicatedBackup]
    destination_project_id: str
    destination_region: str
    destination_vault_id: str
    project_id: str
    provider_id: str
    source_region: str
    vault_id: str


class CheckpointReplicateResponse(ResponseModel):
    replication: CheckpointReplication


class BackupReplication(ResponseModel):
    backup_id: str
    replication_record_id: str
    destination_project_id: str
    destination_region: str
    destination_vault_id: str
    project_id: str
    provider_id: str
    source_region: str


class BackupReplicateResponse(ResponseModel):
    replication: BackupReplication
