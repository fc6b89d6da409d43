"""Copying one backup to one destination vault (one task per replication record).

Steps, each idempotent:
1. plan: the chunks of each volume the destination lacks (or holds damaged), from one
   anti-join per volume; a source chunk its vault marks damaged fails the record at once;
2. read and validate the source manifests: a damaged one fails the record at once;
3. copy the chunks with bounded parallelism: read the stored bytes at the source, verify
   them against the digest of stored bytes the source's index records, or (older chunks)
   their content's BLAKE3 (a corrupt chunk is marked damaged at the source and fails the record),
   write the same bytes at the destination; every batch is flushed and then indexed in
   the destination vault, so a rerun after a crash plans only what is still missing;
4. write the manifests, then commit replica + record + operation log in one transaction.

Failure reasons name backups, chunks and the kind of fault, never a store path.

Garbage collection cannot run in the destination vault meanwhile: the replica is
`protecting` there (see gc.py). Replications into one vault run one at a time, oldest first,
so the backups of one vault share chunks instead of copying them twice: a record whose turn
has not come returns at once, and `run` of the record before it, once that one has settled,
names it as the next to run (the reconciler restarts the first record of each vault).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.archive.manifest import Manifest
from opencbr.archive.sink import ArchiveError
from opencbr.db import chunks
from opencbr.db.backups import Backup, Checkpoint, OperationLog, ReplicationRecord
from opencbr.db.status import LIVE_RECORD, BackupStatus, RecordStatus
from opencbr.db.vaults import Vault
from opencbr.errors import (
    DESTINATION_VAULT_FULL,
    REPLICA_IMPORT_FAILED,
    CbrError,
    ErrorCode,
)
from opencbr.services import checkpoints, content_roots, leases, operation_logs, replicas
from opencbr.services.runtime import Runtime
from opencbr.services.stores import (
    PLAIN,
    DamageMarker,
    VaultCodec,
    failure_reason,
    put_chunk_checked,
)
from opencbr.storage.chunk import reseal_chunk, verify_stored
from opencbr.storage.layout import manifest_name
from opencbr.storage.sealing import ChunkKeys, Sealing
from opencbr.storage.store import ChunkStore, CorruptChunkError, NotFoundError, StorageError

log = structlog.get_logger(__name__)
GB = 1024**3
INDEX_EVERY_BYTES = 256 * 1024**2  # flush + index the destination this often
IN_FLIGHT = 16


class DestinationBusy(leases.VaultBusy):
    """Garbage collection holds the destination vault; the record tries again shortly."""


@dataclass
class _Work:
    record_id: str
    log_id: str | None
    source_region: str
    source_vault_id: str
    dest_region: str
    dest_vault_id: str
    units: list[tuple[str, str]]  # (source unit id, replica unit id)
    budget: int
    missing: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    planned: bool = False
    bytes_total: int = 0
    bytes_copied: int = 0
    chunks_total: int = 0
    chunks_copied: int = 0
    chunks_present: int = 0
    manifests: dict[str, Manifest] = field(default_factory=dict)  # by replica unit id
    verified: content_roots.Verified | None = None
    timings: list[float] = field(default_factory=list)  # monotonic: started, planned, copied


def run(rt: Runtime, record_id: str) -> str | None:
    """Run the record; once it has settled (succeeded or failed), return the record next in
    line for its destination vault, for the caller to enqueue. None when it did not run."""
    claimed = leases.run(rt, REPLICATION, record_id, lambda work: _replicate(rt, work))
    if claimed is None:
        return None
    return next_in_line(rt, claimed.work.dest_vault_id)


def _replicate(rt: Runtime, work: _Work) -> None:
    work.timings.append(time.monotonic())
    _plan(rt, work)
    work.timings.append(time.monotonic())
    source = rt.stores.vault(work.source_region, work.source_vault_id)
    dest = rt.stores.vault(work.dest_region, work.dest_vault_id)
    manifests = _read_manifests(rt, work, source)  # a damaged one fails before the copy
    for unit_id, replica_id in work.units:
        _copy_unit(rt, work, source, dest, unit_id, replica_id)
    _write_manifests(rt.backup_codec(work.units[0][1]), dest, manifests)
    work.manifests = {replica_id: manifest for replica_id, (_b, manifest) in manifests.items()}
    # Durable chunks and manifests: the destination recomputes the roots before publishing.
    work.verified = content_roots.verify_replica(
        rt.db, dest, work.dest_vault_id, work.units, work.manifests, rt.reader
    )
    work.timings.append(time.monotonic())


class _Replications(leases.LeasedWork[ReplicationRecord, _Work]):
    """A replication record: one backup copied into one destination vault. Records into
    one vault run one at a time, oldest first (`ready`, `candidates`)."""

    name = "replication"
    model = ReplicationRecord
    live = LIVE_RECORD
    busy = DestinationBusy

    def lock(self, session: Session, work_id: str) -> ReplicationRecord | None:
        # A record planned with its vault has no replica until the fan-out task creates
        # it; one that task never reached (a crash in between) gets it here. It is
        # committed even when the claim then waits for garbage collection.
        replicas.add_missing_replicas(session, [work_id])
        return super().lock(session, work_id)

    def ready(self, session: Session, row: ReplicationRecord) -> bool:
        """Fail a record whose backup, replica or vault is gone; wait while an earlier
        record into the vault is still to finish (that one names this one next)."""
        dest = session.get(Vault, row.destination_vault_id, with_for_update=True)
        replica = session.get(Backup, row.destination_backup_id or "")
        source_backup = session.get(Backup, row.source_backup_id)
        if dest is None or replica is None or source_backup is None:
            reason = "The source backup or the destination vault no longer exists."
            fail_record(session, row, REPLICA_IMPORT_FAILED, reason)
            return False
        return not _earlier_record_running(session, row)  # the runner logs the wait

    def writes_to(self, session: Session, row: ReplicationRecord) -> Vault | None:
        return session.get(Vault, row.destination_vault_id, with_for_update=True)

    def begin(self, rt: Runtime, session: Session, row: ReplicationRecord) -> _Work:
        start_replication(session, row)
        dest = session.get(Vault, row.destination_vault_id)
        source_backup = session.get(Backup, row.source_backup_id)
        replica = session.get(Backup, row.destination_backup_id or "")
        assert dest is not None and source_backup is not None and replica is not None
        return _Work(
            row.id,
            row.operation_log_id,
            row.source_region,
            row.source_vault_id,
            dest.region,
            dest.id,
            _unit_pairs(source_backup, replica),
            dest.size_gb * GB - dest.used_bytes,
        )

    def beat(self, session: Session, row: ReplicationRecord, work: _Work) -> None:
        row.bytes_copied, row.chunks_copied = work.bytes_copied, work.chunks_copied
        row.progress = _percent(work)
        operation_logs.set_progress(session, work.log_id, row.progress, _moved(work))

    def progress(self, work: _Work) -> dict[str, Any]:
        return {"bytes_copied": work.bytes_copied, "bytes_total": work.bytes_total}

    def complete(self, session: Session, row: ReplicationRecord, work: _Work) -> None:
        _commit(session, row, work)

    def fail(
        self,
        rt: Runtime,
        session: Session,
        row: ReplicationRecord,
        work: _Work | None,
        failure: leases.Failure,
    ) -> None:
        if work is not None:
            row.bytes_copied, row.chunks_copied = work.bytes_copied, work.chunks_copied
        fail_record(session, row, failure.error, failure.reason)

    def after_fail(self, rt: Runtime, work: _Work) -> None:
        try:
            dest = rt.stores.vault(work.dest_region, work.dest_vault_id)
            for _unit_id, replica_id in work.units:
                dest.delete_manifest(manifest_name(replica_id))
        except StorageError as exc:
            log.warning("manifests of a failed replica not removed", reason=failure_reason(exc))

    def explain(self, exc: Exception) -> leases.Failure | None:
        return _explain(exc)

    def candidates(self, session: Session) -> Iterable[ReplicationRecord]:
        """The first live record of each destination vault, oldest first (the records
        behind it wait for it to settle, see `run`)."""
        firsts: dict[str, ReplicationRecord] = {}
        for record in session.scalars(_live_in_order()):
            firsts.setdefault(record.destination_vault_id, record)
        return list(firsts.values())


REPLICATION = _Replications()


def _explain(exc: Exception) -> leases.Failure | None:
    if isinstance(exc, CbrError):
        return leases.Failure(exc.error, exc.detail)
    if isinstance(exc, CorruptChunkError):
        return leases.Failure(
            REPLICA_IMPORT_FAILED,
            f"A source chunk is corrupt: {exc}. It is marked damaged: back the same data up "
            "again (which stores it anew) or delete the damaged backup, then replicate again.",
        )
    if isinstance(exc, NotFoundError):
        return leases.Failure(
            REPLICA_IMPORT_FAILED, f"A source chunk or manifest is missing: {exc}"
        )
    if isinstance(exc, (StorageError, OSError)):
        return leases.Failure(REPLICA_IMPORT_FAILED, failure_reason(exc))
    return None


# --- transitions of a record ------------------------------------------------------------


def start_replication(session: Session, record: ReplicationRecord) -> None:
    """waiting_replicate (or an interrupted replicating) -> replicating."""
    record.status = RecordStatus.REPLICATING
    operation_logs.set_progress(session, record.operation_log_id, 0)


def complete_record(session: Session, record: ReplicationRecord, work: _Work) -> None:
    """replicating -> success: the replica's checkpoint is available, the log closed."""
    record.status, record.progress, record.lease_until = RecordStatus.SUCCESS, 100, None
    record.bytes_copied, record.chunks_copied = work.bytes_copied, work.chunks_copied
    # The attempt's own time (monotonic, claim to commit) beside the bytes it copied: the
    # measured rate dry runs estimate from (replication_plan.measured_rate).
    record.finished_at = clock.now()
    record.copy_seconds = time.monotonic() - work.timings[0] if work.timings else None
    copied = operation_logs.Bytes(work.bytes_copied, work.bytes_copied)
    operation_logs.set_bytes(session, record.operation_log_id, copied)
    checkpoints.settle(session, record.destination_checkpoint_id)
    operation_logs.complete_operation(session, record.operation_log_id)


