"""Verify (and repair) the chunks a vault stores: `POST /vaults/{vault_id}/verify`, an
opencbr extension, and the scheduled verify of housekeeping (`verify_percent_per_day`).

A verify job is leased work on its operation log (type `verify`, whose resource is the
vault itself). It walks the vault's chunk index in digest order, in batches of BATCH,
and re-reads each chunk (all of them, or each with probability `sample_percent` / 100)
through the store, checking its content hash (`storage.chunk.verify_chunk`, which opens a
sealed chunk, then decompresses and hashes the plain bytes). A chunk that fails, or has no
file, is marked damaged in the index (`stores.DamageMarker`): it then counts as missing
for dedup and replication planning, and every backup that references it reports
`damaged_chunks` and a `fail_reason`, never a plain `available`.

With `repair`, each damaged chunk is looked for, intact, in the vaults of related
backups: the source backup of each replica in this vault that references it (a
replication vault is repaired from its sources), and the replicas of each backup of this
vault that references it (a backup vault from its replicas). The first copy that
verifies is written here (`stores.put_chunk_checked` replaces the bad file), flushed,
and indexed again, which clears the mark (`db.chunks.index_chunks`). A chunk with no good
copy stays marked; the log names the backups that reference it.

The job's position (`cursor`, the last digest checked) and counters live in the log's
`extra_info.verify` block, written with every heartbeat, so an interrupted job resumes
where it stopped. The scheduled verify runs the same checks (with repair) on the next
share of each vault's chunks per housekeeping pass, without an operation log; its
position per vault is `vault_verify_state`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db import chunks
from opencbr.db.backups import Backup, BackupChunk, OperationLog, VaultChunk, VaultVerifyState
from opencbr.db.service_state import insert_if_absent
from opencbr.db.session import Database
from opencbr.db.status import LIVE_OPERATION, OperationStatus
from opencbr.db.vaults import Vault
from opencbr.errors import VAULT_NOT_FOUND
from opencbr.services import leases, operation_logs, vaults
from opencbr.services.fanout import ChunkCopier, Sink
from opencbr.services.identity import AuthContext
from opencbr.services.replication_runs import resealing
from opencbr.services.runtime import Runtime
from opencbr.services.stores import DamageMarker, VaultCodec, failure_reason
from opencbr.storage.store import ChunkNotFoundError, ChunkStore, CorruptChunkError, StorageError

log = structlog.get_logger(__name__)

OPERATION_TYPE = "verify"
BATCH = 500  # digests read from the index per query (and checked before the next)
MAX_NAMED_BACKUPS = 100  # backups the log names as holding unrepaired chunks
DAY_SECONDS = 86400.0


@dataclass(frozen=True)
class VerifyRequest:
    sample_percent: int  # 1-100: the share of the vault's chunks to re-read
    repair: bool


# --- the request -------------------------------------------------------------------------


def start(
    db: Database, ctx: AuthContext, vault_id: str, request: VerifyRequest, request_id: str | None
) -> str:
    """Open a verify log for the caller's vault (`waiting`); returns its id. A verify
    still live for the vault answers with its own log instead of starting another."""
    with db.transaction() as session:
        vault = vaults.get_in_session(session, ctx, vault_id)
        session.refresh(vault, with_for_update=True)  # one live verify per vault
        live = _live_log(session, vault.id)
        if live is not None:
            return live
        kind, name = vaults.VAULT_RESOURCE_TYPE, vault.name
        subject = operation_logs.Subject(vault.id, kind, name, vault.id, name, vault.provider_id)
        entry = operation_logs.open_log(
            session,
            project_id=ctx.project_id,
            operation_type=OPERATION_TYPE,
            subject=subject,
            details=Counts(request.sample_percent, request.repair).details(),
            request_id=request_id,
            status=OperationStatus.WAITING,
        )
        session.flush()
        return entry.id


def _live_log(session: Session, vault_id: str) -> str | None:
    return session.scalar(
        select(OperationLog.id)
        .where(
            OperationLog.operation_type == OPERATION_TYPE,
            OperationLog.vault_id == vault_id,
            OperationLog.status.in_(LIVE_OPERATION),
        )
        .limit(1)
    )


# --- what a pass finds -------------------------------------------------------------------


@dataclass
class Counts:
    """A verify's request, position and tallies: the log's `extra_info.verify` block."""

    sample_percent: int
    repair: bool
    chunks_total: int = 0  # indexed in the vault when the job began
    chunks_scanned: int = 0  # walked past (checked or left out of the sample)
    chunks_checked: int = 0
    damaged: int = 0
    repaired: int = 0
    cursor: str = ""
    unrepaired_backups: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        return {
            "sample_percent": self.sample_percent,
            "repair": self.repair,
            "chunks_total": self.chunks_total,
            "chunks_scanned": self.chunks_scanned,
            "chunks_checked": self.chunks_checked,
            "damaged": self.damaged,
            "repaired": self.repaired,
            "unrepaired": self.damaged - self.repaired,
            "unrepaired_backups": self.unrepaired_backups,
            "cursor": self.cursor,
        }

    @classmethod
    def of(cls, block: dict[str, Any]) -> Counts:
        return cls(
            int(block.get("sample_percent", 100)),
            bool(block.get("repair", False)),
            int(block.get("chunks_total", 0)),
            int(block.get("chunks_scanned", 0)),
            int(block.get("chunks_checked", 0)),
            int(block.get("damaged", 0)),
            int(block.get("repaired", 0)),
            str(block.get("cursor", "")),
            list(block.get("unrepaired_backups", [])),
        )

    def percent(self) -> int:
        return min(99, self.chunks_scanned * 100 // self.chunks_total) if self.chunks_total else 0


@dataclass(frozen=True)
class Checked:
    """One batch checked: the digests found damaged (and still indexed), those repaired."""

    damaged: list[str]
    repaired: list[str]


def check_batch(rt: Runtime, vault: _VaultRef, digests: Sequence[str], repair: bool) -> Checked:
    """Re-read `digests` of the vault, mark the bad ones damaged, repair what can be."""
    store = rt.stores.vault(vault.region, vault.id)
    marker = DamageMarker(rt.db, vault.id)
    codec = rt.reader  # opens sealed chunks: the content digest is checked either way
    with ThreadPoolExecutor(max(2, rt.settings.io_threads)) as pool:
        intact = list(pool.map(lambda digest: _intact(store, codec, digest), digests))
    bad = [digest for digest, ok in zip(digests, intact, strict=True) if not ok]
    for digest in bad:
        marker.mark(digest)
    if not bad:
        return Checked([], [])
    with rt.db.reading() as session:
        # A chunk garbage collection removed meanwhile is no longer indexed: not damage.
        damaged = sorted(set(bad) & chunks.damaged_digests(session, vault.id))
    repaired = _repair(rt, vault, store, damaged) if repair else []
    return Checked(damaged, repaired)


def _intact(store: ChunkStore, codec: VaultCodec, digest: str) -> bool:
    try:
        codec.verify(store.get_chunk(digest), digest)
    except (CorruptChunkError, ChunkNotFoundError):
        return False
    return True


@dataclass(frozen=True)
class _VaultRef:
    id: str
    region: str


# --- repair ------------------------------------------------------------------------------


def _repair(rt: Runtime, vault: _VaultRef, store: ChunkStore, digests: list[str]) -> list[str]:
    """Copy a good copy of each damaged chunk from a related vault; index the ones
    written (after a flush), which clears their marks. Returns the digests repaired."""
    written: list[tuple[str, int, int]] = []
    recorded: dict[str, str] = {}  # stored-bytes digests of what was written
    for digest in digests:
        copied = _copy_good(rt, vault, store, digest, recorded)
        if copied is not None:
            written.append(copied)
    if not written:
        return []
    store.flush()
    with rt.db.transaction() as session:
        added = chunks.index_chunks(session, vault.id, written, recorded)
        session.execute(
            update(Vault).where(Vault.id == vault.id).values(used_bytes=Vault.used_bytes + added)
        )
    log.info("damaged chunks repaired", vault_id=vault.id, count=len(written))
    return [digest for digest, _p, _s in written]


def _copy_good(
    rt: Runtime, vault: _VaultRef, store: ChunkStore, digest: str, recorded: dict[str, str]
) -> tuple[str, int, int] | None:
    """(digest, plain size, stored size) once a verified copy is written here, or None.

    The copy is replication's (`ChunkCopier`): checked against the source's stored-bytes
    digest or content, and sealed again for this vault's project when the source is
    another project's; its stored-bytes digest lands in `recorded`."""
    with rt.db.reading() as session:
        sources = good_copies(session, vault.id, digest)
        plain = session.scalar(
            select(VaultChunk.plain_size).where(
                VaultChunk.vault_id == vault.id, VaultChunk.digest == digest
            )
        )
    for source in sources:
        source_store = rt.stores.vault(source.region, source.id)
        with rt.db.reading() as session:
            stored = chunks.stored_digests(session, source.id, [digest])
        copier = ChunkCopier(source_store, DamageMarker(rt.db, source.id), stored, rt.reader)
        sink = Sink(store, DamageMarker(rt.db, vault.id), resealing(rt, source.id, vault.id))
        try:
            size = copier.copy(digest, [sink])  # marks a corrupt or missing source chunk damaged
        except (CorruptChunkError, ChunkNotFoundError):
            continue
        except StorageError as exc:
            log.warning("repair source unreadable", vault_id=source.id, reason=failure_reason(exc))
            continue
        recorded.update(sink.recorded)
        return digest, plain or 0, size
    return None


