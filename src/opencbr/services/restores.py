"""Restores: bring a backup (or a replica) back into a registered resource, byte for byte.

The target is the backed-up resource itself, or another registered resource of the same
type named by `resource_id` (trees), `volume_id` (disks) or `server_id` + `mappings`
(servers). `details.destination_path` picks a subdirectory inside a tree target. Restores
write only inside registered resources: the worker locates each target in the project's
configured roots again and opens it below a descriptor of its root, never through a
symlink (archive.confined), before it writes anything. One restore at a time per target:
the request locks the target's row while it checks for a live restore and opens its log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.archive.confined import PathNotConfined, open_root, opened
from opencbr.archive.disk import DiskTarget, open_disk_target, restore_disk_into
from opencbr.archive.extract import open_destination, remove_leftovers, restore_tree
from opencbr.archive.manifest import Manifest
from opencbr.archive.sink import ArchiveError, ChunkData, ChunkSource
from opencbr.db.backups import Backup, OperationLog
from opencbr.db.identity import Project
from opencbr.db.session import Database
from opencbr.db.status import LIVE_OPERATION, BackupStatus, ProtectStatus
from opencbr.db.vaults import Protectable, Vault, VaultResource
from opencbr.errors import (
    BACKUP_BAD_STATUS,
    INTERNAL_ERROR,
    INVALID_PARAMETER,
    RESOURCE_NOT_FOUND,
    RESOURCE_RESTORING,
    RESTORE_TARGET_BUSY,
    CbrError,
    ErrorCode,
)
from opencbr.services import backups, leases, operation_logs, protectables, vaults
from opencbr.services.identity import AuthContext
from opencbr.services.runtime import Runtime
from opencbr.services.stores import DamageMarker, VaultSource
from opencbr.storage.layout import manifest_name
from opencbr.storage.store import StorageError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RestoreRequest:
    server_id: str | None = None
    volume_id: str | None = None
    resource_id: str | None = None
    mappings: tuple[tuple[str, str], ...] = ()  # (volume backup id, target volume id)
    destination_path: str | None = None


# The target fields each kind of backup takes besides `resource_id`: a field meant for
# another kind is refused, never ignored (ignoring it restored into the backed-up
# resource itself, over the data the caller meant to keep).
_TARGET_FIELDS = {
    "OS::Nova::Server": ("server_id", "mappings"),
    "OS::Cinder::Volume": ("volume_id",),
    "OS::Sfs::Turbo": ("destination_path",),
}
_KIND_NAMES = {
    "OS::Nova::Server": "server",
    "OS::Cinder::Volume": "disk",
    "OS::Sfs::Turbo": "directory (turbo)",
}


def _check_fields(backup: Backup, request: RestoreRequest) -> None:
    """Refuse target fields that do not apply to this kind of backup, and two ids of one
    target that disagree."""
    given = {
        "server_id": request.server_id,
        "mappings": request.mappings,
        "volume_id": request.volume_id,
        "destination_path": request.destination_path,
    }
    allowed = _TARGET_FIELDS.get(backup.resource_type, ())
    for field, value in given.items():
        if value and field not in allowed:
            kind = _KIND_NAMES.get(backup.resource_type, backup.resource_type)
            raise CbrError(
                INVALID_PARAMETER,
                f"{_wire_name(field)} does not apply to the restore of a {kind} backup "
                f"(its target fields: {', '.join(_wire_name(f) for f in allowed)}, resource_id).",
            )
    typed = request.server_id or request.volume_id
    if typed and request.resource_id and typed != request.resource_id:
        raise CbrError(
            INVALID_PARAMETER, "resource_id and the target's own id field name two resources."
        )


def _wire_name(field: str) -> str:
    return "details.destination_path" if field == "destination_path" else field


def _target(
    session: Session, ctx: AuthContext, backup: Backup, request: RestoreRequest
) -> Protectable:
    _check_fields(backup, request)
    target_id = request.server_id or request.volume_id or request.resource_id
    target_id = target_id or backup.resource_id
    target = protectables.find_in_project(session, ctx.project_id, target_id)
    if target is None or target.type != backup.resource_type:
        hint = ""
        if target_id == backup.resource_id and backup.project_id != ctx.project_id:
            hint = " A shared backup is restored into a resource of your project: name it."
        elif target_id == backup.resource_id and backup.image_type == "replication":
            hint = " A replica is restored into a resource registered in its own region: name it."
        raise CbrError(
            RESOURCE_NOT_FOUND,
            f"The restore target {target_id} is not a registered {backup.resource_type} "
            f"of this project.{hint}",
        )
    return target


def destination(raw: str | None) -> str:
    """`details.destination_path` as components below the target, joined by "/" ("" is
    the target itself). A leading "/" names the target; NUL and `..` are refused."""
    if not raw:
        return ""
    if "\x00" in raw:
        raise CbrError(INVALID_PARAMETER, "details.destination_path must not contain NUL")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise CbrError(
            INVALID_PARAMETER, "details.destination_path must stay inside the target (no '..')"
        )
    if any(len(os.fsencode(part)) > 255 for part in parts):
        raise CbrError(INVALID_PARAMETER, "details.destination_path has a name over 255 bytes")
    return "/".join(parts)


def _server_plan(backup: Backup, target: Protectable, request: RestoreRequest) -> list[list[str]]:
    volumes = {volume.id: volume for volume in target.volumes}
    if request.mappings:
        children = {child.id: child for child in backup.children}
        plan = []
        for child_id, volume_id in request.mappings:
            child, volume = children.get(child_id), volumes.get(volume_id)
            if child is None or volume is None:
                raise CbrError(
                    INVALID_PARAMETER,
                    f"mapping {child_id} -> {volume_id} names no "
                    "volume backup of this backup or no volume of the target server",
                )
            if child.kind != volume.kind:
                raise CbrError(
                    INVALID_PARAMETER, f"volume {volume.name} cannot take a {child.kind} backup"
                )
            plan.append([child.id, child.kind, volume.path, "", volume.node or ""])
        return plan
    by_name = {volume.name: volume for volume in target.volumes}
    plan = []
    for child in backup.children:
        volume = by_name.get(child.resource_name)
        if volume is None or volume.kind != child.kind:
            raise CbrError(
                INVALID_PARAMETER,
                "mappings are required: the target server's volumes "
                "do not match the backup's by name",
            )
        plan.append([child.id, child.kind, volume.path, "", volume.node or ""])
    return plan


def _plan(backup: Backup, target: Protectable, request: RestoreRequest) -> list[list[str]]:
    """[[unit backup id, kind, registered path, destination below it, disk node], ...]:
    paths as registered; the worker confines them again when it opens them."""
    if backup.kind == "server":
        return _server_plan(backup, target, request)
    below = destination(request.destination_path) if backup.kind == "tree" else ""
    return [[backup.id, backup.kind, target.path or "", below, target.node or ""]]


def _check_target_free(session: Session, target: Protectable) -> None:
    """Lock the target and the resources on its paths (in id order), then refuse a target
    being backed up (2002) or restored into (2010): the target itself, or another resource
    of the project registered on one of its paths (one directory registered twice, say to
    keep it in two vaults, is one place to write)."""
    same_place = protectables.sharing_a_path(session, target)
    for resource_id in same_place:
        binding = session.get(VaultResource, resource_id, populate_existing=True)
        if binding is not None and binding.protect_status == ProtectStatus.PROTECTING:
            raise CbrError(RESTORE_TARGET_BUSY)
        if binding is not None and binding.protect_status == ProtectStatus.RESTORING:
            raise CbrError(RESOURCE_RESTORING)
    busy = session.scalar(
        select(OperationLog.id)
        .where(
            OperationLog.operation_type == "restore",
            OperationLog.resource_id.in_(same_place),
            OperationLog.status.in_(LIVE_OPERATION),
        )
        .limit(1)
    )
    if busy is not None:
        raise CbrError(RESOURCE_RESTORING)


def start(
    db: Database, ctx: AuthContext, backup_id: str, request: RestoreRequest, request_id: str | None
) -> str:
    """Validate, mark the backup `restoring`, open the restore log; returns the log id."""
    with db.transaction() as session:
        backup = backups.get_restorable(session, ctx, backup_id)
        # Row locks (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers),
        # always backup first, then the target with the resources on its paths, in id
        # order (`_check_target_free`): under READ COMMITTED a concurrent request waits
        # there and then sees the log this one inserted; one order, so no deadlock between
        # restores into two registrations of one directory.
        session.refresh(backup, with_for_update=True)
        if backup.parent_id is not None:
            raise CbrError(
                BACKUP_BAD_STATUS,
                "A volume's backup is restored with its server's backup (server_id + mappings).",
            )
        if backup.status != BackupStatus.AVAILABLE:
            raise CbrError(
                BACKUP_BAD_STATUS,
                f"The backup's status is {backup.status}: only an available backup is restored "
                "(one restore of a backup at a time).",
            )
        target = _target(session, ctx, backup, request)
        _check_target_free(session, target)
        plan = _plan(backup, target, request)
        backup.status = BackupStatus.RESTORING
        binding = session.get(VaultResource, target.id)
        if binding is not None:
            vaults.begin_restoring(binding)
        # A member restoring a shared backup is not told the owner's vault.
        own = backup.project_id == ctx.project_id
        vault = session.get(Vault, backup.vault_id) if own else None
        entry = operation_logs.open_log(
            session,
            project_id=ctx.project_id,
            operation_type="restore",
            subject=operation_logs.Subject(
                target.id,
                target.type,
                target.name,
                backup.vault_id if own else None,
                vault.name if vault else None,
                backup.provider_id,
            ),
            details={
                "backup_id": backup.id,
                "backup_name": backup.name,
                "target_resource_id": target.id,
                "target_resource_name": target.name,
            },
            request_id=request_id,
            backup_id=backup.id,
            checkpoint_id=backup.checkpoint_id,
            plan=plan,
        )
        session.flush()
        return entry.id


@dataclass
class _Claim:
    log_id: str
    backup_id: str
    vault_id: str
    region: str
    target_id: str | None
    plan: list[list[str]]
    roots: list[Path]  # the project's configured roots, as settings say now
    rerun: bool = False  # an earlier attempt died: its temporary files may be left
    bytes_done: int = 0  # of the units restored, and the one being restored
    bytes_total: int = 0  # the units' logical sizes, known once the manifests are read

    def percent(self) -> int:
        return self.bytes_done * 100 // self.bytes_total if self.bytes_total else 0

    def moved(self) -> operation_logs.Bytes | None:
        if not self.bytes_total:
            return None
        return operation_logs.Bytes(self.bytes_done, self.bytes_total)


class _Restores(leases.LeasedWork[OperationLog, _Claim]):
    """A restore, leased on its operation log. It only reads its vault: garbage collection
    leaves a `restoring` backup's chunks alone, so a claim never waits for it."""

    name = "restore"
    model = OperationLog
    live = LIVE_OPERATION

    def ready(self, session: Session, row: OperationLog) -> bool:
        backup = session.get(Backup, row.backup_id or "")
        if backup is None or session.get(Vault, backup.vault_id) is None:
            operation_logs.close_log(session, row.id, BACKUP_BAD_STATUS, "the backup is gone")
            return False
        return True

    def begin(self, rt: Runtime, session: Session, row: OperationLog) -> _Claim:
        backup = session.get(Backup, row.backup_id or "")
        vault = session.get(Vault, backup.vault_id) if backup else None
        assert backup is not None and vault is not None  # `ready` said so
        project = session.get(Project, row.project_id)
        roots = protectables.project_roots(
            rt.settings, row.project_id, project.name if project else row.project_id
        )
        return _Claim(
            row.id,
            backup.id,
            vault.id,
            vault.region,
            row.resource_id,
            row.plan,
            roots,
            rerun=row.attempts > 1,  # this attempt is counted already
        )

    def beat(self, session: Session, row: OperationLog, work: _Claim) -> None:
        operation_logs.set_progress(session, row.id, work.percent(), work.moved())

    def progress(self, work: _Claim) -> dict[str, Any]:
        return {"progress_percent": work.percent}

    def complete(self, session: Session, row: OperationLog, work: _Claim) -> None:
        total = work.bytes_total
        operation_logs.set_bytes(session, row.id, operation_logs.Bytes(total, total))
        _finish_in_session(session, row, None, "")

    def fail(
        self,
        rt: Runtime,
        session: Session,
        row: OperationLog,
        work: _Claim | None,
        failure: leases.Failure,
    ) -> None:
        _finish_in_session(session, row, failure.error, failure.reason)

    def explain(self, exc: Exception) -> leases.Failure | None:
        if isinstance(exc, PathNotConfined):
            return leases.Failure(RESOURCE_NOT_FOUND, exc.strerror or "")
        if isinstance(exc, CbrError):
            return leases.Failure(exc.error, exc.detail)
        if isinstance(exc, (StorageError, ArchiveError)):
            return leases.Failure(INTERNAL_ERROR, str(exc))  # the chunk, never a store path
        if isinstance(exc, OSError):  # writing into the target (reads fail as StorageError)
            return leases.Failure(
                INTERNAL_ERROR, f"cannot write the restore target: {exc.strerror or exc}"
            )
        return None

    def candidates(self, session: Session) -> Iterable[OperationLog]:
        return session.scalars(
            select(OperationLog).where(
                OperationLog.operation_type == "restore",
                OperationLog.status.in_(LIVE_OPERATION),
            )
        )


