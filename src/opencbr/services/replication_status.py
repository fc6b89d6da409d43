"""Replication status: for each (source vault, destination vault) pair, how far the
destination lags behind, what is under way and how the recent copies ended.

The pairs are those a project has replicated between (replication records) or has a
replication policy for (a binding's destination vault), both vaults still existing. The
lag is the age of the oldest available backup of the source not yet copied into the
destination (no successful record there), 0 when caught up; the pending bytes are what
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
    ColumnElement,
    Select,
    Subquery,
    and_,
    exists,
    func,
    or_,
    select,
    union,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from opencbr.db.backups import Backup, ReplicationRecord
from opencbr.db.policies import Policy, PolicyBinding, PolicyType
from opencbr.db.session import Database
from opencbr.db.status import BackupStatus, RecordStatus
from opencbr.db.vaults import Vault
from opencbr.services.identity import AuthContext
from opencbr.services.replication_plan import Gap, gaps

Pair = tuple[str, str]  # (source vault id, destination vault id)
_Column = ColumnElement[Any] | InstrumentedAttribute[Any]


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
    pairs = _pairs(project_id, vault_id)
    states = {state.key: state for state in _described(session, pairs)}
    if not states:
        return []
    _add_policies(session, pairs, states)
    _add_backlog(session, pairs, states)
    _add_outcomes(session, pairs, states)
    _add_live(session, pairs, states)
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
    return union(replicated, bound).subquery("pairs")


def _on_pair(pairs: Subquery, source_col: object, dest_col: object) -> ColumnElement[bool]:
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


def _add_policies(session: Session, pairs: Subquery, states: dict[Pair, PairState]) -> None:
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
    """Criterion: a successful record copied the backup into the destination vault."""
    done = aliased(ReplicationRecord)
    return exists().where(
        done.source_backup_id == backup_id,
        done.destination_vault_id == dest_vault_id,
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


def _add_backlog(session: Session, pairs: Subquery, states: dict[Pair, PairState]) -> None:
    """Newest backup, newest copied backup, oldest not copied and how many: one statement."""
    marked = (
        select(
            pairs.c.source_vault_id,
            pairs.c.destination_vault_id,
            Backup.created_at,
            _copied_into(pairs.c.destination_vault_id, Backup.id).label("copied"),
        )
        .select_from(pairs)
        .join(Backup, and_(Backup.vault_id == pairs.c.source_vault_id, *_source_backups()))
        .subquery()
    )
    rows = session.execute(
        select(
            marked.c.source_vault_id,
            marked.c.destination_vault_id,
            func.max(marked.c.created_at),
            func.max(marked.c.created_at).filter(marked.c.copied),
            func.min(marked.c.created_at).filter(~marked.c.copied),
            func.count().filter(~marked.c.copied),
        ).group_by(marked.c.source_vault_id, marked.c.destination_vault_id)
    )
    for source_id, dest_id, newest, newest_copied, oldest_behind, behind in rows:
        state = states.get((source_id, dest_id))
        if state is not None:
            state.newest_backup_at, state.newest_replicated_at = newest, newest_copied
            state.oldest_unreplicated_at, state.backups_behind = oldest_behind, int(behind)


# --- how the copies ended, and what runs -----------------------------------------------------


def _add_outcomes(session: Session, pairs: Subquery, states: dict[Pair, PairState]) -> None:
    """The last success, the last failure and the failures since the last success."""
    record = ReplicationRecord
    on_pair = _on_pair(pairs, record.source_vault_id, record.destination_vault_id)
    nth = func.row_number().over(
        partition_by=(record.source_vault_id, record.destination_vault_id, record.status),
        order_by=(record.finished_at.desc(), record.id.desc()),
    )
    latest = (
        select(
            record.source_vault_id,
            record.destination_vault_id,
            record.status,
            record.id,
            record.finished_at,
            record.fail_code,
            record.fail_reason,
            nth.label("nth"),
        )
        .join(pairs, on_pair)
        .where(record.status.in_((RecordStatus.SUCCESS, RecordStatus.FAIL)))
        .subquery()
    )
    for source_id, dest_id, status, record_id, at, code, reason, _nth in session.execute(
        select(latest).where(latest.c.nth == 1)
    ):
        state = states.get((source_id, dest_id))
        if state is None:
            continue
        if status == RecordStatus.SUCCESS:
            state.last_success_at = at
        else:
            state.last_failure = Failure(record_id, at, code, reason)
    _add_streaks(session, pairs, states)


def _add_streaks(session: Session, pairs: Subquery, states: dict[Pair, PairState]) -> None:
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
        if (source_id, dest_id) in states:
            states[(source_id, dest_id)].failure_streak = int(count)


def _add_live(session: Session, pairs: Subquery, states: dict[Pair, PairState]) -> None:
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
        state = states.get((source_id, dest_id))
        if state is not None:
            state.running.append(Running(record_id, backup_id, progress, copied, total))
    waiting = session.execute(
        select(record.source_vault_id, record.destination_vault_id, func.count())
        .join(pairs, on_pair)
        .where(record.status == RecordStatus.WAITING)
        .group_by(record.source_vault_id, record.destination_vault_id)
    )
    for source_id, dest_id, count in waiting:
        if (source_id, dest_id) in states:
            states[(source_id, dest_id)].waiting = int(count)
