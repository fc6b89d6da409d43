"""The service as a real process: a tree backed up twice and replicated to region2 with a
SIGKILL in the middle of the copy; a SIGKILL during a backup; a SIGKILL during a migration
between vaults; memory stays flat.

The data is just big enough for what each test shows: a kill that lands mid-work (each
test asserts it did) and a backup many times larger than the memory it may use."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opencbr.storage import layout
from tests.e2e.flows import Client, Server, free_port, write_config
from tests.unit.archive_support import assert_same_tree

pytestmark = pytest.mark.slow  # real `opencbr` processes: seconds a test

MiB = 1 << 20
FAST_RECOVERY = "lease_seconds = 3.0\n"
# Sizes (chunks average ~1.3 MiB): enough chunks that a kill lands mid-copy...
REPLICATED_BYTES = 128 * MiB  # ~100 chunks; the kill comes at 10% of them
KILLED_BACKUP_BYTES = 96 * MiB  # ~75 chunks; the kill comes at 20
MIGRATED_BYTES = 128 * MiB  # ~100 chunks; the kill comes between 10% and 90% of them
RESTORED_BYTES = 64 * MiB  # one file: the kill comes while its temporary file is written
# ... and a file many times the memory a backup may add (the server grows ~55 MB).
STREAMED_BYTES = 768 * MiB


def make_tree(root: Path, total: int, seed: int) -> None:
    """Files of 4 KiB to 16 MiB: 60% incompressible, 40% text-like; deterministic."""
    rng = random.Random(seed)
    written, index = 0, 0
    while written < total:
        size = min(rng.choice([4096, 60_000, MiB, 4 * MiB, 16 * MiB]), total - written)
        folder = root / f"d{index % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        data = (
            rng.randbytes(size)
            if rng.random() < 0.6
            else rng.randbytes(size // 2 + 1).hex().encode()[:size]
        )
        (folder / f"f{index:04d}.bin").write_bytes(data)
        written, index = written + size, index + 1


def copy_tree(source: Path, target: Path) -> subprocess.Popen[bytes]:
    """`cp -a source target`, started (the caller waits for it)."""
    return subprocess.Popen(["cp", "-a", str(source), str(target)])


def mutate(root: Path, fraction: float, seed: int) -> None:
    """Overwrite `fraction` of the bytes in place, in ten clustered regions."""
    rng = random.Random(seed)
    files = sorted(p for p in root.rglob("*.bin") if p.stat().st_size >= 4 * MiB)
    total = sum(p.stat().st_size for p in root.rglob("*.bin"))
    for path in rng.sample(files, min(10, len(files))):
        with open(path, "r+b") as handle:
            length = int(total * fraction / 10)
            handle.seek(rng.randrange(max(1, path.stat().st_size - length)))
            handle.write(rng.randbytes(length))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server that is starting: the test makes its data meanwhile, then `wait_ready`s."""
    port = free_port()
    instance = Server(write_config(tmp_path, port, FAST_RECOVERY), tmp_path / "data", port)
    instance.launch()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def connect(server: Server) -> Iterator[Callable[[str], Client]]:
    """Clients for projects of the running server, closed at the end of the test."""
    opened: list[Client] = []

    def open_client(project_id: str) -> Client:
        opened.append(Client(server, project_id))
        return opened[-1]

    yield open_client
    for client in opened:
        client.http.close()


def chunk_count(store: Path) -> int:
    return (
        sum(len(files) for _dir, _sub, files in os.walk(store / "chunks")) if store.exists() else 0
    )


