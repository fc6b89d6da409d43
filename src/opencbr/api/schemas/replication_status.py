"""GET /replication-status (an opencbr extension): per (source vault, destination vault)
pair, the lag, the pending bytes, what runs and how the recent copies ended."""

from __future__ import annotations

from datetime import datetime

from opencbr.api.schemas.common import ResponseModel, wire_time
from opencbr.services.replication_status import Failure, PairState


class RunningRecord(ResponseModel):
    replication_record_id: str
    backup_id: str
    progress: int
    bytes_copied: int
    bytes_total: int


class LastFailure(ResponseModel):
    replication_record_id: str
    at: str | None
    error_code: str
    reason: str


class ReplicationPair(ResponseModel):
    vault_id: str
    vault_name: str
    source_region: str
    destination_vault_id: str
    destination_vault_name: str
    destination_region: str
    destination_project_id: str
    policy_ids: list[str]
    newest_backup_at: str | None
    newest_replicated_backup_at: str | None
    lag_seconds: int
    backups_behind: int
    pending_chunks: int
    pending_bytes: int
    running: list[RunningRecord]
    waiting_records: int
    last_success_at: str | None
    last_failure: LastFailure | None
    failure_streak: int


class ReplicationStatusResponse(ResponseModel):
    replication_pairs: list[ReplicationPair]
    count: int


def _failure_out(failure: Failure | None) -> LastFailure | None:
    if failure is None:
        return None
    return LastFailure(
        replication_record_id=failure.record_id,
        at=wire_time(failure.at),
        error_code=failure.code,
        reason=failure.reason,
    )


def pair_out(state: PairState, now: datetime) -> ReplicationPair:
    pending = state.pending
    return ReplicationPair(
        vault_id=state.source.id,
        vault_name=state.source.name,
        source_region=state.source.region,
        destination_vault_id=state.destination.id,
        destination_vault_name=state.destination.name,
        destination_region=state.destination.region,
        destination_project_id=state.destination.project_id,
        policy_ids=state.policy_ids,
        newest_backup_at=wire_time(state.newest_backup_at),
        newest_replicated_backup_at=wire_time(state.newest_replicated_at),
        lag_seconds=int(state.lag_seconds(now)),
        backups_behind=state.backups_behind,
        pending_chunks=pending.chunks if pending else 0,
        pending_bytes=pending.bytes if pending else 0,
        running=[
            RunningRecord(
                replication_record_id=r.record_id,
                backup_id=r.backup_id,
                progress=r.progress,
                bytes_copied=r.bytes_copied,
                bytes_total=r.bytes_total,
            )
            for r in state.running
        ],
        waiting_records=state.waiting,
        last_success_at=wire_time(state.last_success_at),
        last_failure=_failure_out(state.last_failure),
        failure_streak=state.failure_streak,
    )


def status_out(states: list[PairState], now: datetime) -> ReplicationStatusResponse:
    return ReplicationStatusResponse(
        replication_pairs=[pair_out(state, now) for state in states], count=len(states)
    )
