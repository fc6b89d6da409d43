"""Operation logs: the task view of backups, restores, replications and deletes.

State machine (db.status.OperationStatus): a log is opened `running` (or `waiting` for
work queued behind other work); `start_operation` (the first progress report) makes it
`running`; `complete_operation` ends it `success`, `fail_operation` `failed` with a code
and a reason. `extra_info.common.progress` runs 0 -> 100; `ended_at` is set when the task
ends. Work that moves bytes (backups, restores, replications) also reports them, as
opencbr's extension fields `extra_info.common.bytes_done` and `bytes_total` (written with
the progress at every lease heartbeat, and final when the work succeeds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db.backups import OperationLog
from opencbr.db.base import new_uuid
from opencbr.db.paging import Page, PageRequest, fetch_page
from opencbr.db.session import Database
from opencbr.db.status import LIVE_OPERATION, OperationStatus
from opencbr.errors import INVALID_PARAMETER, OPERATION_LOG_NOT_FOUND, CbrError, ErrorCode
from opencbr.services.identity import AuthContext

OPERATION_TYPES = (
    "backup",
    "replication",
    "copy",
    "restore",
    "delete",
    "sync",
    "vault_delete",
    "remove_resource",
    # Not in CBR's list of types, though its logs carry an `update_expiration_time` block:
    # what update-backup-expiration-time writes.
    "update_expiration_time",
    # opencbr's own: POST /vaults/{vault_id}/verify (services/verify.py).
    "verify",
)
# The `extra_info` block of a type, where CBR names it otherwise than the type.
BLOCKS = {"remove_resource": "remove_resources"}
# The list filter's values, in the order its error message names them.
STATUSES = (
    OperationStatus.SUCCESS,
    OperationStatus.SKIPPED,
    OperationStatus.FAILED,
    OperationStatus.RUNNING,
    OperationStatus.TIMEOUT,
    OperationStatus.WAITING,
)


@dataclass(frozen=True)
class Subject:
    """What a task acts on: a resource, the vault it is in, and that vault's provider."""

    resource_id: str
    resource_type: str
    resource_name: str
    vault_id: str | None
    vault_name: str | None
    provider_id: str | None


def open_log(
    session: Session,
    *,
    project_id: str,
    operation_type: str,
    subject: Subject,
    details: dict[str, Any],
    request_id: str | None,
    status: OperationStatus = OperationStatus.RUNNING,
    **fields: Any,
) -> OperationLog:
    """A new task log; `details` becomes the `extra_info` block named after the type."""
    log = OperationLog(
        **log_row(
            project_id=project_id,
            operation_type=operation_type,
            subject=subject,
            details=details,
            request_id=request_id,
            status=status,
            **fields,
        )
    )
    session.add(log)
    return log