def test_replication_survives_a_sigkill_mid_copy_and_restores_identically(
    server: Server, tmp_path: Path, connect: Callable[[str], Client]
) -> None:
    source = tmp_path / "roots" / "region1" / "data"
    make_tree(source, REPLICATED_BYTES, seed=11)
    expected_first = tmp_path / "expected-first"
    copying = copy_tree(source, expected_first)  # while the server starts and backs up
    server.wait_ready()
    ids = server.projects()
    r1, r2 = connect(ids["region1"]), connect(ids["region2"])
    vault = r1.vault("vault-src", resources=[r1.register_dir("data", str(source))])
    first = r1.finished_backup(r1.start_backup(vault, "first"))
    assert copying.wait(timeout=120) == 0
    mutate(source, 0.02, seed=12)
    second = r1.finished_backup(r1.start_backup(vault, "second"))
    assert first["status"] == second["status"] == "available"
    assert second["stored_bytes"] < first["stored_bytes"] / 4
    dest = r2.vault("vault-dst", protect_type="replication")

    body = {
        "replicate": {
            "auto_trigger": False,
            "destination_project_id": ids["region2"],
            "destination_region": "region2",
            "destination_vault_id": dest,
            "vault_id": vault,
        }
    }
    answer = r1.call("POST", "/checkpoints/replicate", body)["replication"]
    assert len(answer["backups"]) == 2
    source_chunks = chunk_count(server.data_dir / "store" / "region1" / "vaults" / vault)
    dest_store = server.data_dir / "store" / "region2" / "vaults" / dest
    deadline = time.monotonic() + 120
    while chunk_count(dest_store) < 0.1 * source_chunks:
        assert time.monotonic() < deadline, "replication never reached 10%"
        time.sleep(0.01)
    server.kill()
    copied = chunk_count(dest_store)
    assert copied <= 0.9 * source_chunks, f"the kill came too late: {copied}/{source_chunks}"
    server.start()

    def all_ended(body: dict[str, object]) -> bool:
        records = [r for b in body["backups"] for r in b["replication_records"]]  # type: ignore[attr-defined]
        return len(records) == 2 and all(r["status"] in ("success", "fail") for r in records)

    listing = r1.wait("/backups", all_ended, vault_id=vault, show_replication="true")
    records = [r for b in listing["backups"] for r in b["replication_records"]]
    assert [r["status"] for r in records] == ["success", "success"], records
    replicas = r2.call("GET", "/backups", vault_id=dest)["backups"]
    assert len(replicas) == 2 and {b["status"] for b in replicas} == {"available"}
    by_source = {b["source_backup_id"]: b["id"] for b in replicas}
    for name, backup_id, expected in (
        ("one", by_source[first["id"]], expected_first),
        ("two", by_source[second["id"]], source),
    ):
        target = tmp_path / "roots" / "region2" / name
        target.mkdir()
        log = r2.restore(backup_id, r2.register_dir(name, str(target)))
        assert log["status"] == "success", log
        assert_same_tree(expected, target)
    again = r1.http.post("/checkpoints/replicate", json=body)
    assert again.status_code == 400 and again.json()["error_code"] == "BackupService.0001"


def test_sigkill_during_backup_ends_available_or_error_never_stuck(
    server: Server, tmp_path: Path, connect: Callable[[str], Client]
) -> None:
    source = tmp_path / "roots" / "region1" / "data"
    make_tree(source, KILLED_BACKUP_BYTES, seed=21)
    server.wait_ready()
    r1 = connect(server.projects()["region1"])
    vault = r1.vault("v", resources=[r1.register_dir("data", str(source))])
    checkpoint = r1.start_backup(vault, "interrupted")
    store = server.data_dir / "store" / "region1" / "vaults" / vault
    deadline = time.monotonic() + 60
    while chunk_count(store) < 20:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    server.kill()
    assert not list((store / layout.MANIFESTS_FOLDER).glob("*")), "the kill came too late"
    server.start()
    backup = r1.finished_backup(checkpoint)
    assert backup["status"] in ("available", "error")
    if backup["status"] == "available":
        target = tmp_path / "roots" / "region1" / "restored"
        target.mkdir()
        log = r1.restore(backup["id"], r1.register_dir("restored", str(target)))
        assert log["status"] == "success", log
        assert_same_tree(source, target)
    logs = r1.call("GET", "/operation-logs", operation_type="backup")["operation_logs"]
    assert logs[0]["status"] in ("success", "failed")


