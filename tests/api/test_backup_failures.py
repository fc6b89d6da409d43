"""Backups over HTTP when things go wrong: warnings about what could not be read, the
chunks a failed backup leaves, two backups racing for the vault's last capacity, and a
region whose storage is unusable."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import select

from opencbr import clock
from opencbr.db.backups import Backup, VaultChunk
from opencbr.db.status import BackupStatus
from opencbr.db.vaults import Vault, settle_capacity
from opencbr.services.capacity import BudgetSink, CapacityOwner
from opencbr.services.stores import PLAIN
from opencbr.storage.local import LocalChunkStore
from tests.api.helpers import Env, chunk_names, create_vault, register_dir, register_server

MiB = 1 << 20
GB = 1 << 30
TURBO = "OS::Sfs::Turbo"
# What a backup row made by hand copies from a real one of the same resource.
BACKUP_IDENTITY = (
    "project_id",
    "vault_id",
    "checkpoint_id",
    "resource_id",
    "resource_name",
    "resource_type",
    "provider_id",
    "kind",
)


def start_backup(env: Env, vault_id: str) -> str:
    response = env.post("region1", "/checkpoints", {"checkpoint": {"vault_id": vault_id}})
    assert response.status_code == 200, response.text
    checkpoint_id: str = response.json()["checkpoint"]["id"]
    return checkpoint_id


def settled_backup(env: Env, checkpoint_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Wait for the checkpoint's backup to finish; return it as GET /backups/{id} shows it."""
    env.wait_for(
        "region1",
        f"/checkpoints/{checkpoint_id}",
        lambda body: body["checkpoint"]["status"] != "protecting",
        timeout=timeout,
    )
    cleaned_up(env, checkpoint_id, timeout)
    listed = env.get("region1", "/backups", params={"checkpoint_id": checkpoint_id}).json()
    assert len(listed["backups"]) == 1, listed
    response = env.get("region1", f"/backups/{listed['backups'][0]['id']}")
    assert response.status_code == 200, response.text
    backup: dict[str, Any] = response.json()["backup"]
    assert backup["warnings"] == listed["backups"][0]["warnings"]
    return backup


def backup_log(env: Env, backup_id: str) -> dict[str, Any]:
    logs = env.get("region1", "/operation-logs", params={"operation_type": "backup"}).json()
    entry: dict[str, Any] = next(
        log
        for log in logs["operation_logs"]
        if log["extra_info"]["backup"]["backup_id"] == backup_id
    )
    return entry


def set_free_capacity(env: Env, vault_id: str, free: int) -> None:
    """Make the (1 GB) vault look almost full: `free` bytes left."""
    with env.db.transaction() as session:
        vault = session.get(Vault, vault_id)
        assert vault is not None and vault.size_gb == 1
        vault.used_bytes = GB - free


def cleaned_up(env: Env, checkpoint_id: str, timeout: float) -> None:
    """Wait for a failed backup's cleanup: it publishes the failure first, then removes its
    chunks under the vault's hold (gc_until) and releases the hold when done."""
    deadline = time.monotonic() + timeout
    while True:
        with env.db.reading() as session:
            vault_id = session.scalar(
                select(Backup.vault_id).where(Backup.checkpoint_id == checkpoint_id).limit(1)
            )
            vault = session.get(Vault, vault_id)
            if vault is None or vault.gc_until is None:
                return
        assert time.monotonic() < deadline, "the failed backup's cleanup never ended"
        time.sleep(0.05)


def indexed_digests(env: Env, vault_id: str) -> set[str]:
    with env.db.reading() as session:
        return set(
            session.scalars(select(VaultChunk.digest).where(VaultChunk.vault_id == vault_id))
        )


def vault_row(env: Env, vault_id: str) -> tuple[int, int]:
    with env.db.reading() as session:
        vault = session.get(Vault, vault_id)
        assert vault is not None
        return vault.used_bytes, vault.reserved_bytes


# --- warnings ------------------------------------------------------------------------


def test_backup_keeps_warnings_about_what_it_could_not_read(env: Env) -> None:
    resource = register_dir(env)
    data = env.roots["region1"] / "data"
    (data / "plain.txt").write_text("kept\n")
    os.mkfifo(data / "pipe")
    os.mknod(data / "null-device", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(data / "sock"))  # the socket file stays after close
    vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
    with structlog.testing.capture_logs() as logs:
        backup = settled_backup(env, start_backup(env, vault["id"]))

    assert backup["status"] == "available", backup
    warnings = backup["warnings"]
    assert len(warnings) == 3, warnings
    for name in ("pipe", "null-device", "sock"):
        assert any(repr(name) in w and "not a file, directory or symlink" in w for w in warnings)
    logged = [e for e in logs if e["event"] == "backup skipped or saw changing entries"]
    assert len(logged) == 1 and logged[0]["count"] == 3 and len(logged[0]["first"]) == 3


def test_a_clean_backup_has_no_warnings(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "f").write_text("x")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
    backup = settled_backup(env, start_backup(env, vault["id"]))
    assert backup["status"] == "available" and backup["warnings"] == []


