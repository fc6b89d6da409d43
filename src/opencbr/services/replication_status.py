"""Replication status: for each (source vault, destination vault) pair, how far the
destination lags behind, what is under way and how the recent copies ended.

The pairs are those a project has replicated between (replication records) or has a
replication policy for (a binding's destination vault), both vaults still existing. The
lag is the age of the oldest available backup of the source not yet copied into the
destination's region (no successful record there: a backup is replicated once per region,
whichever vault of it received the copy), 0 when caught up; the pending bytes are what
copying those backups would write (`replication_plan.gaps`, the dry run's count).

One home for these figures: GET /replication-status answers them, and the metrics'
`opencbr_replication_lag_seconds` takes its value from the same `pair_states`. A fixed
number of statements per call whatever the number of backups or records, plus one
`gaps` statement per pair when the pending bytes are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Select,
    String,
    Subquery,
    and_,
    column,
    exists,
    func,
    or_,
    select,
    union,
    values,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from opencbr.db.backups import Backup, ReplicationRecord
from opencbr.db.policies import Policy, PolicyBinding, PolicyType
from opencbr.db.session import Database
from opencbr.db.status import BackupStatus, RecordStatus
from opencbr.db.vaults import Vault
from opencbr.services import planned_records
from opencbr.services.identity import AuthContext
from opencbr.services.replication_plan import Gap, gaps

Pair = tuple[str, str]  # (source vault id, destination vault id)
_Column = ColumnElement[Any] | InstrumentedAttribute[Any]
Pairs = CTE | Subquery  # a table of (source_vault_id, destination_vault_id)


@dataclass(frozen=True)
class VaultRef:
    id: str
    name: str
    region: str
    project_id: str


@dataclass(frozen=True)
class Running:
    """A record copying now, with its progress."""

    record_id: str
    backup_id: str
    progress: int
    bytes_copied: int
    bytes_total: int


@dataclass(frozen=True)
class Failure:
    record_id: str
    at: datetime | None
    code: str
    reason: str


@dataclass
class PairState:
    source: VaultRef
    destination: VaultRef
    policy_ids: list[str] = field(default_factory=list)
    newest_backup_at: datetime | None = None
    newest_replicated_at: datetime | None = None
    oldest_unreplicated_at: datetime | None = None
    backups_behind: int = 0
    last_success_at: datetime | None = None
    last_failure: Failure | None = None
    failure_streak: int = 0  # failed records since the last successful one
    running: list[Running] = field(default_factory=list)
    waiting: int = 0  # records waiting for their turn
    pending: Gap | None = None  # None: not asked for

    @property
    def key(self) -> Pair:
        return (self.source.id, self.destination.id)

    def lag_seconds(self, now: datetime) -> float:
        """Age of the oldest available source backup not yet copied there; 0 when none."""
        if self.oldest_unreplicated_at is None:
            return 0.0
        return max(0.0, (now - self.oldest_unreplicated_at).total_seconds())


def status(db: Database, ctx: AuthContext, vault_id: str | None = None) -> list[PairState]:
    """GET /replication-status: the pairs whose source vault is the caller's project's
    (with `vault_id`, those whose source or destination it is: a filter, like the one of
    the backup list, so naming another project's vault finds nothing), pending bytes
    included."""
    planned_records.settle(db, project_id=ctx.project_id)
    with db.reading() as session:
        return pair_states(session, ctx.project_id, vault_id, pending=True)


def pair_states(
    session: Session,
    project_id: str | None = None,
    vault_id: str | None = None,
    pending: bool = False,
) -> list[PairState]:
    """Every pair (of one project when `project_id` is given), ordered by source and
    destination vault name; `pending` adds each pair's pending bytes (one more statement
    per pair)."""
    states = {state.key: state for state in _described(session, _pairs(project_id, vault_id))}
    if not states:
        return []
    # The pairs found, as a table the other statements join: finding them again in the
    # records would scan every record of the project each time.
    pairs = values(
        column("source_vault_id", String), column("destination_vault_id", String), name="pairs"
    )
    table = pairs.data(list(states)).cte("pairs")
    _add_policies(session, table, states)
    _add_backlog(session, table, states)
    _add_outcomes(session, table, states)
    _add_live(session, table, states)
    if pending:
        for (source_id, dest_id), state in states.items():
            found = gaps(session, not_yet_copied(source_id, dest_id), dest_id)
            state.pending = sum(found.values(), Gap())
    return list(states.values())


# --- the pairs ------------------------------------------------------------------------------


def _pairs(project_id: str | None, vault_id: str | None) -> Subquery:
    """(source_vault_id, destination_vault_id) of the records and the replication policy
    bindings, once each, restricted to a project's source vaults and to one vault."""

    def restrict(query: Select[Any, Any], source_col: _Column) -> Select[Any, Any]:
        dest_col = query.selected_columns[1]
        if project_id is not None:
            source = aliased(Vault)
            query = query.join(source, source.id == source_col).where(
                source.project_id == project_id
            )
        if vault_id is not None:
            query = query.where(or_(source_col == vault_id, dest_col == vault_id))
        return query

    replicated = restrict(
        select(
            ReplicationRecord.source_vault_id.label("source_vault_id"),
            ReplicationRecord.destination_vault_id.label("destination_vault_id"),
        ),
        ReplicationRecord.source_vault_id,
    )
    bound = restrict(
        select(PolicyBinding.vault_id, PolicyBinding.destination_vault_id)
        .join(Policy, Policy.id == PolicyBinding.policy_id)
        .where(
            Policy.operation_type == PolicyType.REPLICATION,
            PolicyBinding.destination_vault_id.is_not(None),
        ),
        PolicyBinding.vault_id,
    )
    return union(replicated, bound).subquery("found_pairs")


