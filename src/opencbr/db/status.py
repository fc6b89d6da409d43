"""Statuses as types: every status column's values, and the groups the code asks about.

The values are CBR's wire values (cbr-api.md), so a member compares and serialises as its
string (StrEnum). A transition is a named function in the service that owns the row
(`start_replication`, `complete_record`, `fail_record`, ...); this module only names the
states. SQL that must list a group of states (a partial index, a filter) is generated from
these groups with `sql_in`, never written by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class BackupStatus(StrEnum):
    PROTECTING = "protecting"
    AVAILABLE = "available"
    ERROR = "error"
    RESTORING = "restoring"
    DELETING = "deleting"
    WAITING_PROTECT = "waiting_protect"


class CheckpointStatus(StrEnum):
    """Derived from its backups (checkpoints.settle)."""

    PROTECTING = "protecting"
    AVAILABLE = "available"
    ERROR = "error"


class RecordStatus(StrEnum):
    """A replication record: waiting_replicate -> replicating -> success | fail."""

    WAITING = "waiting_replicate"
    REPLICATING = "replicating"
    SUCCESS = "success"
    FAIL = "fail"


class OperationStatus(StrEnum):
    """An operation log: waiting -> running -> success | failed (skipped: never ran)."""

    WAITING = "waiting"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    # CBR's list filter accepts it; opencbr never sets it (a task that stops heartbeating
    # is taken over by another worker, not timed out).
    TIMEOUT = "timeout"


class MemberStatus(StrEnum):
    """A backup's share with another project: pending -> accepted | rejected (the member
    project decides, and may change its mind between accepted and rejected)."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class MigrationStatus(StrEnum):
    """A migration of resources between vaults (services/migrations.py):
    waiting -> running -> moved -> success | failed. `moved`: the backups and bindings are
    in the destination; the source's manifests are still to remove."""

    WAITING = "waiting"
    RUNNING = "running"
    MOVED = "moved"
    SUCCESS = "success"
    FAILED = "failed"


class PolicyRunStatus(StrEnum):
    """One slot of a policy: waiting -> running -> success | failed."""

    WAITING = "waiting"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


class VaultStatus(StrEnum):
    """A vault's status. opencbr creates every vault `available` and changes it never;
    `frozen` is CBR's state of a vault whose account is in arrears (read by the billing
    block of the wire answer)."""

    AVAILABLE = "available"
    FROZEN = "frozen"


class ProtectStatus(StrEnum):
    """A resource bound to a vault: what is being done to it now."""

    AVAILABLE = "available"
    PROTECTING = "protecting"
    RESTORING = "restoring"
    REMOVING = "removing"


# Backups whose data a task is writing or reading (a vault is not deleted under them; one
# being deleted goes with its vault).
BUSY_BACKUP = (
    BackupStatus.PROTECTING,
    BackupStatus.RESTORING,
    BackupStatus.WAITING_PROTECT,
)
# Backups whose data is kept and whole (a restore only reads it): what the usage reports
# count, per resource (services.backups) and per project (services.usage).
KEPT_BACKUP = (BackupStatus.AVAILABLE, BackupStatus.RESTORING)
# Records whose copy is still to finish.
LIVE_RECORD = (RecordStatus.WAITING, RecordStatus.REPLICATING)
# Operation logs of work not yet ended.
LIVE_OPERATION = (OperationStatus.WAITING, OperationStatus.RUNNING)
# Migrations still to finish.
LIVE_MIGRATION = (MigrationStatus.WAITING, MigrationStatus.RUNNING, MigrationStatus.MOVED)
# Migrations that may still write chunks into their destination vault (GC waits for them).
COPYING_MIGRATION = (MigrationStatus.WAITING, MigrationStatus.RUNNING)
# Policy runs still starting their slot's work.
LIVE_POLICY_RUN = (PolicyRunStatus.WAITING, PolicyRunStatus.RUNNING)


def sql_in(column: str, statuses: Iterable[StrEnum]) -> str:
    """`column IN ('a', 'b')` for a partial index or a raw filter, from the enum."""
    values = ", ".join(f"'{status.value}'" for status in statuses)
    return f"{column} IN ({values})"
