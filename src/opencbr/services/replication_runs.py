"""Copying one backup to its destination vaults (one task per replication record).

A pass copies one source backup to every destination due now: the record its task names,
and the live records of the same source backup into other regions that are ready and
unheld (claimed with it, `companions`). Each destination has its own plan; each source
chunk is read and verified once and written to every destination that lacks it; each
record is indexed, committed and logged on its own (services/fanout.py reads once and
writes to many). A record of the same backup whose task starts while the pass runs in
this process joins it (`_Pass`): the pass claims it at its next chunk, sends it the
chunks still to come, and rereads for it only those read before it joined.

Steps, each idempotent:
1. plan: the chunks of each volume the destination lacks (or holds damaged), from one
   anti-join per volume; a source chunk its vault marks damaged fails the record at once;
2. read and validate the source manifests: a damaged one fails the record at once;
3. copy the chunks with bounded parallelism: read the stored bytes at the source, verify
   them against the stored-bytes digest the source's index records, or (older chunks)
   their content's BLAKE3 (a corrupt chunk is marked damaged at the source and fails the
   record); a sealed chunk into another project gets its chunk key sealed again;
   write the same bytes at the destination; every batch is flushed and then indexed in
   the destination vault, so a rerun after a crash plans only what is still missing;
4. write the manifests, then commit replica + record + operation log in one transaction.

Failure reasons name backups, chunks and the kind of fault, never a store path.

Rate limits and windows (services/throttle.py): each chunk is paid for in the bucket of
every destination region it is written to before it is copied; outside a destination's
window a record waits in `waiting_replicate`, and a running pass starts no further chunk
(those under way finish, and everything copied is flushed and indexed) and its records go
back to waiting, so the pass resumed when the window opens plans only what is missing. A
closed window pauses the whole pass; its records whose windows are open are handed back
live and resumed by the next reconciliation.

Garbage collection cannot run in the destination vault meanwhile: the replica is
`protecting` there (see gc.py). Replications into one vault run one at a time, oldest first,
so the backups of one vault share chunks instead of copying them twice: a record whose turn
has not come returns at once, and `run` of the record before it, once that one has settled,
names it as the next to run (the reconciler restarts the first record of each vault).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
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
from opencbr.services import (
    checkpoints,
    content_roots,
    fanout,
    leases,
    operation_logs,
    replicas,
    throttle,
)
from opencbr.services.runtime import Runtime
from opencbr.services.stores import DamageMarker, VaultCodec, failure_reason
from opencbr.storage.layout import manifest_name
from opencbr.storage.sealing import Sealing
from opencbr.storage.store import ChunkStore, CorruptChunkError, NotFoundError, StorageError

log = structlog.get_logger(__name__)
GB = 1024**3
INDEX_EVERY_BYTES = 256 * 1024**2  # flush + index the destination this often


class DestinationBusy(leases.VaultBusy):
    """Garbage collection holds the destination vault; the record tries again shortly."""


class OutsideWindow(leases.Interrupted):
    """A destination's replication window closed: the pass stopped at a safe point."""

    reason = "outside the destination region's replication window"


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
    throttle: throttle.Throttle | None = None  # the destination region's rate limit
    outside_window: bool = False  # paused: the record waits for its window again
    joined_unit: int = 0  # the unit a pass was copying when this record joined it


@dataclass(frozen=True)
class Settled:
    """What a `run` ended: the records that settled (first, then its companions), and the
    records now next in line for their destination vaults, for the caller to enqueue."""

    records: list[str]
    next_records: list[str]


def run(rt: Runtime, record_id: str) -> Settled:
    """Run the record, with its companions, or hand it to the pass of its source backup
    running in this process (which claims it at its next chunk); nothing settles when it
    did not run (not its turn, held, outside its window, joined a pass) or was paused."""
    found = _destination_and_backup(rt, record_id)
    if found is None:
        return Settled([], [])
    region, backup_id = found
    if not throttle.copies_may_run(rt.settings, region):
        log.info("replication waits for its window", id=record_id)
        return Settled([], [])
    running = _Pass.open(rt, backup_id, record_id)
    if running is None:
        log.info("replication joins the running pass of its backup", id=record_id)
        return Settled([], [])
    try:
        group = leases.run_together(
            rt, REPLICATION, record_id, lambda members: _replicate(rt, members, running)
        )
    finally:
        unserved = running.close()  # their tasks were spent asking: run them again
    if not group:
        return Settled([], unserved)
    vaults = dict.fromkeys(member.work.dest_vault_id for member in group)
    following = [next_in_line(rt, vault_id) for vault_id in vaults]
    return Settled(
        [member.id for member in group], [r for r in following if r is not None] + unserved
    )


