"""Policy runs: each due slot of a policy is claimed once, then started on every vault
bound to it (scale-out-notes.md §2.4).

The scheduler's `tick` runs in every worker process's housekeeping loop. A policy's next
slot is `policies.next_run_at`; claiming the slot is one conditional UPDATE that moves it
to the following slot, so of several workers that see the same due slot exactly one
claims it, and the claim writes the slot's run (`policy_runs`, unique per slot) in the same
transaction. The queue only wakes a worker for the run; the row is the truth.

    next_run_at due --claim (CAS)--> run waiting --lease--> running --> success | failed
                    \\--slot missed by more than start_window_minutes--> operation logs
                        `skipped`; no run (no catch-up storm after an outage)
    after an outage: the newest slot inside its window runs; the slots before it get one
    `skipped` log per vault naming them

A run is leased work (`services/leases.py`): it starts the slot's work vault by vault, in
batches, each batch in one transaction that also moves the run's `cursor`, so a run taken
over after a crash goes on where it stopped and starts no vault twice. A vault whose
previous run is still live is skipped (CBR's rule: a backup that overruns its next slot
makes that slot skip), with an operation log `skipped` that says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session, lazyload

from opencbr import clock
from opencbr.db.backups import Checkpoint, ReplicationRecord
from opencbr.db.policies import Policy, PolicyBinding, PolicyRun, PolicyType
from opencbr.db.status import (
    LIVE_POLICY_RUN,
    LIVE_RECORD,
    CheckpointStatus,
    OperationStatus,
    PolicyRunStatus,
)
from opencbr.db.vaults import Vault
from opencbr.errors import POLICY_NOT_FOUND, CbrError
from opencbr.services import checkpoints, leases, operation_logs, replication, schedule, vaults
from opencbr.services.identity import AuthContext
from opencbr.services.leases import Failure, LeasedWork
from opencbr.services.runtime import Runtime

log = structlog.get_logger(__name__)

DEFAULT_WINDOW_MINUTES = 60  # CBR: start_window_minutes is 60-480, or null
DUE_PER_TICK = 500  # due policies one tick claims; the rest wait for the next tick
# Vaults a run starts per transaction. The batch's rows live until it commits, and every
# full garbage collection meanwhile traverses them while holding the GIL, stalling the
# requests served beside it: at 50 the slot's full collections took 5 ms of CPU on average
# (p99 14 ms) against 7 ms (23 ms) at 200, starting the vaults no slower.
VAULTS_PER_BATCH = 50


@dataclass
class Started:
    """What a run started: checkpoints to back up, replication records to copy."""

    checkpoint_ids: list[str] = field(default_factory=list)
    record_ids: list[str] = field(default_factory=list)

    def add(self, other: Started) -> None:
        self.checkpoint_ids += other.checkpoint_ids
        self.record_ids += other.record_ids


OnBatch = Callable[[Started], None]
# A checkpoint a run batch began, whose backups it adds once all of its checkpoints are in.
Begun = tuple[checkpoints.CheckpointView, checkpoints.CheckpointParams]


# --- the scheduler -----------------------------------------------------------------------


def tick(rt: Runtime) -> list[str]:
    """Claim every due slot of every enabled policy; the ids of the runs to start.

    One query finds the due policies, then one conditional UPDATE (and one INSERT) per due
    policy claims its slot: the cost grows with the policies due now, never with all
    policies or with the vaults bound to them.
    """
    now = clock.now()
    with rt.db.reading() as session:
        due = session.execute(
            select(
                Policy.id,
                Policy.next_run_at,
                Policy.patterns,
                Policy.start_time,
                Policy.start_window_minutes,
            )
            .where(Policy.enabled.is_(True), Policy.next_run_at <= now)
            .order_by(Policy.next_run_at)
            .limit(DUE_PER_TICK)
        ).all()
    run_ids = []
    for row in due:
        run_id = _claim_slot(rt, row, now)
        if run_id is not None:
            run_ids.append(run_id)
    return run_ids


def next_slot(rt: Runtime) -> datetime | None:
    """The earliest next slot of any enabled policy (None: no policy has one), for the
    housekeeping loop to tick at. One read of the first entry of `ix_policies_next_run`
    (a disabled policy's `next_run_at` is null)."""
    with rt.db.reading() as session:
        return session.scalar(
            select(Policy.next_run_at)
            .where(Policy.enabled.is_(True), Policy.next_run_at.is_not(None))
            .order_by(Policy.next_run_at)
            .limit(1)
        )


def _claim_slot(rt: Runtime, due: Any, now: datetime) -> str | None:
    """Move the policy to its next slot if no other worker did; then open the run of the
    newest slot that passed, if it is still inside its window, and log `skipped` the slots
    before it (or every one, when even the newest was missed by more than its window)."""
    plan = schedule.Schedule(tuple(due.patterns), due.start_time)
    window = timedelta(minutes=due.start_window_minutes or DEFAULT_WINDOW_MINUTES)
    # Every slot from the claimed one to now: after an outage the newest slot still inside
    # its window runs (late, but in its window) and the older ones are skipped.
    passed = plan.slots(due.next_run_at - timedelta(microseconds=1), now) or [due.next_run_at]
    slot = passed[-1] if passed[-1] >= now - window else None
    missed = passed[:-1] if slot is not None else passed
    with rt.db.transaction() as session:
        claimed = session.execute(
            update(Policy)
            .where(Policy.id == due.id, Policy.next_run_at == due.next_run_at)
            .values(next_run_at=plan.next_after(now))
            .execution_options(synchronize_session=False)
        )
        if not claimed.rowcount:  # type: ignore[attr-defined]
            return None  # another worker claimed this slot
        policy = _policy_alone(session, due.id)
        assert policy is not None
        if missed:
            _skip_policy(session, policy, _missed_message(missed))
            log.warning(
                "policy slot missed",
                policy_id=policy.id,
                first=_wire_time(missed[0]),
                last=_wire_time(missed[-1]),
                count=len(missed),
            )
        if slot is None:
            return None
        run = PolicyRun(policy_id=policy.id, project_id=policy.project_id, slot_at=slot)
        session.add(run)
        session.flush()
        return run.id


def _wire_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _missed_message(missed: list[datetime]) -> str:
    """What a `skipped` log says of the slots an outage missed: one log per vault names
    them all (a long outage of an hourly policy must not write a log per slot and vault)."""
    if len(missed) == 1:
        return f"the slot at {_wire_time(missed[0])} was missed"
    first, last = _wire_time(missed[0]), _wire_time(missed[-1])
    return f"{len(missed)} slots from {first} to {last} were missed"


def _skip_policy(session: Session, policy: Policy, why: str) -> None:
    """A `skipped` log on every vault bound to the policy: its vaults in one query, the
    logs in one flush, whatever the number of vaults (a tick's statements stay bounded)."""
    bound = select(Vault).join(PolicyBinding, PolicyBinding.vault_id == Vault.id)
    for vault in session.scalars(bound.where(PolicyBinding.policy_id == policy.id)).all():
        _skip_vault(session, policy, vault, why)


# --- "run now" ---------------------------------------------------------------------------


def run_now(rt: Runtime, ctx: AuthContext, policy_id: str, on_batch: OnBatch) -> Started:
    """Run the policy now on every vault bound to it, as a slot would (an opencbr
    extension); what it started. Enabled or not: an operator asked for it."""
    with rt.db.transaction() as session:
        policy = session.get(Policy, policy_id)
        if policy is None or policy.project_id != ctx.project_id:
            raise CbrError(POLICY_NOT_FOUND, f"Policy {policy_id} not found")
        run = PolicyRun(
            policy_id=policy.id, project_id=policy.project_id, slot_at=clock.now(), manual=True
        )
        session.add(run)
        session.flush()
        run_id = run.id
    return run_policy(rt, run_id, on_batch)


# --- a run: leased work --------------------------------------------------------------------


@dataclass
class RunWork:
    run_id: str
    policy_id: str
    cursor: str | None
    on_batch: OnBatch | None = None
    started: Started = field(default_factory=Started)
    skipped: int = 0


class PolicyRunKind(LeasedWork[PolicyRun, RunWork]):
    name = "policy run"
    model = PolicyRun
    live = LIVE_POLICY_RUN

    def begin(self, rt: Runtime, session: Session, row: PolicyRun) -> RunWork:
        row.status = PolicyRunStatus.RUNNING
        return RunWork(row.id, row.policy_id, row.cursor)

    def complete(self, session: Session, row: PolicyRun, work: RunWork) -> None:
        row.status = PolicyRunStatus.SUCCESS

    def fail(
        self,
        rt: Runtime,
        session: Session,
        row: PolicyRun,
        work: RunWork | None,
        failure: Failure,
    ) -> None:
        row.status = PolicyRunStatus.FAILED
        row.error = failure.reason[:1024]

    def candidates(self, session: Session) -> Iterable[PolicyRun]:
        return session.scalars(select(PolicyRun).where(PolicyRun.status.in_(LIVE_POLICY_RUN)))

    def grace_seconds(self, rt: Runtime) -> float:
        return rt.settings.lease_seconds  # a run's task is queued as the run is created


POLICY_RUN = PolicyRunKind()


def run_policy(rt: Runtime, run_id: str, on_batch: OnBatch) -> Started:
    """Start the run's work on every bound vault; `on_batch` gets what each committed batch
    started (to enqueue it at once). Returns everything this attempt started."""
    result = Started()

    def body(work: RunWork) -> None:
        work.on_batch = on_batch
        _start_all(rt, work)

    claimed = leases.run(rt, POLICY_RUN, run_id, body)
    if claimed is not None:
        result = claimed.work.started
        log.info(
            "policy run ended",
            run_id=run_id,
            policy_id=claimed.work.policy_id,
            checkpoints=len(result.checkpoint_ids),
            records=len(result.record_ids),
            skipped=claimed.work.skipped,
        )
    return result


def policy_of_run(rt: Runtime, run_id: str) -> str | None:
    with rt.db.reading() as session:
        return session.scalar(select(PolicyRun.policy_id).where(PolicyRun.id == run_id))


def _start_all(rt: Runtime, work: RunWork) -> None:
    while True:
        batch = Started()
        with rt.db.transaction() as session:
            policy = _policy_alone(session, work.policy_id)
            bindings = _next_bindings(session, work) if policy is not None else []
            if policy is None or not bindings:
                return
            vaults = _load_vaults(session, bindings)
            live = _previous_runs_live(session, policy, bindings)
            begun: list[Begun] = []
            for binding in bindings:
                vault = vaults.get(binding.vault_id)
                if vault is not None:
                    _start_vault(rt, session, policy, binding, vault, live, begun, batch, work)
            _add_backups(session, begun)
            work.cursor = bindings[-1].vault_id
            session.execute(
                update(PolicyRun)
                .where(PolicyRun.id == work.run_id)
                .values(
                    cursor=work.cursor,
                    started=PolicyRun.started + len(batch.checkpoint_ids) + len(batch.record_ids),
                    skipped=work.skipped,
                )
                .execution_options(synchronize_session=False)
            )
        work.started.add(batch)
        if work.on_batch is not None:
            work.on_batch(batch)


def _policy_alone(session: Session, policy_id: str) -> Policy | None:
    """The policy without its bindings (one row per bound vault), which `Policy` loads
    eagerly: a claim and a run batch read them by key range, when they need them."""
    return session.get(Policy, policy_id, options=[lazyload(Policy.bindings)])


def _load_vaults(session: Session, bindings: list[PolicyBinding]) -> dict[str, Vault]:
    """The batch's vaults by id, with their resources and tags: one query per table for
    the batch, where loading them one by one queried four tables per vault (most of a
    batch's time)."""
    ids = [binding.vault_id for binding in bindings]
    return {vault.id: vault for vault in session.scalars(select(Vault).where(Vault.id.in_(ids)))}


def _next_bindings(session: Session, work: RunWork) -> list[PolicyBinding]:
    query = select(PolicyBinding).where(PolicyBinding.policy_id == work.policy_id)
    if work.cursor is not None:
        query = query.where(PolicyBinding.vault_id > work.cursor)
    return list(session.scalars(query.order_by(PolicyBinding.vault_id).limit(VAULTS_PER_BATCH)))


def _start_vault(
    rt: Runtime,
    session: Session,
    policy: Policy,
    binding: PolicyBinding,
    vault: Vault,
    live: set[str],
    begun: list[Begun],
    batch: Started,
    work: RunWork,
) -> None:
    why = None
    if binding.vault_id in live:
        what = "backup" if policy.operation_type == PolicyType.BACKUP else "replication"
        why = f"the previous {what} of this policy on the vault is still running"
    try:
        if why is None and policy.operation_type == PolicyType.BACKUP:
            batch.checkpoint_ids += _back_up(session, policy, vault, begun)
        elif why is None:
            batch.record_ids += _replicate(rt, session, policy, vault, binding)
    except CbrError as exc:
        why = exc.detail
    if why is not None:
        work.skipped += 1
        _skip_vault(session, policy, vault, why)


def _previous_runs_live(
    session: Session, policy: Policy, bindings: list[PolicyBinding]
) -> set[str]:
    """The vaults of `bindings` whose previous run of this policy is still live (one query
    for the batch): a checkpoint still protecting, or a replication record to the binding's
    destination vault still live."""
    ids = [binding.vault_id for binding in bindings]
    if policy.operation_type == PolicyType.BACKUP:
        found = session.scalars(
            select(Checkpoint.vault_id).where(
                Checkpoint.vault_id.in_(ids),
                Checkpoint.policy_id == policy.id,
                Checkpoint.status == CheckpointStatus.PROTECTING,
            )
        )
        return set(found)
    destinations = {binding.vault_id: binding.destination_vault_id for binding in bindings}
    records = session.execute(
        select(ReplicationRecord.source_vault_id, ReplicationRecord.destination_vault_id).where(
            ReplicationRecord.source_vault_id.in_(ids),
            ReplicationRecord.policy_id == policy.id,
            ReplicationRecord.status.in_(LIVE_RECORD),
        )
    )
    return {
        source
        for source, destination in records
        if destination is not None and destination == destinations[source]
    }


def _back_up(session: Session, policy: Policy, vault: Vault, begun: list[Begun]) -> list[str]:
    """A checkpoint of the vault's resources that are not suspended; none if every one is.
    Its backups are added by `_add_backups`, with the rest of the batch's."""
    chosen = [binding for binding in vault.resources if binding.auto_protect]
    if not chosen:
        return []
    days = int(policy.operation_definition.get("retention_duration_days") or -1)
    params = checkpoints.CheckpointParams(
        auto_trigger=True, policy_id=policy.id, retention_duration_days=days
    )
    view = checkpoints.begin(session, vault, chosen, params)
    begun.append((view, params))
    return [view.checkpoint.id]


def _add_backups(session: Session, begun: list[Begun]) -> None:
    """The backups of the batch's checkpoints, after one flush inserts every checkpoint
    (the backups reference theirs); the commit inserts them all. What each builds on is
    asked once for the batch.

    Without autoflush: each backup's query for a previous backup to build on flushed the
    vault before, one vault at a time (most of a batch's CPU time, held under the GIL the
    request threads share). No query of the loop needs the batch's rows: the previous
    backups it looks for are `available` ones, which a batch never adds."""
    if begun:
        session.flush()
        bases = checkpoints.built_on(session, [view for view, _params in begun])
        with session.no_autoflush:
            for view, params in begun:
                checkpoints.add_backups(session, view, params, bases=bases)


def _replicate(
    rt: Runtime, session: Session, policy: Policy, vault: Vault, binding: PolicyBinding
) -> list[str]:
    definition = policy.operation_definition
    dest = replication.Destination(
        region=str(definition.get("destination_region") or ""),
        project_id=str(definition.get("destination_project_id") or ""),
        vault_id=binding.destination_vault_id or "",
        auto_trigger=True,
    )
    return replication.plan_for_policy(session, rt.settings, vault, dest, policy.id)


def _skip_vault(session: Session, policy: Policy, vault: Vault, why: str) -> None:
    """An operation log `skipped` for the vault's slot, saying why."""
    operation_logs.open_log(
        session,
        project_id=vault.project_id,
        operation_type=str(policy.operation_type),
        subject=operation_logs.Subject(
            vault.id,
            vaults.VAULT_RESOURCE_TYPE,
            vault.name,
            vault.id,
            vault.name,
            vault.provider_id,
        ),
        details={"policy_id": policy.id, "reason": why},
        request_id=None,
        status=OperationStatus.SKIPPED,
        policy_id=policy.id,
        error_message=why[:1024],
        ended_at=clock.now(),
    )