def fail_record(session: Session, record: ReplicationRecord, error: ErrorCode, reason: str) -> None:
    """-> fail; the partial replica disappears (copied chunks are left to GC)."""
    record.status, record.fail_code, record.fail_reason = (
        RecordStatus.FAIL,
        error.code,
        reason[:1024],
    )
    record.lease_until, record.finished_at = None, clock.now()
    replica = session.get(Backup, record.destination_backup_id or "")
    if replica is not None and replica.status != BackupStatus.AVAILABLE:
        checkpoint = session.get(Checkpoint, replica.checkpoint_id)
        session.delete(replica)
        if checkpoint is not None:
            session.delete(checkpoint)
        record.destination_backup_id = None
        record.destination_checkpoint_id = None
    operation_logs.fail_operation(session, record.operation_log_id, error, reason)


# --- claim and plan ---------------------------------------------------------------------


def _earlier_record_running(session: Session, record: ReplicationRecord) -> bool:
    """Is an older record into the same vault still to finish? (it copies shared chunks)"""
    earlier = session.scalars(
        select(ReplicationRecord).where(
            ReplicationRecord.destination_vault_id == record.destination_vault_id,
            ReplicationRecord.status.in_(LIVE_RECORD),
            ReplicationRecord.id != record.id,
            ReplicationRecord.created_at <= record.created_at,
        )
    )
    return any(other.created_at < record.created_at or other.id < record.id for other in earlier)


