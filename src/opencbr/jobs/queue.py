"""The task queue: Huey, its storage chosen by `queue_url`, running consumer threads.

Storages: the SQLite file `<data_dir>/queue.db` (the default, one machine), PostgreSQL
(`postgresql://...`, Huey's `PostgresStorage`: LISTEN/NOTIFY) or Redis (`redis://...`,
BRPOP); the last two serve processes on any number of machines.

The tasks themselves are the functions of `tasks.py`. The database row is the truth: a
task that finds nothing to do returns, and the reconciler (on the housekeeping thread)
enqueues again any work whose lease expired or that was never enqueued (a crash between
the commit and the enqueue).

Lifecycle: `Jobs(runtime)` registers the tasks; `start()` runs the consumer threads and the
housekeeping thread in this process (`opencbr serve`'s embedded workers, or `opencbr
worker`); a process that only enqueues (`opencbr serve --no-worker`) never starts them;
`stop()` stops them: running leased work ends at its next safe
point and is handed back for the next start (services/leases.py). `enqueue` is
thread-safe.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Concatenate, ParamSpec

import structlog
from huey import Huey
from huey.consumer import Consumer
from huey.storage import PostgresStorage, RedisStorage, SqliteStorage

from opencbr import clock, heap
from opencbr.db.session import make_private_sqlite_file, sqlite_file
from opencbr.jobs import tasks
from opencbr.jobs.instrument import observed
from opencbr.services import backup_runs, housekeeping, leases
from opencbr.services.runtime import Runtime

log = structlog.get_logger(__name__)


IDLE_POLL_SECONDS = 0.25  # how often idle workers look for tasks other processes queued
# How long stop() lets running tasks reach their next safe point (leased work checks the
# stop event between chunks, batches and units: well under a second) before it gives up
# on them: a task still running then (a long garbage collection, a disk read that hangs)
# is resumed from its expired lease by the next start.
SHUTDOWN_SECONDS = 5.0
# How long an idle worker blocks in a PostgreSQL (LISTEN) or Redis (BRPOP) read before it
# reads again. Enqueues from any process wake it at once (NOTIFY, LPUSH); this bounds how
# long stop() waits for idle workers and how late a lost notification is noticed.
BLOCKING_READ_SECONDS = 1.0
QUEUE_NAME = "opencbr"


class _WakingSqliteStorage(SqliteStorage):  # type: ignore[misc]
    """Huey's SQLite queue, whose idle workers are woken at once by an enqueue made in
    this process (the API's requests), instead of finding it at their next poll.

    `blocking = True` tells Huey's worker loop not to sleep after an empty dequeue: the
    wait happens here, on a condition an enqueue notifies, for at most IDLE_POLL_SECONDS
    (tasks queued by another process are still found by polling). That took up to 250 ms
    (125 ms on average) off the start of every backup, restore and replication.
    """

    blocking = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ready = threading.Condition()
        self._enqueued = 0  # bumped by every enqueue: a wait never misses one

    def enqueue(self, data: bytes, priority: float | None = None) -> None:
        super().enqueue(data, priority)
        with self._ready:
            self._enqueued += 1
            self._ready.notify_all()

    def wake(self) -> None:
        """Wake every idle worker now (to see the consumer's stop flag)."""
        with self._ready:
            self._enqueued += 1
            self._ready.notify_all()

    def dequeue(self) -> bytes | None:
        with self._ready:
            seen = self._enqueued
        task: bytes | None = super().dequeue()
        if task is None:
            with self._ready:
                self._ready.wait_for(lambda: self._enqueued != seen, IDLE_POLL_SECONDS)
            task = super().dequeue()
        return task


class _SqliteHuey(Huey):  # type: ignore[misc]
    storage_class = _WakingSqliteStorage


class _PostgresQueueStorage(PostgresStorage):  # type: ignore[misc]
    """Huey's PostgreSQL queue: an enqueue NOTIFYs every listening worker of every process
    (the dequeue is `DELETE ... FOR UPDATE SKIP LOCKED`, so one of them gets the task)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._listening: list[Any] = []  # every thread's LISTEN connection, closed by close()
        self._listening_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _listen_conn(self) -> Any:
        connection = super()._listen_conn()
        with self._listening_lock:
            if connection not in self._listening:
                self._listening.append(connection)
        return connection

    def wake(self) -> None:
        """Idle workers end their blocking read within BLOCKING_READ_SECONDS."""

    def close(self) -> bool:
        """Close the shared connection and the workers' LISTEN connections (Huey leaves
        those of other threads to the garbage collector)."""
        with self._listening_lock:
            listening, self._listening = self._listening, []
        for connection in listening:
            connection.close()
        return bool(super().close())


class _PostgresHuey(Huey):  # type: ignore[misc]
    storage_class = _PostgresQueueStorage


class _RedisQueueStorage(RedisStorage):  # type: ignore[misc]
    """Huey's Redis queue: a list, LPUSH to enqueue, BRPOP (blocking) to dequeue."""

    def wake(self) -> None:
        """Idle workers end their blocking read within BLOCKING_READ_SECONDS."""


class _RedisHuey(Huey):  # type: ignore[misc]
    storage_class = _RedisQueueStorage


def open_huey(url: str) -> Huey:
    """The Huey of a queue URL (settings.QUEUE_SCHEMES). Huey keeps no results: a task's
    outcome is in the database rows it changed."""
    common: dict[str, Any] = {"results": False, "utc": True}
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _RedisHuey(QUEUE_NAME, url=url, read_timeout=BLOCKING_READ_SECONDS, **common)
    if url.startswith(("postgresql", "postgres://")):
        return _PostgresHuey(
            QUEUE_NAME, dsn=libpq_url(url), read_timeout=BLOCKING_READ_SECONDS, **common
        )
    queue_file = sqlite_file(url)
    if queue_file is None:
        raise ValueError("a SQLite queue_url names a file: sqlite:////path/queue.db")
    make_private_sqlite_file(queue_file)  # tasks name backups and vaults: keep it 0600
    return _SqliteHuey(QUEUE_NAME, filename=str(queue_file), **common)


def libpq_url(url: str) -> str:
    """A PostgreSQL URL as psycopg takes it (SQLAlchemy's `postgresql+psycopg://` names a
    driver libpq does not know)."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url


def queue_problem(url: str) -> str | None:
    """Why the queue cannot be used (one line, without the URL), or None when it answers."""
    try:
        storage = open_huey(url).storage
        storage.queue_size()
        storage.close()
    except Exception as exc:  # a driver's own errors: refused, auth, unknown database
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


# Background work runs niced: where it shares cores with request handling (the embedded
# workers of `serve`, or a worker beside an API process), the kernel gives requests the CPU
# first, and a worker thread that is not running cannot hold the GIL against them. Alone on
# a machine, niced threads run as fast as any.
WORKER_NICENESS = 10


def yield_to_requests() -> None:
    """Lower this worker thread's CPU priority (once; Linux threads have their own)."""
    thread_id = threading.get_native_id()
    if os.getpriority(os.PRIO_PROCESS, thread_id) < WORKER_NICENESS:
        os.setpriority(os.PRIO_PROCESS, thread_id, WORKER_NICENESS)


class _EmbeddedConsumer(Consumer):  # type: ignore[misc]
    def _set_signal_handlers(self) -> None:
        """The web server owns the process's signals; we are stopped from its lifespan."""


P = ParamSpec("P")


@dataclass
class Cadence:
    """A housekeeping step run every `interval` seconds, first at `due` (monotonic).
    A `shared` step runs in one worker process per interval (`services/housekeeping`).
    A step may return the moment (`clock.now()` time) it is needed next, when that may
    come before its interval ends (the scheduler's next policy slot): see `due_by`."""

    step: Callable[[Jobs], datetime | None]
    interval: float
    due: float
    shared: bool = False

    def take(self) -> Callable[[Jobs], datetime | None] | None:
        """The step, if it is due (and then its next due time moves on)."""
        now = time.monotonic()
        if now < self.due:
            return None
        self.due = now + self.interval
        return self.step

    def due_by(self, moment: datetime) -> None:
        """Come due at `moment` if that is before the interval ends. The wall-clock wait
        becomes a monotonic deadline once, bounded to [0, interval]: a moment already
        past runs the step at once, and a clock step never stretches a sleep beyond the
        interval (the step then reads the moment again)."""
        wait = (moment - clock.now()).total_seconds()
        self.due = min(self.due, time.monotonic() + max(0.0, wait))


class Jobs:
    """The queue of one process: enqueue a task of `tasks` by naming it, with its ids."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.huey = open_huey(runtime.settings.queue)
        self._consumer: Consumer | None = None
        self._queued: dict[Callable[..., None], Any] = {t: self._register(t) for t in tasks.QUEUED}
        self._stop = threading.Event()
        # Set by stop() and by wake_for_slot(): ends the housekeeping loop's sleep.
        self._wake = threading.Event()
        self._loop: threading.Thread | None = None
        self._trimmer = heap.IdleTrimmer()

    def enqueue(
        self, task: Callable[Concatenate[Jobs, P], None], *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Queue `task(self, *args)` for a worker; thread-safe. The task must be in
        `tasks.QUEUED`, and its arguments must pickle (ids, not rows)."""
        self._queued[task](*args, **kwargs)

    def queued_tasks(self) -> int:
        """Tasks waiting in the queue (not those running, nor retries scheduled later)."""
        return int(self.huey.pending_count())

    def _register(self, task: Callable[..., None]) -> Any:
        """Register a task with Huey under its function name; when garbage collection holds
        the vault the task needs, it is run again later."""

        def run(*args: Any, **kwargs: Any) -> None:
            yield_to_requests()
            self._trimmer.started()
            try:
                observed(self.runtime.db, task.__name__, args, lambda: task(self, *args, **kwargs))
            except backup_runs.VaultBusy:
                queued.schedule(args=args, kwargs=kwargs, delay=5)
            except leases.VaultBusy:  # a replication's or a migration's destination
                queued.schedule(args=args, kwargs=kwargs, delay=1)
            finally:
                self._trimmer.ended()  # what the task's buffers held goes back when idle

        queued = self.huey.task(name=task.__name__)(run)
        return queued

    # --- consumer ----------------------------------------------------------------------

    def start(self, workers: int) -> None:
        consumer = _EmbeddedConsumer(
            self.huey,
            workers=workers,
            worker_type="thread",
            periodic=False,
            check_worker_health=False,
            # Idle workers wait in the storage's dequeue (woken by enqueues); these only
            # pace retries after a queue read failed (Huey's default backs off to 10 s).
            initial_delay=0.05,
            backoff=1.5,
            max_delay=0.25,
            shutdown_timeout=SHUTDOWN_SECONDS,
        )
        self.runtime.stopping.clear()
        consumer.start()
        self._consumer = consumer
        self._stop.clear()
        self._wake.clear()
        self._loop = threading.Thread(target=self._housekeeping, name="reconciler", daemon=True)
        self._loop.start()

    def wake_for_slot(self, slot: datetime | None) -> None:
        """A policy's next slot became `slot` in this process (created, enabled, new
        patterns). The loop ticks at least every `schedule_tick_seconds` and then sleeps
        until the next slot, so only a slot sooner than that wakes it to tick now (and
        sleep until the slot). A slot already past was not set by the change (a new slot
        is after now) and the loop has it from its last tick. Thread-safe; nothing
        happens in a process whose loop does not run: other processes' loops learn the
        slot at their next tick."""
        if slot is None:
            return
        if 0 < (slot - clock.now()).total_seconds() < self.runtime.settings.schedule_tick_seconds:
            self._wake.set()

    def _housekeeping(self) -> None:
        """Claim due policy slots, reconcile and sweep retention at start and on their
        cadences; collect garbage in every vault on its own. Between rounds the loop
        sleeps until the next step is due: the scheduler's tick comes due at the next
        policy slot when that is sooner than its cadence, so a slot starts on time."""
        yield_to_requests()
        settings = self.runtime.settings
        now = time.monotonic()
        ticking = Cadence(tasks.tick_schedules, settings.schedule_tick_seconds, now)
        cadences = [
            ticking,
            Cadence(tasks.reconcile, settings.reconcile_interval_seconds, now),
            Cadence(tasks.sweep_retention, settings.retention_interval_seconds, now, shared=True),
            Cadence(
                tasks.collect_all_garbage,
                settings.gc_interval_seconds,
                now + settings.gc_interval_seconds,
                shared=True,
            ),
        ]
        if settings.verify_percent_per_day > 0:
            interval = settings.verify_interval_seconds
            cadences.append(Cadence(tasks.verify_scheduled, interval, now + interval, shared=True))
        pause = min(cadence.interval for cadence in cadences)
        while True:
            for cadence in cadences:
                if self._stop.is_set():
                    # Between steps, not at the end of the round: stop() waits for this
                    # thread, and a start's first round (every step) takes tens of ms.
                    # Each step is idempotent and runs again at the next start.
                    return
                step = cadence.take()
                if step is not None:
                    self._housekeep(cadence, step)
            wait = min(cadence.due for cadence in cadences) - time.monotonic()
            self._wake.wait(min(max(0.0, wait), pause))
            if self._stop.is_set():
                return
            if self._wake.is_set():  # cleared before the tick reads: no wake is lost
                self._wake.clear()
                ticking.due = time.monotonic()

    def _housekeep(self, cadence: Cadence, step: Callable[[Jobs], datetime | None]) -> None:
        try:
            if cadence.shared and not housekeeping.claim(
                self.runtime, step.__name__, cadence.interval
            ):
                return  # another worker ran it less than an interval ago
            needed = step(self)
        except Exception:
            log.exception("housekeeping failed; trying again next interval", step=step.__name__)
            return
        if needed is not None:
            cadence.due_by(needed)

    def stop(self) -> None:
        self.runtime.stopping.set()  # first: running work heads for its next safe point
        self._stop.set()
        self._wake.set()
        if self._loop is not None:
            self._loop.join(timeout=10)
            self._loop = None
        if self._consumer is not None:
            # Graceful: running tasks end (and return their database connections) before the
            # caller disposes of the database; idle workers are woken to see the stop flag.
            self._consumer.stop_flag.set()
            self.huey.storage.wake()
            self._consumer.stop(graceful=True)
            self._consumer = None

    def close(self) -> None:
        """Close the queue's connections (after `stop`; enqueues reopen them)."""
        self.huey.storage.close()