def _destination_and_backup(rt: Runtime, record_id: str) -> tuple[str, str] | None:
    with rt.db.reading() as session:
        found = session.execute(
            select(ReplicationRecord.destination_region, ReplicationRecord.source_backup_id).where(
                ReplicationRecord.id == record_id
            )
        ).first()
    return None if found is None else (found[0], found[1])


@dataclass
class _Pass:
    """A pass copying one source backup in this process. A record of the same backup
    whose task starts meanwhile asks to join it (`open` returns None) instead of reading
    the backup a second time; the pass claims it at its next chunk (`asked`). Passes of
    other processes are not seen: their records run on their own."""

    key: tuple[int, str]  # (the runtime, the source backup)
    requests: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, rt: Runtime, backup_id: str, record_id: str) -> _Pass | None:
        """A new pass for the backup, or None when one runs (it was asked to take the
        record)."""
        key = (id(rt), backup_id)
        with _PASSES_LOCK:
            running = _PASSES.get(key)
            if running is not None:
                running.requests.append(record_id)
                return None
            _PASSES[key] = cls(key)
            return _PASSES[key]

    def asked(self) -> list[str]:
        """The records that asked to join since the last call."""
        with _PASSES_LOCK:
            asked, self.requests = self.requests, []
        return asked

    def again(self, record_id: str) -> None:
        """A record that could not join now: run on its own once the pass ends."""
        with _PASSES_LOCK:
            self.requests.append(record_id)

    def close(self) -> list[str]:
        """No more joins; the records that asked and were not taken."""
        with _PASSES_LOCK:
            _PASSES.pop(self.key, None)
            unserved, self.requests = self.requests, []
        return unserved


_PASSES: dict[tuple[int, str], _Pass] = {}
_PASSES_LOCK = threading.Lock()


def stuck(rt: Runtime, queue_busy: bool = False) -> list[str]:
    """The records the reconciler runs again: those of `leases.stuck` whose destination
    region's window is open (a waiting record is thus retried when its window opens, by
    the first reconciliation after, and not enqueued in vain meanwhile)."""
    with rt.db.reading() as session:
        return [
            record_id
            for record_id in leases.stuck(rt, REPLICATION, queue_busy)
            if _may_run_in(rt, session, record_id)
        ]


def _may_run_in(rt: Runtime, session: Session, record_id: str) -> bool:
    record = session.get(ReplicationRecord, record_id)
    return record is None or throttle.copies_may_run(rt.settings, record.destination_region)


def _replicate(rt: Runtime, group: _Group, running: _Pass) -> dict[int, Exception]:
    """Plan each destination, then copy the union of what they lack (`_copy_unit`),
    taking in the records that ask to join meanwhile (each gets the chunks still to come
    from the same reads, and the ones read before it joined afterwards), then write each
    one's manifests and verify its content roots. A plan that fails (the destination is
    full) or a root that disagrees fails its record alone; what fails in between (the
    source) fails every one."""
    failed: dict[int, Exception] = {}
    going = _planned(rt, group.members, failed)
    if not going:
        return failed
    first = going[0]
    source = rt.stores.vault(first.source_region, first.source_vault_id)
    manifests = _read_manifests(rt, first, source)  # a damaged one fails before the copy

    def admit(index: int) -> list[_Work]:
        """The records that asked to join, claimed and planned; they join at unit `index`."""
        added: list[_Work] = []
        for record_id in running.asked():
            joined = group.join(record_id)
            if joined is None:  # GC holds its vault: run it again later
                running.again(record_id)
                continue
            for work in _planned(rt, joined, failed, start=len(group.members) - len(joined)):
                work.joined_unit = index
                added.append(work)
                log.info("replication joined a running pass", id=work.record_id)
        going.extend(added)
        return added

    for index in range(len(first.units)):
        _copy_unit(rt, list(going), source, index, admit)
    for index in range(len(first.units)):  # the units copied before a record joined
        late = [work for work in going if work.joined_unit > index]
        if late:
            _copy_unit(rt, late, source, index, None)
    for position, member in enumerate(group.members):
        if position in failed:
            continue
        work = member.work
        dest = rt.stores.vault(work.dest_region, work.dest_vault_id)
        _write_manifests(rt.backup_codec(work.units[0][1]), dest, work, manifests)
        try:
            # Durable chunks and manifests: the destination recomputes the roots before
            # publishing.
            work.verified = content_roots.verify_replica(
                rt.db, dest, work.dest_vault_id, work.units, work.manifests, rt.reader
            )
        except CbrError as exc:
            failed[position] = exc
        work.timings.append(time.monotonic())
    return failed


