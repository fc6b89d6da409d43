"""Running a checkpoint: read each resource, store its chunks, commit its backup.

Write ordering (invariant 1): chunks -> manifest (the store flushes every chunk before it
writes the manifest) -> chunk index rows -> backup `available`, the last two in one
transaction. A crash anywhere before that transaction leaves the backup `protecting` with
an expired lease; the reconciler runs it again, and chunks already in the store are
simply found again. A stopping service ends a backup at a safe point (between progress
reports, about every 16 MiB read, and between units) and hands it back the same way; the
volumes of a server that were committed are not read again.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.archive.confined import PathNotConfined, open_data, open_directory, open_root, opened
from opencbr.archive.disk import backup_disk, image_size
from opencbr.archive.parent import PreviousBackup
from opencbr.archive.pipeline import BackupResult
from opencbr.archive.sink import ArchiveError, ChunkSink
from opencbr.archive.tree import backup_tree, tree_size
from opencbr.db import chunks
from opencbr.db.backups import Backup, BackupChunk, Checkpoint, OperationLog
from opencbr.db.identity import Project
from opencbr.db.status import BackupStatus
from opencbr.db.vaults import (
    Protectable,
    ProtectableVolume,
    Vault,
    settle_capacity,
)
from opencbr.errors import INTERNAL_ERROR, RESOURCE_NOT_FOUND, CbrError, ErrorCode
from opencbr.services import (
    backup_cleanup,
    checkpoints,
    content_roots,
    leases,
    operation_logs,
    protectables,
    vaults,
)
from opencbr.services.capacity import BudgetSink, CapacityOwner
from opencbr.services.protectables import locate, project_roots
from opencbr.services.runtime import Runtime
from opencbr.services.stores import VaultCodec, previous_backup
from opencbr.storage.layout import manifest_name
from opencbr.storage.store import ChunkStore, PermanentStorageError, StorageError

log = structlog.get_logger(__name__)
GB = 1024**3
# The warnings kept on a backup (the archive engine collects up to 1,000).
MAX_WARNINGS = 100
MAX_WARNING_CHARS = 300
LOGGED_WARNINGS = 3
ENGINE_MAX_WARNINGS = 1000  # the archive engine keeps no more (archive/tree.py)


class VaultBusy(leases.VaultBusy):
    """Garbage collection holds the vault; the backup is retried later."""


def pending_backups(rt: Runtime, checkpoint_id: str) -> list[str]:
    with rt.db.reading() as session:
        return list(
            session.scalars(
                select(Backup.id)
                .where(
                    Backup.checkpoint_id == checkpoint_id,
                    Backup.parent_id.is_(None),
                    Backup.status == BackupStatus.PROTECTING,
                )
                .order_by(Backup.created_at)
            )
        )


def run_checkpoint(rt: Runtime, checkpoint_id: str) -> None:
    """Run every backup of the checkpoint still in progress; idempotent."""
    for backup_id in pending_backups(rt, checkpoint_id):
        run_backup(rt, backup_id)
    with rt.db.transaction() as session:
        checkpoints.settle(session, checkpoint_id)


def run_backup(rt: Runtime, backup_id: str) -> None:
    leases.run(rt, BACKUP, backup_id, lambda claim: _write(rt, claim))


def _write(rt: Runtime, claim: Claim) -> None:
    store = rt.stores.vault(claim.region, claim.vault_id)
    codec = rt.backup_codec(claim.backup_id)  # sealed when the backup is encrypted
    with _opened_units(rt, claim) as units:
        # Each unit's previous backup, looked up once: its recorded size serves progress,
        # and an incremental builds on it.
        previous = {unit.backup_id: _previous_backup_id(rt, claim.vault_id, unit) for unit in units}
        claim.progress.expected = max(_expected_bytes(rt, units, previous), 1)
        for unit in units:
            leases.stop_point(rt)
            builds_on = None if claim.full else previous[unit.backup_id]
            _write_unit(rt, store, codec, claim, unit, builds_on)


class _Progress:
    """Bytes read so far over the bytes expected, 0 until the units were measured
    (thread-safe enough: ints, one writer, read by the heartbeat)."""

    def __init__(self) -> None:
        self.expected = 0
        self.done_units = 0
        self.current = 0

    def percent(self) -> int:
        if self.expected <= 0:
            return 0
        return min(99, (self.done_units + self.current) * 100 // self.expected)

    def moved(self) -> operation_logs.Bytes | None:
        """Bytes read of the bytes expected; None before the units were measured."""
        if self.expected <= 0:
            return None
        return operation_logs.Bytes(self.done_units + self.current, self.expected)


@dataclass
class Claim:
    backup_id: str
    vault_id: str
    region: str
    log_id: str | None
    units: list[tuple[str, str, str]]  # still to write: (backup id owning data, kind, path)
    owner: CapacityOwner  # the capacity it reserves, the chunks it created
    # Every backup holding this backup's data (itself, or all of a server's volumes,
    # those an earlier attempt committed included): a failure removes all their manifests.
    own_ids: tuple[str, ...] = ()
    # `incremental: false` asked for: every byte is read again (only missing chunks are
    # still stored), no previous backup is reused.
    full: bool = False
    progress: _Progress = field(default_factory=_Progress)
    cleanup_held: bool = False  # a failure holds the vault to remove the chunks it created


class _Backups(leases.LeasedWork[Backup, Claim]):
    """A top-level backup (its volume backups run with it): the leased work of a checkpoint."""

    name = "backup"
    model = Backup
    live = (BackupStatus.PROTECTING,)
    busy = VaultBusy

    def writes_to(self, session: Session, row: Backup) -> Vault | None:
        return session.get(Vault, row.vault_id, with_for_update=True)

    def begin(self, rt: Runtime, session: Session, row: Backup) -> Claim:
        # A rerun after a crash: the dead attempt's reservation is given back.
        _release_reservation(session, row)
        units = _units_to_write(row)
        vault = session.get(Vault, row.vault_id)
        assert vault is not None
        owner = CapacityOwner(row.id, vault.id, row.created_at)
        own_ids = tuple(child.id for child in row.children) or (row.id,)
        checkpoint = session.get(Checkpoint, row.checkpoint_id)
        full = checkpoint is not None and not checkpoint.incremental
        log_id = _log_id(session, row.id)
        return Claim(
            row.id, vault.id, vault.region, log_id, units, owner, own_ids=own_ids, full=full
        )

    def beat(self, session: Session, row: Backup, work: Claim) -> None:
        progress = work.progress
        operation_logs.set_progress(session, work.log_id, progress.percent(), progress.moved())

    def hand_back(self, session: Session, row: Backup, work: Claim) -> None:
        _release_reservation(session, row)  # the resumed attempt reserves anew

    def progress(self, work: Claim) -> dict[str, Any]:
        return {"progress_percent": work.progress.percent()}

    def complete(self, session: Session, row: Backup, work: Claim) -> None:
        _complete(session, row, work)

    def fail(
        self,
        rt: Runtime,
        session: Session,
        row: Backup,
        work: Claim | None,
        failure: leases.Failure,
    ) -> None:
        if work is not None and work.owner.created:
            own_ids = {work.backup_id, *work.own_ids}
            work.cleanup_held = backup_cleanup.hold_for_cleanup(session, rt, work.vault_id, own_ids)
        _fail_in_session(session, row, failure.error, failure.reason)

    def after_fail(self, rt: Runtime, work: Claim) -> None:
        _remove_failed(rt, work)

    def explain(self, exc: Exception) -> leases.Failure | None:
        return _explain(exc)

    def candidates(self, session: Session) -> Iterable[Backup]:
        return session.scalars(
            select(Backup).where(
                Backup.status == BackupStatus.PROTECTING,
                Backup.parent_id.is_(None),
                Backup.image_type == "backup",
            )
        )

    def grace_seconds(self, rt: Runtime) -> float:
        return rt.settings.lease_seconds  # a checkpoint's task is queued as it is created

    def to_enqueue(self, rows: Sequence[Backup]) -> list[str]:
        return sorted({row.checkpoint_id for row in rows})  # checkpoints run their backups


BACKUP = _Backups()


def _units_to_write(backup: Backup) -> list[tuple[str, str, str]]:
    """(backup id owning the data, kind, path) of each unit still to write: the backup
    itself, or a server's volumes but those an earlier attempt committed (`available`),
    which a resumed attempt keeps as they are."""
    if not backup.children:
        return [(backup.id, backup.kind, backup.volume_path or "")]
    return [
        (child.id, child.kind, child.volume_path or "")
        for child in backup.children
        if child.status != BackupStatus.AVAILABLE
    ]


def _log_id(session: Session, backup_id: str) -> str | None:
    return session.scalar(
        select(OperationLog.id).where(
            OperationLog.backup_id == backup_id, OperationLog.operation_type == "backup"
        )
    )


def _explain(exc: Exception) -> leases.Failure | None:
    if isinstance(exc, CbrError):
        return leases.Failure(exc.error, exc.detail)
    if isinstance(exc, StorageError):
        return leases.Failure(INTERNAL_ERROR, storage_reason(exc))
    if isinstance(exc, (ArchiveError, OSError)):
        return leases.Failure(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
    return None


# The faults of a region's storage a retry does not fix, named without the server's path.
_STORAGE_FAULTS = {
    errno.ENOENT: "storage path missing",
    errno.ENOTDIR: "storage path is not a directory",
    errno.EEXIST: "storage path is not a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}


def storage_reason(exc: StorageError) -> str:
    """A backup's fail reason for a storage fault: its kind, never a server path.

    Permanent faults (a path missing or not a directory, no permission, a read-only or
    full file system) make the region's storage unusable until an operator acts; a
    transient one (EIO, EAGAIN...) got here only after the store's retries ran out.
    """
    cause = exc.__cause__
    code = cause.errno if isinstance(cause, OSError) else None
    fault = _STORAGE_FAULTS.get(code or 0) or (
        os.strerror(code).lower() if code else type(exc).__name__
    )
    kind = "unusable" if isinstance(exc, PermanentStorageError) else "error"
    reason = f"region storage {kind}: {fault}"
    return f"chunk {exc.digest}: {reason}" if exc.digest else reason  # which chunk, if one


@dataclass(frozen=True)
class _Unit:
    """A backup unit with its resource open: every read goes through `fd`, never `path`."""

    backup_id: str  # the backup owning the data
    kind: str  # "tree" or "disk"
    path: str  # as registered (for messages and metadata only)
    fd: int


@contextmanager
def _opened_units(rt: Runtime, claim: Claim) -> Iterator[list[_Unit]]:
    """Every unit's resource opened confined below its root (invariant 7), all before any
    is read: a server with one swapped volume fails before reading the others."""
    roots = _project_roots(rt, claim.backup_id)
    nodes = _registered_nodes(rt, [unit_id for unit_id, _kind, _path in claim.units])
    with ExitStack() as stack:
        units = []
        for unit_id, kind, path in claim.units:
            fd = _open_resource(roots, kind, nodes.get(unit_id), path)
            units.append(_Unit(unit_id, kind, path, stack.enter_context(opened(fd))))
        yield units


def _project_roots(rt: Runtime, backup_id: str) -> list[Path]:
    with rt.db.reading() as session:
        project = session.execute(
            select(Project.id, Project.name)
            .join(Backup, Backup.project_id == Project.id)
            .where(Backup.id == backup_id)
        ).one()
    return project_roots(rt.settings, project.id, project.name)


def _registered_nodes(rt: Runtime, unit_ids: list[str]) -> dict[str, str | None]:
    """unit backup id -> the node its disk was registered as ("file", "block"; None for a
    tree or a disk registered before nodes were recorded)."""
    with rt.db.reading() as session:
        query = select(Backup.id, Backup.resource_id).where(Backup.id.in_(unit_ids))
        resources = {unit: resource for unit, resource in session.execute(query)}
        nodes: dict[str, str | None] = {}
        for model in (Protectable, ProtectableVolume):
            rows = session.execute(
                select(model.id, model.node).where(model.id.in_(list(resources.values())))
            )
            nodes.update({resource: node for resource, node in rows})
    return {unit: nodes.get(resource) for unit, resource in resources.items()}


def _open_resource(roots: list[Path], kind: str, node: str | None, path: str) -> int:
    """A descriptor of the unit's directory, image file or block device, opened below its
    configured root without following any symlink and without blocking; RESOURCE_NOT_FOUND
    when the path no longer leads there."""
    location = locate(roots, path)
    try:
        root_fd = open_root(location.root)
    except OSError as exc:
        raise CbrError(
            RESOURCE_NOT_FOUND,
            _no_longer_valid(path, f"its configured root is not accessible ({exc.strerror})"),
        ) from None
    with opened(root_fd):
        try:
            if kind == "tree":
                return open_directory(root_fd, location.relative)
            kinds = (node,) if node in DISK_KINDS else DISK_KINDS
            return open_data(root_fd, location.relative, os.O_RDONLY, kinds)
        except PathNotConfined as exc:
            raise CbrError(RESOURCE_NOT_FOUND, _no_longer_valid(path, exc.why)) from None
        except FileNotFoundError:
            raise CbrError(
                RESOURCE_NOT_FOUND, _no_longer_valid(path, "it does not exist")
            ) from None
        except NotADirectoryError:
            why = "it is not a directory" if kind == "tree" else "a component is not a directory"
            raise CbrError(RESOURCE_NOT_FOUND, _no_longer_valid(path, why)) from None


# What registration accepts for a disk. A disk is opened only as the node it was registered
# as; one registered before nodes were recorded may be either. Never a FIFO, socket or
# character device.
DISK_KINDS = ("file", "block")


def _no_longer_valid(path: str, why: str) -> str:
    return f"resource path is no longer valid: {path}: {why}"


def _expected_bytes(rt: Runtime, units: list[_Unit], previous: dict[str, str | None]) -> int:
    """Bytes the units will read, for progress: a disk's size; a tree's stream size as its
    previous backup recorded it, or, for a tree never backed up here, as a walk of it
    finds (read through its descriptor). Walking a tree of many small files costs about
    as much as an incremental backup of it, so the walk is spared where a size is known
    (progress stops at 99% until the end, so a tree that grew since only shows it late)."""
    total = 0
    for unit in units:
        if unit.kind != "tree":
            total += image_size(unit.fd)
            continue
        recorded = _recorded_stream_size(rt, previous[unit.backup_id])
        total += tree_size(unit.fd) if recorded is None else recorded
    return total


def _recorded_stream_size(rt: Runtime, previous_id: str | None) -> int | None:
    """The stream size the previous backup of a tree recorded, or None if there is none."""
    if previous_id is None:
        return None
    with rt.db.reading() as session:
        return session.scalar(select(Backup.bytes_total).where(Backup.id == previous_id))


def _write_unit(
    rt: Runtime,
    store: ChunkStore,
    codec: VaultCodec,
    claim: Claim,
    unit: _Unit,
    previous_id: str | None,
) -> None:
    progress = claim.progress
    sink = BudgetSink(rt.db, store, rt.settings.compression_level, claim.owner, codec)
    progress.current = 0

    def advance(done: int) -> None:
        progress.current = done
        leases.stop_point(rt)  # every PROGRESS_STEP bytes: the service may be stopping

    options: dict[str, Any] = {
        "workers": rt.settings.io_threads,
        "on_progress": advance,
        "metadata": {"backup_id": unit.backup_id, "path": unit.path},
        "max_in_flight": rt.settings.max_chunks_in_flight,
    }
    result: BackupResult
    stoppable = _Stoppable(rt, sink)
    if unit.kind == "tree":
        previous = _previous_tree(rt, store, codec, claim.vault_id, previous_id)
        result = backup_tree(unit.fd, stoppable, previous=previous, **options)
        incremental = previous is not None
    else:
        # A disk is always read whole; its previous backup's chunks are what it does not
        # store again.
        result = backup_disk(unit.fd, stoppable, **options)
        incremental = previous_id is not None
    log.info(
        "backup unit written",
        backup_id=unit.backup_id,
        bytes_total=result.bytes_total,
        bytes_new=result.bytes_new,
        bytes_reused=result.bytes_reused,
        files_reused=result.files_reused,
        files_read=result.files_read,
    )
    _log_warnings(unit.backup_id, result.warnings)
    codec.put_manifest(store, manifest_name(unit.backup_id), result.manifest.to_bytes())
    _commit_unit(rt, claim, unit.backup_id, sink, result, incremental)
    progress.done_units += progress.current
    progress.current = 0


@dataclass(frozen=True)
class _Stoppable:
    """The engine's sink, which ends the backup before the next chunk once the service
    stops: a chunk is stored whole or not at all, so the point between two is safe (the
    resumed attempt finds the stored ones again). Progress reports check too, for runs
    that store nothing new."""

    rt: Runtime
    sink: ChunkSink

    def name(self, data: bytes | memoryview) -> str:
        return self.sink.name(data)

    def missing(self, digests: Sequence[str]) -> set[str]:
        return self.sink.missing(digests)

    def store(self, digest: str, data: bytes) -> int:
        leases.stop_point(self.rt)
        return self.sink.store(digest, data)


def _previous_backup_id(rt: Runtime, vault_id: str, unit: _Unit) -> str | None:
    """The newest available backup of the same resource (tree or disk) in this vault, the
    one a backup of it builds on (and is `incremental` to). Only one encrypted as this one
    is: its chunks are named the same way (a vault may hold both after migrateresources)."""
    with rt.db.reading() as session:
        resource_id, encrypted = session.execute(
            select(Backup.resource_id, Backup.encrypted).where(Backup.id == unit.backup_id)
        ).one()
        return session.scalar(
            select(Backup.id)
            .where(
                Backup.vault_id == vault_id,
                Backup.resource_id == resource_id,
                Backup.encrypted == encrypted,
                Backup.kind == unit.kind,
                Backup.status == BackupStatus.AVAILABLE,
                Backup.id != unit.backup_id,
            )
            .order_by(Backup.created_at.desc())
            .limit(1)
        )


def _previous_tree(
    rt: Runtime, store: ChunkStore, codec: VaultCodec, vault_id: str, previous_id: str | None
) -> PreviousBackup | None:
    """The previous backup of a tree, read: its unchanged files are not read again. Its
    chunks cannot vanish meanwhile: garbage collection never runs in a vault while a
    backup holds its lease there (invariant 2)."""
    if previous_id is None:
        return None
    try:
        blob = codec.get_manifest(store, manifest_name(previous_id))
        return previous_backup(rt.db, store, vault_id, blob, codec)
    except (StorageError, ArchiveError) as exc:
        # A full read is always correct; only slower.
        log.warning("previous backup unreadable", backup_id=previous_id, error=str(exc))
        return None


def _log_warnings(unit_id: str, warnings: Sequence[str]) -> None:
    if warnings:
        log.warning(
            "backup skipped or saw changing entries",
            backup_id=unit_id,
            count=len(warnings),
            first=[w[:MAX_WARNING_CHARS] for w in warnings[:LOGGED_WARNINGS]],
        )


def capped_warnings(warnings: Sequence[str], limit: int = MAX_WARNINGS) -> list[str]:
    """At most `limit` entries of at most MAX_WARNING_CHARS each; the last one says how
    many more there were when they do not all fit."""
    if len(warnings) <= limit:
        kept, rest = list(warnings), 0
    else:
        kept, rest = list(warnings[: limit - 1]), len(warnings) - (limit - 1)
    entries = [
        w if len(w) <= MAX_WARNING_CHARS else w[: MAX_WARNING_CHARS - 3] + "..." for w in kept
    ]
    if rest:
        more = "at least " if len(warnings) >= ENGINE_MAX_WARNINGS else ""
        entries.append(f"... and {more}{rest} more")
    return entries


def _commit_unit(
    rt: Runtime,
    claim: Claim,
    unit_id: str,
    sink: BudgetSink,
    result: BackupResult,
    incremental: bool,
) -> None:
    written = [(c.digest, c.plain_size, c.stored_size) for c in sink.written.values()]
    with rt.db.transaction() as session:
        added = chunks.index_chunks(session, claim.vault_id, written, sink.stored_digests())
        linked = chunks.link_backup(session, unit_id, claim.vault_id, result.digests)
        if linked != len(result.digests):
            raise CbrError(INTERNAL_ERROR, "chunk index is missing chunks this backup references")
        # The unit's reservation becomes the bytes it added (index rows it inserted).
        settle_capacity(session, claim.vault_id, used=added, released=sink.reserved)
        owner = session.get(Backup, claim.backup_id)
        unit = session.get(Backup, unit_id)
        assert owner is not None and unit is not None
        owner.reserved_bytes -= sink.reserved
        unit.warnings = capped_warnings(result.warnings)
        unit.bytes_total = result.bytes_total
        unit.bytes_new = added
        unit.chunk_count = result.chunks_total
        unit.incremental = incremental
        unit.content_root = content_roots.of_manifest(result.manifest)
        if unit.kind == "tree":
            protectables.record_tree_size(session, unit.resource_id, result.bytes_total)
        unit.protected_at = unit.protected_at or clock.now()
        if unit.id != claim.backup_id:
            unit.status = BackupStatus.AVAILABLE


def _complete(session: Session, backup: Backup, claim: Claim) -> None:
    """The backup becomes `available` (its volume backups did as each unit committed)."""
    if backup.children:
        backup.warnings = capped_warnings(
            [f"{c.resource_name}: {w}" for c in backup.children for w in c.warnings]
        )
        backup.bytes_total = sum(c.bytes_total for c in backup.children)
        backup.bytes_new = sum(c.bytes_new for c in backup.children)
        backup.chunk_count = sum(c.chunk_count for c in backup.children)
        backup.incremental = all(c.incremental for c in backup.children)
        backup.content_root = content_roots.of_volumes(backup.children)
    backup.status = BackupStatus.AVAILABLE
    backup.protected_at = backup.protected_at or clock.now()
    _release_reservation(session, backup)
    vaults.release_resource(session, backup.resource_id)
    read = claim.progress.done_units  # every unit's final count: what the backup read
    operation_logs.set_bytes(session, claim.log_id, operation_logs.Bytes(read, read))
    operation_logs.complete_operation(
        session, claim.log_id, _backup_details(session, claim, backup)
    )
    checkpoints.settle(session, backup.checkpoint_id)


def _backup_details(session: Session, claim: Claim, backup: Backup) -> dict[str, Any] | None:
    """The log's `backup` block with what the backup turned out to be (`incremental`)."""
    log = session.get(OperationLog, claim.log_id) if claim.log_id else None
    if log is None:
        return None
    block = dict(log.extra_info.get("backup", {}))
    return {"backup": {**block, "incremental": str(backup.incremental).lower()}}


