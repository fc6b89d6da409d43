"""Backups: list (every filter of the reference), show, rename, delete (cbr-api.md §2.3).

Delete is asynchronous: the backup turns `deleting`, a `delete` operation log runs, the
manifest goes first and the rows after (reverse of the write ordering); the chunks are left
to garbage collection, which knows what other backups still reference. A vault deleted
meanwhile takes its backups being deleted with it (their delete logs end then).

Visibility: a project sees its own backups, and those other projects of its region shared
with it (`BackupMember` rows naming it; services/members.py). It reads a shared backup
(list, show, metadata) and restores it once it accepted the share; every write of one (rename,
delete, replicate, share) is refused with a CBR error that says so, while an id shared with
nobody of the caller stays as unknown as one that never existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import BigInteger, ColumnElement, Select, cast, exists, or_, select
from sqlalchemy.orm import Session

from opencbr.db.backups import Backup, BackupChunk, BackupMember, OperationLog, ReplicationRecord
from opencbr.db.paging import Page, PageRequest, SortKey, fetch_page
from opencbr.db.session import Database
from opencbr.db.status import (
    KEPT_BACKUP,
    LIVE_OPERATION,
    LIVE_RECORD,
    BackupStatus,
    MemberStatus,
)
from opencbr.db.vaults import Vault
from opencbr.errors import (
    BACKUP_IN_USE,
    BACKUP_NOT_FOUND,
    INVALID_PARAMETER,
    METADATA_BAD_STATUS,
    SHARED_BACKUP_NOT_DELETABLE,
    CbrError,
)
from opencbr.services import operation_logs, planned_records
from opencbr.services.identity import AuthContext
from opencbr.services.runtime import Runtime

GB = 1024**3
SORT_KEYS = {"created_at", "updated_at", "name", "status", "protected_at", "id"}


def find_in_project(session: Session, project_id: str, backup_id: str) -> Backup | None:
    backup = session.get(Backup, backup_id)
    return backup if backup is not None and backup.project_id == project_id else None


def find_share(session: Session, project_id: str, backup_id: str) -> BackupMember | None:
    """The share of `backup_id` with `project_id` (any status), if there is one."""
    return session.scalar(
        select(BackupMember).where(
            BackupMember.backup_id == backup_id, BackupMember.dest_project_id == project_id
        )
    )


def get_in_session(
    session: Session, ctx: AuthContext, backup_id: str, *, if_shared: CbrError | None = None
) -> Backup:
    """The caller's own backup, to write. `if_shared` is what a member of the backup's
    share is told (it may read the backup but not do this); anyone else gets 404."""
    backup = find_in_project(session, ctx.project_id, backup_id)
    if backup is None:
        if if_shared is not None and find_share(session, ctx.project_id, backup_id) is not None:
            raise if_shared
        raise _not_found(backup_id)
    return backup


def _not_found(backup_id: str) -> CbrError:
    return CbrError(BACKUP_NOT_FOUND, f"The backup {backup_id} does not exist.")


def get_visible(session: Session, ctx: AuthContext, backup_id: str) -> Backup:
    """The caller's own backup, or one shared with it (whatever its answer), to read."""
    backup = session.get(Backup, backup_id)
    if backup is None or not session.scalar(select(visible_to(ctx.project_id, backup_id))):
        raise _not_found(backup_id)
    return backup


def get_restorable(session: Session, ctx: AuthContext, backup_id: str) -> Backup:
    """The caller's own backup, or one shared with it whose share it accepted: what it may
    restore (into its own registered resources: the restore's target rules are the same)."""
    backup = find_in_project(session, ctx.project_id, backup_id)
    if backup is not None:
        return backup
    share = find_share(session, ctx.project_id, backup_id)
    backup = session.get(Backup, backup_id)
    if share is None or backup is None:
        raise _not_found(backup_id)
    if share.status != MemberStatus.ACCEPTED:
        raise CbrError(
            INVALID_PARAMETER,
            f"The backup {backup_id} is shared with this project but the share is "
            f"{share.status}: accept it (PUT .../members/{ctx.project_id}) to restore it.",
        )
    return backup


def visible_to(project_id: str, backup_id: str) -> ColumnElement[bool]:
    """Whether the backup (or, for a volume, its server backup) is the project's own or
    shared with it: one EXISTS over the backup and the share rows."""
    backup = select(Backup.id).where(
        Backup.id == backup_id,
        or_(
            Backup.project_id == project_id,
            Backup.id.in_(shared_ids(project_id, tuple(MemberStatus))),
            Backup.parent_id.in_(shared_ids(project_id, tuple(MemberStatus))),
        ),
    )
    return exists(backup)