def _unit_pairs(source: Backup, replica: Backup) -> list[tuple[str, str]]:
    if not source.children:
        return [(source.id, replica.id)]
    by_source = {child.source_backup_id: child.id for child in replica.children}
    return [(child.id, by_source[child.id]) for child in source.children]


def _plan(rt: Runtime, work: _Work) -> None:
    planned: set[str] = set()
    with rt.db.transaction() as session:
        for unit_id, _replica_id in work.units:
            _refuse_damaged_source(session, unit_id, work.source_vault_id)
            missing = chunks.missing_in_vault(session, unit_id, work.dest_vault_id)
            # A chunk two volumes share is copied with the first (and indexed before the
            # second's manifest is linked): the bytes a dry run counts, once.
            missing = [item for item in missing if item[0] not in planned]
            planned.update(digest for digest, _p, _s in missing)
            count, _plain, _stored = chunks.backup_totals(session, unit_id)
            work.missing[unit_id] = missing
            work.chunks_total += count
            work.chunks_present += count - len(missing)
            work.bytes_total += sum(stored for _d, _p, stored in missing)
        if work.bytes_total > work.budget:
            raise CbrError(
                DESTINATION_VAULT_FULL,
                "The replica does not fit in the "
                "destination vault; enlarge it (PUT vault billing.size).",
            )
        record = session.get(ReplicationRecord, work.record_id)
        if record is not None:
            record.bytes_total, record.chunks_total = work.bytes_total, work.chunks_total
            record.chunks_present = work.chunks_present
    work.planned = True


