"""Operation logs: the task view of backups, restores, replications and deletes.

State machine: waiting -> running -> success | failed (| skipped | timeout).
`extra_info.common.progress` runs 0 -> 100; `ended_at` is set when the task ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db.backups import OperationLog
from opencbr.db.base import new_uuid
from opencbr.db.paging import Page, PageRequest, fetch_page
from opencbr.db.session import Database
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
)
STATUSES = ("success", "skipped", "failed", "running", "timeout", "waiting")


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
    status: str = "running",
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
    status: str = "running",
    now: datetime | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The column values of a new task log (as `open_log` makes it), for `insert_logs`.
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
            operation_type: details,
            "resource": resource,
            "common": {"progress": 0, "request_id": request_id or ""},
        },
        **fields,
    }


def insert_logs(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert many `log_row`s (with the same keys) in one statement."""
    if rows:
        session.execute(
            insert(cast(Table, OperationLog.__table__)), rows
        )  # Core: no ORM bookkeeping


def set_progress(session: Session, log_id: str | None, progress: int) -> None:
    if log_id is None:
        return
    log = session.get(OperationLog, log_id)
    if log is not None and log.status in ("waiting", "running"):
        log.status = "running"
        log.progress = max(log.progress, min(progress, 99))


def close_log(
    session: Session,
    log_id: str | None,
    error: ErrorCode | None = None,
    message: str = "",
    extra: dict[str, Any] | None = None,
) -> None:
    """End the task: success (progress 100) or failed with a code and a reason."""
    if log_id is None:
        return
    log = session.get(OperationLog, log_id)
    if log is None:
        return
    log.ended_at = clock.now()
    if extra:
        log.extra_info = {**log.extra_info, **extra}
    if error is None:
        log.status, log.progress = "success", 100
    else:
        log.status, log.error_code, log.error_message = "failed", error.code, message[:1024]


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