def _remove_failed(rt: Runtime, claim: Claim) -> None:
    """After the backup failed: drop its manifests, and remove the chunks it created that
    nothing references (`backup_cleanup`) when its failure could hold the vault (no other
    writer was in it)."""
    try:
        store = rt.stores.vault(claim.region, claim.vault_id)
        for unit_id in claim.own_ids:
            store.delete_manifest(manifest_name(unit_id))
    except StorageError as exc:
        log.warning("manifests of a failed backup not removed", reason=storage_reason(exc))
    if claim.cleanup_held:
        removed = backup_cleanup.remove_orphans(
            rt, claim.region, claim.vault_id, claim.owner.created
        )
        log.info("failed backup cleaned up", backup_id=claim.backup_id, chunks_removed=removed)


def _release_reservation(session: Session, backup: Backup) -> None:
    if backup.reserved_bytes:
        settle_capacity(session, backup.vault_id, released=backup.reserved_bytes)
        backup.reserved_bytes = 0


def _fail_in_session(session: Session, backup: Backup, error: ErrorCode, reason: str) -> None:
    """Mark the backup `error` and give back its reserved capacity; its chunks are no
    longer referenced (the caller or garbage collection removes them)."""
    _release_reservation(session, backup)
    for unit in [backup, *backup.children]:
        unit.status, unit.fail_reason, unit.lease_until = BackupStatus.ERROR, reason[:1024], None
        session.execute(delete(BackupChunk).where(BackupChunk.backup_id == unit.id))
    vaults.release_resource(session, backup.resource_id)
    operation_logs.fail_operation(session, _log_id(session, backup.id), error, reason)
    checkpoints.settle(session, backup.checkpoint_id)