def test_backing_up_a_large_file_grows_the_server_by_a_fraction_of_it(
    server: Server, tmp_path: Path, connect: Callable[[str], Client]
) -> None:
    source = tmp_path / "roots" / "region1" / "big"
    source.mkdir()
    block = random.Random(5).randbytes(64 * MiB)
    with open(source / "big.bin", "wb") as handle:
        for index in range(STREAMED_BYTES // len(block)):
            handle.write(block[index:] + block[:index])  # shifted: every block differs
    server.wait_ready()
    r1 = connect(server.projects()["region1"])
    vault = r1.vault("v", resources=[r1.register_dir("big", str(source))])
    assert server.process is not None
    before_kb = memory_kb(server.process.pid, "VmRSS")
    backup = r1.finished_backup(r1.start_backup(vault, "big"))
    assert backup["status"] == "available" and backup["size_bytes"] >= STREAMED_BYTES
    peak_kb = memory_kb(server.process.pid, "VmHWM")
    assert peak_kb < 300 * 1024, f"peak RSS {peak_kb} kB"
    # Memory that grew with the data, even by an eighth of it, would fail here.
    growth_kb = peak_kb - before_kb
    assert growth_kb < STREAMED_BYTES / 8 / 1024, f"grew by {growth_kb} kB (from {before_kb} kB)"


def assert_whole_in_one_vault(database: Path, store: Path, vault_ids: set[str]) -> int:
    """Read the stopped server's database and stores: every backup is in one of the two
    vaults, and that vault's store holds its manifest and every chunk it references (a
    server backup's volumes hold its data: they are checked). Returns how many were."""
    with sqlite3.connect(database) as connection:
        backups = connection.execute("SELECT id, vault_id FROM backups WHERE kind != 'server'")
        units = list(backups)
        for backup_id, vault_id in units:
            assert vault_id in vault_ids, (backup_id, vault_id)
            vault = store / vault_id
            assert (vault / "manifests" / f"backup-{backup_id}").is_file(), backup_id
            digests = connection.execute(
                "SELECT digest FROM backup_chunks WHERE backup_id = ?", (backup_id,)
            )
            for (digest,) in digests:
                assert (vault / "chunks" / digest[:2] / digest).is_file(), (backup_id, digest)
    return len(units)


def test_sigkill_during_a_restore_reruns_it_and_leaves_no_temporary_file(
    server: Server, tmp_path: Path, connect: Callable[[str], Client]
) -> None:
    source = tmp_path / "roots" / "region1" / "data"
    source.mkdir(parents=True)
    (source / "big.bin").write_bytes(random.Random(41).randbytes(RESTORED_BYTES))
    (source / "small.txt").write_text("small\n")
    server.wait_ready()
    r1 = connect(server.projects()["region1"])
    vault = r1.vault("restored", resources=[r1.register_dir("data", str(source))])
    backup = r1.finished_backup(r1.start_backup(vault, "one"))
    target = tmp_path / "roots" / "region1" / "target"
    target.mkdir()
    (target / "big.bin").write_bytes(b"old contents\n")
    target_id = r1.register_dir("target", str(target))
    r1.call("POST", f"/backups/{backup['id']}/restore", {"restore": {"resource_id": target_id}})
    deadline = time.monotonic() + 60
    while not [p for p in os.listdir(target) if p.startswith(".opencbr-restore-")]:
        assert time.monotonic() < deadline, "the restore never wrote its temporary file"
        time.sleep(0.002)
    server.kill()
    assert [p for p in os.listdir(target) if p.startswith(".opencbr-restore-")], "no leftover"
    server.start()

    def ended(body: dict[str, Any]) -> bool:
        return bool(body["operation_logs"]) and all(
            x["status"] in ("success", "failed") for x in body["operation_logs"]
        )

    logs = r1.wait("/operation-logs", ended, operation_type="restore")["operation_logs"]
    assert [x["status"] for x in logs] == ["success"], logs
    assert sorted(os.listdir(target)) == ["big.bin", "small.txt"]
    assert_same_tree(source, target)
    assert "restore removed an earlier attempt's temporary files" in server.log()


def test_sigkill_during_a_migration_leaves_every_backup_whole_in_one_vault(
    server: Server, tmp_path: Path, connect: Callable[[str], Client]
) -> None:
    source = tmp_path / "roots" / "region1" / "data"
    make_tree(source, MIGRATED_BYTES, seed=31)
    expected_first = tmp_path / "expected-first"
    copying = copy_tree(source, expected_first)  # while the server starts and backs up
    server.wait_ready()
    r1 = connect(server.projects()["region1"])
    vault = r1.vault("from", resources=[r1.register_dir("data", str(source))])
    first = r1.finished_backup(r1.start_backup(vault, "first"))
    assert copying.wait(timeout=120) == 0
    mutate(source, 0.02, seed=32)
    second = r1.finished_backup(r1.start_backup(vault, "second"))
    dest = r1.vault("to")
    stores = server.data_dir / "store" / "region1" / "vaults"
    source_chunks = chunk_count(stores / vault)

    moved = r1.call("POST", f"/vaults/{vault}/migrateresources", {"destination_vault_id": dest})
    assert len(moved["migrated_resources"]) == 1
    deadline = time.monotonic() + 120
    while not 0.1 * source_chunks <= chunk_count(stores / dest) <= 0.9 * source_chunks:
        assert time.monotonic() < deadline, "the migration never reached 10%"
        time.sleep(0.005)
    server.kill()
    assert assert_whole_in_one_vault(server.data_dir / "opencbr.db", stores, {vault, dest}) >= 2
    server.start()

    r1.wait(f"/vaults/{dest}", lambda b: len(b["vault"]["resources"]) == 1)
    in_dest = {b["id"] for b in r1.call("GET", "/backups", vault_id=dest)["backups"]}
    assert in_dest == {first["id"], second["id"]}
    assert r1.call("GET", "/backups", vault_id=vault)["backups"] == []
    r1.wait(f"/vaults/{vault}", lambda _b: chunk_count(stores / vault) == 0)  # collected
    server.kill()
    assert_whole_in_one_vault(server.data_dir / "opencbr.db", stores, {dest})
    server.start()
    for name, backup_id, expected in (
        ("one", first["id"], expected_first),
        ("two", second["id"], source),
    ):
        target = tmp_path / "roots" / "region1" / name
        target.mkdir()
        log = r1.restore(backup_id, r1.register_dir(name, str(target)))
        assert log["status"] == "success", log
        assert_same_tree(expected, target)


def memory_kb(pid: int, field: str) -> int:
    """A memory figure of /proc/<pid>/status (VmRSS now, VmHWM the peak), in kB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field)))
