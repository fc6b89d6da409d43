"""Every piece of background work says when it starts and how it ends: leased work (a
backup) through its runner, the other tasks (a delete, its garbage collection) through
the queue's instrumentation. Real work on the app's embedded workers."""

from __future__ import annotations

import time
from typing import Any

import structlog

from tests.api.helpers import Env, backup_now, create_vault, register_dir


def lifecycle(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(event, kind or task, id) of the lifecycle lines among `events`."""
    return [
        (e["event"], e.get("kind") or e.get("task"), e.get("id"))
        for e in events
        if e["event"].startswith(("leased work", "background task"))
    ]


def test_a_backup_and_its_deletion_log_their_start_and_end(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "file").write_text("logged\n")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    with structlog.testing.capture_logs() as events:
        backup = backup_now(env, vault["id"])
        assert env.delete("region1", f"/backups/{backup['id']}").status_code == 204
        expected = [
            ("leased work started", "backup", backup["id"]),
            ("leased work finished", "backup", backup["id"]),
            ("background task started", "delete", backup["id"]),
            ("background task finished", "delete", backup["id"]),
            ("background task started", "gc", vault["id"]),
            ("background task finished", "gc", vault["id"]),
        ]
        deadline = time.monotonic() + 30
        while not set(expected) <= set(lifecycle(events)):
            assert time.monotonic() < deadline, lifecycle(events)
            time.sleep(0.05)
    logged = lifecycle(events)
    # The backup's lines once; each task's start before its end (the collection is queued
    # by the delete, so their lines may interleave). A reconcile pass that lands while the
    # delete runs enqueues it again (duplicates are harmless: the second finds the backup
    # gone), so a task may start twice, and ends as often as it starts; under load the
    # reconciler may also add a `skipped` line.
    assert all(logged.count(line) == 1 for line in expected[:2]), logged
    for started, ended in zip(expected[::2], expected[1::2], strict=True):
        assert logged.index(started) < logged.index(ended)
        assert logged.count(started) == logged.count(ended), logged
    assert not [line for line in logged if "failed" in line[0]], logged
    finished = next(e for e in events if e["event"] == "leased work finished")
    assert finished["attempt"] == 1 and finished["seconds"] >= 0


def test_a_failed_backup_logs_its_failure_with_the_code_and_reason(env: Env) -> None:
    resource = register_dir(env, name="vanishing")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    (env.roots["region1"] / "vanishing").rmdir()  # registered, then gone: the backup fails
    with structlog.testing.capture_logs() as events:
        started = env.post("region1", "/checkpoints", {"checkpoint": {"vault_id": vault["id"]}})
        assert started.status_code == 200, started.text
        checkpoint = started.json()["checkpoint"]["id"]
        env.wait_for(
            "region1",
            f"/checkpoints/{checkpoint}",
            lambda body: body["checkpoint"]["status"] != "protecting",
        )
        [backup] = env.get("region1", "/backups", params={"checkpoint_id": checkpoint}).json()[
            "backups"
        ]
    assert backup["status"] == "error"
    ended = [e for e in events if e["event"].startswith("leased work") and e["id"] == backup["id"]]
    assert [e["event"] for e in ended] == ["leased work started", "leased work failed"], ended
    failed = ended[-1]
    assert failed["log_level"] == "warning" and failed["kind"] == "backup"
    assert failed["error"].startswith("BackupService.")
    assert failed["reason"] and failed["reason"] in backup["fail_reason"]