def shared_ids(project_id: str, statuses: tuple[str, ...]) -> Select[str]:
    """Ids of the backups shared with `project_id` whose share is in `statuses`."""
    return select(BackupMember.backup_id).where(
        BackupMember.dest_project_id == project_id, BackupMember.status.in_(statuses)
    )


def get(db: Database, ctx: AuthContext, backup_id: str) -> Backup:
    with db.reading() as session:
        return get_visible(session, ctx, backup_id)


def with_metadata(db: Database, ctx: AuthContext, backup_id: str) -> Backup:
    """A server backup whose metadata (its server and volumes as backed up) may be read.

    As in CBR, only server backups have metadata; and only a kept backup has it whole (a
    running one is still being read, a failed or deleting one lost it).
    """
    backup = get(db, ctx, backup_id)
    if backup.kind != "server":
        raise CbrError(
            INVALID_PARAMETER,
            f"The backup {backup_id} is not a server backup: only server backups have metadata.",
        )
    if backup.status not in KEPT_BACKUP:
        raise CbrError(
            METADATA_BAD_STATUS,
            f"The backup {backup_id} is {backup.status}; metadata is read from available ones.",
        )
    return backup


@dataclass(frozen=True)
class BackupFilter:
    checkpoint_id: str | None = None
    vault_id: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    resource_type: str | None = None
    resource_az: str | None = None
    name: str | None = None
    image_type: str | None = None
    statuses: tuple[str, ...] = ()
    parent_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    sort: str | None = None
    incremental: bool | None = None
    # `private` (the default): the project's own backups; `shared`: backups other projects
    # shared with it, whatever its answer; `all_granted`: both, shares it accepted only.
    own_type: str | None = None
    # Shares in this state: for `shared`, the caller's answer; for `private`, own backups
    # with at least one member in it; `all_granted`, either.
    member_status: str | None = None
    enterprise_project_id: str | None = None
    used_percent: int | None = None  # backups of vaults at least this full (1..100)


# opencbr has no enterprise projects: everything belongs to the default one, "0".
ALL_ENTERPRISE_PROJECTS = ("0", "all_granted_eps")


def owned_or_shared(project_id: str, f: BackupFilter) -> ColumnElement[bool]:
    """The backups a list may show the project, by `own_type` and `member_status`; also the
    condition its marker is looked up under (a page never starts at an unseen backup)."""
    statuses: tuple[str, ...]
    own: ColumnElement[bool] = Backup.project_id == project_id
    if f.member_status is not None:
        own = own & exists(
            select(BackupMember.id).where(
                BackupMember.backup_id == Backup.id, BackupMember.status == f.member_status
            )
        )
    if f.own_type in (None, "private"):
        return own
    if f.member_status is not None:
        statuses = (f.member_status,)
    elif f.own_type == "shared":
        statuses = tuple(MemberStatus)
    else:
        statuses = (MemberStatus.ACCEPTED,)
    ids = shared_ids(project_id, statuses)
    shared = or_(Backup.id.in_(ids), Backup.parent_id.in_(ids))
    return shared if f.own_type == "shared" else or_(own, shared)


