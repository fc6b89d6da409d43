"""The leased-work runner (services/leases.py) on real rows: backups and restores made over
HTTP by an app whose embedded worker is off, so that only the test claims them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import select

from opencbr import clock
from opencbr.db.backups import Backup
from opencbr.db.session import Database
from opencbr.db.vaults import Vault
from opencbr.jobs import tasks
from opencbr.jobs.queue import Jobs
from opencbr.services import backup_runs, leases, restores
from opencbr.services.runtime import Runtime
from opencbr.settings import Settings
from tests.api.conftest import Env, make_settings
from tests.api.helpers import create_vault, register_dir

TURBO = "OS::Sfs::Turbo"
MAX_ATTEMPTS = 2


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # No worker and no reconciler: the rows wait for the test's own claims.
    return make_settings(
        tmp_path, embedded_worker=False, max_attempts=MAX_ATTEMPTS, lease_seconds=30.0
    )


@pytest.fixture
def rt(env: Env) -> Iterator[Runtime]:
    runtime = Runtime(env.db, env.settings)
    yield runtime
    runtime.close()


def start_backup(env: Env) -> tuple[str, str]:
    """A checkpoint whose backup is `protecting` and never claimed: (checkpoint, backup)."""
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "file").write_text("leased\n")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
    response = env.post("region1", "/checkpoints", {"checkpoint": {"vault_id": vault["id"]}})
    assert response.status_code == 200, response.text
    checkpoint_id: str = response.json()["checkpoint"]["id"]
    with env.db.reading() as session:
        backup_id = session.scalar(select(Backup.id).where(Backup.checkpoint_id == checkpoint_id))
    assert backup_id is not None
    return checkpoint_id, backup_id


def backup_row(env: Env, backup_id: str) -> Backup:
    with env.db.reading() as session:
        backup = session.get(Backup, backup_id)
        assert backup is not None
        return backup


def expire_lease(env: Env, backup_id: str, **values: Any) -> None:
    """What a worker killed mid-backup leaves: a lease in the past, on a backup older than
    a lease (younger ones the reconciler leaves to the task queued with them)."""
    with env.db.transaction() as session:
        backup = session.get(Backup, backup_id)
        assert backup is not None
        backup.lease_until = clock.now() - timedelta(seconds=1)
        backup.created_at -= timedelta(seconds=env.settings.lease_seconds + 1)
        for name, value in values.items():
            setattr(backup, name, value)


def backup_log(env: Env, backup_id: str) -> dict[str, Any]:
    logs = env.get("region1", "/operation-logs", params={"operation_type": "backup"}).json()
    entry: dict[str, Any] = next(
        log
        for log in logs["operation_logs"]
        if log["extra_info"]["backup"]["backup_id"] == backup_id
    )
    return entry


def test_a_claimed_backup_is_not_claimed_again(env: Env, rt: Runtime) -> None:
    _checkpoint_id, backup_id = start_backup(env)
    first = leases.claim(rt, backup_runs.BACKUP, backup_id)
    assert first is not None and first.attempt == 1 and first.work.backup_id == backup_id
    assert leases.claim(rt, backup_runs.BACKUP, backup_id) is None
    row = backup_row(env, backup_id)
    assert row.attempts == 1 and row.lease_until is not None and row.lease_until > clock.now()


def test_an_expired_lease_is_stuck_and_claimable_again_with_one_more_attempt(
    env: Env, rt: Runtime
) -> None:
    checkpoint_id, backup_id = start_backup(env)
    assert leases.claim(rt, backup_runs.BACKUP, backup_id) is not None
    assert leases.stuck(rt, backup_runs.BACKUP) == []  # held by a live worker
    expire_lease(env, backup_id)
    assert leases.stuck(rt, backup_runs.BACKUP) == [checkpoint_id]
    again = leases.claim(rt, backup_runs.BACKUP, backup_id)
    assert again is not None and again.attempt == 2
    assert backup_row(env, backup_id).attempts == 2
    assert leases.stuck(rt, backup_runs.BACKUP) == []


def test_a_backup_never_picked_up_is_stuck_only_after_the_grace(env: Env, rt: Runtime) -> None:
    checkpoint_id, backup_id = start_backup(env)
    assert leases.stuck(rt, backup_runs.BACKUP) == []  # its task is still queued
    with env.db.transaction() as session:
        backup = session.get(Backup, backup_id)
        assert backup is not None
        backup.created_at -= timedelta(seconds=rt.settings.lease_seconds + 1)
    assert leases.stuck(rt, backup_runs.BACKUP) == [checkpoint_id]


def test_after_max_attempts_the_claim_fails_the_backup_with_the_reason(
    env: Env, rt: Runtime
) -> None:
    checkpoint_id, backup_id = start_backup(env)
    expire_lease(env, backup_id, attempts=MAX_ATTEMPTS)
    assert leases.claim(rt, backup_runs.BACKUP, backup_id) is None
    reason = f"gave up after {MAX_ATTEMPTS} interrupted attempts"
    backup = env.get("region1", f"/backups/{backup_id}").json()["backup"]
    assert (backup["status"], backup["fail_reason"]) == ("error", reason)
    log = backup_log(env, backup_id)
    assert log["status"] == "failed"
    assert log["error_info"] == {"code": "BackupService.9910", "message": reason}
    checkpoint = env.get("region1", f"/checkpoints/{checkpoint_id}").json()["checkpoint"]
    assert checkpoint["status"] == "error"
    assert backup_row(env, backup_id).lease_until is None
    assert leases.stuck(rt, backup_runs.BACKUP) == []


def test_a_claim_waits_while_garbage_collection_holds_the_vault(env: Env, rt: Runtime) -> None:
    _checkpoint_id, backup_id = start_backup(env)
    vault_id = backup_row(env, backup_id).vault_id
    with env.db.transaction() as session:
        vault = session.get(Vault, vault_id)
        assert vault is not None
        vault.gc_until = clock.now() + timedelta(minutes=5)
    with pytest.raises(backup_runs.VaultBusy):
        leases.claim(rt, backup_runs.BACKUP, backup_id)
    row = backup_row(env, backup_id)
    assert row.attempts == 0 and row.lease_until is None


def test_the_heartbeat_renews_the_lease(env: Env, rt: Runtime) -> None:
    _checkpoint_id, backup_id = start_backup(env)
    claimed = leases.claim(rt, backup_runs.BACKUP, backup_id)
    assert claimed is not None
    expire_lease(env, backup_id)
    with leases.heartbeat(rt, claimed, interval=0.05):
        deadline = time.monotonic() + 10
        while not leases.is_held(backup_row(env, backup_id)):
            assert time.monotonic() < deadline, "the lease was not renewed"
            time.sleep(0.05)


def test_a_heartbeat_that_fails_is_logged(env: Env, rt: Runtime) -> None:
    _checkpoint_id, backup_id = start_backup(env)
    claimed = leases.claim(rt, backup_runs.BACKUP, backup_id)
    assert claimed is not None
    # The database goes away under the worker: nothing listens on port 1.
    gone = Runtime(Database("postgresql+psycopg://postgres@127.0.0.1:1/gone"), rt.settings)
    with structlog.testing.capture_logs() as events, leases.heartbeat(gone, claimed, 0.05):
        deadline = time.monotonic() + 10
        while not any(e["event"] == "lease heartbeat failed" for e in events):
            assert time.monotonic() < deadline, events
            time.sleep(0.05)
    failed = next(e for e in events if e["event"] == "lease heartbeat failed")
    assert failed["kind"] == "backup" and failed["id"] == backup_id
    assert failed["error"] == "OperationalError"
    gone.db.dispose()


def test_an_unexpected_exception_fails_the_work_at_once_and_is_logged_once(
    env: Env, rt: Runtime
) -> None:
    checkpoint_id, backup_id = start_backup(env)
    secret_path = str(env.settings.data_dir / "secret")

    def body(claim: backup_runs.Claim) -> None:
        raise KeyError(secret_path)  # a bug, not a failure the backup knows

    with structlog.testing.capture_logs() as events:
        assert leases.run(rt, backup_runs.BACKUP, backup_id, body) is not None
    reason = "internal error (KeyError)"
    backup = env.get("region1", f"/backups/{backup_id}").json()["backup"]
    assert (backup["status"], backup["fail_reason"]) == ("error", reason)
    log = backup_log(env, backup_id)
    assert log["error_info"] == {"code": "BackupService.9910", "message": reason}
    assert (
        env.get("region1", f"/checkpoints/{checkpoint_id}").json()["checkpoint"]["status"]
        == "error"
    )
    assert backup_row(env, backup_id).lease_until is None
    logged = [e for e in events if e["log_level"] in ("error", "warning")]
    assert [e["event"] for e in logged] == ["leased work failed unexpectedly"]
    assert logged[0]["exc_info"] is True and logged[0]["id"] == backup_id


def test_a_restore_is_leased_on_its_log(env: Env, rt: Runtime) -> None:
    checkpoint_id, backup_id = start_backup(env)
    backup_runs.run_checkpoint(rt, checkpoint_id)  # the worker's part, run here
    assert backup_row(env, backup_id).status == "available"
    target = register_dir(env, name="target")
    response = env.post(
        "region1", f"/backups/{backup_id}/restore", {"restore": {"resource_id": target["id"]}}
    )
    assert response.status_code == 202, response.text
    logs = env.get("region1", "/operation-logs", params={"operation_type": "restore"}).json()
    (log,) = logs["operation_logs"]
    assert leases.stuck(rt, restores.RESTORE) == [log["id"]]  # never picked up
    claimed = leases.claim(rt, restores.RESTORE, log["id"])
    assert claimed is not None and claimed.work.backup_id == backup_id
    assert leases.claim(rt, restores.RESTORE, log["id"]) is None
    assert leases.stuck(rt, restores.RESTORE) == []
    restores.run(rt, log["id"])  # another worker: the lease is held, nothing happens
    assert not (env.roots["region1"] / "target" / "file").exists()


def lease_events(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(e["event"], e.get("reason")) for e in events if e["event"].startswith("leased work")]


def test_a_stopping_service_hands_the_work_back_live_for_an_immediate_resume(
    env: Env, rt: Runtime
) -> None:
    checkpoint_id, backup_id = start_backup(env)

    def body(claim: backup_runs.Claim) -> None:
        rt.stopping.set()  # SIGTERM arrives while the backup runs
        leases.stop_point(rt)
        raise AssertionError("stop_point did not stop the work")

    with structlog.testing.capture_logs() as events:
        assert leases.run(rt, backup_runs.BACKUP, backup_id, body) is None
        assert leases.claim(rt, backup_runs.BACKUP, backup_id) is None  # stopping: no claim
    assert lease_events(events) == [
        ("leased work started", None),
        ("leased work interrupted: left for the next start", "the service is stopping"),
        ("leased work skipped", "the service is stopping"),
    ]
    row = backup_row(env, backup_id)
    # Still live, not failed; the lease has ended; the orderly stop cost no attempt.
    assert (row.status, row.attempts, row.fail_reason) == ("protecting", 0, None)
    assert row.lease_until is not None and not leases.is_held(row)
    assert backup_log(env, backup_id)["status"] in ("waiting", "running")

    rt.stopping.clear()  # the next start: its reconciler finds the row at once, although
    assert leases.stuck(rt, backup_runs.BACKUP) == [checkpoint_id]  # younger than the grace
    with structlog.testing.capture_logs() as events:
        backup_runs.run_checkpoint(rt, checkpoint_id)
    assert lease_events(events) == [("leased work resumed", None), ("leased work finished", None)]
    resumed = next(e for e in events if e["event"] == "leased work resumed")
    assert (resumed["kind"], resumed["id"], resumed["attempt"]) == ("backup", backup_id, 1)
    assert backup_row(env, backup_id).status == "available"
    assert backup_log(env, backup_id)["status"] == "success"


def test_work_that_is_not_to_run_is_logged_as_skipped_with_the_reason(
    env: Env, rt: Runtime
) -> None:
    checkpoint_id, backup_id = start_backup(env)
    with structlog.testing.capture_logs() as events:
        assert leases.claim(rt, backup_runs.BACKUP, backup_id) is not None
        assert leases.claim(rt, backup_runs.BACKUP, backup_id) is None
        assert leases.claim(rt, backup_runs.BACKUP, "no-such-backup") is None
    assert lease_events(events) == [
        ("leased work started", None),
        ("leased work skipped", "held by another worker"),
        ("leased work skipped", "gone"),
    ]
    expire_lease(env, backup_id)
    backup_runs.run_checkpoint(rt, checkpoint_id)
    with structlog.testing.capture_logs() as events:
        assert leases.claim(rt, backup_runs.BACKUP, backup_id) is None
    assert lease_events(events) == [("leased work skipped", "already available")]


def test_work_never_leased_is_queued_again_only_once_the_queue_is_drained(
    env: Env, rt: Runtime
) -> None:
    """While tasks wait in the queue, a backup no worker has leased yet is most likely one
    of them: the reconciler leaves it (it queued a duplicate at every pass, for every
    backup of a large policy slot). Once the queue is empty, one older than the grace is
    lost work and is queued again, once."""
    checkpoint_id, backup_id = start_backup(env)
    with env.db.transaction() as session:
        backup = session.get(Backup, backup_id)
        assert backup is not None
        backup.created_at -= timedelta(seconds=env.settings.lease_seconds + 1)
    jobs: Jobs = env.client.app.state.jobs  # type: ignore[attr-defined]
    waiting = [task.args for task in jobs.huey.pending()]
    assert (checkpoint_id,) in waiting
    tasks.reconcile(jobs)
    assert [task.args for task in jobs.huey.pending()] == waiting  # no duplicate
    jobs.huey.flush()  # the queue lost its tasks
    tasks.reconcile(jobs)
    assert [task.args for task in jobs.huey.pending()] == [(checkpoint_id,)]
