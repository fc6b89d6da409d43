"""Replication as a count: the chunks and stored bytes a destination vault lacks for the
backups about to be copied into it, and how long copying them should take.

`gaps` is the one home of that count: a replicate call's dry run (`dry_run_vault`,
`dry_run_backup`) and the pending bytes of /replication-status both ask it. It mirrors
what `replication_runs` copies: records into one vault run one at a time, oldest backup
first, and each plans the chunks the destination does not hold intact when it starts; so
a chunk several of the backups share is copied once, by the oldest of them, and a chunk
the destination holds damaged is copied again. The stored bytes are the source's stored
sizes (`backup_chunks.stored_size`), which is what the copy reads and writes.

The estimate divides those bytes by the rate measured on the recent successful records
between the same two regions (their `bytes_copied` over their `copy_seconds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import CTE, Select, Subquery, func, select, union_all
from sqlalchemy.orm import Session

from opencbr.db.backups import Backup, BackupChunk, ReplicationRecord, VaultChunk
from opencbr.db.session import Database
from opencbr.db.status import RecordStatus
from opencbr.db.vaults import GB, Vault
from opencbr.services import planned_records, replication
from opencbr.services.identity import AuthContext
from opencbr.services.replication import Choice, Destination
from opencbr.settings import Settings

# The successful records the rate is measured on: enough to smooth one slow copy out,
# few enough to follow a change of link or disk within a day of replications.
RATE_SAMPLE = 20


@dataclass(frozen=True)
class Gap:
    """Chunks, and their stored bytes, a copy writes into the destination."""

    chunks: int = 0
    bytes: int = 0

    def __add__(self, other: Gap) -> Gap:
        return Gap(self.chunks + other.chunks, self.bytes + other.bytes)


def _units(backups: CTE) -> Subquery:
    """The backup itself, or each volume of a server backup, with the top-level backup's id
    and creation time (`backups`: a CTE of id and created_at)."""
    return union_all(
        select(backups.c.id.label("unit_id"), backups.c.id, backups.c.created_at),
        select(Backup.id, backups.c.id, backups.c.created_at).join(
            backups, Backup.parent_id == backups.c.id
        ),
    ).subquery()


def gaps(session: Session, chosen: Select[str, datetime], dest_vault_id: str) -> dict[str, Gap]:
    """What copying the `chosen` top-level backups (rows of id and created_at) into
    `dest_vault_id`, oldest first, writes: backup id -> Gap, a backup that writes nothing
    left out. A missing chunk several of them reference is counted with the oldest.

    One statement, whatever the number of backups: each referenced chunk the destination
    lacks is ranked among the backups that reference it, and the first is kept."""
    units = _units(chosen.cte("chosen"))  # the CTE is read twice: computed once
    present = select(VaultChunk.digest).where(
        VaultChunk.vault_id == dest_vault_id,
        VaultChunk.digest == BackupChunk.digest,
        VaultChunk.damaged_at.is_(None),
    )
    first = func.row_number().over(
        partition_by=BackupChunk.digest, order_by=(units.c.created_at, units.c.id)
    )
    missing = (
        select(units.c.id, BackupChunk.stored_size, first.label("nth"))
        .join(BackupChunk, BackupChunk.backup_id == units.c.unit_id)
        .where(~present.exists())
        .subquery()
    )
    rows = session.execute(
        select(missing.c.id, func.count(), func.sum(missing.c.stored_size))
        .where(missing.c.nth == 1)
        .group_by(missing.c.id)
    )
    return {backup_id: Gap(int(count), int(size or 0)) for backup_id, count, size in rows}


def damaged_sources(
    session: Session, chosen: Select[str, datetime], source_vault_id: str
) -> dict[str, int]:
    """Backup id -> how many of the chunks it references its own vault knows to be damaged
    (a record for it fails at once, see `replication_runs`); backups with none left out."""
    units = _units(chosen.cte("chosen"))
    rows = session.execute(
        select(units.c.id, func.count(func.distinct(BackupChunk.digest)))
        .join(BackupChunk, BackupChunk.backup_id == units.c.unit_id)
        .join(
            VaultChunk,
            (VaultChunk.vault_id == source_vault_id) & (VaultChunk.digest == BackupChunk.digest),
        )
        .where(VaultChunk.damaged_at.is_not(None))
        .group_by(units.c.id)
    )
    return {backup_id: int(count) for backup_id, count in rows}


def measured_rate(session: Session, source_region: str, dest_region: str) -> float | None:
    """Bytes per second of the recent successful records from `source_region` into
    `dest_region` that copied anything; None when there are none."""
    recent = rate_sample(source_region, dest_region).subquery()
    copied, seconds = session.execute(
        select(func.sum(recent.c.bytes_copied), func.sum(recent.c.copy_seconds))
    ).one()
    return float(copied) / float(seconds) if copied and seconds else None


def rate_sample(source_region: str, dest_region: str) -> Select[int, float | None]:
    """The records `measured_rate` sums: (bytes copied, seconds), newest first."""
    return (
        select(ReplicationRecord.bytes_copied, ReplicationRecord.copy_seconds)
        .where(
            ReplicationRecord.source_region == source_region,
            ReplicationRecord.destination_region == dest_region,
            ReplicationRecord.status == RecordStatus.SUCCESS,
            # Always true of a success; said so that its partial index serves the query.
            ReplicationRecord.finished_at.is_not(None),
            ReplicationRecord.bytes_copied > 0,
            ReplicationRecord.copy_seconds > 0,
        )
        .order_by(ReplicationRecord.finished_at.desc())
        .limit(RATE_SAMPLE)
    )


# --- dry runs of the replicate calls --------------------------------------------------------


@dataclass(frozen=True)
class DryRun:
    """What a replicate call would copy: per backup in the order its records would run,
    the total, the destination's free room and the measured rate (None: none yet), and the
    backups whose records would fail at once on damaged source chunks (id -> count)."""

    source: Vault
    target: Vault
    backups: list[tuple[str, Gap]]
    rate: float | None
    damaged: dict[str, int]

    @property
    def total(self) -> Gap:
        return sum((gap for _backup_id, gap in self.backups), Gap())

    @property
    def free_bytes(self) -> int:
        return max(0, self.target.size_gb * GB - self.target.used_bytes)

    @property
    def estimated_seconds(self) -> float | None:
        return None if self.rate is None else self.total.bytes / self.rate


def dry_run_vault(
    db: Database, settings: Settings, ctx: AuthContext, vault_id: str, dest: Destination
) -> DryRun:
    """checkpoints/replicate?dry_run=true: its checks and choice, counted, nothing written."""
    planned_records.settle(db, [vault_id])
    with db.reading() as session:
        choice = replication.choose_vault_backups(session, settings, ctx, vault_id, dest)
        chosen = replication.vault_backups_to_replicate(choice.source.id, dest.region)
        return _dry_run(session, choice, chosen)


def dry_run_backup(
    db: Database, settings: Settings, ctx: AuthContext, backup_id: str, dest: Destination
) -> DryRun:
    """backups/{id}/replicate?dry_run=true: its checks, counted, nothing written."""
    planned_records.settle(db, backup_ids=[backup_id])
    with db.reading() as session:
        choice = replication.choose_backup(session, settings, ctx, backup_id, dest)
        chosen = select(Backup.id, Backup.created_at).where(Backup.id == backup_id)
        return _dry_run(session, choice, chosen)


def _dry_run(session: Session, choice: Choice, chosen: Select[str, datetime]) -> DryRun:
    found = gaps(session, chosen, choice.target.id)
    return DryRun(
        choice.source,
        choice.target,
        [(backup_id, found.get(backup_id, Gap())) for backup_id in choice.backup_ids],
        measured_rate(session, choice.source.region, choice.target.region),
        damaged_sources(session, chosen, choice.source.id),
    )
