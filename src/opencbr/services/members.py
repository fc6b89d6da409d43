"""Backup sharing: a backup's members, the other projects of its region it is shared with
(cbr-sdk-models.md `Member`; /v3/{project_id}/backups/{backup_id}/members).

Who does what:
- the owner's project adds members (`add`), lists and shows them, and removes them
  (`remove`); a project id or a member id names a member;
- a member project shows its own member row and answers the share (`answer`: accepted or
  rejected, as often as it likes); once accepted it lists (`own_type=shared`), shows and
  restores the backup into its own registered resources (services/backups.py, restores.py);
- nobody else learns that the backup exists: its id is as unknown to them as any other.

Every kind of backup may be shared (directory trees, disks, servers, replicas): CBR allows
only server backups (6700) because it shares them as images, while opencbr restores every
kind the same way, into a registered resource of the restoring project, so no kind needs
refusing. Deleting a shared backup removes its members (backups.begin_delete).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, false, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencbr.db.backups import Backup, BackupMember
from opencbr.db.identity import Project
from opencbr.db.paging import Page, PageRequest, SortKey, fetch_page
from opencbr.db.session import Database
from opencbr.db.status import BackupStatus, MemberStatus
from opencbr.db.vaults import OBJECT_TYPES
from opencbr.errors import (
    DESTINATION_VAULT_NOT_FOUND,
    INVALID_PARAMETER,
    MEMBER_NOT_FOUND,
    MEMBER_UPDATE_INVALID,
    SHARE_BAD_STATUS,
    SHARE_INVALID_PROJECT,
    SHARE_LIMIT_REACHED,
    SHARE_VAULT_TYPE_MISMATCH,
    SHARED_TWICE,
    SHARING_NOT_ALLOWED,
    CbrError,
)
from opencbr.services import backups, vaults
from opencbr.services.identity import AuthContext

MAX_MEMBERS = 100  # per backup
SORT_KEYS = {"created_at", "updated_at", "status", "dest_project_id", "id"}


def _own_backup(session: Session, ctx: AuthContext, backup_id: str) -> Backup:
    refusal = CbrError(
        SHARING_NOT_ALLOWED,
        f"The backup {backup_id} is shared with this project: only its owner shares it.",
    )
    return backups.get_in_session(session, ctx, backup_id, if_shared=refusal)


def add(
    db: Database, ctx: AuthContext, backup_id: str, project_ids: list[str]
) -> list[BackupMember]:
    """Share the caller's backup with `project_ids` (other projects of its region); the
    new members, pending. All or nothing: one refused project refuses the request."""
    try:
        with db.transaction() as session:
            backup = _own_backup(session, ctx, backup_id)
            session.refresh(backup, with_for_update=True)  # one add at a time per backup
            _check_shareable(backup)
            existing = _members_of(session, backup.id)
            _check_new_members(session, ctx, backup, project_ids, existing)
            added = [BackupMember(backup_id=backup.id, dest_project_id=p) for p in project_ids]
            session.add_all(added)
            session.flush()
            return added
    except IntegrityError:  # a concurrent add of the same member won
        raise CbrError(SHARED_TWICE) from None


def _check_shareable(backup: Backup) -> None:
    if backup.parent_id is not None:
        raise CbrError(
            INVALID_PARAMETER,
            f"The backup {backup.id} is a volume backup: share its server backup.",
        )
    if backup.status != BackupStatus.AVAILABLE:
        raise CbrError(SHARE_BAD_STATUS, f"The backup {backup.id} is {backup.status}.")


def _check_new_members(
    session: Session,
    ctx: AuthContext,
    backup: Backup,
    project_ids: list[str],
    existing: list[BackupMember],
) -> None:
    if len(set(project_ids)) != len(project_ids):
        raise CbrError(SHARED_TWICE, "A project is named twice in members.")
    already = {member.dest_project_id for member in existing}.intersection(project_ids)
    if already:
        raise CbrError(SHARED_TWICE, f"The backup is shared with {sorted(already)[0]} already.")
    if len(existing) + len(project_ids) > MAX_MEMBERS:
        raise CbrError(
            SHARE_LIMIT_REACHED, f"A backup is shared with at most {MAX_MEMBERS} projects."
        )
    for project_id in project_ids:
        project = session.get(Project, project_id)
        if project_id == ctx.project_id:
            raise CbrError(SHARE_INVALID_PROJECT, "A backup is not shared with its own project.")
        # Another region's project (or none) is refused alike: the data stays in this
        # region's store, which only this region's projects restore from.
        if project is None or not project.enabled or project.region != ctx.region:
            raise CbrError(
                SHARE_INVALID_PROJECT,
                f"{project_id} is not a project of region {ctx.region}.",
            )


def _members_of(session: Session, backup_id: str) -> list[BackupMember]:
    return list(session.scalars(select(BackupMember).where(BackupMember.backup_id == backup_id)))


@dataclass(frozen=True)
class MemberFilter:
    dest_project_id: str | None = None
    image_id: str | None = None
    status: str | None = None
    vault_id: str | None = None
    sort: str | None = None


def list_page(
    db: Database, ctx: AuthContext, backup_id: str, filters: MemberFilter, page: PageRequest
) -> Page[BackupMember]:
    """The owner sees every member of its backup; a member, its own row only."""
    with db.reading() as session:
        backup = backups.get_visible(session, ctx, backup_id)
        seen = _seen_by(ctx, backup)
        query = select(BackupMember).where(seen, *_conditions(filters))
        order = _sort_keys(filters.sort)
        return fetch_page(
            session, query, BackupMember.created_at, BackupMember.id, page, seen, order
        )


def _seen_by(ctx: AuthContext, backup: Backup) -> ColumnElement[bool]:
    mine = BackupMember.backup_id == backup.id
    if backup.project_id == ctx.project_id:
        return mine
    return mine & (BackupMember.dest_project_id == ctx.project_id)


def _conditions(f: MemberFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    for column, value in (
        (BackupMember.dest_project_id, f.dest_project_id),
        (BackupMember.status, f.status),
        (BackupMember.vault_id, f.vault_id),
    ):
        if value is not None:
            conditions.append(column == value)
    if f.image_id is not None:
        conditions.append(false())  # opencbr registers no images from shared backups
    return conditions


def _sort_keys(sort: str | None) -> list[SortKey]:
    """CBR's `sort` (`key[:asc|desc]`, comma-separated, descending by default)."""
    if not sort:
        return []
    keys = []
    for part in sort.split(","):
        key, _, direction = part.strip().partition(":")
        direction = direction or "desc"
        if key not in SORT_KEYS or direction not in ("asc", "desc"):
            raise CbrError(INVALID_PARAMETER, f"invalid sort key {part!r}")
        keys.append(SortKey(getattr(BackupMember, key), direction == "desc"))
    return keys


