"""The task queue: Huey (SQLite storage in the data directory) running in-process threads.

Each task loads ids and calls one service function. The database row is the truth: a
task that finds nothing to do returns, and the reconciler (a periodic task) enqueues again
any work whose lease expired or that was never enqueued (a crash between the commit and
the enqueue).

Lifecycle: `Jobs(runtime)` registers the tasks; `start()` runs the consumer threads in this
process (embedded mode); `stop()` stops them. Enqueue methods are thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from huey import Huey
from huey.consumer import Consumer
from huey.storage import SqliteStorage

from opencbr.db.session import make_private_sqlite_file
from opencbr.services import backup_runs, backups, gc, replicas, replication_runs, restores
from opencbr.services.runtime import Runtime

log = structlog.get_logger(__name__)


IDLE_POLL_SECONDS = 0.25  # how often idle workers look for tasks other processes queued


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


class Jobs:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        queue_file = settings.data_dir / "queue.db"
        make_private_sqlite_file(queue_file)  # tasks name backups and vaults: keep it 0600
        self.huey = _SqliteHuey("opencbr", filename=str(queue_file), results=False, utc=True)
        self._consumer: Consumer | None = None
        self._checkpoint = self._task("run_checkpoint", self._run_checkpoint)
        self._restore = self._task("run_restore", lambda log_id: restores.run(runtime, log_id))
        self._delete = self._task("delete_backup", self._delete_backup)
        self._gc = self._task("collect_garbage", lambda vault_id: gc.collect(runtime, vault_id))
        self._purge = self._task("purge_vault", runtime.stores.purge)
        self._replicate = self._task("replicate", lambda rid: replication_runs.run(runtime, rid))
        self._replicate_many = self._task("replicate_many", self._fan_out_replications)
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None

    def _task(self, name: str, body: Callable[..., Any]) -> Any:
        def run(*args: Any) -> None:
            try:
                body(*args)
            except backup_runs.VaultBusy:
                task.schedule(args=args, delay=5)  # garbage collection holds the vault
            except replication_runs.DestinationBusy:
                task.schedule(args=args, delay=1)  # an earlier replica into the vault runs

        task = self.huey.task(name=name)(run)
        return task

    # --- task bodies -------------------------------------------------------------------

    def _run_checkpoint(self, checkpoint_id: str) -> None:
        backup_runs.run_checkpoint(self.runtime, checkpoint_id)

    def _delete_backup(self, backup_id: str) -> None:
        vault_id, region, names = backups.manifests_of(self.runtime.db, backup_id)
        if not vault_id:
            return
        store = self.runtime.stores.vault(region, vault_id)
        for name in names:
            store.delete_manifest(name)
        if backups.finish_delete(self.runtime.db, backup_id):
            self.collect_garbage(vault_id)

    def _fan_out_replications(self, record_ids: list[str]) -> None:
        """Create the replicas and operation logs of a vault plan (the request inserted
        only its records), then enqueue one `replicate` task per record."""
        replicas.create_replicas(self.runtime.db, record_ids)
        for record_id in record_ids:
            self.replicate(record_id)

    # --- enqueueing --------------------------------------------------------------------

    def run_checkpoint(self, checkpoint_id: str) -> None:
        self._checkpoint(checkpoint_id)

    def run_restore(self, log_id: str) -> None:
        self._restore(log_id)

    def delete_backup(self, backup_id: str) -> None:
        self._delete(backup_id)

    def collect_garbage(self, vault_id: str) -> None:
        self._gc(vault_id)

    def purge_vault(self, region: str, vault_id: str) -> None:
        self._purge(region, vault_id)

    def replicate(self, record_id: str) -> None:
        self._replicate(record_id)

    def replicate_many(self, record_ids: list[str]) -> None:
        """One task for the records of one plan; a worker creates their replicas and fans
        it out, one task per record. (A crash before the fan-out is safe: the reconciler
        enqueues records nobody holds, and a `replicate` task creates a missing replica.)"""
        if len(record_ids) == 1:
            self.replicate(record_ids[0])
        elif record_ids:
            self._replicate_many(list(record_ids))

    def reconcile(self) -> None:
        """Enqueue again every piece of work that no live worker holds."""
        rt = self.runtime
        for checkpoint_id in backup_runs.stuck_checkpoints(rt, rt.settings.lease_seconds):
            self.run_checkpoint(checkpoint_id)
        for log_id in restores.stuck(rt):
            self.run_restore(log_id)
        for backup_id in backups.deleting_backups(rt.db):
            self.delete_backup(backup_id)
        for record_id in replication_runs.stuck(rt):
            self.replicate(record_id)

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
        )
        consumer.start()
        self._consumer = consumer
        self._stop.clear()
        self._loop = threading.Thread(target=self._housekeeping, name="reconciler", daemon=True)
        self._loop.start()

    def _housekeeping(self) -> None:
        """Reconcile now and every interval; collect garbage in every vault on its cadence."""
        settings = self.runtime.settings
        next_gc = time.monotonic() + settings.gc_interval_seconds
        while True:
            try:
                self.reconcile()
                if time.monotonic() >= next_gc:
                    next_gc = time.monotonic() + settings.gc_interval_seconds
                    for vault_id in gc.vaults_with_garbage(self.runtime):
                        self.collect_garbage(vault_id)
            except Exception:
                log.exception("housekeeping failed; trying again next interval")
            if self._stop.wait(settings.reconcile_interval_seconds):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.join(timeout=10)
            self._loop = None
        if self._consumer is not None:
            self._consumer.stop(graceful=False)
            self._consumer = None
