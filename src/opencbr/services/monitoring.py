"""What the metrics read from the database: the state gauges computed at scrape time, and
how a task's work row looked before and after the task (its outcome and its bytes).

The state collector runs a fixed number of grouped queries per scrape, whatever the number
of vaults, and keeps its answer for `cache_seconds` so that several scrapers cost no more.
Being read from the database, the values are the same whichever process serves them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db.backups import Backup, Checkpoint, OperationLog, ReplicationRecord
from opencbr.db.session import Database
from opencbr.db.status import BackupStatus, CheckpointStatus, OperationStatus, RecordStatus
from opencbr.db.vaults import GB, Vault
from opencbr.services import planned_records, replication_status

DEFAULT_CACHE_SECONDS = 5.0
VAULT_LABELS = ("region", "project_id", "vault_id")
PAIR_LABELS = ("region", "vault_id", "destination_region", "destination_vault_id")


class _Vault(NamedTuple):
    id: str
    project_id: str
    region: str
    used_bytes: int
    size_gb: int

    @property
    def labels(self) -> list[str]:
        return [self.region, self.project_id, self.id]


def _timestamp(value: datetime) -> float:
    """A naive UTC datetime from the database as Unix seconds."""
    return value.replace(tzinfo=UTC).timestamp()


class StateCollector(Collector):
    """The `opencbr_vault_*`, `opencbr_backups` and `opencbr_replication_*` gauges."""

    def __init__(self, db: Database, cache_seconds: float = DEFAULT_CACHE_SECONDS) -> None:
        self._db = db
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._families: list[GaugeMetricFamily] = []
        self._read_at = float("-inf")

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._cache_seconds:
                planned_records.settle(self._db)
                with self._db.reading() as session:
                    self._families = _read_state(session)
                self._read_at = time.monotonic()
            families = self._families
        yield from families


def _read_state(session: Session) -> list[GaugeMetricFamily]:
    vaults = {
        row.id: _Vault(*row)
        for row in session.execute(
            select(Vault.id, Vault.project_id, Vault.region, Vault.used_bytes, Vault.size_gb)
        )
    }
    return [
        *_vault_families(session, vaults),
        _backup_counts(session),
        _record_counts(session),
        *_replication_pairs(session),
    ]


def _vault_families(session: Session, vaults: dict[str, _Vault]) -> list[GaugeMetricFamily]:
    used = GaugeMetricFamily(
        "opencbr_vault_used_bytes",
        "Unique bytes stored in the vault (billing.used is this in MB, rounded up).",
        labels=VAULT_LABELS,
    )
    capacity = GaugeMetricFamily(
        "opencbr_vault_capacity_bytes", "The vault's capacity (billing.size).", labels=VAULT_LABELS
    )
    last = GaugeMetricFamily(
        "opencbr_vault_last_successful_backup_timestamp_seconds",
        "Creation time of the vault's newest available backup (absent: none yet).",
        labels=VAULT_LABELS,
    )
    for row in vaults.values():
        used.add_metric(row.labels, row.used_bytes)
        capacity.add_metric(row.labels, row.size_gb * GB)
    newest = session.execute(
        select(Backup.vault_id, func.max(Backup.created_at))
        .where(Backup.parent_id.is_(None), Backup.status == BackupStatus.AVAILABLE)
        .group_by(Backup.vault_id)
    )
    for vault_id, created_at in newest:
        if vault_id in vaults:
            last.add_metric(vaults[vault_id].labels, _timestamp(created_at))
    return [used, capacity, last]


def _backup_counts(session: Session) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "opencbr_backups",
        "Backups (replicas included, volumes of a server not counted) by region and status.",
        labels=("region", "status"),
    )
    rows = session.execute(
        select(Vault.region, Backup.status, func.count())
        .join(Vault, Vault.id == Backup.vault_id)
        .where(Backup.parent_id.is_(None))
        .group_by(Vault.region, Backup.status)
    )
    for region, status, count in rows:
        family.add_metric([region, status], count)
    return family


def _record_counts(session: Session) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "opencbr_replication_records",
        "Replication records by source region, destination region and status.",
        labels=("region", "destination_region", "status"),
    )
    rows = session.execute(
        select(
            ReplicationRecord.source_region,
            ReplicationRecord.destination_region,
            ReplicationRecord.status,
            func.count(),
        ).group_by(
            ReplicationRecord.source_region,
            ReplicationRecord.destination_region,
            ReplicationRecord.status,
        )
    )
    for region, destination, status, count in rows:
        family.add_metric([region, destination, status], count)
    return family


def _replication_pairs(session: Session) -> list[GaugeMetricFamily]:
    """Per (source vault, destination vault) pair, as GET /replication-status lists them
    (replication_status.pair_states, the one home of the lag): the lag and the time of
    the last successful copy."""
    lag = GaugeMetricFamily(
        "opencbr_replication_lag_seconds",
        "Age of the oldest available backup of the source vault not yet replicated to the "
        "destination vault (replicated to before, or named by a replication policy); 0 when "
        "caught up.",
        labels=PAIR_LABELS,
    )
    last = GaugeMetricFamily(
        "opencbr_replication_last_success_timestamp_seconds",
        "When the last copy from the source vault into the destination vault succeeded.",
        labels=PAIR_LABELS,
    )
    now = clock.now()
    for state in replication_status.pair_states(session):
        source, destination = state.source, state.destination
        labels = [source.region, source.id, destination.region, destination.id]
        lag.add_metric(labels, state.lag_seconds(now))
        if state.last_success_at is not None:
            last.add_metric(labels, _timestamp(state.last_success_at))
    return [lag, last]


# --- a task's work row, before and after the task ------------------------------------------


@dataclass(frozen=True)
class WorkState:
    """What a task's row says: still to do (`live`), or how it ended, and the bytes it
    stored or copied with the labels they are counted under."""

    live: bool
    succeeded: bool = False
    nbytes: int = 0
    regions: tuple[str, ...] = ()


GONE = WorkState(live=False)


def checkpoint_state(db: Database, checkpoint_id: str) -> WorkState:
    with db.reading() as session:
        row = session.execute(
            select(Checkpoint.status, Vault.region)
            .join(Vault, Vault.id == Checkpoint.vault_id)
            .where(Checkpoint.id == checkpoint_id)
        ).first()
        if row is None:
            return GONE
        stored = session.scalar(
            select(func.coalesce(func.sum(Backup.bytes_new), 0)).where(
                Backup.checkpoint_id == checkpoint_id, Backup.parent_id.is_(None)
            )
        )
    status, region = row
    return WorkState(
        live=status == CheckpointStatus.PROTECTING,
        succeeded=status == CheckpointStatus.AVAILABLE,
        nbytes=int(stored or 0),
        regions=(region,),
    )


def record_state(db: Database, record_id: str) -> WorkState:
    with db.reading() as session:
        record = session.get(ReplicationRecord, record_id)
        if record is None:
            return GONE
        return WorkState(
            live=record.status in (RecordStatus.WAITING, RecordStatus.REPLICATING),
            succeeded=record.status == RecordStatus.SUCCESS,
            nbytes=record.bytes_copied,
            regions=(record.source_region, record.destination_region),
        )


def operation_state(db: Database, log_id: str) -> WorkState:
    with db.reading() as session:
        status = session.scalar(select(OperationLog.status).where(OperationLog.id == log_id))
    if status is None:
        return GONE
    return WorkState(
        live=status in (OperationStatus.WAITING, OperationStatus.RUNNING),
        succeeded=status == OperationStatus.SUCCESS,
    )