def _find_member(
    session: Session, ctx: AuthContext, backup_id: str, member_id: str
) -> BackupMember:
    """A member of a backup the caller sees, by its id or its project id (openstacksdk
    names a member by project id after adding it); the member row must be visible to the
    caller (the owner sees all of them, a member its own)."""
    backup = backups.get_visible(session, ctx, backup_id)
    member = session.scalar(
        select(BackupMember).where(
            _seen_by(ctx, backup),
            or_(BackupMember.id == member_id, BackupMember.dest_project_id == member_id),
        )
    )
    if member is None:
        raise CbrError(MEMBER_NOT_FOUND, f"The backup has no member {member_id}.")
    return member


def get(db: Database, ctx: AuthContext, backup_id: str, member_id: str) -> BackupMember:
    with db.reading() as session:
        return _find_member(session, ctx, backup_id, member_id)


def answer(
    db: Database,
    ctx: AuthContext,
    backup_id: str,
    member_id: str,
    status: str,
    vault_id: str | None,
) -> BackupMember:
    """The member project accepts or rejects the share. `vault_id` (optional) names the
    member's own backup vault of the backup's kind: recorded, and the member's backup
    list finds the shared backup under it."""
    with db.transaction() as session:
        member = _find_member(session, ctx, backup_id, member_id)
        if member.dest_project_id != ctx.project_id:
            raise CbrError(
                MEMBER_UPDATE_INVALID,
                "Only the member project accepts or rejects a share; the owner removes "
                "members (DELETE).",
            )
        if status not in (MemberStatus.ACCEPTED, MemberStatus.REJECTED):
            raise CbrError(MEMBER_UPDATE_INVALID, "status must be accepted or rejected.")
        backup = session.get(Backup, member.backup_id)
        assert backup is not None  # the member row goes with its backup
        if status == MemberStatus.ACCEPTED and vault_id is not None:
            _check_accepting_vault(session, ctx, backup, vault_id)
        member.status = status
        member.vault_id = vault_id if status == MemberStatus.ACCEPTED else None
        session.flush()
        return member


def _check_accepting_vault(
    session: Session, ctx: AuthContext, backup: Backup, vault_id: str
) -> None:
    vault = vaults.find_in_project(session, ctx.project_id, vault_id)
    if vault is None:
        raise CbrError(DESTINATION_VAULT_NOT_FOUND, f"The vault {vault_id} does not exist.")
    wanted = OBJECT_TYPES.get(backup.resource_type)
    if vault.object_type != wanted or vault.protect_type != "backup":
        raise CbrError(
            SHARE_VAULT_TYPE_MISMATCH,
            f"The vault {vault_id} is a {vault.object_type} {vault.protect_type} vault; "
            f"the backup is of a {wanted} resource.",
        )


def remove(db: Database, ctx: AuthContext, backup_id: str, member_id: str) -> None:
    """The owner stops sharing the backup with one member."""
    with db.transaction() as session:
        member = _find_member(session, ctx, backup_id, member_id)
        backup = session.get(Backup, member.backup_id)
        if backup is None or backup.project_id != ctx.project_id:
            raise CbrError(
                MEMBER_UPDATE_INVALID,
                "Only the backup's owner removes a member; a member rejects the share instead.",
            )
        session.delete(member)
