"""Policy runs: the scheduler claims each due slot once, a run backs up or replicates every
bound vault with `auto_trigger`, retention prunes what the policy made, expired backups go.

Slots are driven by calling the scheduler's tick with the clock moved (the housekeeping
thread ticks with the real clock and finds nothing due: the patterns' slots lie far
ahead); runs are started through `POST /policies/{id}/run`, as a slot would.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from opencbr import clock
from opencbr.db.backups import Backup, Checkpoint, OperationLog
from opencbr.db.policies import Policy, PolicyRun
from opencbr.db.session import Database
from opencbr.db.status import LIVE_POLICY_RUN
from opencbr.db.vaults import GB, Vault
from opencbr.jobs import tasks
from opencbr.services import policy_runs, pruning
from opencbr.services.runtime import Runtime
from opencbr.settings import RegionSettings, Settings
from tests.api.helpers import (
    Env,
    assert_error,
    backup_now,
    create_vault,
    make_settings,
    records,
    register_dir,
    serving,
    wait_records,
)
from tests.polling import pauses

# 03:00 UTC every day: never due while a test runs unless the test moves the clock.
DAILY = "FREQ=DAILY;INTERVAL=1;BYHOUR=3;BYMINUTE=0"


def runtime(env: Env) -> Runtime:
    rt: Runtime = env.client.app.state.runtime  # type: ignore[attr-defined]
    return rt


def create_policy(
    env: Env, operation_type: str = "backup", region: str = "region1", **definition: Any
) -> dict[str, Any]:
    body = {
        "policy": {
            "name": f"{operation_type}-policy",
            "operation_type": operation_type,
            "operation_definition": definition,
            "trigger": {"properties": {"pattern": [DAILY]}},
        }
    }
    response = env.post(region, "/policies", body)
    assert response.status_code == 200, response.text
    policy: dict[str, Any] = response.json()["policy"]
    return policy


def bind(env: Env, vault_id: str, policy_id: str, **extra: Any) -> None:
    response = env.post(
        "region1", f"/vaults/{vault_id}/associatepolicy", {"policy_id": policy_id, **extra}
    )
    assert response.status_code == 200, response.text


def run_now(env: Env, policy_id: str) -> dict[str, Any]:
    response = env.post("region1", f"/policies/{policy_id}/run", None)
    assert response.status_code == 202, response.text
    started: dict[str, Any] = response.json()["policy_run"]
    return started


def wait_checkpoint(env: Env, checkpoint_id: str) -> None:
    done = env.wait_for(
        "region1",
        f"/checkpoints/{checkpoint_id}",
        lambda body: body["checkpoint"]["status"] != "protecting",
    )
    assert done["checkpoint"]["status"] == "available", done


def backups_of(env: Env, vault_id: str, region: str = "region1") -> list[dict[str, Any]]:
    body = env.get(region, "/backups", params={"vault_id": vault_id}).json()
    return [b for b in body["backups"] if b["status"] != "deleting"]


def wait_backup_count(env: Env, vault_id: str, count: int, region: str = "region1") -> list[Any]:
    env.wait_for(
        region,
        "/backups",
        lambda body: len([b for b in body["backups"] if b["vault_id"] == vault_id]) == count,
    )
    return backups_of(env, vault_id, region)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The housekeeping thread ticks at start and then once a minute: the tests' own ticks
    # with a moved clock are the only ones that find a slot due.
    return make_settings(tmp_path, schedule_tick_seconds=60)


@pytest.fixture
def source(env: Env) -> dict[str, Any]:
    return docs_vault(env)


def docs_vault(env: Env) -> dict[str, Any]:
    """A turbo vault in region1 holding one small directory."""
    data = register_dir(env, name="docs")
    (env.roots["region1"] / "docs" / "a.txt").write_text("policy data\n" * 100)
    return create_vault(env, resources=[{"id": data["id"], "type": "OS::Sfs::Turbo"}])


@pytest.fixture
def moved_clock() -> Iterator[list[datetime]]:
    """Set `moment[0]` to move the clock; reset at the end."""
    moment = [datetime.now().replace(tzinfo=None)]
    clock.set_clock(lambda: moment[0])
    yield moment
    clock.reset_clock()


# --- backup policies ---------------------------------------------------------------------


def test_run_backs_up_the_bound_vault_automatically(env: Env, source: dict[str, Any]) -> None:
    policy = create_policy(env)
    bind(env, source["id"], policy["id"])

    started = run_now(env, policy["id"])

    assert len(started["checkpoint_ids"]) == 1 and started["replication_record_ids"] == []
    wait_checkpoint(env, started["checkpoint_ids"][0])
    [backup] = backups_of(env, source["id"])
    assert backup["extend_info"]["auto_trigger"] is True
    assert re.fullmatch(r"autobk_[0-9a-f]{4}", backup["name"]), backup["name"]
    logs = env.get("region1", "/operation-logs", params={"vault_id": source["id"]}).json()
    [entry] = [e for e in logs["operation_logs"] if e["operation_type"] == "backup"]
    assert entry["policy_id"] == policy["id"]
    assert entry["status"] == "success"


def test_run_of_an_unknown_or_foreign_policy_is_404(env: Env) -> None:
    response = env.post("region1", "/policies/00000000-0000-0000-0000-000000000000/run", None)
    assert_error(response, 404, "BackupService.6000")
    foreign = create_policy(env, region="region2")
    response = env.post("region1", f"/policies/{foreign['id']}/run", None)
    assert_error(response, 404, "BackupService.6000")


def test_suspended_resources_are_skipped_by_policy_runs_only(env: Env) -> None:
    kept, paused = register_dir(env, name="kept"), register_dir(env, name="paused")
    vault = create_vault(
        env,
        resources=[
            {"id": kept["id"], "type": "OS::Sfs::Turbo"},
            {"id": paused["id"], "type": "OS::Sfs::Turbo"},
        ],
    )
    response = env.put(
        "region1",
        f"/vaults/{vault['id']}/set-resources",
        {"resource_ids": [paused["id"]], "action": "suspend"},
    )
    assert response.status_code == 200, response.text
    policy = create_policy(env)
    bind(env, vault["id"], policy["id"])

    [checkpoint_id] = run_now(env, policy["id"])["checkpoint_ids"]
    wait_checkpoint(env, checkpoint_id)

    assert [b["resource_id"] for b in backups_of(env, vault["id"])] == [kept["id"]]


def test_max_backups_keeps_the_newest_automatic_backups_and_every_manual_one(
    env: Env, source: dict[str, Any]
) -> None:
    manual = backup_now(env, source["id"])
    policy = create_policy(env, max_backups=2)
    bind(env, source["id"], policy["id"])
    made = []
    for _ in range(4):
        [checkpoint_id] = run_now(env, policy["id"])["checkpoint_ids"]
        wait_checkpoint(env, checkpoint_id)
        made.append(checkpoint_id)

    left = wait_backup_count(env, source["id"], 3)

    assert {b["checkpoint_id"] for b in left} == {manual["checkpoint_id"], *made[-2:]}
    logs = env.get("region1", "/operation-logs", params={"operation_type": "delete"}).json()
    pruned = [e for e in logs["operation_logs"] if e["policy_id"] == policy["id"]]
    assert len(pruned) == 2


def test_retention_keeps_a_backup_being_replicated_until_its_copy_ends(
    tmp_path: Path, database: Database
) -> None:
    """max_backups 1 would delete the older automatic backup, but a copy of it waits for
    region2's night window: it stays until the copy has ended."""
    noon, evening = datetime(2026, 11, 27, 12, 0), datetime(2026, 11, 27, 23, 0)
    moment = [noon]
    store = tmp_path / "data" / "store"
    regions = [
        RegionSettings(name="region1", storage=str(store / "region1")),
        RegionSettings(
            name="region2", storage=str(store / "region2"), replication_windows=["22:00-06:00"]
        ),
    ]
    clock.set_clock(lambda: moment[0])
    try:
        with serving(make_settings(tmp_path, regions=regions), database) as env:
            vault = docs_vault(env)
            policy = create_policy(env, max_backups=1)
            bind(env, vault["id"], policy["id"])
            [older_checkpoint] = run_now(env, policy["id"])["checkpoint_ids"]
            wait_checkpoint(env, older_checkpoint)
            [older] = backups_of(env, vault["id"])
            dest = create_vault(env, region="region2", name="dst", protect_type="replication")
            body = {
                "replicate": {
                    "destination_project_id": env.projects["region2"],
                    "destination_region": "region2",
                    "destination_vault_id": dest["id"],
                }
            }
            response = env.post("region1", f"/backups/{older['id']}/replicate", body)
            assert response.status_code == 200, response.text

            moment[0] = noon + timedelta(minutes=1)
            [newer_checkpoint] = run_now(env, policy["id"])["checkpoint_ids"]
            wait_checkpoint(env, newer_checkpoint)

            assert pruning.prune(runtime(env), policy["id"]) == []
            assert len(backups_of(env, vault["id"])) == 2
            moment[0] = evening  # the window opens: the copy runs, then the backup may go
            [record] = wait_records(env, vault["id"], 1)
            assert record["status"] == "success", record
            pruning.prune(runtime(env), policy["id"])
            [left] = wait_backup_count(env, vault["id"], 1)
            assert left["checkpoint_id"] == newer_checkpoint
            logs = env.get("region1", "/operation-logs", params={"operation_type": "delete"})
            [deleted] = logs.json()["operation_logs"]
            assert deleted["policy_id"] == policy["id"]
    finally:
        clock.reset_clock()


