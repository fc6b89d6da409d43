"""Restores write only inside the target's configured root (issue 11 §1, §7, §8).

Whoever can rename entries under a project's root may, after registering a target, swap it
(or a directory above it, or a component of `details.destination_path`) for a symlink out
of the root, or a disk image for a symlink or a FIFO. Every such restore must fail with
BackupService.6302 before writing anything, and leave what it points at untouched. A
restore that fails halfway leaves each file it did not finish as it was.
"""

from __future__ import annotations

import os
import random
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from opencbr.services import leases, restores
from opencbr.storage.layout import manifest_name
from tests.api.helpers import (
    Env,
    assert_error,
    backup_now,
    chunks_dir,
    create_vault,
    flip_byte,
    read_manifest,
    register_dir,
    register_disk,
    restore,
)

MiB = 1 << 20
TURBO = "OS::Sfs::Turbo"
VOLUME = "OS::Cinder::Volume"


def _tree_backup(env: Env, name: str = "source") -> dict[str, Any]:
    """A backup of a small tree whose root has mode 0777 (a chmod through a link shows)."""
    source = env.roots["region1"] / name
    (source / "sub").mkdir(parents=True)
    (source / "hello.txt").write_text("hello from the backup\n")
    (source / "sub" / "deep.txt").write_text("deep\n")
    source.chmod(0o777)
    resource = register_dir(env, name=name)
    vault = create_vault(env, name=f"v-{name}", resources=[{"id": resource["id"], "type": TURBO}])
    return backup_now(env, vault["id"])


def _outside(tmp_path: Path, name: str = "outside") -> Path:
    """A directory outside every configured root, holding one file."""
    outside = tmp_path / name
    outside.mkdir()
    (outside / "precious.txt").write_text("not the tenant's\n")
    outside.chmod(0o750)
    return outside