def _planned(
    rt: Runtime,
    members: list[leases.Claimed[ReplicationRecord, _Work]],
    failed: dict[int, Exception],
    start: int = 0,
) -> list[_Work]:
    """Plan each member's work (`start`: the position of the first in the group); the
    works planned, and each failure by position."""
    planned = []
    for position, member in enumerate(members, start):
        work = member.work
        work.timings.append(time.monotonic())
        try:
            _plan(rt, work)
            planned.append(work)
        except Exception as exc:  # explained (or logged as a bug) when the record fails
            failed[position] = exc
        work.timings.append(time.monotonic())
    return planned


class _Replications(leases.LeasedWork[ReplicationRecord, _Work]):
    """A replication record: one backup copied into one destination vault. Records into
    one vault run one at a time, oldest first (`ready`, `candidates`)."""

    name = "replication"
    model = ReplicationRecord
    live = LIVE_RECORD
    busy = DestinationBusy

    def lock(self, session: Session, work_id: str) -> ReplicationRecord | None:
        """Lock the live records of the record's source backup (its possible companions),
        always in one order, so two workers claiming two of them queue up instead of
        each running alone; then the record."""
        # A record planned with its vault has no replica until the fan-out task creates
        # it; one that task never reached (a crash in between) gets it here. It is
        # committed even when the claim then waits for garbage collection.
        group = list(session.scalars(_same_backup(work_id).with_only_columns(ReplicationRecord.id)))
        replicas.add_missing_replicas(session, group or [work_id])
        return super().lock(session, work_id)

    def companions(
        self, rt: Runtime, session: Session, row: ReplicationRecord
    ) -> list[ReplicationRecord]:
        """The other live records of the same source backup (locked by `lock`) whose
        window is open and whose destination vault no other transaction holds; the runner
        claims those that are ready and unheld. Their vaults are locked here without
        waiting: two passes each holding one vault and wanting the other's would
        otherwise deadlock (PostgreSQL; SQLite has one writer)."""
        others = session.scalars(_same_backup(row.id).where(ReplicationRecord.id != row.id))
        due = [r for r in others if throttle.copies_may_run(rt.settings, r.destination_region)]
        if not due:
            return []
        free = set(
            session.scalars(
                select(Vault.id)
                .where(Vault.id.in_([r.destination_vault_id for r in due]))
                .order_by(Vault.id)
                .with_for_update(skip_locked=True)
            )
        )
        return [r for r in due if r.destination_vault_id in free]

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
            throttle=throttle.throttle_for(rt.db, rt.settings, dest.region, rt.stopping),
        )

    def beat(self, session: Session, row: ReplicationRecord, work: _Work) -> None:
        row.bytes_copied, row.chunks_copied = work.bytes_copied, work.chunks_copied
        row.progress = _percent(work)
        operation_logs.set_progress(session, work.log_id, row.progress, _moved(work))

    def progress(self, work: _Work) -> dict[str, Any]:
        return {"bytes_copied": work.bytes_copied, "bytes_total": work.bytes_total}

    def hand_back(self, session: Session, row: ReplicationRecord, work: _Work) -> None:
        if work.outside_window:
            pause_record(session, row)

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
_Group = leases.Group[ReplicationRecord, _Work]


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