def test_an_age_bound_shows_expired_at_and_the_periodic_sweep_applies_it(
    env: Env, source: dict[str, Any], moved_clock: list[datetime]
) -> None:
    policy = create_policy(env, retention_duration_days=1)
    bind(env, source["id"], policy["id"])
    made = []
    for _ in range(2):
        [checkpoint_id] = run_now(env, policy["id"])["checkpoint_ids"]
        wait_checkpoint(env, checkpoint_id)
        made.append(checkpoint_id)
        moved_clock[0] += timedelta(minutes=1)
    for backup in backups_of(env, source["id"]):
        created = datetime.fromisoformat(backup["created_at"].rstrip("Z"))
        assert datetime.fromisoformat(backup["expired_at"].rstrip("Z")) == created + timedelta(
            days=1
        )

    moved_clock[0] += timedelta(days=2)  # both are past the bound; the newest stays
    tasks.sweep_retention(env.client.app.state.jobs)  # type: ignore[attr-defined]
    moved_clock[0] -= timedelta(days=2)  # the tokens are a day long

    [left] = wait_backup_count(env, source["id"], 1)
    assert left["checkpoint_id"] == made[-1]
    logs = env.get("region1", "/operation-logs", params={"operation_type": "delete"}).json()
    assert len(logs["operation_logs"]) == 1