def _on_pair(pairs: Pairs, source_col: _Column, dest_col: _Column) -> ColumnElement[bool]:
    return and_(pairs.c.source_vault_id == source_col, pairs.c.destination_vault_id == dest_col)


def _described(session: Session, pairs: Subquery) -> list[PairState]:
    """A state per pair whose two vaults still exist, with the vaults' names and regions."""
    source, dest = aliased(Vault), aliased(Vault)
    rows = session.execute(
        select(
            *(source.id, source.name, source.region, source.project_id),
            *(dest.id, dest.name, dest.region, dest.project_id),
        )
        .select_from(pairs)
        .join(source, source.id == pairs.c.source_vault_id)
        .join(dest, dest.id == pairs.c.destination_vault_id)
        .order_by(source.name, source.id, dest.name, dest.id)
    )
    return [PairState(VaultRef(*row[:4]), VaultRef(*row[4:])) for row in rows]


def _add_policies(session: Session, pairs: Pairs, states: dict[Pair, PairState]) -> None:
    rows = session.execute(
        select(PolicyBinding.vault_id, PolicyBinding.destination_vault_id, Policy.id)
        .join(Policy, Policy.id == PolicyBinding.policy_id)
        .join(pairs, _on_pair(pairs, PolicyBinding.vault_id, PolicyBinding.destination_vault_id))
        .where(Policy.operation_type == PolicyType.REPLICATION)
        .order_by(Policy.id)
    )
    for source_id, dest_id, policy_id in rows:
        state = states.get((source_id, dest_id or ""))
        if state is not None:
            state.policy_ids.append(policy_id)


# --- what is behind ---------------------------------------------------------------------------


def _copied_into(dest_vault_id: object, backup_id: object) -> ColumnElement[bool]:
    """Criterion: a successful record copied the backup into the destination vault's
    region. A backup is replicated once per region (the planner refuses another copy into
    a second vault there), so a copy into another vault of that region is not a backlog
    this pair could ever clear."""
    done, dest = aliased(ReplicationRecord), aliased(Vault)
    return exists().where(
        dest.id == dest_vault_id,
        done.source_backup_id == backup_id,
        done.destination_region == dest.region,
        done.status == RecordStatus.SUCCESS,
    )


def _source_backups() -> list[ColumnElement[bool]]:
    """The backups a replication copies: available top-level backups (not replicas)."""
    return [
        Backup.parent_id.is_(None),
        Backup.image_type == "backup",
        Backup.status == BackupStatus.AVAILABLE,
    ]


def not_yet_copied(source_vault_id: str, dest_vault_id: str) -> Select[str, datetime]:
    """The backups (id, created_at) of the source the destination does not have yet."""
    return select(Backup.id, Backup.created_at).where(
        Backup.vault_id == source_vault_id,
        *_source_backups(),
        ~_copied_into(dest_vault_id, Backup.id),
    )