def pause_record(session: Session, record: ReplicationRecord) -> None:
    """replicating -> waiting_replicate, its log running -> waiting: its destination's
    window closed. What it copied is indexed; the next attempt, when the window opens,
    copies the rest (and `start_replication` sets the log running again)."""
    record.status = RecordStatus.WAITING
    operation_logs.pause_operation(session, record.operation_log_id)


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


def _same_backup(record_id: str) -> Select[ReplicationRecord]:
    """The live records of the source backup of `record_id`, locked, in lock order."""
    source_backup = (
        select(ReplicationRecord.source_backup_id)
        .where(ReplicationRecord.id == record_id)
        .scalar_subquery()
    )
    return (
        select(ReplicationRecord)
        .where(
            ReplicationRecord.source_backup_id == source_backup,
            ReplicationRecord.status.in_(LIVE_RECORD),
        )
        .order_by(ReplicationRecord.created_at, ReplicationRecord.id)
        .with_for_update()
    )


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


@dataclass
class _Target:
    """One destination of a unit's copy: its store, the chunks it lacks, its batch."""

    work: _Work
    replica_id: str
    store: ChunkStore
    sink: fanout.Sink
    wanted: dict[str, tuple[str, int, int]]
    batch: list[tuple[str, int, int]] = field(default_factory=list)
    batch_bytes: int = 0


def _copy_unit(
    rt: Runtime,
    works: list[_Work],
    source: ChunkStore,
    index: int,
    admit: Callable[[int], list[_Work]] | None,
) -> None:
    """Copy one unit's chunks that any destination lacks, each read once, into every
    destination lacking it (and into those `admit` adds as the copy runs); every
    INDEX_EVERY_BYTES of a destination, flush and index what was copied there on a
    thread of its own, so the copy threads never wait for the disk barrier. A stopping
    service, or a destination's window that closes, ends the copy: no further chunk is
    started, the chunks under way finish and everything copied is flushed and indexed,
    then the work is handed back (a resumed attempt plans only the rest, and copies
    nothing twice)."""
    unit_id = works[0].units[index][0]
    targets = [_target(rt, work, index) for work in works]
    todo = deque(fanout.union([work.missing[unit_id] for work in works]))
    copier = _copier(rt, source, works[0].source_vault_id, unit_id)
    indexed: list[Future[None]] = []
    copiers = max(2, rt.settings.io_threads * 2)

    def joining() -> None:
        for work in admit(index) if admit is not None else []:
            _add_target(todo, targets, _target(rt, work, index))
            works.append(work)

    with (
        ThreadPoolExecutor(copiers, thread_name_prefix="replicate") as pool,
        ThreadPoolExecutor(1, thread_name_prefix="replicate-index") as indexer,
    ):

        def copy(wanted: fanout.Wanted) -> int:
            return copier.copy(wanted.digest, [targets[p].sink for p in wanted.by])

        paid = _paid(rt, targets, works, todo, joining)
        for wanted, copied in fanout.copy_in_order(pool, copy, paid):
            for position in wanted.by:
                target = targets[position]
                _count(target, wanted.digest, copied)
                if target.batch_bytes >= INDEX_EVERY_BYTES:
                    batch = _take_batch(target)
                    work, store, replica_id = target.work, target.store, target.replica_id
                    recorded = target.sink.recorded
                    indexed.append(
                        indexer.submit(_index, rt, work, store, replica_id, batch, recorded)
                    )
        for future in indexed:
            future.result()  # raises what indexing raised
    for target in targets:
        batch = _take_batch(target)
        _index(rt, target.work, target.store, target.replica_id, batch, target.sink.recorded)
    leases.stop_point(rt)
    if any(work.outside_window for work in works):
        raise OutsideWindow


def _add_target(todo: deque[fanout.Wanted], targets: list[_Target], target: _Target) -> None:
    """A destination joins the copy: the chunks still to come that it lacks go to it too,
    and the ones it lacks that no longer come (read before it joined) are read again at
    the end."""
    position = len(targets)
    targets.append(target)
    lacking = dict(target.wanted)
    for n, wanted in enumerate(todo):
        if lacking.pop(wanted.digest, None) is not None:
            todo[n] = fanout.Wanted(wanted.digest, wanted.stored, (*wanted.by, position))
    todo.extend(fanout.Wanted(d, stored, (position,)) for d, _p, stored in lacking.values())


