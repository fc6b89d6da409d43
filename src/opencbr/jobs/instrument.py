"""Task metrics: every queued task runs through `observed`, which counts it by outcome, times
it, and counts the bytes a backup stored or a replication copied.

The outcome and the bytes come from the task's work row, read before and after the task
(never from inside the services): `success` or `failed` when this run settled the work,
`skipped` when there was nothing for it to do (settled already, or held by another
worker), `deferred` when it was put back on the queue (garbage collection held the vault),
`failed` too when the task raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opencbr import metrics
from opencbr.db.session import Database
from opencbr.services import monitoring
from opencbr.services.leases import VaultBusy
from opencbr.services.monitoring import WorkState

# Queue task name -> its metric label (bounded; never an id).
TASK_LABELS = {
    "run_checkpoint": "backup",
    "run_restore": "restore",
    "delete_backup": "delete",
    "collect_garbage": "gc",
    "purge_vault": "purge",
    "replicate": "replicate",
    "fan_out_replications": "replication_plan",
}
# Tasks whose first argument names a row that says how the work ended.
_STATE_OF: dict[str, Callable[[Database, str], WorkState]] = {
    "run_checkpoint": monitoring.checkpoint_state,
    "run_restore": monitoring.operation_state,
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
    started = time.monotonic()
    outcome = "failed"
    try:
        run()
        outcome = "success"
    except VaultBusy:  # the backup's or the replication destination's
        outcome = "deferred"
        raise
    finally:
        if state_of is not None and before is not None and outcome == "success":
            outcome = _settled(name, before, state_of(db, args[0]))
        label = TASK_LABELS.get(name, name)
        metrics.TASKS.labels(label, outcome).inc()
        metrics.TASK_DURATION.labels(label, outcome).observe(time.monotonic() - started)


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
