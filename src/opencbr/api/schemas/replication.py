"""Replicate request and response models (seed-CopyCheckpoint.rst, cbr-api.md §2.4)."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from opencbr.api.schemas.common import Description, Identifier, Name, RequestModel, ResponseModel
from opencbr.services.replication import Destination
from opencbr.services.replication_plan import DryRun

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


# --- ?dry_run=true: what the call would copy (an opencbr extension) --------------------------


class DryRunBackup(ResponseModel):
    backup_id: str
    missing_chunks: int
    missing_bytes: int
    # chunks of the backup its own vault knows to be damaged: its record would fail at once
    damaged_chunks: int


class ReplicationDryRun(ResponseModel):
    """What a replicate call would copy, nothing created: per backup in the order its
    records would run, the chunks and stored bytes the destination lacks (a chunk several
    backups share counted once, with the oldest), their totals, and the duration at the
    rate measured between the two regions (null: nothing measured yet). `damaged_chunks`
    counts the source chunks known to be damaged: a backup with any would fail at once."""

    dry_run: bool
    vault_id: str
    source_region: str
    destination_project_id: str
    destination_region: str
    destination_vault_id: str
    backups: list[DryRunBackup]
    missing_chunks: int
    missing_bytes: int
    damaged_chunks: int
    destination_free_bytes: int
    fits: bool
    measured_bytes_per_second: float | None
    estimated_seconds: float | None


class ReplicationDryRunResponse(ResponseModel):
    replication: ReplicationDryRun


def dry_run_out(plan: DryRun) -> ReplicationDryRunResponse:
    total = plan.total
    return ReplicationDryRunResponse(
        replication=ReplicationDryRun(
            dry_run=True,
            vault_id=plan.source.id,
            source_region=plan.source.region,
            destination_project_id=plan.target.project_id,
            destination_region=plan.target.region,
            destination_vault_id=plan.target.id,
            backups=[
                DryRunBackup(
                    backup_id=backup_id,
                    missing_chunks=gap.chunks,
                    missing_bytes=gap.bytes,
                    damaged_chunks=plan.damaged.get(backup_id, 0),
                )
                for backup_id, gap in plan.backups
            ],
            missing_chunks=total.chunks,
            missing_bytes=total.bytes,
            damaged_chunks=sum(plan.damaged.values()),
            destination_free_bytes=plan.free_bytes,
            fits=total.bytes <= plan.free_bytes,
            measured_bytes_per_second=plan.rate,
            estimated_seconds=plan.estimated_seconds,
        )
    )
