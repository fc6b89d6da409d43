"""Cluster-wide housekeeping steps: each worker process tries them on its own cadence; a
claim in the database lets one of them run each step per interval.

The garbage-collection cadence and the retention sweep read every vault or policy: run by
every worker they would do the same work once per worker. (The policy tick claims each
slot itself, and the reconciler's duplicates are harmless: a task enqueued twice finds
its work leased, done or gone. Both run in every worker.)
"""

from __future__ import annotations

from datetime import timedelta

from opencbr import clock
from opencbr.db import service_state
from opencbr.services.runtime import Runtime

# A claim holds a step for this share of its interval: the claimant's own next try (one
# interval later by its monotonic clock) always finds it due again, whatever the drift
# between its clock and the database's rows.
HOLD_SHARE = 0.9


def claim(rt: Runtime, step: str, interval_seconds: float) -> bool:
    """True when this process should run `step` now: no process ran it in the last
    HOLD_SHARE * interval (and this one has just recorded that it runs it)."""
    now = clock.now()
    hold = timedelta(seconds=interval_seconds * HOLD_SHARE)
    with rt.db.transaction() as session:
        return service_state.claim(session, step, now, now + hold)