def _refuse_damaged_source(session: Session, unit_id: str, vault_id: str) -> None:
    """Fail the record when its backup references chunks its vault knows to be damaged:
    copying them would only fail later, after the rest was copied for nothing."""
    damaged = chunks.damaged_in_backup(session, unit_id, vault_id)
    if damaged:
        raise CbrError(
            REPLICA_IMPORT_FAILED,
            f"Source chunk {damaged[0]} is damaged ({len(damaged)} damaged chunk(s) in "
            f"backup {unit_id}). Back the same data up again (which stores it anew) or "
            "delete the damaged backup, then replicate again.",
        )


# --- copy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkCopier:
    """Copies chunks from one vault's store to another's, marking the chunks whose reads
    fail verification damaged in their vault's index.

    Invariant 3: a chunk whose source index records the digest of its stored bytes
    (`stored`) is checked against that digest alone: no decompression, no hashing of
    the plain bytes. An older chunk is checked against its content digest. Either way
    the stored-bytes digest of what the destination now holds lands in `recorded`, for
    the destination's index. Thread-safe: `copy` runs on many threads (a dict's item
    assignment is atomic).
    """

    source: ChunkStore
    dest: ChunkStore
    source_damage: DamageMarker
    dest_damage: DamageMarker
    stored: Mapping[str, str] = field(default_factory=dict)
    recorded: dict[str, str] = field(default_factory=dict)
    # Opens sealed chunks; with `reseal`, sealed chunks are opened (authenticated) and
    # sealed again with that key: a copy into another project's vault.
    codec: VaultCodec = PLAIN
    reseal: Sealing | None = None

    @classmethod
    def between(
        cls,
        rt: Runtime,
        source: ChunkStore,
        dest: ChunkStore,
        vaults: tuple[str, str],
        todo: Sequence[tuple[str, int, int]],
    ) -> ChunkCopier:
        """A copier from vault `vaults[0]` to `vaults[1]` that knows the recorded stored
        digests of the chunks in `todo` (one query per 500). Sealed chunks are copied as
        they are between vaults of one project, and sealed again with the destination
        project's current data key into another project."""
        source_vault, dest_vault = vaults
        with rt.db.reading() as session:
            stored = chunks.stored_digests(session, source_vault, [d for d, _p, _s in todo])
            rows = session.execute(select(Vault.id, Vault.project_id).where(Vault.id.in_(vaults)))
            projects = {vault_id: project_id for vault_id, project_id in rows}
        dest_project = projects[dest_vault]
        reseal = None
        if projects[source_vault] != dest_project:
            reseal = rt.keys.sealing(dest_project)
        return cls(
            source,
            dest,
            DamageMarker(rt.db, source_vault),
            DamageMarker(rt.db, dest_vault),
            stored,
            codec=rt.reader,
            reseal=reseal,
        )

    def copy(self, digest: str) -> int:
        """Copy one chunk's stored bytes after checking them; return their size."""
        try:
            blob = self.source.get_chunk(digest)
            expected = self.stored.get(digest)
            # Raises CorruptChunkError: nothing unverified is written.
            if expected is None:
                self.codec.verify(blob, digest)
            else:
                verify_stored(blob, digest, expected)
            if self.reseal is not None:  # authenticates: raises CorruptChunkError
                blob = reseal_chunk(blob, digest, self._keys, self.reseal)
        except (CorruptChunkError, NotFoundError) as exc:
            self.source_damage.mark_failed_read(exc)
            raise
        put = put_chunk_checked(self.dest, digest, blob, self.dest_damage, self.codec)
        self.recorded[digest] = put.stored_digest
        return len(blob)

    @property
    def _keys(self) -> ChunkKeys:
        assert self.codec.keys is not None  # a copier that reseals is made with keys
        return self.codec.keys


