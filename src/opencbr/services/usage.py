"""What a project's backups occupy: per resource (storage_usage) and over all its vaults
(vaults/summary). Both read the data opencbr keeps; nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from opencbr.db.backups import Backup
from opencbr.db.session import Database
from opencbr.db.status import KEPT_BACKUP
from opencbr.db.vaults import Vault
from opencbr.services.identity import AuthContext

MB = 1024**2
GB = 1024**3


def _ceil_div(value: int, unit: int) -> int:
    return -(-value // unit)


@dataclass(frozen=True)
class Summary:
    size_gb: int  # capacity of every vault of the project
    used_gb: int  # bytes the vaults store, rounded up to whole GB


def summary(db: Database, ctx: AuthContext) -> Summary:
    with db.reading() as session:
        size, used = session.execute(
            select(
                func.coalesce(func.sum(Vault.size_gb), 0),
                func.coalesce(func.sum(Vault.used_bytes), 0),
            ).where(Vault.project_id == ctx.project_id)
        ).one()
    return Summary(size_gb=int(size), used_gb=_ceil_div(int(used), GB))


@dataclass(frozen=True)
class UsageFilter:
    resource_id: str | None = None
    resource_type: str | None = None


@dataclass(frozen=True)
class ResourceUsage:
    resource_id: str
    resource_name: str
    resource_type: str
    backup_count: int
    backup_size_mb: int  # bytes the backups added to their vaults, rounded up to whole MB


@dataclass(frozen=True)
class UsagePage:
    items: list[ResourceUsage]
    count: int  # resources matching the filter, on every page


def _kept_backups(ctx: AuthContext, filters: UsageFilter) -> Select[str, str, int, int]:
    """One row per backed-up resource: id, type, backup count, bytes added."""
    query = select(
        Backup.resource_id,
        func.max(Backup.resource_type),
        func.count(Backup.id),
        func.coalesce(func.sum(Backup.bytes_new), 0),
    ).where(
        Backup.project_id == ctx.project_id,
        Backup.parent_id.is_(None),  # a server's volumes are counted by their server
        Backup.status.in_(KEPT_BACKUP),
    )
    if filters.resource_id is not None:
        query = query.where(Backup.resource_id == filters.resource_id)
    if filters.resource_type is not None:
        query = query.where(Backup.resource_type == filters.resource_type)
    return query.group_by(Backup.resource_id)


def storage_usage(
    db: Database, ctx: AuthContext, filters: UsageFilter, limit: int, offset: int
) -> UsagePage:
    """Backups and their size per resource of the project that has kept backups, ordered by
    resource id; `count` is the number of such resources."""
    grouped = _kept_backups(ctx, filters)
    with db.reading() as session:
        count = session.scalar(select(func.count()).select_from(grouped.subquery())) or 0
        rows = session.execute(
            grouped.order_by(Backup.resource_id).limit(limit).offset(offset)
        ).all()
        names = _latest_names(session, ctx, [row[0] for row in rows])
    items = [
        ResourceUsage(
            resource_id=resource_id,
            resource_name=names.get(resource_id, ""),
            resource_type=resource_type,
            backup_count=int(backups),
            backup_size_mb=_ceil_div(int(added), MB),
        )
        for resource_id, resource_type, backups, added in rows
    ]
    return UsagePage(items, count)


def _latest_names(session: Session, ctx: AuthContext, resource_ids: list[str]) -> dict[str, str]:
    """The resource name each resource's newest top-level backup recorded."""
    if not resource_ids:
        return {}
    newest_first = (Backup.created_at.desc(), Backup.id.desc())
    ranked = (
        select(
            Backup.resource_id,
            Backup.resource_name,
            func.row_number()
            .over(partition_by=Backup.resource_id, order_by=newest_first)
            .label("rank"),
        )
        .where(
            Backup.project_id == ctx.project_id,
            Backup.parent_id.is_(None),
            Backup.resource_id.in_(resource_ids),
        )
        .subquery()
    )
    rows = session.execute(
        select(ranked.c.resource_id, ranked.c.resource_name).where(ranked.c.rank == 1)
    )
    return {resource_id: name for resource_id, name in rows}