def test_many_warnings_are_capped_and_counted(env: Env) -> None:
    resource = register_dir(env)
    data = env.roots["region1"] / "data"
    for index in range(150):
        os.mkfifo(data / (f"pipe-{index:03d}-" + "n" * 400)[:255])
    vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
    backup = settled_backup(env, start_backup(env, vault["id"]))
    warnings = backup["warnings"]
    assert len(warnings) == 100
    assert warnings[-1] == "... and 51 more"
    assert all(len(w) <= 300 for w in warnings)


def test_server_backup_gathers_its_volumes_warnings(env: Env) -> None:
    root = env.roots["region1"]
    (root / "web" / "sys").mkdir(parents=True)
    os.mkfifo(root / "web" / "sys" / "pipe")
    (root / "web" / "data.img").write_bytes(b"\1" * 4096)
    server = register_server(env, {"sys": root / "web" / "sys", "data": root / "web" / "data.img"})
    vault = create_vault(
        env, object_type="server", resources=[{"id": server["id"], "type": "OS::Nova::Server"}]
    )
    backup = settled_backup(env, start_backup(env, vault["id"]))
    assert backup["status"] == "available", backup
    children = {child["resource_name"]: child for child in backup["children"]}
    assert len(children["sys"]["warnings"]) == 1 and children["data"]["warnings"] == []
    assert backup["warnings"] == [f"sys: {children['sys']['warnings'][0]}"]


# --- a failed backup's chunks --------------------------------------------------------


def test_a_backup_failing_on_capacity_leaves_no_unindexed_chunk(env: Env) -> None:
    resource = register_dir(env)
    data = env.roots["region1"] / "data"
    (data / "small").write_bytes(os.urandom(2 * MiB))
    vault = create_vault(env, size=1, resources=[{"id": resource["id"], "type": TURBO}])
    first = settled_backup(env, start_backup(env, vault["id"]))
    assert first["status"] == "available"
    kept = chunk_names(env, "region1", vault["id"])
    assert kept == indexed_digests(env, vault["id"])
    used, _ = vault_row(env, vault["id"])

    (data / "big").write_bytes(os.urandom(24 * MiB))  # about 18 chunks; 8 MiB fit
    set_free_capacity(env, vault["id"], 8 * MiB)
    failed = settled_backup(env, start_backup(env, vault["id"]))
    assert failed["status"] == "error", failed
    assert backup_log(env, failed["id"])["error_info"]["code"] == "BackupService.6114"

    assert chunk_names(env, "region1", vault["id"]) == indexed_digests(env, vault["id"]) == kept
    assert vault_row(env, vault["id"]) == (GB - 8 * MiB, 0)
    # The first backup still restores its data from the chunks it keeps.
    assert env.get("region1", f"/backups/{first['id']}").json()["backup"]["status"] == "available"
    assert used > 0


def test_a_failed_server_backup_also_drops_the_chunks_its_finished_volumes_indexed(
    env: Env,
) -> None:
    root = env.roots["region1"]
    (root / "web" / "a").mkdir(parents=True)
    (root / "web" / "a" / "blob").write_bytes(os.urandom(3 * MiB))
    (root / "web" / "b").mkdir(parents=True)
    (root / "web" / "b" / "blob").write_bytes(os.urandom(24 * MiB))
    server = register_server(env, {"a": root / "web" / "a", "b": root / "web" / "b"})
    vault = create_vault(
        env,
        object_type="server",
        size=1,
        resources=[{"id": server["id"], "type": "OS::Nova::Server"}],
    )
    set_free_capacity(env, vault["id"], 8 * MiB)  # volume a fits, volume b does not
    failed = settled_backup(env, start_backup(env, vault["id"]))
    assert failed["status"] == "error", failed
    assert chunk_names(env, "region1", vault["id"]) == set()
    assert indexed_digests(env, vault["id"]) == set()
    assert vault_row(env, vault["id"]) == (GB - 8 * MiB, 0)


# --- two backups racing for the last capacity -----------------------------------------


@pytest.mark.slow
def test_two_concurrent_backups_never_together_exceed_the_vault_capacity(env: Env) -> None:
    ids = []
    for name in ("one", "two"):
        resource = register_dir(env, name=name)
        # Big enough that both run at the same time; one fits in what is free, not both.
        for index in range(6):
            (env.roots["region1"] / name / f"blob{index}").write_bytes(os.urandom(8 * MiB))
        ids.append(resource["id"])
    vault = create_vault(env, size=1, resources=[{"id": rid, "type": TURBO} for rid in ids])
    set_free_capacity(env, vault["id"], 80 * MiB)
    seen_reserved: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen_reserved.append(vault_row(env, vault["id"])[1])
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        checkpoints = [
            env.post(
                "region1",
                "/checkpoints",
                {"checkpoint": {"vault_id": vault["id"], "parameters": {"resources": [rid]}}},
            ).json()["checkpoint"]["id"]
            for rid in ids
        ]
        backups = [settled_backup(env, checkpoint) for checkpoint in checkpoints]
    finally:
        stop.set()
        watcher.join()

    statuses = sorted(b["status"] for b in backups)
    assert statuses == ["available", "error"], [(b["status"], b["fail_reason"]) for b in backups]
    failed = next(b for b in backups if b["status"] == "error")
    assert backup_log(env, failed["id"])["error_info"]["code"] == "BackupService.6114"
    used, reserved = vault_row(env, vault["id"])
    assert used <= GB and reserved == 0
    assert max(seen_reserved) <= 80 * MiB
    billing = env.get("region1", f"/vaults/{vault['id']}").json()["vault"]["billing"]
    assert billing["used"] <= billing["size"] * 1024