RESTORE = _Restores()


@dataclass(frozen=True)
class _Unit:
    """One step of a plan: a tree or disk backup and the registered path it goes to."""

    backup_id: str
    kind: str  # "tree" or "disk"
    path: str
    destination: str  # below `path`, trees only
    node: str  # disks: "file" or "block" as registered; "" (older rows) takes either

    @classmethod
    def of(cls, step: list[str]) -> _Unit:
        # Older plans hold only the first three (or four) items.
        backup_id, kind, path, *rest = [*step, "", ""]
        return cls(backup_id, kind, path, rest[0], rest[1])

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.node,) if self.node else ("file", "block")


def run(rt: Runtime, log_id: str) -> None:
    leases.run(rt, RESTORE, log_id, lambda claim: _restore(rt, claim))


def _restore(rt: Runtime, claim: _Claim) -> None:
    store = rt.stores.vault(claim.region, claim.vault_id)
    # Marks failed reads damaged; opens sealed chunks (every read is verified either way).
    codec = rt.backup_codec(claim.backup_id, writing=False)
    vault_source = VaultSource(store, DamageMarker(rt.db, claim.vault_id), codec)
    source = _Stoppable(rt, vault_source)
    with ExitStack() as targets:
        units = [_Unit.of(step) for step in claim.plan]
        manifests = [
            Manifest.from_bytes(rt.reader.get_manifest(store, manifest_name(unit.backup_id)))
            for unit in units
        ]
        # Every target is opened and checked before anything is written to any.
        opened_targets = [
            _open_target(targets, claim.roots, unit, manifest, sweep=claim.rerun)
            for unit, manifest in zip(units, manifests, strict=True)
        ]
        claim.bytes_total = sum(manifest.size for manifest in manifests)
        for manifest, target in zip(manifests, opened_targets, strict=True):
            before = claim.bytes_done

            def advance(done: int, before: int = before) -> None:
                claim.bytes_done = before + done

            _restore_unit(rt, claim.region, manifest, source, target, advance)
            claim.bytes_done = before + manifest.size