def test_overlapping_slot_is_skipped_with_a_log(env: Env) -> None:
    big = register_dir(env, name="big")
    (env.roots["region1"] / "big" / "blob").write_bytes(b"\xa5" * 32 * 1024 * 1024)
    vault = create_vault(env, resources=[{"id": big["id"], "type": "OS::Sfs::Turbo"}])
    policy = create_policy(env)
    bind(env, vault["id"], policy["id"])

    first = run_now(env, policy["id"])
    second = run_now(env, policy["id"])  # the first backup of 32 MiB is still running

    assert len(first["checkpoint_ids"]) == 1 and second["checkpoint_ids"] == []
    wait_checkpoint(env, first["checkpoint_ids"][0])
    logs = env.get("region1", "/operation-logs", params={"status": "skipped"}).json()
    [skipped] = logs["operation_logs"]
    assert skipped["policy_id"] == policy["id"]
    assert "still running" in skipped["error_info"]["message"]


# --- replication policies ----------------------------------------------------------------


def test_replication_policy_copies_new_backups_and_prunes_its_replicas(
    env: Env, source: dict[str, Any]
) -> None:
    backing_up = create_policy(env)
    bind(env, source["id"], backing_up["id"])
    made = []
    for _ in range(3):
        [checkpoint_id] = run_now(env, backing_up["id"])["checkpoint_ids"]
        wait_checkpoint(env, checkpoint_id)
        made.append(checkpoint_id)
    replicas = create_vault(env, region="region2", name="replicas", protect_type="replication")
    replicating = create_policy(
        env,
        "replication",
        max_backups=2,
        destination_region="region2",
        destination_project_id=env.projects["region2"],
    )
    bind(env, source["id"], replicating["id"], destination_vault_id=replicas["id"])

    started = run_now(env, replicating["id"])

    assert started["checkpoint_ids"] == [] and len(started["replication_record_ids"]) == 3
    left = wait_backup_count(env, replicas["id"], 2, region="region2")
    sources = {b["checkpoint_id"]: b["id"] for b in backups_of(env, source["id"])}
    newest = {sources[checkpoint_id] for checkpoint_id in made[-2:]}
    assert {r["source_backup_id"] for r in left} == newest
    with env.db.reading() as session:
        logs = session.scalars(
            select(OperationLog).where(
                OperationLog.policy_id == replicating["id"],
                OperationLog.operation_type == "replication",
            )
        ).all()
    assert sorted(log.status for log in logs) == ["success"] * 3
    assert len(records(env, source["id"])) == 3
    assert all(r["extra_info"]["auto_trigger"] for r in records(env, source["id"]))
    # Nothing new to copy: the next run starts nothing and logs nothing.
    assert run_now(env, replicating["id"])["replication_record_ids"] == []


