"""The runner of leased work: every long task (a backup, a restore, a replication record;
policy runs and retention next) is claimed, kept alive, ended and recovered here, once.

A kind of work (`LeasedWork`) names its row model and says what is its own: when a row is
ready, which vault it writes, what it plans when claimed, how it completes and fails, and
which rows the reconciler should run again. The runner does the rest, like restic's one
`Lock` with `Refresh` and `Stale` (internal/restic/lock.go):

    live, unleased --claim--> leased (attempts + 1) --complete--> done
          ^                      |  \\--fail (an error; any exception)--> failed
          |                      | heartbeat: lease renewed every HEARTBEAT_SECONDS
          +-- lease expired -----+ (the worker died; `stuck` lists it for the reconciler)
    live, attempts >= max_attempts --claim--> failed, 9910 "gave up after N interrupted attempts"
    leased --the service stops (`stop_point` raises Interrupted)--> live, lease ended now,
          the attempt given back (`hand_back`): the next start resumes it at once

A claim may take companions (`LeasedWork.companions`): rows of the same kind that one pass
does together (replication: one source backup copied to several destinations, each chunk
read once). Each companion is leased, kept alive and ended on its own, like the first.

A row is leased while `lease_until` lies ahead: no second worker claims it. `lease_until`
None means no worker ever leased the row. A writer's claim waits (VaultBusy) while garbage
collection holds its vault (`gc_until`, invariant 2).

Every claim, resumption, completion, failure, skip and hand-back is logged here, once
(`leased work ...` lines with the kind and the row's id).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

import structlog
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db.vaults import Vault
from opencbr.errors import INTERNAL_ERROR, CbrError, ErrorCode
from opencbr.services.keys import KeyringError
from opencbr.services.runtime import Runtime
from opencbr.services.stores import failure_reason
from opencbr.storage.store import StorageError

log = structlog.get_logger(__name__)
HEARTBEAT_SECONDS = 2.0


class Leased(Protocol):
    """A row a worker leases: the columns the runner reads and writes."""

    @property
    def lease_until(self) -> datetime | None: ...

    @lease_until.setter
    def lease_until(self, value: datetime | None) -> None: ...

    @property
    def attempts(self) -> int: ...

    @attempts.setter
    def attempts(self, value: int) -> None: ...

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...


# A model with the Leased columns. Not a TypeVar bound: mypy does not see SQLAlchemy's
# Mapped columns as a protocol's members there (it does where a row is passed), so the
# runner looks at a row through `_leased`.
Row = TypeVar("Row")
Work = TypeVar("Work")


class VaultBusy(Exception):
    """Garbage collection holds the vault the work writes; the task is run again later
    (the job queue picks the delay by the subclass a kind raises)."""


class Interrupted(Exception):
    """The service is stopping: the work stopped at a safe point (`stop_point`); the
    runner hands its row back, still live, for the next start to resume. A kind may raise
    a subclass for another reason to stop at a safe point (`reason`, logged)."""

    reason = "the service is stopping"


def stop_point(rt: Runtime) -> None:
    """A safe point of long work (between chunks, batches or units): raise Interrupted
    once the service is stopping. What the work stored so far must be safe to leave as it
    is: a resumed attempt finds it again (chunks are named by their digest)."""
    if rt.stopping.is_set():
        raise Interrupted


@dataclass(frozen=True)
class Failure:
    """Why work failed, as its row and operation log will say (no paths, no secrets)."""

    error: ErrorCode
    reason: str


def explain_fault(exc: Exception) -> Failure | None:
    """The usual reading of an expected exception: a CBR error keeps its code, a storage or
    OS fault is an internal error named without paths; anything else is a bug (None)."""
    if isinstance(exc, CbrError):
        return Failure(exc.error, exc.detail)
    if isinstance(exc, (StorageError, OSError)):
        return Failure(INTERNAL_ERROR, failure_reason(exc))
    return None


class LeasedWork(ABC, Generic[Row, Work]):
    """A kind of leased work: its row, and the steps that are its own. `Work` is what a
    claim plans (ids, paths, progress counters); it travels from `begin` to `complete`
    or `fail` on the one worker that holds the lease.

    `lock`, `ready`, `writes_to`, `begin`, `complete` and `fail` run inside the runner's
    transaction, with the row locked (PostgreSQL: FOR UPDATE; SQLite: BEGIN IMMEDIATE);
    each may lock further rows, always after the work's row.
    """

    name: ClassVar[str]  # for logs: "backup", "restore", "replication"
    model: type[Row]
    live: tuple[StrEnum, ...]  # the statuses in which the row is still to run
    busy: type[VaultBusy] = VaultBusy

    def lock(self, session: Session, work_id: str) -> Row | None:
        return session.get(self.model, work_id, with_for_update=True)

    def companions(self, rt: Runtime, session: Session, row: Row) -> list[Row]:
        """Rows, locked, that the pass claiming `row` may run together with it; each is
        claimed only if it is ready and unheld (none by default)."""
        return []

    def ready(self, session: Session, row: Row) -> bool:
        """Can the row run now? False when it must wait, or when it cannot run at all (then
        this settles it, e.g. fails it because what it needs is gone)."""
        return True

    def writes_to(self, session: Session, row: Row) -> Vault | None:
        """The vault this work writes into, locked; None for work that only reads."""
        return None

    @abstractmethod
    def begin(self, rt: Runtime, session: Session, row: Row) -> Work:
        """The row is leased for this attempt: plan the work."""

    def beat(self, session: Session, row: Row, work: Work) -> None:
        """Write the progress with the renewed lease."""

    @abstractmethod
    def complete(self, session: Session, row: Row, work: Work) -> None:
        """The work is done: commit its result (may raise: then it fails instead)."""

    @abstractmethod
    def fail(
        self, rt: Runtime, session: Session, row: Row, work: Work | None, failure: Failure
    ) -> None:
        """Mark the row failed; `work` is None when no attempt runs (the claim gave up)."""

    def after_fail(self, rt: Runtime, work: Work) -> None:
        """Outside the transaction: remove what the failed attempt stored."""

    def explain(self, exc: Exception) -> Failure | None:
        """The failure an expected exception means; None for a bug (see `run`)."""
        return None

    @abstractmethod
    def candidates(self, session: Session) -> Iterable[Row]:
        """Rows the reconciler may have to run again (the runner keeps the stale ones)."""

    def grace_seconds(self, rt: Runtime) -> float:
        """How old a row that no worker ever leased must be before it counts as lost."""
        return 0.0

    def to_enqueue(self, rows: Sequence[Row]) -> list[str]:
        """The task arguments that run the stale rows again."""
        return [_leased(row).id for row in rows]

    def hand_back(self, session: Session, row: Row, work: Work) -> None:
        """The service stops and the work is left live for the next start (after `beat`
        wrote its progress): give back what only a running attempt needs."""

    def progress(self, work: Work) -> dict[str, Any]:
        """How far the work got, for the log lines of its end (no paths, no secrets)."""
        return {}


@dataclass
class Claimed(Generic[Row, Work]):
    """A lease held by this worker on the row `id` of `kind`."""

    kind: LeasedWork[Row, Work]
    id: str
    attempt: int
    work: Work
    resumed: bool = False  # an earlier attempt held the lease (it died, or was handed back)
    started: float = field(default_factory=time.monotonic)
    companions: list[Claimed[Row, Work]] = field(default_factory=list)  # run in the same pass

    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 3)


# --- the runner -----------------------------------------------------------------------


def run(
    rt: Runtime, kind: LeasedWork[Row, Work], work_id: str, body: Callable[[Work], None]
) -> Claimed[Row, Work] | None:
    """Claim the row, run `body` under a heartbeat, then complete it; on any exception
    fail it at once. None when the row is not to run (done, leased, waiting, given up),
    or when the service stopped the body at a safe point (the row is handed back).

    An exception `kind.explain` does not know is a bug: it is logged once with its
    traceback, and the row fails with 9910 naming only the exception's type.
    """

    def alone(group: Group[Row, Work]) -> Mapping[int, Exception]:
        body(group.members[0].work)
        return {}

    group = run_together(rt, kind, work_id, alone)
    return group[0] if group else None


@dataclass
class Group(Generic[Row, Work]):
    """The claims one pass runs together, each under its own heartbeat; `join` claims
    more while the pass runs (on the pass's thread)."""

    rt: Runtime
    kind: LeasedWork[Row, Work]
    members: list[Claimed[Row, Work]]
    beating: ExitStack

    def join(self, work_id: str) -> list[Claimed[Row, Work]] | None:
        """Claim the row (with its companions) into the running pass: the new members;
        [] when it is not to run now, None when GC holds its vault (it is to be run
        again later)."""
        try:
            claimed = claim(self.rt, self.kind, work_id)
        except VaultBusy:
            return None
        if claimed is None:
            return []
        joined = [claimed, *claimed.companions]
        for member in joined:
            self.beating.enter_context(heartbeat(self.rt, member))
            self.members.append(member)
        return joined


def run_together(
    rt: Runtime,
    kind: LeasedWork[Row, Work],
    work_id: str,
    body: Callable[[Group[Row, Work]], Mapping[int, Exception]],
) -> list[Claimed[Row, Work]] | None:
    """`run` for a claim and its companions (and what joins them): `body` does the works
    of all in one pass and returns the exceptions of those that failed alone (by position
    in `members`); each is then completed or failed on its own. An exception out of
    `body` fails every one of them; Interrupted hands every one back. The claims that
    ended, the first first; None when nothing was claimed or the pass was interrupted."""
    claimed = claim(rt, kind, work_id)
    if claimed is None:
        return None
    beating = ExitStack()
    group = Group(rt, kind, [claimed, *claimed.companions], beating)
    try:
        with beating:
            for member in group.members:
                beating.enter_context(heartbeat(rt, member))
            failed = body(group)
    except Interrupted as stop:
        for member in group.members:
            hand_back(rt, member, stop.reason)
        return None
    except Exception as exc:
        for member in group.members:
            release(rt, member, _failure(member, exc))
        return group.members
    for position, member in enumerate(group.members):
        error = failed.get(position)
        # A completion that raises fails the work instead.
        release(rt, member, None if error is None else _failure(member, error))
    return group.members


def claim(rt: Runtime, kind: LeasedWork[Row, Work], work_id: str) -> Claimed[Row, Work] | None:
    """Lease a live, unleased row for this worker and plan its work; None when there is
    nothing to run (logged as skipped, with the reason). Raises `kind.busy` while garbage
    collection holds the vault the work writes, after committing what `lock` and `ready`
    changed. Nothing is claimed once the service is stopping."""
    if rt.stopping.is_set():
        _log_skipped(kind, work_id, "the service is stopping")
        return None
    claimed: Claimed[Row, Work] | None = None
    busy_vault: str | None = None
    with rt.db.transaction() as session:
        row = kind.lock(session, work_id)
        skipped = _why_skipped(session, kind, row)
        if skipped is None and row is not None:
            vault = kind.writes_to(session, row)
            if vault is not None and _gc_holds(vault):
                busy_vault = vault.id
            else:
                claimed = _take(rt, session, kind, row)
                if claimed is not None:
                    claimed.companions = _take_companions(rt, session, kind, row)
    if busy_vault is not None:
        raise kind.busy(busy_vault)
    if skipped is not None:
        _log_skipped(kind, work_id, skipped)
    elif claimed is not None:
        for member in (claimed, *claimed.companions):
            event = "leased work resumed" if member.resumed else "leased work started"
            log.info(event, kind=kind.name, id=member.id, attempt=member.attempt)
    return claimed


def _take_companions(
    rt: Runtime, session: Session, kind: LeasedWork[Row, Work], row: Row
) -> list[Claimed[Row, Work]]:
    """The companions of `row` that are claimable and ready now, leased in the same
    transaction; one that is not (held, waiting, its vault held by GC) is left alone."""
    taken = []
    for other in kind.companions(rt, session, row):
        if _why_skipped(session, kind, other) is not None:
            continue
        vault = kind.writes_to(session, other)
        if vault is not None and _gc_holds(vault):
            continue
        companion = _take(rt, session, kind, other)
        if companion is not None:
            taken.append(companion)
    return taken


def _leased(row: object) -> Leased:
    return cast(Leased, row)


def _why_skipped(session: Session, kind: LeasedWork[Row, Work], row: Row | None) -> str | None:
    """Why the row is not to run now, or None when it is claimable and ready."""
    if row is None:
        return "gone"
    lease = _leased(row)
    if lease.status not in kind.live:
        return f"already {lease.status}"
    if is_held(lease):
        return "held by another worker"
    if not kind.ready(session, row):
        # `ready` either leaves the row waiting or settles it (what it needs is gone).
        return "waiting for its turn" if lease.status in kind.live else f"ended ({lease.status})"
    return None


def _log_skipped(kind: LeasedWork[Row, Work], work_id: str, reason: str) -> None:
    log.info("leased work skipped", kind=kind.name, id=work_id, reason=reason)


def _gc_holds(vault: Vault) -> bool:
    return vault.gc_until is not None and vault.gc_until > clock.now()


def _take(
    rt: Runtime, session: Session, kind: LeasedWork[Row, Work], row: Row
) -> Claimed[Row, Work] | None:
    lease = _leased(row)
    if lease.attempts >= rt.settings.max_attempts:
        reason = f"gave up after {lease.attempts} interrupted attempts"
        log.warning("leased work given up", kind=kind.name, id=lease.id, attempts=lease.attempts)
        kind.fail(rt, session, row, None, Failure(INTERNAL_ERROR, reason))
        lease.lease_until = None
        return None
    resumed = lease.lease_until is not None
    lease.lease_until = renewal(rt.settings.lease_seconds)
    lease.attempts += 1
    work = kind.begin(rt, session, row)
    return Claimed(kind, lease.id, lease.attempts, work, resumed=resumed)


def renewal(seconds: float) -> datetime:
    return clock.now() + timedelta(seconds=seconds)


def is_held(row: Leased) -> bool:
    return row.lease_until is not None and row.lease_until > clock.now()


def is_stale(row: Leased, now: datetime, grace_seconds: float, queue_busy: bool = False) -> bool:
    """No live worker holds the row: its lease ended (it expired because its worker died,
    or it was handed back by a stopping service), or none was ever taken, the row is older
    than the grace (a younger one's task is still being queued) and the queue holds no
    task (while tasks wait, its own is most likely among them: counting it lost at every
    pass queued duplicates of every backup of a large policy slot, pass after pass)."""
    if row.lease_until is not None:
        return row.lease_until <= now
    return not queue_busy and (now - row.created_at).total_seconds() > grace_seconds


@contextmanager
def heartbeat(
    rt: Runtime, claimed: Claimed[Row, Work], interval: float = HEARTBEAT_SECONDS
) -> Iterator[None]:
    """Renew the lease (and write the progress) every `interval` seconds on a thread while
    the block runs. A beat that fails is logged and tried again at the next interval: the
    lease outlives a few missed beats (lease_seconds is several intervals)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                _beat(rt, claimed)
            except Exception as exc:
                log.warning(
                    "lease heartbeat failed",
                    kind=claimed.kind.name,
                    id=claimed.id,
                    error=type(exc).__name__,
                )

    thread = threading.Thread(target=loop, name=f"lease-{claimed.kind.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _beat(rt: Runtime, claimed: Claimed[Row, Work]) -> None:
    kind = claimed.kind
    with rt.db.transaction() as session:
        row = session.get(kind.model, claimed.id)
        if row is None or _leased(row).status not in kind.live:
            log.warning("lease lost: the work ended elsewhere", kind=kind.name, id=claimed.id)
            return
        _leased(row).lease_until = renewal(rt.settings.lease_seconds)
        kind.beat(session, row, claimed.work)


def release(rt: Runtime, claimed: Claimed[Row, Work], failure: Failure | None = None) -> None:
    """End the lease: complete the work, or fail it with `failure` (then the kind removes
    what the attempt stored). A completion that raises fails the work instead."""
    kind = claimed.kind
    if failure is None:
        try:
            _end(rt, claimed, lambda session, row: kind.complete(session, row, claimed.work))
        except Exception as exc:
            failure = _failure(claimed, exc)
        else:
            log.info(
                "leased work finished",
                kind=kind.name,
                id=claimed.id,
                attempt=claimed.attempt,
                seconds=claimed.seconds(),
            )
            return
    ended = failure
    _end(rt, claimed, lambda session, row: kind.fail(rt, session, row, claimed.work, ended))
    kind.after_fail(rt, claimed.work)


def _end(rt: Runtime, claimed: Claimed[Row, Work], step: Callable[[Session, Row], None]) -> None:
    with rt.db.transaction() as session:
        row = session.get(claimed.kind.model, claimed.id, with_for_update=True)
        if row is not None:
            step(session, row)
            _leased(row).lease_until = None


def hand_back(rt: Runtime, claimed: Claimed[Row, Work], reason: str = Interrupted.reason) -> None:
    """The service is stopping and the work stopped at a safe point: the row stays live
    with its progress, and its lease ends now, so the next start (or another process's
    reconciler) resumes it at once instead of after `lease_seconds`. The attempt is given
    back: `max_attempts` counts attempts that died, and an orderly stop is not one."""
    kind = claimed.kind
    with rt.db.transaction() as session:
        row = session.get(kind.model, claimed.id, with_for_update=True)
        if row is None or _leased(row).status not in kind.live:
            return
        kind.beat(session, row, claimed.work)
        kind.hand_back(session, row, claimed.work)
        lease = _leased(row)
        lease.lease_until = clock.now()
        lease.attempts = max(0, lease.attempts - 1)
    log.info(
        "leased work interrupted: left for the next start",
        kind=kind.name,
        id=claimed.id,
        reason=reason,
        seconds=claimed.seconds(),
        **kind.progress(claimed.work),
    )


def _keyring_failure(exc: Exception) -> Failure | None:
    """Any work that seals or opens chunks fails alike when this process's master key is
    not the deployment's (a rotation it has not been restarted for): said without paths."""
    if isinstance(exc, KeyringError):
        return Failure(
            INTERNAL_ERROR,
            "this worker cannot use the encryption keys (its master key file is out of date "
            "or wrong): restart it with the deployment's master key file",
        )
    return None


def _failure(claimed: Claimed[Row, Work], exc: Exception) -> Failure:
    """The failure `exc` means, logged once: a known one with its reason, a bug (what
    `kind.explain` does not know) with its traceback; its reason names only its type."""
    kind = claimed.kind
    failure = kind.explain(exc) or _keyring_failure(exc)
    if failure is None:
        log.exception("leased work failed unexpectedly", kind=kind.name, id=claimed.id)
        return Failure(INTERNAL_ERROR, f"internal error ({type(exc).__name__})")
    log.warning(
        "leased work failed",
        kind=kind.name,
        id=claimed.id,
        error=failure.error.code,
        reason=failure.reason,
    )
    return failure


def stuck(rt: Runtime, kind: LeasedWork[Row, Work], queue_busy: bool = False) -> list[str]:
    """What the reconciler enqueues again: the kind's candidate rows no live worker holds
    (`queue_busy`: tasks wait in the queue, see `is_stale`)."""
    now = clock.now()
    grace = kind.grace_seconds(rt)
    with rt.db.reading() as session:
        rows = kind.candidates(session)
        return kind.to_enqueue([r for r in rows if is_stale(_leased(r), now, grace, queue_busy)])