def _add_backlog(session: Session, pairs: Pairs, states: dict[Pair, PairState]) -> None:
    """Newest backup and newest copied backup; oldest not copied and how many. Two
    statements, each criterion in WHERE, where the database joins (or anti-joins) the
    records in one pass instead of probing them backup by backup."""
    on_source = and_(Backup.vault_id == pairs.c.source_vault_id, *_source_backups())
    copied, dest = aliased(ReplicationRecord), aliased(Vault)
    newest = session.execute(
        select(
            pairs.c.source_vault_id,
            pairs.c.destination_vault_id,
            func.max(Backup.created_at),
            func.max(Backup.created_at).filter(copied.id.is_not(None)),
        )
        .select_from(pairs)
        .join(Backup, on_source)
        .join(dest, dest.id == pairs.c.destination_vault_id)
        .outerjoin(
            copied,
            and_(
                copied.source_backup_id == Backup.id,
                copied.destination_region == dest.region,
                copied.status == RecordStatus.SUCCESS,
            ),
        )
        .group_by(pairs.c.source_vault_id, pairs.c.destination_vault_id)
    )
    for source_id, dest_id, newest_at, newest_copied_at in newest:
        state = states[(source_id, dest_id)]
        state.newest_backup_at, state.newest_replicated_at = newest_at, newest_copied_at
    behind = session.execute(
        select(
            pairs.c.source_vault_id,
            pairs.c.destination_vault_id,
            func.min(Backup.created_at),
            func.count(),
        )
        .select_from(pairs)
        .join(Backup, on_source)
        .where(~_copied_into(pairs.c.destination_vault_id, Backup.id))
        .group_by(pairs.c.source_vault_id, pairs.c.destination_vault_id)
    )
    for source_id, dest_id, oldest_at, count in behind:
        state = states[(source_id, dest_id)]
        state.oldest_unreplicated_at, state.backups_behind = oldest_at, int(count)


# --- how the copies ended, and what runs -----------------------------------------------------


def _add_outcomes(session: Session, pairs: Pairs, states: dict[Pair, PairState]) -> None:
    """The last success, the last failure and the failures since the last success."""
    record = ReplicationRecord
    on_pair = _on_pair(pairs, record.source_vault_id, record.destination_vault_id)
    successes = session.execute(
        select(record.source_vault_id, record.destination_vault_id, func.max(record.finished_at))
        .join(pairs, on_pair)
        .where(record.status == RecordStatus.SUCCESS)
        .group_by(record.source_vault_id, record.destination_vault_id)
    )
    for source_id, dest_id, at in successes:
        states[(source_id, dest_id)].last_success_at = at
    # Failures are few beside successes: ranking them alone stays cheap.
    nth = func.row_number().over(
        partition_by=(record.source_vault_id, record.destination_vault_id),
        order_by=(record.finished_at.desc(), record.id.desc()),
    )
    failures = (
        select(
            *(record.source_vault_id, record.destination_vault_id, record.id),
            *(record.finished_at, record.fail_code, record.fail_reason, nth.label("nth")),
        )
        .join(pairs, on_pair)
        .where(record.status == RecordStatus.FAIL)
        .subquery()
    )
    for source_id, dest_id, record_id, at, code, reason, _nth in session.execute(
        select(failures).where(failures.c.nth == 1)
    ):
        states[(source_id, dest_id)].last_failure = Failure(record_id, at, code, reason)
    _add_streaks(session, pairs, states)


def _add_streaks(session: Session, pairs: Pairs, states: dict[Pair, PairState]) -> None:
    record, success = ReplicationRecord, aliased(ReplicationRecord)
    later_success = exists().where(
        success.source_vault_id == record.source_vault_id,
        success.destination_vault_id == record.destination_vault_id,
        success.status == RecordStatus.SUCCESS,
        success.finished_at >= record.finished_at,
    )
    rows = session.execute(
        select(record.source_vault_id, record.destination_vault_id, func.count())
        .join(pairs, _on_pair(pairs, record.source_vault_id, record.destination_vault_id))
        .where(record.status == RecordStatus.FAIL, ~later_success)
        .group_by(record.source_vault_id, record.destination_vault_id)
    )
    for source_id, dest_id, count in rows:
        states[(source_id, dest_id)].failure_streak = int(count)


def _add_live(session: Session, pairs: Pairs, states: dict[Pair, PairState]) -> None:
    """The records copying now (a few: one at a time per destination vault), and how many
    wait for their turn."""
    record = ReplicationRecord
    on_pair = _on_pair(pairs, record.source_vault_id, record.destination_vault_id)
    copying = session.execute(
        select(
            record.source_vault_id,
            record.destination_vault_id,
            record.id,
            record.source_backup_id,
            record.progress,
            record.bytes_copied,
            record.bytes_total,
        )
        .join(pairs, on_pair)
        .where(record.status == RecordStatus.REPLICATING)
        .order_by(record.created_at, record.id)
    )
    for source_id, dest_id, record_id, backup_id, progress, copied, total in copying:
        running = Running(record_id, backup_id, progress, copied, total)
        states[(source_id, dest_id)].running.append(running)
    waiting = session.execute(
        select(record.source_vault_id, record.destination_vault_id, func.count())
        .join(pairs, on_pair)
        .where(record.status == RecordStatus.WAITING)
        .group_by(record.source_vault_id, record.destination_vault_id)
    )
    for source_id, dest_id, count in waiting:
        states[(source_id, dest_id)].waiting = int(count)
