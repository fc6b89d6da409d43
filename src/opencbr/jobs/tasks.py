"""The background tasks: one module-level function per use case, run by a queue worker.

Each task takes the `Jobs` that runs it (its runtime, and a way to enqueue what follows),
then the ids it works on; it calls one service function and enqueues the work that
service names next. The database row is the truth: a task that finds nothing to do
returns. A route enqueues a task by naming it: `jobs.enqueue(tasks.run_restore, log_id)`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from opencbr.services import (
    backup_runs,
    backups,
    gc,
    leases,
    migrations,
    planned_records,
    policy_runs,
    pruning,
    replicas,
    replication_runs,
    restores,
    verify,
)

if TYPE_CHECKING:
    from opencbr.jobs.queue import Jobs


def run_checkpoint(jobs: Jobs, checkpoint_id: str) -> None:
    """Back up a checkpoint; a policy's backup then lets its retention prune."""
    backup_runs.run_checkpoint(jobs.runtime, checkpoint_id)
    policy_id = pruning.policy_of_checkpoint(jobs.runtime, checkpoint_id)
    if policy_id is not None:
        jobs.enqueue(prune_policy, policy_id)


def run_restore(jobs: Jobs, log_id: str) -> None:
    restores.run(jobs.runtime, log_id)


def run_verify(jobs: Jobs, log_id: str) -> None:
    verify.run(jobs.runtime, log_id)


def delete_backup(jobs: Jobs, backup_id: str) -> None:
    vault_id = backups.delete(jobs.runtime, backup_id)
    if vault_id is not None:
        jobs.enqueue(collect_garbage, vault_id)


def collect_garbage(jobs: Jobs, vault_id: str) -> None:
    gc.collect(jobs.runtime, vault_id)


def purge_vault(jobs: Jobs, region: str, vault_id: str) -> None:
    jobs.runtime.stores.purge(region, vault_id)


def replicate(jobs: Jobs, record_id: str) -> None:
    """Copy one backup (with the records of the same backup due now); then wake the
    records waiting behind them for the same vaults, and their policies' retention."""
    settled = replication_runs.run(jobs.runtime, record_id)
    for next_record in settled.next_records:
        jobs.enqueue(replicate, next_record)
    for settled_id in settled.records or [record_id]:
        policy_id = pruning.policy_of_record(jobs.runtime, settled_id)
        if policy_id is not None:
            jobs.enqueue(prune_policy, policy_id)


def migrate_resources(jobs: Jobs, migration_id: str) -> None:
    """Move resources and their backups to another vault; then collect the vault left with
    unreferenced chunks (the source after a success, the destination after a failure)."""
    ended = migrations.run(jobs.runtime, migration_id)
    if ended is not None:
        garbage = ended.source_vault_id if ended.succeeded else ended.destination_vault_id
        jobs.enqueue(collect_garbage, garbage)


def fan_out_replications(jobs: Jobs, record_ids: list[str]) -> None:
    """Create the replicas and operation logs of a vault plan (the request inserted only
    its records), then enqueue one `replicate` per record. A crash before the fan-out is
    safe: the reconciler enqueues the records, and `replicate` creates a missing replica."""
    replicas.create_replicas(jobs.runtime.db, record_ids)
    for record_id in record_ids:
        jobs.enqueue(replicate, record_id)


def fan_out_plan(jobs: Jobs, plan_id: str) -> None:
    """A checkpoints/replicate plan's fan-out: its records (expanded from the plan now,
    unless the API process or a reader did it first), then `fan_out_replications`."""
    db = jobs.runtime.db
    planned_records.expand(db, plan_id)
    fan_out_replications(jobs, planned_records.records_of_plan(db, plan_id))


def run_policy(jobs: Jobs, run_id: str) -> None:
    """Start a policy slot's work on every bound vault (enqueued batch by batch, as each
    batch commits), then apply the policy's retention."""
    rt = jobs.runtime
    policy_runs.run_policy(rt, run_id, lambda started: enqueue_started(jobs, started))
    policy_id = policy_runs.policy_of_run(rt, run_id)
    if policy_id is not None:
        prune_policy(jobs, policy_id)


def enqueue_started(jobs: Jobs, started: policy_runs.Started) -> None:
    for checkpoint_id in started.checkpoint_ids:
        jobs.enqueue(run_checkpoint, checkpoint_id)
    if started.record_ids:
        jobs.enqueue(fan_out_replications, started.record_ids)


def prune_policy(jobs: Jobs, policy_id: str) -> None:
    """Apply a policy's retention; delete what it removes."""
    for backup_id in pruning.prune(jobs.runtime, policy_id):
        jobs.enqueue(delete_backup, backup_id)


def tick_schedules(jobs: Jobs) -> datetime | None:
    """Claim the policy slots that are due and enqueue their runs (housekeeping thread);
    the next slot of any policy, when the loop ticks again if it comes before the next
    tick."""
    for run_id in policy_runs.tick(jobs.runtime):
        jobs.enqueue(run_policy, run_id)
    return policy_runs.next_slot(jobs.runtime)


def sweep_retention(jobs: Jobs) -> None:
    """Retention of every policy, and expired backups (on the retention cadence)."""
    for policy_id in pruning.policies_to_sweep(jobs.runtime):
        jobs.enqueue(prune_policy, policy_id)
    for backup_id in pruning.expire(jobs.runtime):
        jobs.enqueue(delete_backup, backup_id)


def reconcile(jobs: Jobs) -> None:
    """Enqueue again every piece of work that no live worker holds (run by the housekeeping
    thread, not queued: it is what recovers work whose task was lost)."""
    rt = jobs.runtime
    # Work never leased counts as lost only once the queue is drained (leases.is_stale).
    busy = jobs.queued_tasks() > 0
    for checkpoint_id in leases.stuck(rt, backup_runs.BACKUP, busy):
        jobs.enqueue(run_checkpoint, checkpoint_id)
    for log_id in leases.stuck(rt, restores.RESTORE, busy):
        jobs.enqueue(run_restore, log_id)
    for backup_id in backups.deleting_backups(rt.db):
        jobs.enqueue(delete_backup, backup_id)
    planned_records.settle(rt.db)  # a plan whose API process died before expanding it
    for record_id in replication_runs.stuck(rt, busy):
        jobs.enqueue(replicate, record_id)
    for run_id in leases.stuck(rt, policy_runs.POLICY_RUN, busy):
        jobs.enqueue(run_policy, run_id)
    for migration_id in leases.stuck(rt, migrations.MIGRATION, busy):
        jobs.enqueue(migrate_resources, migration_id)
    for log_id in leases.stuck(rt, verify.VERIFY, busy):
        jobs.enqueue(run_verify, log_id)


def verify_scheduled(jobs: Jobs) -> None:
    """The scheduled verify's pass over every vault (housekeeping thread, not queued)."""
    verify.scheduled_pass(jobs.runtime)


def collect_all_garbage(jobs: Jobs) -> None:
    """Enqueue a collection for every vault that has garbage (on the GC cadence)."""
    for vault_id in gc.vaults_with_garbage(jobs.runtime):
        jobs.enqueue(collect_garbage, vault_id)


# Registered with the queue under their function names (the names stored in queue.db).
QUEUED = (
    run_checkpoint,
    run_restore,
    delete_backup,
    collect_garbage,
    purge_vault,
    replicate,
    fan_out_replications,
    fan_out_plan,
    run_policy,
    prune_policy,
    migrate_resources,
    run_verify,
)
