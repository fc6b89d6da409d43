"""The task queue: Huey (SQLite storage in the data directory) running in-process threads.

The tasks themselves are the functions of `tasks.py`. The database row is the truth: a
task that finds nothing to do returns, and the reconciler (on the housekeeping thread)
enqueues again any work whose lease expired or that was never enqueued (a crash between
the commit and the enqueue).

Lifecycle: `Jobs(runtime)` registers the tasks; `start()` runs the consumer threads in this
process (embedded mode); `stop()` stops them: running leased work ends at its next safe
point and is handed back for the next start (services/leases.py). `enqueue` is
thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec

import structlog
from huey import Huey
from huey.consumer import Consumer
from huey.storage import SqliteStorage

from opencbr.db.session import make_private_sqlite_file
from opencbr.jobs import tasks
from opencbr.jobs.instrument import observed
from opencbr.services import backup_runs, leases
from opencbr.services.runtime import Runtime

log = structlog.get_logger(__name__)


IDLE_POLL_SECONDS = 0.25  # how often idle workers look for tasks other processes queued
# How long stop() lets running tasks reach their next safe point (leased work checks the
# stop event between chunks, batches and units: well under a second) before it gives up
# on them: a task still running then (a long garbage collection, a disk read that hangs)
# is resumed from its expired lease by the next start.
SHUTDOWN_SECONDS = 5.0


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


class _EmbeddedConsumer(Consumer):  # type: ignore[misc]
    def _set_signal_handlers(self) -> None:
        """The web server owns the process's signals; we are stopped from its lifespan."""


P = ParamSpec("P")


@dataclass
class Cadence:
    """A housekeeping step run every `interval` seconds, first at `due` (monotonic)."""

    step: Callable[[Jobs], None]
    interval: float
    due: float

    def take(self) -> Callable[[Jobs], None] | None:
        """The step, if it is due (and then its next due time moves on)."""
        now = time.monotonic()
        if now < self.due:
            return None
        self.due = now + self.interval
        return self.step


class Jobs:
    """The queue of one process: enqueue a task of `tasks` by naming it, with its ids."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        queue_file = settings.data_dir / "queue.db"
        make_private_sqlite_file(queue_file)  # tasks name backups and vaults: keep it 0600
        self.huey = _SqliteHuey("opencbr", filename=str(queue_file), results=False, utc=True)
        self._consumer: Consumer | None = None
        self._queued: dict[Callable[..., None], Any] = {t: self._register(t) for t in tasks.QUEUED}
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None

    def enqueue(
        self, task: Callable[Concatenate[Jobs, P], None], *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Queue `task(self, *args)` for a worker; thread-safe. The task must be in
        `tasks.QUEUED`, and its arguments must pickle (ids, not rows)."""
        self._queued[task](*args, **kwargs)

    def _register(self, task: Callable[..., None]) -> Any:
        """Register a task with Huey under its function name; when garbage collection holds
        the vault the task needs, it is run again later."""

        def run(*args: Any, **kwargs: Any) -> None:
            try:
                observed(self.runtime.db, task.__name__, args, lambda: task(self, *args, **kwargs))
            except backup_runs.VaultBusy:
                queued.schedule(args=args, kwargs=kwargs, delay=5)
            except leases.VaultBusy:  # a replication's or a migration's destination
                queued.schedule(args=args, kwargs=kwargs, delay=1)

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
        self._loop = threading.Thread(target=self._housekeeping, name="reconciler", daemon=True)
        self._loop.start()

    def _housekeeping(self) -> None:
        """Claim due policy slots, reconcile and sweep retention at start and on their
        cadences; collect garbage in every vault on its own."""
        settings = self.runtime.settings
        now = time.monotonic()
        cadences = [
            Cadence(tasks.tick_schedules, settings.schedule_tick_seconds, now),
            Cadence(tasks.reconcile, settings.reconcile_interval_seconds, now),
            Cadence(tasks.sweep_retention, settings.retention_interval_seconds, now),
            Cadence(
                tasks.collect_all_garbage,
                settings.gc_interval_seconds,
                now + settings.gc_interval_seconds,
            ),
        ]
        pause = min(cadence.interval for cadence in cadences)
        while True:
            for cadence in cadences:
                step = cadence.take()
                if step is not None:
                    self._housekeep(step)
            if self._stop.wait(pause):
                return

    def _housekeep(self, step: Callable[[Jobs], None]) -> None:
        try:
            step(self)
        except Exception:
            log.exception("housekeeping failed; trying again next interval", step=step.__name__)

    def stop(self) -> None:
        self.runtime.stopping.set()  # first: running work heads for its next safe point
        self._stop.set()
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