class _Stoppable:
    """A chunk source that ends the restore at the next chunk once the service stops. The
    restore then leaves what it did as a failed one would (files it finished in place,
    no temporary file) and the next start runs it again from the beginning."""

    def __init__(self, rt: Runtime, source: ChunkSource) -> None:
        self._rt = rt
        self._source = source

    def name(self, data: ChunkData) -> str:
        return self._source.name(data)

    def load(self, digest: str) -> ChunkData:
        leases.stop_point(self._rt)
        return self._source.load(digest)


def _open_target(
    stack: ExitStack, roots: list[Path], unit: _Unit, manifest: Manifest, *, sweep: bool
) -> int | DiskTarget:
    """The unit's target, confined below its root: a directory descriptor (trees, made
    if missing, the destination below it included) or an opened DiskTarget. With `sweep`
    (an earlier attempt died), the temporary files it left there are removed first."""
    location = protectables.locate(roots, unit.path)
    try:
        root = stack.enter_context(opened(open_root(location.root)))
    except OSError:
        raise CbrError(
            RESOURCE_NOT_FOUND, "resource path is no longer valid: its root is not accessible"
        ) from None
    if unit.kind == "tree":
        below = "/".join(part for part in (location.relative, unit.destination) if part)
        directory = stack.enter_context(opened(open_destination(root, below)))
        if sweep:
            _log_leftovers(remove_leftovers(directory, recursive=True), unit)
        return directory
    parent, _, name = location.relative.rpartition("/")
    try:
        directory = stack.enter_context(opened(open_destination(root, parent, create=False)))
    except FileNotFoundError:
        raise CbrError(
            RESOURCE_NOT_FOUND, "resource path is no longer valid: its directory is gone"
        ) from None
    if sweep:
        _log_leftovers(remove_leftovers(directory, recursive=False), unit)
    return stack.enter_context(open_disk_target(directory, name, manifest.size, unit.kinds))


def _log_leftovers(removed: int, unit: _Unit) -> None:
    if removed:
        log.info(
            "restore removed an earlier attempt's temporary files",
            count=removed,
            backup_id=unit.backup_id,
        )


def _restore_unit(
    rt: Runtime,
    region: str,
    manifest: Manifest,
    source: ChunkSource,
    target: int | DiskTarget,
    on_progress: Callable[[int], None],
) -> None:
    workers = rt.stores.read_threads(region, rt.settings.io_threads)
    if isinstance(target, DiskTarget):
        restore_disk_into(manifest, source, target, workers=workers, on_progress=on_progress)
    else:
        restore_tree(manifest, source, target, workers=workers, on_progress=on_progress)


def _finish_in_session(
    session: Session, entry: OperationLog, error: ErrorCode | None, message: str
) -> None:
    """The restore ends: its backup is `available` again, its target free, its log closed."""
    backup = session.get(Backup, entry.backup_id or "")
    if backup is not None and backup.status == BackupStatus.RESTORING:
        backup.status = BackupStatus.AVAILABLE
    vaults.release_resource(session, entry.resource_id or "")
    entry.updated_at = clock.now()
    operation_logs.close_log(session, entry.id, error, message)