def log_row(
    *,
    project_id: str,
    operation_type: str,
    subject: Subject,
    details: dict[str, Any],
    request_id: str | None,
    status: OperationStatus = OperationStatus.RUNNING,
    now: datetime | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The column values of a new task log (as `open_log` makes it), for a bulk insert.
    A new id unless `fields` holds one."""
    now = now or clock.now()
    log_id = fields.pop("id", None) or new_uuid()
    resource = {
        "id": subject.resource_id,
        "type": subject.resource_type,
        "name": subject.resource_name,
    }
    return {
        "id": log_id,
        "project_id": project_id,
        "operation_type": operation_type,
        "status": status,
        "created_at": now,
        "started_at": now,
        "updated_at": now,
        "request_id": request_id,
        "provider_id": subject.provider_id,
        "vault_id": subject.vault_id,
        "vault_name": subject.vault_name,
        "resource_id": subject.resource_id,
        "resource_name": subject.resource_name,
        "resource_type": subject.resource_type,
        "extra_info": {
            BLOCKS.get(operation_type, operation_type): details,
            "resource": resource,
            "common": {"progress": 0, "request_id": request_id or ""},
        },
        "plan": [],
        **fields,
    }


def set_progress(
    session: Session, log_id: str | None, progress: int, moved: Bytes | None = None
) -> None:
    """Report progress (below 100: only the end reaches it) of a task not yet ended, with
    the bytes it moved when it knows them."""
    log = session.get(OperationLog, log_id) if log_id else None
    if log is not None and log.status in LIVE_OPERATION:
        start_operation(log)
        log.progress = max(log.progress, min(progress, 99))
        if moved is not None:
            _write_bytes(log, moved)


@dataclass(frozen=True)
class Bytes:
    """Bytes a task has moved (read, written, copied) of the bytes it will move."""

    done: int
    total: int


def set_bytes(session: Session, log_id: str | None, moved: Bytes) -> None:
    """The bytes a task moved, whatever its status (its final count as it ends)."""
    log = session.get(OperationLog, log_id) if log_id else None
    if log is not None:
        _write_bytes(log, moved)


def _write_bytes(log: OperationLog, moved: Bytes) -> None:
    # A new dict: the JSON column sees an assignment, not an in-place change.
    common = {**log.extra_info.get("common", {}), "bytes_done": moved.done}
    common["bytes_total"] = max(moved.total, moved.done)
    log.extra_info = {**log.extra_info, "common": common}


def start_operation(log: OperationLog) -> None:
    """waiting -> running (idempotent: a running task reports progress through here)."""
    log.status = OperationStatus.RUNNING


def pause_operation(session: Session, log_id: str | None) -> None:
    """running -> waiting: the task handed its work back to resume it later (a closed
    replication window), keeping the progress it reached."""
    log = session.get(OperationLog, log_id) if log_id else None
    if log is not None and log.status in LIVE_OPERATION:
        log.status = OperationStatus.WAITING


def complete_operation(
    session: Session, log_id: str | None, extra: dict[str, Any] | None = None
) -> None:
    """End the task `success` at progress 100."""
    log = _ending(session, log_id, extra)
    if log is not None:
        log.status, log.progress = OperationStatus.SUCCESS, 100


def fail_operation(
    session: Session,
    log_id: str | None,
    error: ErrorCode,
    message: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """End the task `failed`, with the error's code and the reason."""
    log = _ending(session, log_id, extra)
    if log is not None:
        log.status, log.error_code = OperationStatus.FAILED, error.code
        log.error_message = message[:1024]


def close_log(
    session: Session,
    log_id: str | None,
    error: ErrorCode | None = None,
    message: str = "",
    extra: dict[str, Any] | None = None,
) -> None:
    """End the task with an outcome held as a value: `complete_operation` when `error` is
    None, else `fail_operation`."""
    if error is None:
        complete_operation(session, log_id, extra)
    else:
        fail_operation(session, log_id, error, message, extra)


def _ending(
    session: Session, log_id: str | None, extra: dict[str, Any] | None
) -> OperationLog | None:
    """The log of a task that ends now (`ended_at` set, `extra` merged); None if gone."""
    log = session.get(OperationLog, log_id) if log_id else None
    if log is not None:
        log.ended_at = clock.now()
        if extra:
            log.extra_info = {**log.extra_info, **extra}
    return log


def get(db: Database, ctx: AuthContext, log_id: str) -> OperationLog:
    with db.reading() as session:
        log = session.get(OperationLog, log_id)
        if log is None or log.project_id != ctx.project_id:
            raise CbrError(OPERATION_LOG_NOT_FOUND, f"The operation log {log_id} does not exist.")
        return log


@dataclass(frozen=True)
class LogFilter:
    operation_type: str | None = None
    status: str | None = None
    vault_id: str | None = None
    vault_name: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    provider_id: str | None = None
    start_time: Any = None
    end_time: Any = None


def list_page(
    db: Database, ctx: AuthContext, filters: LogFilter, page: PageRequest
) -> Page[OperationLog]:
    if filters.operation_type is not None and filters.operation_type not in OPERATION_TYPES:
        raise CbrError(
            INVALID_PARAMETER, f"operation_type must be one of {', '.join(OPERATION_TYPES)}"
        )
    if filters.status is not None and filters.status not in STATUSES:
        raise CbrError(INVALID_PARAMETER, f"status must be one of {', '.join(STATUSES)}")
    query = select(OperationLog).where(OperationLog.project_id == ctx.project_id)
    for column, value in (
        (OperationLog.operation_type, filters.operation_type),
        (OperationLog.status, filters.status),
        (OperationLog.vault_id, filters.vault_id),
        (OperationLog.vault_name, filters.vault_name),
        (OperationLog.resource_id, filters.resource_id),
        (OperationLog.resource_name, filters.resource_name),
        (OperationLog.provider_id, filters.provider_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.start_time is not None:
        query = query.where(OperationLog.created_at >= filters.start_time)
    if filters.end_time is not None:
        query = query.where(OperationLog.created_at <= filters.end_time)
    with db.reading() as session:
        return fetch_page(
            session,
            query,
            OperationLog.created_at,
            OperationLog.id,
            page,
            OperationLog.project_id == ctx.project_id,
        )
