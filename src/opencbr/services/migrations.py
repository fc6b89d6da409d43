"""Migrating resources between vaults (POST /vaults/{vault_id}/migrateresources): resources
and every backup of them move to another vault of the same project, type and region,
metadata and chunks, without a moment where a backup is whole in no vault or in two.

Chunks are per vault, so the destination needs its own copy of each chunk it lacks. The
request checks and records a `VaultMigration` (and answers at once); a worker runs it as
leased work, each step idempotent so that a crash anywhere is resumed by the reconciler:

    waiting --claim--> running:
        plan     the units (backups, and each server backup's volumes) of the resources in
                 the source, and the chunks the destination lacks (one anti-join per unit)
        copy     each missing chunk, verified, into the destination's store; flush; index
                 it in the destination (`vault_chunks`, `used_bytes`), batch by batch
        manifest each unit's manifest into the destination (a rename: whole or absent)
        move     ONE transaction: every unit's chunks are indexed in the destination, no
                 backup of the resources is busy, none is new since the plan; then the
                 backups, their replication records and the bindings change vault, and the
                 row turns `moved` (anything else: plan again)
    moved --> success:
        cleanup  the source's copies of the moved manifests are removed; garbage
                 collection then removes the source's chunks nothing references any more

Before the move commits every backup is whole in the source (nothing there was touched);
after it, whole in the destination (its chunks indexed and flushed, its manifest written).
Garbage collection of the destination waits while a migration may still write into it
(gc.py), as it waits for backups being written. A backup busy with a restore, a backup or
a replication makes the migration wait (`ready`; the reconciler tries it again). CBR has
no operation-log type for this operation: the row and the lifecycle log say how it went.
Checkpoints stay where they were made: a moved backup still names its checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db import chunks
from opencbr.db.backups import Backup, ReplicationRecord
from opencbr.db.session import Database
from opencbr.db.status import (
    LIVE_MIGRATION,
    LIVE_RECORD,
    BackupStatus,
    MigrationStatus,
)
from opencbr.db.vaults import GB, Vault, VaultMigration, VaultResource
from opencbr.errors import (
    DESTINATION_VAULT_FULL,
    DESTINATION_VAULT_NOT_FOUND,
    DUPLICATE_RESOURCE,
    INTERNAL_ERROR,
    INVALID_PARAMETER,
    RESOURCE_NOT_IN_VAULT,
    RESOURCE_TYPE_MISMATCH,
    VAULT_HAS_RUNNING_BACKUP,
    VAULT_RESOURCES_OVER_LIMIT,
    CbrError,
    ErrorCode,
)
from opencbr.services import leases, planned_records, vaults
from opencbr.services.fanout import ChunkCopier, Sink, copy_in_order
from opencbr.services.identity import AuthContext
from opencbr.services.runtime import Runtime
from opencbr.services.stores import DamageMarker
from opencbr.storage.layout import manifest_name
from opencbr.storage.store import ChunkStore

log = structlog.get_logger(__name__)
INDEX_EVERY_CHUNKS = 1000  # flush and index the destination this often
WAIT_SECONDS = 1.0  # between looks at a backup that is busy when the move is due
# Backups whose data a task is reading or writing: the move waits for them.
_BUSY = (BackupStatus.PROTECTING, BackupStatus.WAITING_PROTECT, BackupStatus.RESTORING)


# --- the request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    migration_id: str
    resource_ids: list[str]


def start(
    db: Database,
    ctx: AuthContext,
    vault_id: str,
    destination_vault_id: str,
    resource_ids: list[str] | None,
) -> Started:
    """Check the request and record the migration (every resource of the source vault when
    `resource_ids` is None); the worker does the rest."""
    with db.transaction() as session:
        source = vaults.get_in_session(session, ctx, vault_id)
        dest = vaults.find_in_project(session, ctx.project_id, destination_vault_id)
        if dest is None:
            raise CbrError(
                DESTINATION_VAULT_NOT_FOUND, f"The vault {destination_vault_id} does not exist."
            )
        _check_pair(source, dest)
        for vault in sorted((source, dest), key=lambda v: v.id):  # one lock order
            session.refresh(vault, with_for_update=True)
        chosen = _resources(session, source, resource_ids)
        _check_free(session, source, dest, chosen)
        row = VaultMigration(
            project_id=ctx.project_id,
            source_vault_id=source.id,
            destination_vault_id=dest.id,
            resource_ids=chosen,
        )
        session.add(row)
        session.flush()
        return Started(row.id, chosen)


def _check_pair(source: Vault, dest: Vault) -> None:
    if source.id == dest.id:
        raise CbrError(INVALID_PARAMETER, "destination_vault_id is the source vault itself.")
    if (source.object_type, source.protect_type) != (dest.object_type, dest.protect_type):
        raise CbrError(
            RESOURCE_TYPE_MISMATCH,
            f"The destination is a {dest.object_type} {dest.protect_type} vault; the source "
            f"a {source.object_type} {source.protect_type} one.",
        )


def _resources(session: Session, source: Vault, wanted: list[str] | None) -> list[str]:
    """The resources to move: bound to the source, or with backups in it (a replication
    vault's replicas name resources bound nowhere here)."""
    bound = [binding.resource_id for binding in source.resources]
    backed_up = set(
        session.scalars(
            select(Backup.resource_id).where(
                Backup.vault_id == source.id, Backup.parent_id.is_(None)
            )
        )
    )
    if wanted is None:
        chosen = bound + sorted(backed_up.difference(bound))
        if not chosen:
            raise CbrError(INVALID_PARAMETER, "The vault has no resource to migrate.")
        return chosen
    if len(set(wanted)) != len(wanted):
        raise CbrError(DUPLICATE_RESOURCE)
    unknown = [rid for rid in wanted if rid not in bound and rid not in backed_up]
    if unknown:
        raise CbrError(
            RESOURCE_NOT_IN_VAULT, f"Resources {', '.join(unknown)} does not exist in vault."
        )
    return list(wanted)


def _check_free(session: Session, source: Vault, dest: Vault, chosen: list[str]) -> None:
    busy = [
        b.resource_id
        for b in source.resources
        if b.resource_id in chosen and b.protect_status != "available"
    ]
    if busy:
        raise CbrError(
            VAULT_HAS_RUNNING_BACKUP,
            f"Resource {busy[0]} is being backed up or restored; migrate it when that ends.",
        )
    moving = session.scalars(
        select(VaultMigration).where(
            VaultMigration.source_vault_id == source.id,
            VaultMigration.status.in_(LIVE_MIGRATION),
        )
    )
    for other in moving:
        taken = set(other.resource_ids).intersection(chosen)
        if taken:
            raise CbrError(
                INVALID_PARAMETER, f"Resource {sorted(taken)[0]} is being migrated already."
            )
    bound_here = sum(1 for b in source.resources if b.resource_id in chosen)
    if len(dest.resources) + bound_here > vaults.MAX_RESOURCES:
        raise CbrError(
            VAULT_RESOURCES_OVER_LIMIT, f"Resources of vault over limit: {vaults.MAX_RESOURCES}."
        )


# --- the work ------------------------------------------------------------------------------


class DestinationBusy(leases.VaultBusy):
    """Garbage collection holds the destination vault; the migration tries again shortly."""


@dataclass
class _Work:
    migration_id: str
    region: str
    source_vault_id: str
    dest_vault_id: str
    resource_ids: list[str]
    moved: bool  # the move committed: only the cleanup is left
    moved_units: list[str]
    chunks_copied: int = 0
    bytes_copied: int = 0


@dataclass
class _Plan:
    top_ids: set[str]  # the resources' backups in the source when planned
    units: list[str]  # the backups holding data (volumes of a server, or the backup)
    missing: list[tuple[str, int, int]] = field(default_factory=list)  # deduplicated
    busy: bool = False


class _Migrations(leases.LeasedWork[VaultMigration, _Work]):
    name = "migration"
    model = VaultMigration
    live = LIVE_MIGRATION
    busy = DestinationBusy

    def ready(self, session: Session, row: VaultMigration) -> bool:
        if row.status == MigrationStatus.MOVED:
            return True
        return not _busy_backups(session, row.source_vault_id, row.resource_ids)

    def writes_to(self, session: Session, row: VaultMigration) -> Vault | None:
        if row.status == MigrationStatus.MOVED:
            return None
        return session.get(Vault, row.destination_vault_id, with_for_update=True)

    def begin(self, rt: Runtime, session: Session, row: VaultMigration) -> _Work:
        source = session.get(Vault, row.source_vault_id)
        assert source is not None  # the row goes with its vaults (foreign keys cascade)
        if row.status == MigrationStatus.WAITING:
            row.status = MigrationStatus.RUNNING
        return _Work(
            row.id,
            source.region,
            row.source_vault_id,
            row.destination_vault_id,
            list(row.resource_ids),
            row.status == MigrationStatus.MOVED,
            list(row.moved_units),
        )

    def progress(self, work: _Work) -> dict[str, Any]:
        return {"chunks_copied": work.chunks_copied, "bytes_copied": work.bytes_copied}

    def complete(self, session: Session, row: VaultMigration, work: _Work) -> None:
        row.status = MigrationStatus.SUCCESS

    def fail(
        self,
        rt: Runtime,
        session: Session,
        row: VaultMigration,
        work: _Work | None,
        failure: leases.Failure,
    ) -> None:
        _fail(row, failure.error, failure.reason)

    def explain(self, exc: Exception) -> leases.Failure | None:
        return leases.explain_fault(exc)

    def candidates(self, session: Session) -> Iterable[VaultMigration]:
        return session.scalars(
            select(VaultMigration).where(VaultMigration.status.in_(LIVE_MIGRATION))
        )


MIGRATION = _Migrations()


def _fail(row: VaultMigration, error: ErrorCode, reason: str) -> None:
    """running | waiting -> failed (the backups stay whole in the source); a failure after
    the move (removing the source's old manifests) leaves them whole in the destination."""
    row.status = MigrationStatus.FAILED
    row.error_code, row.error_message = error.code, reason[:1024]


@dataclass(frozen=True)
class Ended:
    source_vault_id: str
    destination_vault_id: str
    succeeded: bool


def run(rt: Runtime, migration_id: str) -> Ended | None:
    """Run the migration; once it ended, which vaults now hold garbage (the source's after
    a success, the destination's copies after a failure). None when it did not run."""
    claimed = leases.run(rt, MIGRATION, migration_id, lambda work: _migrate(rt, work))
    if claimed is None:
        return None
    with rt.db.reading() as session:
        row = session.get(VaultMigration, migration_id)
        succeeded = row is not None and row.status == MigrationStatus.SUCCESS
    work = claimed.work
    return Ended(work.source_vault_id, work.dest_vault_id, succeeded)


def _migrate(rt: Runtime, work: _Work) -> None:
    source = rt.stores.vault(work.region, work.source_vault_id)
    dest = rt.stores.vault(work.region, work.dest_vault_id)
    while not work.moved:
        plan = _plan(rt.db, work)
        if plan.busy:
            leases.stop_point(rt)
            time.sleep(WAIT_SECONDS)  # a restore or backup of one of them ends soon
            continue
        _copy_chunks(rt, work, source, dest, plan.missing)
        for unit_id in plan.units:
            leases.stop_point(rt)
            dest.put_manifest(manifest_name(unit_id), source.get_manifest(manifest_name(unit_id)))
        work.moved = _move(rt.db, work, plan)
    _remove_source_manifests(rt, work, source)


def _busy_backups(session: Session, vault_id: str, resource_ids: list[str]) -> bool:
    """A backup of the resources in the vault is being written or read, or copied away."""
    tops = select(Backup.id).where(
        Backup.vault_id == vault_id,
        Backup.parent_id.is_(None),
        Backup.resource_id.in_(resource_ids),
    )
    busy = session.scalar(tops.where(Backup.status.in_(_BUSY)).limit(1))
    copying = session.scalar(
        select(ReplicationRecord.id)
        .where(
            ReplicationRecord.source_backup_id.in_(tops),
            ReplicationRecord.status.in_(LIVE_RECORD),
        )
        .limit(1)
    )
    return busy is not None or copying is not None


def _movable(session: Session, work: _Work) -> list[Backup]:
    """The resources' top-level backups in the source that move (a deleting one stays: its
    delete task removes it there)."""
    return list(
        session.scalars(
            select(Backup).where(
                Backup.vault_id == work.source_vault_id,
                Backup.parent_id.is_(None),
                Backup.resource_id.in_(work.resource_ids),
                Backup.status != BackupStatus.DELETING,
            )
        )
    )


def _units(backups: list[Backup]) -> list[str]:
    return [unit.id for backup in backups for unit in [*backup.children, backup]]


def _plan(db: Database, work: _Work) -> _Plan:
    planned_records.settle(db, [work.source_vault_id])
    with db.reading() as session:
        backups = _movable(session, work)
        plan = _Plan({b.id for b in backups}, _units(backups))
        plan.busy = _busy_backups(session, work.source_vault_id, work.resource_ids)
        seen: dict[str, tuple[str, int, int]] = {}
        for unit_id in plan.units:
            for item in chunks.missing_in_vault(session, unit_id, work.dest_vault_id):
                seen.setdefault(item[0], item)
        plan.missing = sorted(seen.values())
        dest = session.get(Vault, work.dest_vault_id)
        needed = sum(stored for _d, _p, stored in plan.missing)
        if dest is not None and dest.used_bytes + dest.reserved_bytes + needed > dest.size_gb * GB:
            raise CbrError(
                DESTINATION_VAULT_FULL,
                "The resources' backups do not fit in the destination vault; enlarge it "
                "(PUT vault billing.size).",
            )
    return plan


def _copy_chunks(
    rt: Runtime,
    work: _Work,
    source: ChunkStore,
    dest: ChunkStore,
    missing: list[tuple[str, int, int]],
) -> None:
    """Copy the chunks the destination lacks, verified; flush and index them batch by
    batch, so a resumed attempt copies only the rest."""
    with rt.db.reading() as session:  # checked against their stored-bytes digests
        stored = chunks.stored_digests(session, work.source_vault_id, [d for d, _p, _s in missing])
    copier = ChunkCopier(source, DamageMarker(rt.db, work.source_vault_id), stored, rt.reader)
    # One project: sealed chunks and manifests are copied as they are.
    sinks = [Sink(dest, DamageMarker(rt.db, work.dest_vault_id))]
    batch: list[tuple[str, int, int]] = []
    with ThreadPoolExecutor(max(2, rt.settings.io_threads * 2), "migrate") as pool:
        copy = lambda item: copier.copy(item[0], sinks)  # noqa: E731
        for item, copied in copy_in_order(pool, copy, missing):
            batch.append(item)
            work.chunks_copied += 1
            work.bytes_copied += copied
            if len(batch) >= INDEX_EVERY_CHUNKS or rt.stopping.is_set():
                _index(rt.db, work, dest, batch, sinks[0].recorded)
                batch = []
                leases.stop_point(rt)
    _index(rt.db, work, dest, batch, sinks[0].recorded)


def _index(
    db: Database,
    work: _Work,
    dest: ChunkStore,
    batch: list[tuple[str, int, int]],
    recorded: Mapping[str, str],
) -> None:
    if not batch:
        return
    dest.flush()  # durable before the index says so (invariant 1)
    with db.transaction() as session:
        added = chunks.index_chunks(session, work.dest_vault_id, batch, recorded)
        vaults_row = session.get(Vault, work.dest_vault_id)
        if vaults_row is not None:
            vaults_row.used_bytes += added


def _move(db: Database, work: _Work, plan: _Plan) -> bool:
    """The move, in one transaction; False (nothing changed) when the plan no longer holds:
    a backup became busy, appeared, or references a chunk the destination lacks."""
    with db.transaction() as session:
        row = session.get(VaultMigration, work.migration_id, with_for_update=True)
        if row is None or row.status != MigrationStatus.RUNNING:
            raise CbrError(INTERNAL_ERROR, "the migration ended elsewhere")
        for vault_id in sorted((work.source_vault_id, work.dest_vault_id)):
            session.get(Vault, vault_id, with_for_update=True)
        backups = _movable(session, work)
        planned_records.expand_pending(session, [work.source_vault_id])
        if _busy_backups(session, work.source_vault_id, work.resource_ids) or not {
            b.id for b in backups
        }.issubset(plan.top_ids):
            return False
        units = _units(backups)
        if any(chunks.missing_in_vault(session, unit, work.dest_vault_id) for unit in units):
            return False
        _change_vault(session, work, [b.id for b in backups], units)
        row.status = MigrationStatus.MOVED
        row.moved_units = units
        work.moved_units = units
        log.info("migration moved", id=work.migration_id, backups=len(backups))
        return True


def _change_vault(session: Session, work: _Work, top_ids: list[str], units: list[str]) -> None:
    dest = work.dest_vault_id
    session.execute(
        update(Backup)
        .where(Backup.id.in_(units))
        .values(vault_id=dest, updated_at=clock.now())
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(ReplicationRecord)
        .where(ReplicationRecord.source_backup_id.in_(top_ids))
        .values(source_vault_id=dest)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(VaultResource)
        .where(
            VaultResource.vault_id == work.source_vault_id,
            VaultResource.resource_id.in_(work.resource_ids),
        )
        .values(vault_id=dest)
        .execution_options(synchronize_session=False)
    )


def _remove_source_manifests(rt: Runtime, work: _Work, source: ChunkStore) -> None:
    """The source's copies of the moved manifests (idempotent: a resumed cleanup finds
    some gone already). The source's chunks are garbage collection's to remove."""
    for unit_id in work.moved_units:
        leases.stop_point(rt)
        source.delete_manifest(manifest_name(unit_id))  # idempotent