def good_copies(session: Session, vault_id: str, digest: str) -> list[_VaultRef]:
    """Vaults that index `digest` intact and hold a backup related to one of this vault
    referencing it: its source (this backup is a replica) or a replica of it."""
    here = select(Backup.id, Backup.source_backup_id).join(
        BackupChunk, BackupChunk.backup_id == Backup.id
    )
    rows = session.execute(here.where(Backup.vault_id == vault_id, BackupChunk.digest == digest))
    ids, sources = set(), set()
    for backup_id, source_id in rows:
        ids.add(backup_id)
        if source_id is not None:
            sources.add(source_id)
    if not ids:
        return []
    related = select(Backup.vault_id).where(
        (Backup.id.in_(sources)) | (Backup.source_backup_id.in_(ids)), Backup.vault_id != vault_id
    )
    query = (
        select(Vault.id, Vault.region)
        .join(VaultChunk, VaultChunk.vault_id == Vault.id)
        .where(
            Vault.id.in_(related),
            VaultChunk.digest == digest,
            VaultChunk.damaged_at.is_(None),
        )
        .order_by(Vault.id)
    )
    return [_VaultRef(vid, region) for vid, region in session.execute(query)]


def backups_referencing(session: Session, vault_id: str, digests: Iterable[str]) -> list[str]:
    """Top-level backups of the vault (a volume's server) referencing any of `digests`."""
    wanted = sorted(set(digests))
    if not wanted:
        return []
    owner = func.coalesce(Backup.parent_id, Backup.id)
    query = (
        select(owner)
        .join(BackupChunk, BackupChunk.backup_id == Backup.id)
        .where(Backup.vault_id == vault_id, BackupChunk.digest.in_(wanted))
        .distinct()
        .order_by(owner)
        .limit(MAX_NAMED_BACKUPS)
    )
    return list(session.scalars(query))