def test_a_failed_policy_record_is_tried_again_by_the_next_run(
    env: Env, source: dict[str, Any]
) -> None:
    backup = backup_now(env, source["id"])
    replicas = create_vault(env, region="region2", name="replicas", protect_type="replication")
    policy = create_policy(
        env,
        "replication",
        destination_region="region2",
        destination_project_id=env.projects["region2"],
    )
    bind(env, source["id"], policy["id"], destination_vault_id=replicas["id"])
    set_used_bytes(env, replicas["id"], room=1)  # the copy will not fit: 6129

    [first] = run_now(env, policy["id"])["replication_record_ids"]
    [failed] = wait_records(env, source["id"], 1)
    assert (failed["id"], failed["status"]) == (first, "fail"), failed
    assert failed["extra_info"]["fail_code"] == "BackupService.6129"

    set_used_bytes(env, replicas["id"], room=None)
    [second] = run_now(env, policy["id"])["replication_record_ids"]
    assert second != first
    done = {r["id"]: r for r in wait_records(env, source["id"], 2)}
    assert done[second]["status"] == "success" and done[second]["extra_info"]["auto_trigger"]
    [replica] = backups_of(env, replicas["id"], region="region2")
    assert replica["source_backup_id"] == backup["id"]
    # Copied now: the next run starts nothing and logs nothing.
    logs_before = operation_log_count(env)
    assert run_now(env, policy["id"])["replication_record_ids"] == []
    assert operation_log_count(env) == logs_before


def set_used_bytes(env: Env, vault_id: str, room: int | None) -> None:
    """Leave `room` bytes free in the vault (None: empty it again)."""
    with env.db.transaction() as session:
        vault = session.get(Vault, vault_id)
        assert vault is not None
        vault.used_bytes = 0 if room is None else vault.size_gb * GB - room


def operation_log_count(env: Env) -> int:
    with env.db.reading() as session:
        return len(session.scalars(select(OperationLog.id)).all())


# --- the scheduler -------------------------------------------------------------------------


def next_run_at(env: Env, policy_id: str) -> datetime:
    with env.db.reading() as session:
        value = session.scalar(select(Policy.next_run_at).where(Policy.id == policy_id))
    assert value is not None
    return value


def test_a_due_slot_is_claimed_once_by_concurrent_ticks(
    env: Env, source: dict[str, Any], moved_clock: list[datetime]
) -> None:
    policy = create_policy(env)
    bind(env, source["id"], policy["id"])
    slot = next_run_at(env, policy["id"])
    moved_clock[0] = slot + timedelta(seconds=5)
    claimed: list[str] = []
    barrier = threading.Barrier(4)

    def tick() -> None:
        barrier.wait()
        claimed.extend(policy_runs.tick(runtime(env)))

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(claimed) == 1
    with env.db.reading() as session:
        runs = session.scalars(select(PolicyRun).where(PolicyRun.policy_id == policy["id"])).all()
    assert [run.slot_at for run in runs] == [slot]
    assert next_run_at(env, policy["id"]) == slot + timedelta(days=1)
    assert policy_runs.tick(runtime(env)) == []


def test_a_slot_missed_beyond_its_window_is_skipped_not_run_late(
    env: Env, source: dict[str, Any], moved_clock: list[datetime]
) -> None:
    policy = create_policy(env)
    bind(env, source["id"], policy["id"])
    slot = next_run_at(env, policy["id"])
    moved_clock[0] = slot + timedelta(minutes=61)  # the default window is 60 minutes

    assert policy_runs.tick(runtime(env)) == []

    assert next_run_at(env, policy["id"]) == slot + timedelta(days=1)
    with env.db.reading() as session:
        logs = session.scalars(
            select(OperationLog).where(OperationLog.policy_id == policy["id"])
        ).all()
    assert [(log.status, log.vault_id) for log in logs] == [("skipped", source["id"])]
    assert "missed" in logs[0].error_message