def copy_in_order(
    pool: ThreadPoolExecutor, copier: ChunkCopier, todo: list[tuple[str, int, int]]
) -> Iterator[tuple[tuple[str, int, int], int]]:
    """Copy in order with at most IN_FLIGHT chunks (hence bounded memory) under way."""
    pending: list[tuple[tuple[str, int, int], Future[int]]] = []
    for item in todo:
        pending.append((item, pool.submit(copier.copy, item[0])))
        if len(pending) >= IN_FLIGHT:
            done, future = pending.pop(0)
            yield done, future.result()
    for done, future in pending:
        yield done, future.result()


def _copy_unit(
    rt: Runtime, work: _Work, source: ChunkStore, dest: ChunkStore, unit_id: str, replica_id: str
) -> None:
    """Copy one unit's missing chunks; every INDEX_EVERY_BYTES, flush and index what was
    copied on a thread of its own, so the copy threads never wait for the disk barrier.
    A stopping service ends the copy after the chunk at hand: what was copied is flushed
    and indexed, then the work is handed back (a resumed attempt plans only the rest)."""
    batch: list[tuple[str, int, int]] = []
    batch_bytes = 0
    indexed: list[Future[None]] = []
    copiers = max(2, rt.settings.io_threads * 2)
    vaults = (work.source_vault_id, work.dest_vault_id)
    copier = ChunkCopier.between(rt, source, dest, vaults, work.missing[unit_id])
    with (
        ThreadPoolExecutor(copiers, thread_name_prefix="replicate") as pool,
        ThreadPoolExecutor(1, thread_name_prefix="replicate-index") as indexer,
    ):
        for item, copied in copy_in_order(pool, copier, work.missing[unit_id]):
            work.bytes_copied += copied
            work.chunks_copied += 1
            batch.append(item)
            batch_bytes += copied
            if batch_bytes >= INDEX_EVERY_BYTES:
                indexed.append(
                    indexer.submit(_index, rt, work, dest, replica_id, batch, copier.recorded)
                )
                batch, batch_bytes = [], 0
            if rt.stopping.is_set():
                break
        for future in indexed:
            future.result()  # raises what indexing raised
    _index(rt, work, dest, replica_id, batch, copier.recorded)
    leases.stop_point(rt)


def _index(
    rt: Runtime,
    work: _Work,
    dest: ChunkStore,
    replica_id: str,
    batch: list[tuple[str, int, int]],
    recorded: Mapping[str, str],
) -> None:
    """Make copied chunks durable, then record them in the destination's chunk index.

    The bytes they add to the vault are counted on the replica unit in the same
    transaction (its `stored_bytes`), so a rerun after a crash keeps what an earlier
    attempt added."""
    if not batch:
        return
    dest.flush()
    with rt.db.transaction() as session:
        added = chunks.index_chunks(session, work.dest_vault_id, batch, recorded)
        vault = session.get(Vault, work.dest_vault_id)
        if vault is not None:
            vault.used_bytes += added
        session.execute(
            update(Backup)
            .where(Backup.id == replica_id)
            .values(bytes_new=Backup.bytes_new + added)
            .execution_options(synchronize_session=False)
        )