def _filtered(ctx: AuthContext, f: BackupFilter) -> Select[Backup]:
    query = select(Backup).where(owned_or_shared(ctx.project_id, f))
    if f.parent_id is None:
        query = query.where(Backup.parent_id.is_(None))  # children are nested in their parent
    if f.vault_id is not None:
        query = query.where(_in_vault(ctx.project_id, f.vault_id, f))
    for column, value in (
        (Backup.checkpoint_id, f.checkpoint_id),
        (Backup.resource_id, f.resource_id),
        (Backup.resource_name, f.resource_name),
        (Backup.resource_type, f.resource_type),
        (Backup.name, f.name),
        (Backup.image_type, f.image_type),
        (Backup.parent_id, f.parent_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if f.incremental is not None:
        query = query.where(Backup.incremental == f.incremental)
    if f.used_percent is not None:
        query = query.where(Backup.vault_id.in_(_vaults_used_at_least(f.used_percent)))
    if _matches_nothing(ctx, f):
        query = query.where(Backup.id.is_(None))
    if f.statuses:
        query = query.where(Backup.status.in_(f.statuses))
    if f.start_time is not None:
        query = query.where(Backup.created_at >= f.start_time)
    if f.end_time is not None:
        query = query.where(Backup.created_at <= f.end_time)
    return query


def _in_vault(project_id: str, vault_id: str, f: BackupFilter) -> ColumnElement[bool]:
    """In the vault, or shared with the project and accepted into that vault of its. A
    list of own backups only (the default) asks for the vault alone: the OR of the shares
    would keep the database from walking the vault's index (a page of a 10,000-backup
    vault took 5x longer)."""
    if f.own_type in (None, "private"):
        return Backup.vault_id == vault_id
    accepted_into = select(BackupMember.backup_id).where(
        BackupMember.dest_project_id == project_id,
        BackupMember.status == MemberStatus.ACCEPTED,
        BackupMember.vault_id == vault_id,
    )
    return or_(Backup.vault_id == vault_id, Backup.id.in_(accepted_into))


def _matches_nothing(ctx: AuthContext, f: BackupFilter) -> bool:
    """Filters no backup here can match: another availability zone (each region is one
    zone, named after it), another enterprise project."""
    return (f.resource_az is not None and f.resource_az != ctx.region) or (
        f.enterprise_project_id not in (None, *ALL_ENTERPRISE_PROJECTS)
    )


def _vaults_used_at_least(percent: int) -> Select[str]:
    capacity = cast(Vault.size_gb, BigInteger) * GB
    return select(Vault.id).where(cast(Vault.used_bytes, BigInteger) * 100 >= capacity * percent)


def sort_keys(sort: str | None) -> list[SortKey]:
    """CBR's `sort` (`key[:asc|desc]`, comma-separated, descending by default) as the
    list's order; none: newest first. `protected_at` is null until a backup is taken."""
    if not sort:
        return [SortKey(Backup.created_at)]
    keys = []
    for part in sort.split(","):
        key, _, direction = part.strip().partition(":")
        direction = direction or "desc"
        if key not in SORT_KEYS or direction not in ("asc", "desc"):
            raise CbrError(INVALID_PARAMETER, f"invalid sort key {part!r}")
        column = getattr(Backup, key)
        keys.append(SortKey(column, direction == "desc", nullable=key == "protected_at"))
    return keys


def list_page(
    db: Database, ctx: AuthContext, filters: BackupFilter, page: PageRequest
) -> Page[Backup]:
    order = sort_keys(filters.sort)
    query = _filtered(ctx, filters)
    in_project = owned_or_shared(ctx.project_id, filters)
    with db.reading() as session:
        return fetch_page(session, query, Backup.created_at, Backup.id, page, in_project, order)


def records_for(db: Database, backup_ids: list[str]) -> dict[str, list[ReplicationRecord]]:
    """Replication records of source backups, oldest first."""
    if not backup_ids:
        return {}
    planned_records.settle(db, backup_ids=backup_ids)
    with db.reading() as session:
        rows = session.scalars(
            select(ReplicationRecord)
            .where(ReplicationRecord.source_backup_id.in_(backup_ids))
            .order_by(ReplicationRecord.created_at)
        )
        result: dict[str, list[ReplicationRecord]] = {}
        for record in rows:
            result.setdefault(record.source_backup_id, []).append(record)
        return result


def rename(
    db: Database, ctx: AuthContext, backup_id: str, name: str | None, description: str | None
) -> Backup:
    with db.transaction() as session:
        refusal = CbrError(
            INVALID_PARAMETER,
            f"The backup {backup_id} is shared with this project: only its owner renames it.",
        )
        backup = get_in_session(session, ctx, backup_id, if_shared=refusal)
        if name is not None:
            backup.name = name
        if description is not None:
            backup.description = description
        return backup


def start_delete(db: Database, ctx: AuthContext, backup_id: str, request_id: str | None) -> str:
    """Mark the backup `deleting` and open its operation log; returns the backup id."""
    with db.transaction() as session:
        shared = CbrError(
            SHARED_BACKUP_NOT_DELETABLE,
            f"The backup {backup_id} is shared with this project: only its owner deletes it "
            "(a member leaves a share by rejecting it).",
        )
        backup = get_in_session(session, ctx, backup_id, if_shared=shared)
        # Locked and read again: retention (any worker) may be marking it at this moment.
        session.refresh(backup, with_for_update=True)
        refusal = deletion_refused(session, backup)
        if refusal is not None:
            raise CbrError(BACKUP_IN_USE, refusal)
        begin_delete(session, backup, request_id)
        return backup.id


def deletion_refused(session: Session, backup: Backup) -> str | None:
    """Why the backup cannot be deleted now (None if it can)."""
    if backup.parent_id is not None:
        return "A volume backup is deleted with its server backup."
    if backup.status not in (BackupStatus.AVAILABLE, BackupStatus.ERROR):
        return f"The backup is {backup.status}; it cannot be deleted now."
    if _being_replicated(session, backup):
        return "The backup is being replicated."
    return None


def begin_delete(
    session: Session,
    backup: Backup,
    request_id: str | None = None,
    policy_id: str | None = None,
    reason: str | None = None,
) -> None:
    """Mark a deletable backup `deleting` and open its `delete` operation log (a request's,
    or retention's with the policy and the rule that removes it); the delete task does the
    rest. Its shares end now: members no longer see a backup on its way out."""
    mark_deleting(backup)
    session.execute(sa.delete(BackupMember).where(BackupMember.backup_id == backup.id))
    vault = session.get(Vault, backup.vault_id)
    details = {"backup_id": backup.id, "backup_name": backup.name}
    if reason:
        details["reason"] = reason
    operation_logs.open_log(
        session,
        project_id=backup.project_id,
        operation_type="delete",
        subject=backup_subject(backup, vault),
        details=details,
        request_id=request_id,
        backup_id=backup.id,
        checkpoint_id=backup.checkpoint_id,
        policy_id=policy_id,
    )


def mark_deleting(backup: Backup) -> None:
    """available | error -> deleting: the delete task removes it (`delete`)."""
    backup.status = BackupStatus.DELETING


def backup_subject(backup: Backup, vault: Vault | None) -> operation_logs.Subject:
    """The operation-log subject of a task on a backup: its resource in its vault."""
    return operation_logs.Subject(
        backup.resource_id,
        backup.resource_type,
        backup.resource_name,
        backup.vault_id,
        vault.name if vault else None,
        backup.provider_id,
    )


def _being_replicated(session: Session, backup: Backup) -> bool:
    planned_records.expand_pending(session, [backup.vault_id])
    return (
        session.scalar(
            select(ReplicationRecord.id)
            .where(
                ReplicationRecord.source_backup_id == backup.id,
                ReplicationRecord.status.in_(LIVE_RECORD),
            )
            .limit(1)
        )
        is not None
    )


def deleting_backups(db: Database) -> list[str]:
    with db.reading() as session:
        return list(
            session.scalars(
                select(Backup.id).where(
                    Backup.status == BackupStatus.DELETING, Backup.parent_id.is_(None)
                )
            )
        )


def delete(rt: Runtime, backup_id: str) -> str | None:
    """Delete a `deleting` backup: its manifests first, then its rows. Returns its vault,
    whose chunks the caller leaves to garbage collection; None when the backup is gone."""
    vault_id, region, names = _manifests_of(rt.db, backup_id)
    if not vault_id:
        return None
    store = rt.stores.vault(region, vault_id)
    for name in names:
        store.delete_manifest(name)
    return _finish_delete(rt.db, backup_id)


def _manifests_of(db: Database, backup_id: str) -> tuple[str, str, list[str]]:
    """(vault id, region, manifest names) of a backup, for deleting its data."""
    with db.reading() as session:
        backup = session.get(Backup, backup_id)
        if backup is None:
            return "", "", []
        vault = session.get(Vault, backup.vault_id)
        units = backup.children or [backup]
        return backup.vault_id, vault.region if vault else "", [u.manifest_name for u in units]


def _finish_delete(db: Database, backup_id: str) -> str | None:
    """Drop the rows of a deleted backup (after its manifests are gone); returns its vault."""
    with db.transaction() as session:
        # Locked: a second delete task of the same backup (the reconciler's, another
        # worker's) waits here, then finds it gone.
        backup = session.get(Backup, backup_id, with_for_update=True)
        if backup is None:
            return None
        _complete_delete_logs(session, [backup_id])
        vault_id = backup.vault_id
        for unit in [*backup.children, backup]:
            session.query(BackupChunk).filter(BackupChunk.backup_id == unit.id).delete()
        session.delete(backup)
        return vault_id


def end_deletions_with_vault(session: Session, vault_id: str) -> None:
    """The vault is being deleted: its backups on their way out go with it, so their delete
    operation logs end here (their delete tasks will find nothing left to do)."""
    deleting = session.scalars(
        select(Backup.id).where(
            Backup.vault_id == vault_id,
            Backup.status == BackupStatus.DELETING,
            Backup.parent_id.is_(None),
        )
    ).all()
    _complete_delete_logs(session, deleting)


def _complete_delete_logs(session: Session, backup_ids: Sequence[str]) -> None:
    if not backup_ids:
        return
    live = select(OperationLog.id).where(
        OperationLog.backup_id.in_(backup_ids),
        OperationLog.operation_type == "delete",
        OperationLog.status.in_(LIVE_OPERATION),
    )
    for log_id in session.scalars(live).all():
        operation_logs.complete_operation(session, log_id)


def usage_by_resource(db: Database, vault_ids: list[str]) -> dict[str, tuple[int, int]]:
    """resource id -> (backup count, backup size in MB) over available backups of vaults."""
    if not vault_ids:
        return {}
    with db.reading() as session:
        rows = session.execute(
            select(Backup.resource_id, Backup.bytes_new).where(
                Backup.vault_id.in_(vault_ids),
                Backup.parent_id.is_(None),
                Backup.status.in_(KEPT_BACKUP),
            )
        )
        usage: dict[str, tuple[int, int]] = {}
        for resource_id, size in rows:
            count, total = usage.get(resource_id, (0, 0))
            usage[resource_id] = (count + 1, total + size)
        return {rid: (count, -(-total // 2**20)) for rid, (count, total) in usage.items()}