def test_room_a_younger_backup_gives_back_while_the_older_one_looks_goes_to_the_older(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The older of two backups short of room waits for the younger to end. When the
    younger gives its room back between the older's failed try and its look at who holds
    the room, the older must still get it: both failing was seen once in CI (PostgreSQL)."""
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "f").write_bytes(b"x" * 1000)
    vault = create_vault(env, size=1, resources=[{"id": resource["id"], "type": TURBO}])
    older = settled_backup(env, start_backup(env, vault["id"]))
    set_free_capacity(env, vault["id"], 4 * MiB)
    with env.db.transaction() as session:
        row = session.get(Backup, older["id"])
        assert row is not None
        younger = Backup(
            **{c: getattr(row, c) for c in BACKUP_IDENTITY},
            name="younger",
            status=BackupStatus.PROTECTING,
            reserved_bytes=4 * MiB,  # all the room there is
            created_at=row.created_at + timedelta(seconds=1),
        )
        session.add(younger)
        session.flush()
        younger_id, older_created = younger.id, row.created_at
        settle_capacity(session, vault["id"], released=-4 * MiB)

    def younger_fails() -> None:
        with env.db.transaction() as session:
            row = session.get(Backup, younger_id)
            assert row is not None
            row.status, row.reserved_bytes = BackupStatus.ERROR, 0
            settle_capacity(session, vault["id"], released=4 * MiB)

    sink = BudgetSink(
        env.db,
        LocalChunkStore(tmp_path / "store"),
        1,
        CapacityOwner(older["id"], vault["id"], older_created),
        PLAIN,
    )
    real_try = sink._try_reserve
    tries: list[bool] = []

    def try_then_younger_fails(needed: int) -> bool:
        got = real_try(needed)
        if not tries:  # the younger gives its room back right after the older's first try
            younger_fails()
        tries.append(got)
        return got

    monkeypatch.setattr(sink, "_try_reserve", try_then_younger_fails)
    data = os.urandom(MiB)
    assert sink.store(sink.name(data), data) > 0
    assert tries == [False, True]
    assert sink.reserved >= MiB
    assert vault_row(env, vault["id"])[1] == sink.reserved


# --- unusable region storage ---------------------------------------------------------


def test_backup_into_a_region_whose_storage_is_a_file_fails_at_once(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "f").write_bytes(b"x" * 1000)
    vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
    storage = Path(env.settings.data_dir / "store" / "region1")
    if storage.exists():
        shutil.rmtree(storage)
    storage.parent.mkdir(parents=True, exist_ok=True)
    storage.write_text("not a directory")
    started = time.monotonic()
    backup = settled_backup(env, start_backup(env, vault["id"]), timeout=30)
    assert time.monotonic() - started < env.settings.lease_seconds
    assert backup["status"] == "error", backup
    reason = "region storage unusable: storage path is not a directory"
    assert backup["fail_reason"] == reason
    log = backup_log(env, backup["id"])
    assert log["status"] == "failed" and log["error_info"]["message"] == reason
    assert str(env.settings.data_dir) not in str(backup) + str(log)


def test_a_rerun_after_a_crash_gives_back_the_dead_attempts_reservation(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "blob").write_bytes(os.urandom(2 * MiB))
    vault = create_vault(env, size=1, resources=[{"id": resource["id"], "type": TURBO}])
    set_free_capacity(env, vault["id"], 8 * MiB)
    with env.db.transaction() as session:  # workers wait while collection holds the vault
        row = session.get(Vault, vault["id"])
        assert row is not None
        row.gc_until = clock.now() + timedelta(minutes=5)
    checkpoint_id = start_backup(env, vault["id"])
    # What a worker killed mid-backup leaves: an expired lease and 7 of 8 free MiB reserved.
    with env.db.transaction() as session:
        (backup,) = session.scalars(select(Backup).where(Backup.checkpoint_id == checkpoint_id))
        backup.lease_until = clock.now() - timedelta(seconds=1)
        backup.attempts, backup.reserved_bytes = 1, 7 * MiB
        row = session.get(Vault, vault["id"])
        assert row is not None
        row.reserved_bytes, row.gc_until = 7 * MiB, None
    rerun = settled_backup(env, checkpoint_id)
    assert rerun["status"] == "available", rerun
    assert vault_row(env, vault["id"]) == (GB - 8 * MiB + rerun["stored_bytes"], 0)
