"""Background work yields the CPU to requests: the threads that run tasks and housekeeping
are niced, the threads that serve requests are not."""

from __future__ import annotations

import os
import threading
from typing import Any

from opencbr.jobs.queue import WORKER_NICENESS
from tests.api.helpers import Env, backup_now, create_vault, register_dir


def _niceness_by_thread() -> dict[str, int]:
    """Each thread of this process by name: its niceness, as the kernel schedules it."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    return {
        names.get(thread_id, str(thread_id)): os.getpriority(os.PRIO_PROCESS, thread_id)
        for thread_id in map(int, os.listdir("/proc/self/task"))
    }


def test_task_and_housekeeping_threads_run_niced_request_threads_do_not(env: Env) -> None:
    source = env.roots["region1"] / "data"
    source.mkdir()
    (source / "file.txt").write_bytes(b"some bytes")
    resource = register_dir(env, name="data")
    vault: dict[str, Any] = create_vault(
        env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}]
    )
    assert backup_now(env, vault["id"])["status"] == "available"  # a task ran in a worker

    niceness = _niceness_by_thread()
    # Relative to the niceness the suite was started with (a niced runner: never raised).
    started_with = os.getpriority(os.PRIO_PROCESS, os.getpid())
    background = max(WORKER_NICENESS, started_with)
    assert niceness["reconciler"] == background
    if env.db.is_sqlite:
        assert niceness["wal-checkpoints"] == background
    assert background in {value for name, value in niceness.items() if name != "reconciler"}
    # The test's thread, which sends the requests, and the process itself keep theirs.
    assert niceness[threading.current_thread().name] == started_with
