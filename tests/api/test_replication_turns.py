"""Replications into one destination vault take turns, oldest first: a record whose turn
has not come waits without being run again, and the record before it wakes it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from huey.api import Task
from huey.signals import SIGNAL_EXECUTING

from opencbr.jobs import tasks
from opencbr.jobs.queue import Jobs
from opencbr.settings import Settings
from tests.api.helpers import Env, backup_now, create_vault, make_settings, register_dir

WAIT_SECONDS = 3.0  # the old design re-ran a waiting record every second


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # No reconciler pass during the test (it runs once, at start, before any record
    # exists): a record runs only when a task for it was enqueued.
    return make_settings(tmp_path, reconcile_interval_seconds=3600.0)


class ReplicateRuns:
    """How many times the queue ran `replicate` for each record, and in which order."""

    def __init__(self, jobs: Jobs) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.order: list[str] = []
        jobs.huey.signal(SIGNAL_EXECUTING)(self._executing)

    def _executing(self, _signal: str, task: Task, *_args: Any) -> None:
        if task.name == "replicate":
            with self._lock:
                self.counts[task.args[0]] += 1
                self.order.append(task.args[0])

    def wait_for_each(self, record_ids: list[str], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while any(self.counts[r] == 0 for r in record_ids):
            assert time.monotonic() < deadline, f"never ran: {record_ids} {self.counts}"
            time.sleep(0.05)


def source_vault(env: Env, name: str, backups: int) -> tuple[dict[str, Any], list[str]]:
    tree = env.roots["region1"] / name
    tree.mkdir()
    resource = register_dir(env, name=name)
    vault = create_vault(
        env, name=name, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}]
    )
    ids = []
    for n in range(backups):
        (tree / f"file-{n}.txt").write_bytes(f"{name} {n}\n".encode() * 1000)
        ids.append(backup_now(env, vault["id"])["id"])
    return vault, ids


def replicate_body(env: Env, dest_id: str, vault_id: str | None = None) -> dict[str, Any]:
    body = {
        "destination_project_id": env.projects["region2"],
        "destination_region": "region2",
        "destination_vault_id": dest_id,
    }
    return {"replicate": {**body, "vault_id": vault_id} if vault_id else body}


def records_of(env: Env, vault_id: str) -> list[dict[str, Any]]:
    body = env.get(
        "region1", "/backups", params={"vault_id": vault_id, "show_replication": "true"}
    ).json()
    return [r for b in body["backups"] for r in b["replication_records"]]


def test_records_waiting_for_the_vault_are_woken_by_the_one_before_not_polled(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs: Jobs = env.client.app.state.jobs  # type: ignore[attr-defined]
    runs = ReplicateRuns(jobs)
    first_vault, [first_backup] = source_vault(env, "first", 1)
    vault, _backups = source_vault(env, "later", 3)
    dest = create_vault(env, "region2", name="dst", protect_type="replication")

    # The oldest record into `dst` is committed, but its task is lost (the process died
    # before the enqueue): every later record into `dst` must wait for it.
    enqueue = jobs.enqueue
    monkeypatch.setattr(jobs, "enqueue", lambda task, *args: None)
    lost = env.post(
        "region1", f"/backups/{first_backup}/replicate", replicate_body(env, dest["id"])
    )
    assert lost.status_code == 200, lost.text
    first_record = lost.json()["replication"]["replication_record_id"]
    monkeypatch.setattr(jobs, "enqueue", enqueue)

    plan = env.post(
        "region1", "/checkpoints/replicate", replicate_body(env, dest["id"], vault["id"])
    )
    assert plan.status_code == 200, plan.text
    waiting = [b["replication_record_id"] for b in plan.json()["replication"]["backups"]]
    assert len(waiting) == 3
    runs.wait_for_each(waiting)  # the fan-out ran each once: each found its turn not come
    time.sleep(WAIT_SECONDS)
    assert {r: runs.counts[r] for r in waiting} == dict.fromkeys(waiting, 1)
    assert {r["status"] for r in records_of(env, vault["id"])} == {"waiting_replicate"}

    tasks.reconcile(jobs)  # what recovers the lost task: then each record wakes the next
    deadline = time.monotonic() + 60
    while {r["status"] for r in records_of(env, vault["id"])} != {"success"}:
        assert time.monotonic() < deadline, records_of(env, vault["id"])
        time.sleep(0.1)
    assert [r["status"] for r in records_of(env, first_vault["id"])] == ["success"]
    assert runs.counts[first_record] == 1
    assert all(runs.counts[r] <= 2 for r in waiting), runs.counts
    # Oldest first: each record's last run (the one that copied) follows its predecessor's.
    last_runs = [max(i for i, r in enumerate(runs.order) if r == rid) for rid in waiting]
    first_run = runs.order.index(first_record)
    assert first_run < min(last_runs)


def test_a_vault_replication_of_several_backups_into_one_vault_runs_each_record_twice_at_most(
    env: Env,
) -> None:
    jobs: Jobs = env.client.app.state.jobs  # type: ignore[attr-defined]
    runs = ReplicateRuns(jobs)
    vault, backups = source_vault(env, "several", 4)
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    plan = env.post(
        "region1", "/checkpoints/replicate", replicate_body(env, dest["id"], vault["id"])
    )
    assert plan.status_code == 200, plan.text
    deadline = time.monotonic() + 60
    while {r["status"] for r in records_of(env, vault["id"])} != {"success"}:
        assert time.monotonic() < deadline, records_of(env, vault["id"])
        time.sleep(0.1)
    records = records_of(env, vault["id"])
    assert sorted(r["source_backup_id"] for r in records) == sorted(backups)
    assert all(runs.counts[r["id"]] <= 2 for r in records), runs.counts
    replicas = env.get("region2", "/backups", params={"vault_id": dest["id"]}).json()["backups"]
    assert len(replicas) == 4 and {b["status"] for b in replicas} == {"available"}