def _state(directory: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry below `directory` (itself included) with its mode and contents."""
    state: dict[str, tuple[int, bytes | None]] = {}
    for path in [directory, *sorted(directory.rglob("*"))]:
        info = path.lstat()
        data = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        state[str(path.relative_to(directory))] = (info.st_mode, data)
    return state


def _assert_refused(log: dict[str, Any]) -> None:
    assert log["status"] == "failed", log
    assert log["error_info"]["code"] == "BackupService.6302", log
    assert "resource path is no longer valid" in log["error_info"]["message"], log


def test_restore_into_a_target_swapped_for_a_symlink_writes_nothing_outside(
    env: Env, tmp_path: Path
) -> None:
    backup = _tree_backup(env)
    target = register_dir(env, name="target")
    outside = _outside(tmp_path)
    before = _state(outside)
    path = env.roots["region1"] / "target"
    path.rmdir()
    path.symlink_to(outside)

    _assert_refused(restore(env, backup["id"], {"resource_id": target["id"]}))
    assert _state(outside) == before  # no file written, mode still 0750
    assert env.get("region1", f"/backups/{backup['id']}").json()["backup"]["status"] == (
        "available"
    )


def test_restore_below_a_symlinked_parent_directory_writes_nothing_outside(
    env: Env, tmp_path: Path
) -> None:
    backup = _tree_backup(env)
    target = register_dir(env, name="target", subdir="parent/target")
    outside = _outside(tmp_path)
    parent = env.roots["region1"] / "parent"
    parent.rename(outside / "parent")  # the tenant moves its directory away ...
    parent.symlink_to(outside / "parent")  # ... and leaves a link to it in its place
    before = _state(outside)

    _assert_refused(restore(env, backup["id"], {"resource_id": target["id"]}))
    assert _state(outside) == before


def test_a_symlink_in_destination_path_after_the_request_writes_nothing_outside(
    env: Env, tmp_path: Path
) -> None:
    """The request is checked while `inner` is a directory; by the time a worker runs the
    restore it is a link out of the root. (Workers are paused to hold that moment.)"""
    backup = _tree_backup(env)
    target = register_dir(env, name="target")
    inner = env.roots["region1"] / "target" / "inner"
    inner.mkdir()
    outside = _outside(tmp_path)
    (outside / "new").mkdir()  # what `inner/new` will lead to
    before = _state(outside)
    _pause_workers(env)

    response = env.post(
        "region1",
        f"/backups/{backup['id']}/restore",
        {"restore": {"resource_id": target["id"], "details": {"destination_path": "inner/new"}}},
    )
    assert response.status_code == 202, response.text
    inner.rename(env.roots["region1"] / "moved")
    inner.symlink_to(outside)
    _run_waiting_restores(env)

    log = _restore_log(env, backup["id"])
    _assert_refused(log)
    assert "symbolic link" in log["error_info"]["message"]
    assert _state(outside) == before


def test_destination_path_is_made_inside_the_target_and_restored_there(env: Env) -> None:
    backup = _tree_backup(env)
    target = register_dir(env, name="target")
    log = restore(
        env,
        backup["id"],
        {"resource_id": target["id"], "details": {"destination_path": "/a/./b/"}},
    )
    assert log["status"] == "success", log
    made = env.roots["region1"] / "target" / "a" / "b"
    assert (made / "sub" / "deep.txt").read_text() == "deep\n"
    assert stat.S_IMODE(made.stat().st_mode) == 0o777  # the backup root's mode
    # The directory made on the way takes the attributes of the one it was made in.
    assert stat.S_IMODE((made.parent).stat().st_mode) == stat.S_IMODE(
        (env.roots["region1"] / "target").stat().st_mode
    )


def test_destination_path_with_dots_nul_or_long_names_is_refused(env: Env) -> None:
    backup = _tree_backup(env)
    for destination in ("../../escape", "a/../../b", "a/../b", "..", "a/\u0000/b", "é" * 128):
        response = env.post(
            "region1",
            f"/backups/{backup['id']}/restore",
            {"restore": {"details": {"destination_path": destination}}},
        )
        assert_error(response, 400, "BackupService.9900")
    assert env.get("region1", f"/backups/{backup['id']}").json()["backup"]["status"] == (
        "available"
    )


def _disk_backup(env: Env) -> tuple[dict[str, Any], bytes]:
    image = random.Random(11).randbytes(3 * MiB)
    disk = register_disk(env, name="source", size=0)
    (env.roots["region1"] / "source.img").write_bytes(image)
    vault = create_vault(
        env, name="disks", object_type="disk", resources=[{"id": disk["id"], "type": VOLUME}]
    )
    return backup_now(env, vault["id"]), image


def test_disk_restore_into_an_image_swapped_for_a_symlink_leaves_its_file_alone(
    env: Env, tmp_path: Path
) -> None:
    backup, _ = _disk_backup(env)
    victim = register_disk(env, name="victim", size=MiB)
    outside = _outside(tmp_path)
    secret = outside / "secret.key"
    secret.write_bytes(b"k" * 100)
    before = _state(outside)
    image = env.roots["region1"] / "victim.img"
    image.unlink()
    image.symlink_to(secret)

    _assert_refused(restore(env, backup["id"], {"volume_id": victim["id"]}))
    assert _state(outside) == before
    assert secret.stat().st_size == 100
    assert image.is_symlink()  # not replaced either: the restore stopped before writing


def test_disk_restore_into_an_image_swapped_for_a_fifo_fails_at_once(env: Env) -> None:
    backup, image_bytes = _disk_backup(env)
    victim = register_disk(env, name="victim", size=MiB)
    image = env.roots["region1"] / "victim.img"
    image.unlink()
    os.mkfifo(image)

    started = time.monotonic()
    _assert_refused(restore(env, backup["id"], {"volume_id": victim["id"]}))
    assert time.monotonic() - started < 10
    # No worker is left blocked: the next restore into a real image runs to the end.
    image.unlink()
    image.write_bytes(b"old")
    image.chmod(0o640)
    log = _restore_again(env, backup["id"], {"volume_id": victim["id"]})
    assert log["status"] == "success", log
    assert image.read_bytes() == image_bytes
    assert stat.S_IMODE(image.stat().st_mode) == 0o640  # the image it replaced kept its mode
    assert not [p for p in image.parent.iterdir() if p.name.startswith(".opencbr-restore-")]


def test_disk_restore_below_a_symlinked_parent_directory_writes_nothing_outside(
    env: Env, tmp_path: Path
) -> None:
    backup, _ = _disk_backup(env)
    (env.roots["region1"] / "vm").mkdir()
    (env.roots["region1"] / "vm" / "disk.img").write_bytes(bytes(MiB))
    response = env.post(
        "region1",
        "/protectables/disk/instances",
        {"instance": {"name": "vm", "path": str(env.roots["region1"] / "vm" / "disk.img")}},
    )
    assert response.status_code == 200, response.text
    disk = response.json()["instance"]
    outside = _outside(tmp_path)
    parent = env.roots["region1"] / "vm"
    parent.rename(outside / "vm")
    parent.symlink_to(outside / "vm")
    before = _state(outside)

    _assert_refused(restore(env, backup["id"], {"volume_id": disk["id"]}))
    assert _state(outside) == before


def test_a_failed_restore_leaves_every_file_it_did_not_finish_as_it_was(
    env: Env,
) -> None:
    """A chunk in the middle of a large file is damaged: the restore fails inside that
    file. The old version of it, and of the files after it, are still there, byte for
    byte; the files before it are restored; no temporary file is left behind."""
    rng = random.Random(7)
    source = env.roots["region1"] / "source"
    source.mkdir()
    (source / "a_first.txt").write_text("new first\n")
    (source / "m_big.bin").write_bytes(rng.randbytes(24 * MiB))
    (source / "z_last.txt").write_text("new last\n")
    resource = register_dir(env, name="source")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
    backup = backup_now(env, vault["id"])
    _damage_chunk_at_the_middle(env, vault["id"], backup["id"])

    target_dir = env.roots["region1"] / "target"
    target_dir.mkdir()
    (target_dir / "a_first.txt").write_text("old first\n")
    (target_dir / "m_big.bin").write_bytes(rng.randbytes(20 * MiB))
    (target_dir / "z_last.txt").write_text("old last\n")
    old_big, old_last = (target_dir / "m_big.bin").read_bytes(), _state(target_dir)["z_last.txt"]
    target = register_dir(env, name="target")

    log = restore(env, backup["id"], {"resource_id": target["id"]})
    assert log["status"] == "failed", log
    assert (target_dir / "a_first.txt").read_text() == "new first\n"  # finished before
    assert (target_dir / "m_big.bin").read_bytes() == old_big
    assert _state(target_dir)["z_last.txt"] == old_last
    assert sorted(p.name for p in target_dir.iterdir()) == [
        "a_first.txt",
        "m_big.bin",
        "z_last.txt",
    ]


def test_a_failed_disk_restore_leaves_the_old_image_as_it_was(env: Env) -> None:
    backup, _ = _disk_backup(env)
    for chunk in chunks_dir(env, "region1", backup["vault_id"]).rglob("*"):
        if chunk.is_file():
            flip_byte(chunk)
    victim = register_disk(env, name="victim", size=0)
    image = env.roots["region1"] / "victim.img"
    old = random.Random(3).randbytes(2 * MiB)
    image.write_bytes(old)

    log = restore(env, backup["id"], {"volume_id": victim["id"]})
    assert log["status"] == "failed", log
    assert image.read_bytes() == old
    assert sorted(p.name for p in image.parent.iterdir() if p.name.startswith(".")) == []


def _damage_chunk_at_the_middle(env: Env, vault_id: str, backup_id: str) -> None:
    """Flip one byte of the stored chunk holding the middle of the backup's tar stream."""
    store = chunks_dir(env, "region1", vault_id)
    manifest = read_manifest(env, store.parent / "manifests" / manifest_name(backup_id))
    offset, middle = 0, manifest.size // 2
    for ref in manifest.chunks:
        if offset + ref.length > middle:
            break
        offset += ref.length
    flip_byte(store / ref.digest[:2] / ref.digest)


# ---------------------------------------------------------------- one restore per target


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
@pytest.mark.parametrize("registrations", [1, 2])
def test_concurrent_restores_into_one_target_admit_exactly_one_on_postgres(
    env: Env, registrations: int
) -> None:
    """Under READ COMMITTED two requests can both find no live restore of the target and
    both insert one. Each request here restores its own backup; the test holds a lock on
    those backups' rows until every request is past its first statements, then lets them
    race for the target — with two registrations of the target directory, alternately into
    each (one place to write: still exactly one, and no deadlock between their locks)."""
    resource = register_dir(env, name="source")
    (env.roots["region1"] / "source" / "file.txt").write_text("x\n")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
    ids = [backup_now(env, vault["id"], name=f"b{n}")["id"] for n in range(4)]
    targets = [register_dir(env, name="target")]
    if registrations == 2:
        targets.append(register_dir(env, name="again", subdir="target"))

    answers: list[Any] = []

    def request(backup_id: str, target: dict[str, Any]) -> None:
        answers.append(
            env.post(
                "region1",
                f"/backups/{backup_id}/restore",
                {"restore": {"resource_id": target["id"]}},
            )
        )

    with env.db.engine.connect() as holder, holder.begin():
        holder.execute(text("SELECT id FROM backups WHERE id = ANY(:ids) FOR UPDATE"), {"ids": ids})
        threads = [
            threading.Thread(target=request, args=(backup_id, targets[n % len(targets)]))
            for n, backup_id in enumerate(ids)
        ]
        for thread in threads:
            thread.start()
        _wait_for_lock_waiters(env, len(ids))
    for thread in threads:
        thread.join(60)

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [202, 400, 400, 400], [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 400:
            assert answer.json()["error_code"] == "BackupService.2010", answer.text
    logs = env.get("region1", "/operation-logs", params={"operation_type": "restore"}).json()
    assert len(logs["operation_logs"]) == 1


def _wait_for_lock_waiters(env: Env, count: int) -> None:
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 30
    with env.db.engine.connect() as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute(query).scalar_one()
            watcher.rollback()  # pg_stat_activity is a snapshot per transaction
            if waiting >= count:
                return
            time.sleep(0.05)
    raise AssertionError(f"fewer than {count} requests ever waited on the backups' rows")


# ---------------------------------------------------------------- helpers


def _pause_workers(env: Env) -> None:
    """Stop the embedded workers (the requests still enqueue); the test runs the task."""
    jobs = env.client.app.state.jobs  # type: ignore[attr-defined]
    consumer = jobs._consumer
    jobs.stop()
    for _worker, thread in consumer.worker_threads:
        thread.join(10)
    jobs.runtime.stopping.clear()  # stopping marked the runtime; the test now works in it


def _run_waiting_restores(env: Env) -> None:
    """What a worker does with a queued restore task: restores.run(runtime, log id)."""
    runtime = env.client.app.state.runtime  # type: ignore[attr-defined]
    for log_id in leases.stuck(runtime, restores.RESTORE):
        restores.run(runtime, log_id)


def _restore_again(env: Env, backup_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Restore a backup restored before (tests.api.test_backups.restore finds the first
    log of a backup) and wait for the new log to end."""
    earlier = _restore_logs(env, backup_id)
    response = env.post("region1", f"/backups/{backup_id}/restore", {"restore": body})
    assert response.status_code == 202, response.text

    def ended(new: list[dict[str, Any]]) -> bool:
        return len(new) > len(earlier) and all(
            log["status"] in ("success", "failed") for log in new
        )

    deadline = time.monotonic() + 60
    while not ended(logs := _restore_logs(env, backup_id)):
        assert time.monotonic() < deadline, logs
        time.sleep(0.1)
    known = {log["id"] for log in earlier}
    return next(log for log in logs if log["id"] not in known)


def _restore_logs(env: Env, backup_id: str) -> list[dict[str, Any]]:
    logs = env.get("region1", "/operation-logs", params={"operation_type": "restore"}).json()
    return [
        log
        for log in logs["operation_logs"]
        if log["extra_info"]["restore"]["backup_id"] == backup_id
    ]


def _restore_log(env: Env, backup_id: str) -> dict[str, Any]:
    logs = env.get("region1", "/operation-logs", params={"operation_type": "restore"}).json()
    return next(
        log
        for log in logs["operation_logs"]
        if log["extra_info"]["restore"]["backup_id"] == backup_id
    )