# --- the leased job ----------------------------------------------------------------------


@dataclass
class _Job:
    log_id: str
    vault: _VaultRef
    counts: Counts
    unrepaired: set[str] = field(default_factory=set)


class _Verifies(leases.LeasedWork[OperationLog, _Job]):
    """A verify job, leased on its operation log. With `repair` it writes chunks into
    its vault, so its claim waits while garbage collection holds the vault."""

    name = "verify"
    model = OperationLog
    live = LIVE_OPERATION

    def ready(self, session: Session, row: OperationLog) -> bool:
        if session.get(Vault, row.vault_id or "") is None:
            operation_logs.close_log(session, row.id, VAULT_NOT_FOUND, "the vault is gone")
            return False
        return True

    def writes_to(self, session: Session, row: OperationLog) -> Vault | None:
        if not Counts.of(row.extra_info.get(OPERATION_TYPE, {})).repair:
            return None
        return session.get(Vault, row.vault_id or "", with_for_update=True)

    def begin(self, rt: Runtime, session: Session, row: OperationLog) -> _Job:
        vault = session.get(Vault, row.vault_id or "")
        assert vault is not None  # `ready` said so
        counts = Counts.of(row.extra_info.get(OPERATION_TYPE, {}))
        if not counts.chunks_total:
            counts.chunks_total = _chunk_count(session, vault.id)
        operation_logs.start_operation(row)
        return _Job(row.id, _VaultRef(vault.id, vault.region), counts)

    def beat(self, session: Session, row: OperationLog, work: _Job) -> None:
        _write_counts(row, work.counts)
        operation_logs.set_progress(session, row.id, work.counts.percent())

    def progress(self, work: _Job) -> dict[str, Any]:
        return {"chunks_checked": work.counts.chunks_checked, "damaged": work.counts.damaged}

    def complete(self, session: Session, row: OperationLog, work: _Job) -> None:
        work.counts.unrepaired_backups = backups_referencing(
            session, work.vault.id, work.unrepaired
        )
        _write_counts(row, work.counts)
        operation_logs.complete_operation(session, row.id)

    def fail(
        self,
        rt: Runtime,
        session: Session,
        row: OperationLog,
        work: _Job | None,
        failure: leases.Failure,
    ) -> None:
        if work is not None:
            _write_counts(row, work.counts)
        operation_logs.fail_operation(session, row.id, failure.error, failure.reason)

    def explain(self, exc: Exception) -> leases.Failure | None:
        return leases.explain_fault(exc)

    def candidates(self, session: Session) -> Iterable[OperationLog]:
        return session.scalars(
            select(OperationLog).where(
                OperationLog.operation_type == OPERATION_TYPE,
                OperationLog.status.in_(LIVE_OPERATION),
            )
        )