def test_a_missed_slot_costs_the_same_statements_for_one_vault_or_many(
    env: Env, moved_clock: list[datetime]
) -> None:
    """Skipping a missed slot logs every bound vault with a bounded number of statements:
    a policy bound to 12 vaults costs what a policy bound to one costs."""

    def statements_of_a_missed_tick(vault_count: int) -> int:
        policy = create_policy(env)
        for index in range(vault_count):
            bind(env, create_vault(env, name=f"v{vault_count}-{index}")["id"], policy["id"])
        moved_clock[0] = next_run_at(env, policy["id"]) + timedelta(minutes=61)
        executed: list[str] = []
        tick_thread = threading.get_ident()

        def record(*args: Any) -> None:
            # The tick's own statements: the app's threads (housekeeping, workers) share
            # the engine and may run some of theirs meanwhile.
            if threading.get_ident() == tick_thread:
                executed.append(args[2])

        event.listen(env.db.engine, "before_cursor_execute", record)
        try:
            assert policy_runs.tick(runtime(env)) == []
        finally:
            event.remove(env.db.engine, "before_cursor_execute", record)
        with env.db.reading() as session:
            skipped = session.scalars(
                select(OperationLog.vault_id).where(
                    OperationLog.policy_id == policy["id"], OperationLog.status == "skipped"
                )
            ).all()
        assert len(skipped) == vault_count
        env.delete("region1", f"/policies/{policy['id']}")
        return len(executed)

    assert statements_of_a_missed_tick(12) == statements_of_a_missed_tick(1)


def bound_vaults(env: Env, policy_id: str, count: int) -> list[str]:
    """`count` vaults bound to the policy, each protecting a one-file folder of its own."""
    vault_ids = []
    for _ in range(count):
        name = f"data-{uuid.uuid4().hex[:8]}"
        data = register_dir(env, name=name)
        (env.roots["region1"] / name / "f.txt").write_text("x")
        vault = create_vault(env, resources=[{"id": data["id"], "type": "OS::Sfs::Turbo"}])
        bind(env, vault["id"], policy_id)
        vault_ids.append(vault["id"])
    return vault_ids