def _read_manifests(
    rt: Runtime, work: _Work, source: ChunkStore
) -> dict[str, tuple[bytes, Manifest]]:
    """Each source unit's manifest (opened when sealed), validated, by replica unit id; a
    manifest that does not open or parse fails the record with REPLICA_IMPORT_FAILED (1006)
    naming the backup."""
    manifests = {}
    for unit_id, replica_id in work.units:
        blob = rt.reader.get_manifest(source, manifest_name(unit_id))
        try:
            manifests[replica_id] = (blob, Manifest.from_bytes(blob))
        except ArchiveError as exc:
            raise CbrError(
                REPLICA_IMPORT_FAILED,
                f"The manifest of source backup {unit_id} is damaged ({exc}); "
                "it cannot be replicated.",
            ) from exc
    return manifests


def _write_manifests(
    codec: VaultCodec, dest: ChunkStore, manifests: dict[str, tuple[bytes, Manifest]]
) -> None:
    """The replica's manifests, sealed (for the replica's own name) when it is encrypted."""
    for replica_id, (blob, _manifest) in manifests.items():
        codec.put_manifest(dest, manifest_name(replica_id), blob)


# --- progress, commit, failure -------------------------------------------------------------


def _percent(work: _Work) -> int:
    if not work.planned:
        return 0
    if work.bytes_total <= 0:
        return 99
    return min(99, work.bytes_copied * 100 // work.bytes_total)


def _moved(work: _Work) -> operation_logs.Bytes | None:
    """The record's bytes copied of the bytes to copy, once planned."""
    if not work.planned:
        return None
    return operation_logs.Bytes(work.bytes_copied, work.bytes_total)


def _commit(session: Session, record: ReplicationRecord, work: _Work) -> None:
    """Link the replica's chunks, publish it, complete the record: one transaction."""
    for replica_id, manifest in work.manifests.items():
        linked = chunks.link_backup(session, replica_id, work.dest_vault_id, manifest.digests())
        if linked != len(manifest.digests()):
            raise CbrError(REPLICA_IMPORT_FAILED, "destination index lacks replica chunks")
        _publish_unit(session, replica_id, manifest)
    replica = session.get(Backup, record.destination_backup_id or "")
    assert replica is not None
    _publish_unit(session, replica.id, None)
    if work.verified is not None:
        content_roots.publish_verified(session, record, work.verified)
    complete_record(session, record, work)
    started, planned, copied = work.timings
    log.info(
        "replication record finished",
        record_id=record.id,
        chunks_copied=work.chunks_copied,
        bytes_copied=work.bytes_copied,
        plan_s=round(planned - started, 3),
        copy_s=round(copied - planned, 3),
        commit_s=round(time.monotonic() - copied, 3),
    )


def _publish_unit(session: Session, backup_id: str, manifest: Manifest | None) -> None:
    unit = session.get(Backup, backup_id)
    assert unit is not None
    if manifest is not None:
        # `bytes_new` (stored_bytes) was counted as its chunks were indexed (`_index`).
        unit.bytes_total, unit.chunk_count = manifest.size, len(manifest.chunks)
    elif unit.children:
        unit.bytes_total = sum(c.bytes_total for c in unit.children)
        unit.bytes_new = sum(c.bytes_new for c in unit.children)
        unit.chunk_count = sum(c.chunk_count for c in unit.children)
    unit.status = BackupStatus.AVAILABLE


def next_in_line(rt: Runtime, vault_id: str) -> str | None:
    """The oldest live record into the vault: the one whose turn it is."""
    with rt.db.reading() as session:
        return session.scalar(
            _live_in_order()
            .with_only_columns(ReplicationRecord.id)
            .where(ReplicationRecord.destination_vault_id == vault_id)
            .limit(1)
        )


def _live_in_order() -> Select[ReplicationRecord]:
    """Live records in the order they run in: oldest first, ties broken by id."""
    return (
        select(ReplicationRecord)
        .where(ReplicationRecord.status.in_(LIVE_RECORD))
        .order_by(ReplicationRecord.created_at, ReplicationRecord.id)
    )


def log_of(session: Session, record_id: str) -> OperationLog | None:
    record = session.get(ReplicationRecord, record_id)
    return session.get(OperationLog, record.operation_log_id or "") if record else None