VERIFY = _Verifies()


def _write_counts(row: OperationLog, counts: Counts) -> None:
    # A new dict: the JSON column sees an assignment, not an in-place change.
    row.extra_info = {**row.extra_info, OPERATION_TYPE: counts.details()}


def _chunk_count(session: Session, vault_id: str) -> int:
    query = select(func.count()).select_from(VaultChunk).where(VaultChunk.vault_id == vault_id)
    return int(session.scalar(query) or 0)


def run(rt: Runtime, log_id: str) -> None:
    leases.run(rt, VERIFY, log_id, lambda job: _verify(rt, job))


def _verify(rt: Runtime, job: _Job) -> None:
    counts, rng = job.counts, random.Random()
    while batch := next_digests(rt.db, job.vault.id, counts.cursor, BATCH):
        picked = [d for d in batch if counts.sample_percent >= 100 or _sampled(rng, counts)]
        checked = check_batch(rt, job.vault, picked, counts.repair)
        job.unrepaired.update(set(checked.damaged) - set(checked.repaired))
        counts.chunks_checked += len(picked)
        counts.chunks_scanned += len(batch)
        counts.damaged += len(checked.damaged)
        counts.repaired += len(checked.repaired)
        counts.cursor = batch[-1]
        leases.stop_point(rt)  # the heartbeat wrote the cursor: a resumed job goes on
    log.info("vault verified", vault_id=job.vault.id, **counts.details())


def _sampled(rng: random.Random, counts: Counts) -> bool:
    return rng.random() * 100 < counts.sample_percent


def next_digests(db: Database, vault_id: str, after: str, limit: int) -> list[str]:
    """Up to `limit` digests the vault indexes, in order, after `after` ("" = first)."""
    with db.reading() as session:
        return list(
            session.scalars(
                select(VaultChunk.digest)
                .where(VaultChunk.vault_id == vault_id, VaultChunk.digest > after)
                .order_by(VaultChunk.digest)
                .limit(limit)
            )
        )


# --- the scheduled verify ----------------------------------------------------------------


def scheduled_pass(rt: Runtime, now: datetime | None = None) -> int:
    """Verify (with repair) each vault's share of chunks due since its last pass:
    `verify_percent_per_day` of its chunks per day, at most one day's share at once.
    Each vault's slice is claimed by a conditional write before it is read, so of
    several workers passing at once only one checks it. Returns the chunks checked."""
    percent = rt.settings.verify_percent_per_day
    if percent <= 0:
        return 0
    now = now or clock.now()
    with rt.db.reading() as session:
        refs = [_VaultRef(v, r) for v, r in session.execute(select(Vault.id, Vault.region))]
    checked = 0
    for vault in refs:
        digests = _claim_slice(rt, vault.id, percent, now)
        if digests:
            found = check_batch(rt, vault, digests, repair=True)
            checked += len(digests)
            if found.damaged:
                log.warning(
                    "scheduled verify found damaged chunks",
                    vault_id=vault.id,
                    damaged=len(found.damaged),
                    repaired=len(found.repaired),
                )
    return checked


def _claim_slice(rt: Runtime, vault_id: str, percent: float, now: datetime) -> list[str]:
    """The digests this pass checks in the vault (wrapping to the start at the end),
    claimed by moving the vault's cursor with a conditional write; [] if none are due or
    another worker claimed them first."""
    interval = rt.settings.verify_interval_seconds
    with rt.db.transaction() as session:
        state = session.get(VaultVerifyState, vault_id)
        since, cursor = (state.checked_at, state.cursor) if state else (None, "")
        elapsed = (now - since).total_seconds() if since else interval
        share = min(max(elapsed, 0.0), DAY_SECONDS) / DAY_SECONDS * percent / 100
        due = math.ceil(_chunk_count(session, vault_id) * share)
    if due <= 0:
        return []
    digests = next_digests(rt.db, vault_id, cursor, due)
    if len(digests) < due:  # the end of the index: wrap around (never past the start)
        first = next_digests(rt.db, vault_id, "", due - len(digests))
        digests += [d for d in first if d <= cursor and d not in digests]
    if not digests:
        return []
    with rt.db.transaction() as session:
        if not _move_cursor(session, vault_id, since, digests[-1], now):
            return []
    return digests


def _move_cursor(
    session: Session, vault_id: str, since: datetime | None, cursor: str, now: datetime
) -> bool:
    if since is None:
        return insert_if_absent(
            session, VaultVerifyState, vault_id=vault_id, cursor=cursor, checked_at=now
        )
    moved = session.execute(
        update(VaultVerifyState)
        .where(VaultVerifyState.vault_id == vault_id, VaultVerifyState.checked_at == since)
        .values(cursor=cursor, checked_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(moved, "rowcount", 0))