def test_a_run_starts_its_vaults_in_batches_of_the_batch_size(
    env: Env, moved_clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is one transaction, whose rows the garbage collector traverses while it
    is open: a run of 12 vaults with batches of 5 commits 5, 5, then 2."""
    monkeypatch.setattr(policy_runs, "VAULTS_PER_BATCH", 5)
    policy = create_policy(env)
    vault_ids = bound_vaults(env, policy["id"], 12)
    moved_clock[0] = next_run_at(env, policy["id"]) + timedelta(seconds=1)
    [run_id] = policy_runs.tick(runtime(env))
    batches: list[int] = []

    started = policy_runs.run_policy(
        runtime(env), run_id, lambda batch: batches.append(len(batch.checkpoint_ids))
    )

    assert batches == [5, 5, 2]
    with env.db.reading() as session:
        vaults = session.scalars(
            select(Checkpoint.vault_id).where(Checkpoint.id.in_(started.checkpoint_ids))
        ).all()
    assert sorted(vaults) == sorted(vault_ids)


def test_a_run_starts_one_vault_or_many_with_the_same_statements(
    env: Env, moved_clock: list[datetime]
) -> None:
    """A run starts a batch of vaults with a bounded number of statements (each vault's
    backup used to look for a previous backup to build on, and its flush ran with it), and
    each backup still knows whether it builds on one: only vaults already backed up do."""

    def run_statements(vault_count: int, backed_up_first: int) -> tuple[int, list[bool]]:
        policy = create_policy(env)
        vault_ids = bound_vaults(env, policy["id"], vault_count)
        for vault_id in vault_ids[:backed_up_first]:
            backup_now(env, vault_id)
        moved_clock[0] = next_run_at(env, policy["id"]) + timedelta(seconds=1)
        [run_id] = policy_runs.tick(runtime(env))
        mine = threading.get_ident()  # not the housekeeping thread's statements
        executed: list[str] = []

        def record(*args: Any) -> None:
            if threading.get_ident() == mine:
                executed.append(args[2])

        event.listen(env.db.engine, "before_cursor_execute", record)
        try:
            started = policy_runs.run_policy(runtime(env), run_id, lambda _batch: None)
        finally:
            event.remove(env.db.engine, "before_cursor_execute", record)
        assert len(started.checkpoint_ids) == vault_count
        with env.db.reading() as session:
            incremental = dict(
                session.execute(
                    select(Backup.vault_id, Backup.incremental).where(
                        Backup.checkpoint_id.in_(started.checkpoint_ids)
                    )
                ).all()
            )
        env.delete("region1", f"/policies/{policy['id']}")
        return len(executed), [incremental[vault_id] for vault_id in vault_ids]

    one, [alone] = run_statements(1, backed_up_first=0)
    many, incremental = run_statements(12, backed_up_first=5)
    assert many == one
    assert alone is False and incremental == [True] * 5 + [False] * 7


def test_after_an_outage_the_newest_slot_in_its_window_runs_and_older_ones_are_logged(
    env: Env, source: dict[str, Any], moved_clock: list[datetime]
) -> None:
    policy = create_policy(env)
    bind(env, source["id"], policy["id"])
    slot = next_run_at(env, policy["id"])
    day = timedelta(days=1)
    moved_clock[0] = slot + 3 * day + timedelta(minutes=10)  # down from before `slot`

    [run_id] = policy_runs.tick(runtime(env))

    assert next_run_at(env, policy["id"]) == slot + 4 * day
    with env.db.reading() as session:
        run = session.get(PolicyRun, run_id)
        assert run is not None and run.slot_at == slot + 3 * day
        logs = session.scalars(
            select(OperationLog).where(OperationLog.policy_id == policy["id"])
        ).all()
    assert [(log.status, log.vault_id) for log in logs] == [("skipped", source["id"])]
    first, last = (f"{moment:%Y-%m-%dT%H:%M:%S}Z" for moment in (slot, slot + 2 * day))
    assert logs[0].error_message == f"3 slots from {first} to {last} were missed"

    # Down again past the next two slots and the window of the second: both are missed.
    moved_clock[0] = slot + 5 * day + timedelta(minutes=61)
    assert policy_runs.tick(runtime(env)) == []
    assert next_run_at(env, policy["id"]) == slot + 6 * day
    with env.db.reading() as session:
        messages = session.scalars(
            select(OperationLog.error_message)
            .where(OperationLog.policy_id == policy["id"], OperationLog.status == "skipped")
            .order_by(OperationLog.created_at)
        ).all()
    first, last = (f"{moment:%Y-%m-%dT%H:%M:%S}Z" for moment in (slot + 4 * day, slot + 5 * day))
    assert messages[1:] == [f"2 slots from {first} to {last} were missed"]


def test_a_run_claimed_by_the_tick_is_started_by_its_task(
    env: Env, source: dict[str, Any], moved_clock: list[datetime]
) -> None:
    policy = create_policy(env, max_backups=3)
    bind(env, source["id"], policy["id"])
    moved_clock[0] = next_run_at(env, policy["id"]) + timedelta(seconds=1)
    [run_id] = policy_runs.tick(runtime(env))
    clock.reset_clock()

    # What the housekeeping thread does with a claimed run (the real-time e2e test shows
    # the thread doing it).
    env.client.app.state.jobs.enqueue(tasks.run_policy, run_id)  # type: ignore[attr-defined]

    # The run's backup is listed as soon as its batch commits, a moment before the run
    # itself ends: wait for the run.
    for pause in pauses(60, longest=0.2):
        with env.db.reading() as session:
            run = session.get(PolicyRun, run_id)
            assert run is not None
            if run.status not in LIVE_POLICY_RUN:
                break
        time.sleep(pause)
    assert run.status == "success" and run.started == 1
    [backup] = backups_of(env, source["id"])
    assert backup["extend_info"]["auto_trigger"] is True


# --- expiry -------------------------------------------------------------------------------


def test_expired_manual_backups_are_deleted_by_housekeeping(
    env: Env, source: dict[str, Any]
) -> None:
    kept = backup_now(env, source["id"])
    expiring = backup_now(env, source["id"], retention_duration_days=1)
    assert expiring["expired_at"] is not None and kept["expired_at"] is None
    with env.db.transaction() as session:
        session.execute(
            update(Backup)
            .where(Backup.id == expiring["id"])
            .values(expired_at=clock.now() - timedelta(minutes=1))
        )

    assert pruning.expire(runtime(env)) == [expiring["id"]]

    left = wait_backup_count(env, source["id"], 1)
    assert [b["id"] for b in left] == [kept["id"]]