def _copier(rt: Runtime, source: ChunkStore, vault_id: str, unit_id: str) -> fanout.ChunkCopier:
    """Copies the unit's chunks out of its vault, checking each against the stored-bytes
    digest the vault's index records for it (one query for the unit)."""
    with rt.db.reading() as session:
        stored = chunks.stored_digests_of_backup(session, unit_id, vault_id)
    return fanout.ChunkCopier(source, DamageMarker(rt.db, vault_id), stored, rt.reader)


def _target(rt: Runtime, work: _Work, index: int) -> _Target:
    unit_id, replica_id = work.units[index]
    store = rt.stores.vault(work.dest_region, work.dest_vault_id)
    reseal = resealing(rt, work.source_vault_id, work.dest_vault_id)
    sink = fanout.Sink(store, DamageMarker(rt.db, work.dest_vault_id), reseal)
    wanted = {item[0]: item for item in work.missing[unit_id]}
    return _Target(work, replica_id, store, sink, wanted)


def _paid(
    rt: Runtime,
    targets: list[_Target],
    works: list[_Work],
    todo: deque[fanout.Wanted],
    joining: Callable[[], None],
) -> Iterator[fanout.Wanted]:
    """The chunks to copy, each once it is paid for in the rate limit of every destination
    region it goes to (services/throttle.py; unlimited regions pay nothing); none more
    once the service stops or a destination's window closes. Before each chunk, the
    records that asked to join come in (`joining`)."""
    while todo:
        joining()
        if rt.stopping.is_set() or _window_closed(rt, works):
            return
        wanted = todo.popleft()
        for position in wanted.by:
            limit = targets[position].work.throttle
            if limit is not None:
                limit.take(wanted.stored)
        yield wanted


def _count(target: _Target, digest: str, copied: int) -> None:
    work = target.work
    work.bytes_copied += copied
    work.chunks_copied += 1
    target.batch.append(target.wanted[digest])
    target.batch_bytes += copied


def _window_closed(rt: Runtime, works: list[_Work]) -> bool:
    """Has a destination's window closed? (marks the records to put back to waiting)"""
    for work in works:
        work.outside_window = not throttle.copies_may_run(rt.settings, work.dest_region)
    return any(work.outside_window for work in works)


def _take_batch(target: _Target) -> list[tuple[str, int, int]]:
    """The destination's batch, to index; it starts a new one (on the copying thread)."""
    batch, target.batch, target.batch_bytes = target.batch, [], 0
    return batch


def resealing(rt: Runtime, source_vault_id: str, dest_vault_id: str) -> Sealing | None:
    """The destination project's current data key when the two vaults belong to different
    projects (sealed chunks get their chunk key sealed with it), else None (copied as
    they are)."""
    with rt.db.reading() as session:
        rows = session.execute(
            select(Vault.id, Vault.project_id).where(Vault.id.in_((source_vault_id, dest_vault_id)))
        )
        projects = {vault_id: project_id for vault_id, project_id in rows}
    dest_project = projects[dest_vault_id]
    return None if projects[source_vault_id] == dest_project else rt.keys.sealing(dest_project)


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
    """Each source unit's manifest (opened when sealed), validated, by source unit id; a
    manifest that does not open or parse fails the record with REPLICA_IMPORT_FAILED
    (1006) naming the backup."""
    manifests = {}
    for unit_id, _replica_id in work.units:
        blob = rt.reader.get_manifest(source, manifest_name(unit_id))
        try:
            manifests[unit_id] = (blob, Manifest.from_bytes(blob))
        except ArchiveError as exc:
            raise CbrError(
                REPLICA_IMPORT_FAILED,
                f"The manifest of source backup {unit_id} is damaged ({exc}); "
                "it cannot be replicated.",
            ) from exc
    return manifests


def _write_manifests(
    codec: VaultCodec, dest: ChunkStore, work: _Work, manifests: dict[str, tuple[bytes, Manifest]]
) -> None:
    """The source's manifests under the replica's names (sealed for the replica's project
    and name when it is encrypted); `work.manifests` for the commit."""
    for unit_id, replica_id in work.units:
        blob, manifest = manifests[unit_id]
        codec.put_manifest(dest, manifest_name(replica_id), blob)
        work.manifests[replica_id] = manifest


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
