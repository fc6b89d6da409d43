"""Checkpoint, backup, restore and operation-log wire models (cbr-api.md §2.2, §2.3, §2.6)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from opencbr.api.schemas.common import (
    Description,
    Identifier,
    Name,
    QueryModel,
    RequestModel,
    ResponseModel,
    query_time,
    wire_time,
)
from opencbr.db.backups import Backup, OperationLog, ReplicationRecord
from opencbr.db.status import BackupStatus
from opencbr.services.backups import BackupFilter
from opencbr.services.checkpoints import CheckpointParams, CheckpointView
from opencbr.services.operation_logs import LogFilter
from opencbr.services.restores import RestoreRequest

GB = 1024**3


class ResourceDetail(RequestModel):
    id: Identifier
    type: str
    name: str | None = None


class CheckpointParam(RequestModel):
    auto_trigger: bool = False
    name: Name | None = None
    description: Description | None = None
    incremental: bool = True
    resources: Annotated[list[Identifier], Field(max_length=256)] | None = None
    # otcextensions types this as one object; the reference as a list: accept both.
    resource_details: list[ResourceDetail] | ResourceDetail | None = None
    policy_id: str | None = None
    retention_duration_days: Annotated[int, Field(ge=-1, le=36500)] = -1

    @field_validator("retention_duration_days")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("retention_duration_days must be -1 or 1..36500")
        return value

    @model_validator(mode="after")
    def _retention_for_manual_backups_only(self) -> CheckpointParam:
        # CBR: a policy's run keeps its backups as the policy says; only a manual backup
        # names its own retention.
        if self.auto_trigger and "retention_duration_days" in self.model_fields_set:
            raise ValueError("retention_duration_days is not allowed with auto_trigger true")
        return self

    def params(self) -> CheckpointParams:
        details = self.resource_details
        detail_list = details if isinstance(details, list) else ([details] if details else [])
        ids = tuple(self.resources or ()) + tuple(d.id for d in detail_list)
        return CheckpointParams(
            name=self.name,
            description=self.description,
            incremental=self.incremental,
            resources=ids,
            auto_trigger=self.auto_trigger,
            policy_id=self.policy_id,
            retention_duration_days=self.retention_duration_days,
        )


class VaultBackup(RequestModel):
    vault_id: Identifier
    parameters: CheckpointParam | None = None


class CheckpointBody(RequestModel):
    checkpoint: VaultBackup


class CheckpointResource(ResponseModel):
    id: str
    name: str
    type: str
    protect_status: str | None
    resource_size: str | None
    backup_size: str | None
    backup_count: str | None
    extra_info: str | None


class CheckpointVault(ResponseModel):
    id: str
    name: str
    resources: list[CheckpointResource]
    skipped_resources: list[dict[str, Any]]


class CheckpointExtra(ResponseModel):
    name: str | None
    description: str | None
    retention_duration: int


class CheckpointOut(ResponseModel):
    id: str
    project_id: str
    status: str
    created_at: str
    vault: CheckpointVault
    extra_info: CheckpointExtra


class CheckpointResponse(ResponseModel):
    checkpoint: CheckpointOut


def checkpoint_out(view: CheckpointView, stats: dict[str, tuple[int, int]]) -> CheckpointOut:
    """`stats`: resource id -> (backup count, backup size in MB) of the vault's kept backups
    (services.backups.usage_by_resource), as the vault's own resources report them."""
    checkpoint = view.checkpoint
    resources = []
    for b in view.resources:
        count, size = stats.get(b.resource_id, (0, 0))
        resources.append(
            CheckpointResource(
                id=b.resource_id,
                name=b.protectable.name,
                type=b.protectable.type,
                protect_status=b.protect_status,
                resource_size=str(-(-b.protectable.size_bytes // GB)),
                backup_size=str(size),
                backup_count=str(count),
                extra_info=None,
            )
        )
    return CheckpointOut(
        id=checkpoint.id,
        project_id=checkpoint.project_id,
        status=checkpoint.status,
        created_at=wire_time(checkpoint.created_at) or "",
        vault=CheckpointVault(
            id=view.vault.id,
            name=view.vault.name,
            resources=resources,
            skipped_resources=checkpoint.skipped_resources,
        ),
        extra_info=CheckpointExtra(
            name=checkpoint.name,
            description=checkpoint.description,
            retention_duration=checkpoint.retention_duration,
        ),
    )


class BackupQuery(QueryModel):
    """GET /backups: every filter of the reference (times as sent; `query_time` parses)."""

    checkpoint_id: str | None = None
    vault_id: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    resource_type: str | None = None
    resource_az: str | None = None
    name: str | None = None
    image_type: str | None = None
    status: list[str] | None = None
    parent_id: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    sort: Annotated[str | None, Field(max_length=255)] = None
    show_replication: bool = False
    incremental: bool | None = None
    own_type: Literal["private", "shared", "all_granted"] | None = None
    enterprise_project_id: str | None = None
    used_percent: Annotated[int, Field(ge=1, le=100)] | None = None
    member_status: Literal["pending", "accepted", "rejected"] | None = None
    # Accepted and ignored: dedicated cloud.
    dec: bool | None = None

    def filters(self) -> BackupFilter:
        return BackupFilter(
            checkpoint_id=self.checkpoint_id,
            vault_id=self.vault_id,
            resource_id=self.resource_id,
            resource_name=self.resource_name,
            resource_type=self.resource_type,
            resource_az=self.resource_az,
            name=self.name,
            image_type=self.image_type,
            statuses=tuple(self.status or ()),
            parent_id=self.parent_id,
            start_time=query_time(self.start_time, "start_time"),
            end_time=query_time(self.end_time, "end_time"),
            sort=self.sort,
            incremental=self.incremental,
            own_type=self.own_type,
            member_status=self.member_status,
            enterprise_project_id=self.enterprise_project_id,
            used_percent=self.used_percent,
        )


class BackupUpdate(RequestModel):
    name: Name | None = None
    description: Description | None = None


class BackupUpdateBody(RequestModel):
    backup: BackupUpdate


class RestoreMapping(RequestModel):
    backup_id: Identifier
    volume_id: Identifier


class RestoreDetails(RequestModel):
    destination_path: Annotated[str, Field(min_length=1, max_length=255)]


class BackupRestore(RequestModel):
    server_id: Identifier | None = None
    mappings: Annotated[list[RestoreMapping], Field(max_length=64)] | None = None
    volume_id: Identifier | None = None
    power_on: bool = True
    resource_id: Identifier | None = None
    details: RestoreDetails | None = None

    def request(self) -> RestoreRequest:
        return RestoreRequest(
            server_id=self.server_id,
            volume_id=self.volume_id,
            resource_id=self.resource_id,
            mappings=tuple((m.backup_id, m.volume_id) for m in self.mappings or ()),
            destination_path=self.details.destination_path if self.details else None,
        )


class RestoreBody(RequestModel):
    restore: BackupRestore


class ReplicationRecordExtra(ResponseModel):
    progress: int
    fail_code: str
    fail_reason: str
    auto_trigger: bool
    destination_vault_id: str
    bytes_total: int
    bytes_copied: int
    chunks_total: int
    chunks_copied: int
    chunks_present: int
    # opencbr extension: the content root the destination recomputed before publishing.
    verified_root: str | None


class ReplicationRecordOut(ResponseModel):
    id: str
    status: str
    created_at: str | None
    source_backup_id: str
    source_checkpoint_id: str
    source_project_id: str
    source_region: str
    destination_backup_id: str | None
    destination_checkpoint_id: str | None
    destination_project_id: str
    destination_region: str
    destination_vault_id: str
    vault_id: str
    extra_info: ReplicationRecordExtra


def record_out(record: ReplicationRecord) -> ReplicationRecordOut:
    return ReplicationRecordOut(
        id=record.id,
        status=record.status,
        created_at=wire_time(record.created_at),
        source_backup_id=record.source_backup_id,
        source_checkpoint_id=record.source_checkpoint_id,
        source_project_id=record.source_project_id,
        source_region=record.source_region,
        destination_backup_id=record.destination_backup_id,
        destination_checkpoint_id=record.destination_checkpoint_id,
        destination_project_id=record.destination_project_id,
        destination_region=record.destination_region,
        destination_vault_id=record.destination_vault_id,
        vault_id=record.source_vault_id,
        extra_info=ReplicationRecordExtra(
            progress=record.progress,
            fail_code=record.fail_code,
            fail_reason=record.fail_reason,
            auto_trigger=record.auto_trigger,
            destination_vault_id=record.destination_vault_id,
            bytes_total=record.bytes_total,
            bytes_copied=record.bytes_copied,
            chunks_total=record.chunks_total,
            chunks_copied=record.chunks_copied,
            chunks_present=record.chunks_present,
            verified_root=record.verified_root,
        ),
    )


class BackupExtendInfo(ResponseModel):
    auto_trigger: bool
    bootable: bool
    snapshot_id: str | None
    support_lld: bool
    supported_restore_mode: str
    os_images_data: list[dict[str, str]]
    contain_system_disk: bool
    encrypted: bool
    system_disk: bool
    is_multi_az: bool
    # otcextensions reads `incremental` here (the Huawei SDK at the top level: both).
    incremental: bool


class BackupOut(ResponseModel):
    id: str
    name: str
    description: str | None
    checkpoint_id: str
    vault_id: str
    project_id: str
    provider_id: str
    image_type: str
    status: str
    resource_id: str
    resource_name: str
    resource_type: str
    resource_size: int
    resource_az: str | None
    parent_id: str | None
    protected_at: str | None
    created_at: str | None
    updated_at: str | None
    expired_at: str | None
    extend_info: BackupExtendInfo
    enterprise_project_id: str
    scheduled_operation_id: str | None
    children: list[BackupOut]
    incremental: bool
    version: int
    replication_records: list[ReplicationRecordOut] | None = None
    # opencbr's own fields: logical bytes, stored bytes it added, why it failed, how many
    # of its chunks the vault knows to be damaged (a restore fails on them until a later
    # backup or replication stores them again).
    size_bytes: int
    stored_bytes: int
    fail_reason: str | None
    source_backup_id: str | None
    # What the backup skipped or saw change while reading (FIFOs, sockets, devices,
    # unreadable folders, files changed while read); capped, the last entry counts the rest.
    warnings: list[str]
    damaged_chunks: int
    # BLAKE3 over the chunks it is made of (hex; a replica's equals its source's); null
    # for backups committed before content roots were recorded, and while in progress.
    content_root: str | None


class BackupResponse(ResponseModel):
    backup: BackupOut


class BackupListResponse(ResponseModel):
    backups: list[BackupOut]
    count: int
    limit: int
    offset: int


def backup_out(
    backup: Backup,
    records: list[ReplicationRecord] | None = None,
    *,
    nested: bool = True,
    zone: str | None = None,
) -> BackupOut:
    """The wire form; `nested` includes the volume children (which have none themselves).

    `zone` is the resource's availability zone: each region is one zone, named after it
    (the caller's region: a backup lies in its project's region)."""
    # Every available whole-resource backup restores (trees, disks, servers); a volume's
    # backup restores with its server's (`mappings`).
    restorable = backup.status == BackupStatus.AVAILABLE and backup.parent_id is None
    damaged = _damaged_chunks(backup) if nested else backup.damaged_chunk_count()
    return BackupOut(
        id=backup.id,
        name=backup.name,
        description=backup.description,
        checkpoint_id=backup.checkpoint_id,
        vault_id=backup.vault_id,
        project_id=backup.project_id,
        provider_id=backup.provider_id,
        image_type=backup.image_type,
        status=backup.status,
        resource_id=backup.resource_id,
        resource_name=backup.resource_name,
        resource_type=backup.resource_type,
        resource_size=backup.resource_size_gb,
        resource_az=zone,
        parent_id=backup.parent_id,
        protected_at=wire_time(backup.protected_at),
        created_at=wire_time(backup.created_at),
        updated_at=wire_time(backup.updated_at),
        expired_at=wire_time(backup.expired_at),
        extend_info=BackupExtendInfo(
            auto_trigger=backup.auto_trigger,
            bootable=False,
            snapshot_id=None,
            support_lld=False,
            supported_restore_mode="backup" if restorable else "na",
            os_images_data=[],
            contain_system_disk=False,
            encrypted=backup.encrypted,
            system_disk=False,
            is_multi_az=False,
            incremental=backup.incremental,
        ),
        enterprise_project_id="0",
        scheduled_operation_id=None,
        children=(
            [backup_out(child, nested=False, zone=zone) for child in backup.children]
            if nested
            else []
        ),
        incremental=backup.incremental,
        version=3,
        replication_records=[record_out(r) for r in records] if records is not None else None,
        size_bytes=backup.bytes_total,
        stored_bytes=backup.bytes_new,
        fail_reason=backup.fail_reason or _damage_reason(damaged),
        source_backup_id=backup.source_backup_id,
        warnings=list(backup.warnings),
        damaged_chunks=damaged,
        content_root=backup.content_root,
    )


def _damaged_chunks(backup: Backup) -> int:
    # A server backup's data lives in its volumes (loaded with it).
    return backup.damaged_chunk_count() + sum(c.damaged_chunk_count() for c in backup.children)


def _damage_reason(damaged: int) -> str | None:
    if not damaged:
        return None
    return (
        f"{damaged} chunk(s) of this backup are damaged in the vault: restoring it fails "
        "until a later backup or replication of the same data stores them again."
    )


class OpErrorInfo(ResponseModel):
    code: str
    message: str


class OperationLogOut(ResponseModel):
    id: str
    project_id: str
    operation_type: str
    status: str
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    updated_at: str | None
    error_info: OpErrorInfo
    extra_info: dict[str, Any]
    checkpoint_id: str | None
    policy_id: str | None
    provider_id: str | None
    vault_id: str | None
    vault_name: str | None


class OperationLogQuery(QueryModel):
    """GET /operation-logs (times as sent; `query_time` parses them)."""

    operation_type: str | None = None
    status: str | None = None
    vault_id: str | None = None
    vault_name: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    provider_id: str | None = None
    start_time: str | None = None
    end_time: str | None = None

    def filters(self) -> LogFilter:
        return LogFilter(
            operation_type=self.operation_type,
            status=self.status,
            vault_id=self.vault_id,
            vault_name=self.vault_name,
            resource_id=self.resource_id,
            resource_name=self.resource_name,
            provider_id=self.provider_id,
            start_time=query_time(self.start_time, "start_time"),
            end_time=query_time(self.end_time, "end_time"),
        )


class OperationLogResponse(ResponseModel):
    operation_log: OperationLogOut


class OperationLogListResponse(ResponseModel):
    operation_logs: list[OperationLogOut]
    count: int
    limit: int
    offset: int


def operation_log_out(entry: OperationLog) -> OperationLogOut:
    extra = dict(entry.extra_info)
    common = dict(extra.get("common", {}))
    common["progress"] = entry.progress
    common["task_id"] = entry.id  # the task is the operation log (its id is CBR's task id)
    extra["common"] = common
    return OperationLogOut(
        id=entry.id,
        project_id=entry.project_id,
        operation_type=entry.operation_type,
        status=entry.status,
        created_at=wire_time(entry.created_at),
        started_at=wire_time(entry.started_at),
        ended_at=wire_time(entry.ended_at),
        updated_at=wire_time(entry.updated_at),
        error_info=OpErrorInfo(code=entry.error_code, message=entry.error_message),
        extra_info=extra,
        checkpoint_id=entry.checkpoint_id,
        policy_id=entry.policy_id,
        provider_id=entry.provider_id,
        vault_id=entry.vault_id,
        vault_name=entry.vault_name,
    )


class MetadataResponse(ResponseModel):
    """GET /backups/{id}/metadata. CBR answers JSON documents as strings (a Nova server, its
    Cinder volumes); opencbr fills what it knows and leaves the rest null."""

    backup_id: str
    backups: str
    server: str
    volumes: list[str]
    flavor: str | None
    floatingips: list[str] | None
    interface: str | None
    ports: list[str] | None
    workspace: str | None


def metadata_out(
    backup: Backup,
    records: list[ReplicationRecord],
    zone: str | None = None,
    *,
    with_paths: bool = True,
) -> MetadataResponse:
    """The server backup's metadata; `with_paths=False` leaves out each volume's path (for
    a project the backup is shared with: the paths are the owner's)."""
    volumes = [
        {
            "volume": {
                "id": volume.resource_id,
                "name": volume.resource_name,
                "size": volume.resource_size_gb,
                "kind": volume.kind,
                **({"path": volume.volume_path} if with_paths else {}),
                "backup_id": volume.id,
                "size_bytes": volume.bytes_total,
            }
        }
        for volume in backup.children
    ]
    server = {
        "id": backup.resource_id,
        "name": backup.resource_name,
        "size": backup.resource_size_gb,
        "volumes_attached": [{"id": volume.resource_id} for volume in backup.children],
    }
    return MetadataResponse(
        backup_id=backup.id,
        backups=json.dumps(backup_out(backup, records, zone=zone).model_dump()),
        server=json.dumps({"server": server}),
        volumes=[json.dumps(volume) for volume in volumes],
        flavor=None,
        floatingips=None,
        interface=None,
        ports=None,
        workspace=None,
    )
