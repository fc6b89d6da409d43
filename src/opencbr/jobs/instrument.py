"""Task metrics: every queued task runs through `observed`, which counts it by outcome, times
it, and counts the bytes a backup stored or a replication copied.

The outcome and the bytes come from the task's work row, read before and after the task
(never from inside the services): `success` or `failed` when this run settled the work,
`skipped` when there was nothing for it to do (settled already, or held by another
worker), `deferred` when it was put back on the queue (garbage collection held the vault),
`failed` too when the task raised.

It also writes the lifecycle lines (started, then finished, deferred or failed) of the
tasks that are not leased work (delete, gc, purge, replication_plan); leased work (backup,
restore, replicate) is logged by its runner, services/leases.py, which knows more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from opencbr import metrics
from opencbr.db.session import Database
from opencbr.services import monitoring
from opencbr.services.leases import VaultBusy
from opencbr.services.monitoring import WorkState

log = structlog.get_logger(__name__)
# Queue task name -> its metric label (bounded; never an id).
TASK_LABELS = {
    "run_checkpoint": "backup",
    "run_restore": "restore",
    "delete_backup": "delete",
    "collect_garbage": "gc",
    "purge_vault": "purge",
    "replicate": "replicate",
    "fan_out_replications": "replication_plan",
    "fan_out_plan": "replication_plan",
    "migrate_resources": "migrate",
    "run_verify": "verify",
}
# Tasks whose first argument names a row that says how the work ended.
_STATE_OF: dict[str, Callable[[Database, str], WorkState]] = {
    "run_checkpoint": monitoring.checkpoint_state,
    "run_restore": monitoring.operation_state,
    "run_verify": monitoring.operation_state,
    "replicate": monitoring.record_state,
}
_BYTES_COUNTER = {
    "run_checkpoint": metrics.BACKUP_STORED_BYTES,
    "replicate": metrics.REPLICATION_COPIED_BYTES,
}


def observed(db: Database, name: str, args: tuple[Any, ...], run: Callable[[], None]) -> None:
    """Run `run()` (the task `name` on `args`) and record its metrics; exceptions pass."""
    state_of = _STATE_OF.get(name)
    before = state_of(db, args[0]) if state_of is not None else None
    label = TASK_LABELS.get(name, name)
    if state_of is None:
        log.info("background task started", task=label, **_subject(args))
    started = time.monotonic()
    outcome = "failed"
    error: str | None = None
    try:
        run()
        outcome = "success"
    except VaultBusy:  # the backup's or the replication destination's
        outcome = "deferred"
        raise
    except Exception as exc:
        error = type(exc).__name__  # the queue logs the traceback
        raise
    finally:
        seconds = time.monotonic() - started
        if state_of is not None and before is not None and outcome == "success":
            outcome = _settled(name, before, state_of(db, args[0]))
        metrics.TASKS.labels(label, outcome).inc()
        metrics.TASK_DURATION.labels(label, outcome).observe(seconds)
        if state_of is None:
            _log_end(label, outcome, error, round(seconds, 3), args)


def _subject(args: tuple[Any, ...]) -> dict[str, Any]:
    """What a task works on, for its log lines: its id, or how many ids it was given."""
    if not args:
        return {}
    first = args[-1] if len(args) > 1 else args[0]  # purge_vault(region, vault_id)
    return {"count": len(first)} if isinstance(first, list) else {"id": first}


def _log_end(
    label: str, outcome: str, error: str | None, seconds: float, args: tuple[Any, ...]
) -> None:
    if outcome == "failed":
        log.warning("background task failed", task=label, error=error, **_subject(args))
    elif outcome == "deferred":
        log.info("background task deferred", task=label, **_subject(args))
    else:
        log.info("background task finished", task=label, seconds=seconds, **_subject(args))


def _settled(name: str, before: WorkState, after: WorkState) -> str:
    """The outcome of a run that returned, from its row; counts the bytes it moved."""
    if not before.live or after.live:
        return "skipped"
    if not after.succeeded:
        return "failed"
    counter = _BYTES_COUNTER.get(name)
    if counter is not None and after.nbytes:
        counter.labels(*after.regions).inc(after.nbytes)
    return "success"
