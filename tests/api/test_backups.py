"""Backups over HTTP: real trees and disk images backed up, changed, backed up again and
restored byte for byte; operation logs; deletes; corruption; capacity."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from opencbr.db import chunks
from opencbr.db.session import Database
from opencbr.settings import RegionSettings
from tests.api.helpers import (
    Env,
    assert_error,
    backup_now,
    chunk_names,
    chunks_dir,
    create_vault,
    flip_byte,
    largest_chunk,
    make_settings,
    register_dir,
    register_disk,
    register_server,
    register_web_server,
    restore,
    serving,
)
from tests.unit.archive_support import assert_same_tree, build_tree, mutate_in_place

MiB = 1 << 20


def _many_small_files(root: Path, count: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    for index in range(count):
        folder = root / "many" / f"d{index // 200:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{index:05d}.txt").write_bytes(rng.randbytes(rng.randrange(0, 8192)))


@pytest.fixture
def tree(env: Env) -> tuple[Path, dict[str, Any]]:
    source = env.roots["region1"] / "source"
    build_tree(source, big_files=3, big_size=8 * MiB)
    _many_small_files(source, 2500)
    return source, register_dir(env, name="source")


@pytest.mark.slow
def test_tree_backup_incremental_and_byte_identical_restores(
    env: Env, tree: tuple[Path, dict[str, Any]]
) -> None:
    source, resource = tree
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    first = backup_now(env, vault["id"], name="first")
    assert first["status"] == "available" and first["image_type"] == "backup"
    assert first["resource_id"] == resource["id"]
    snapshot_dir = env.roots["region1"] / "expected-first"
    os.system(f"cp -a '{source}' '{snapshot_dir}'")
    changed = mutate_in_place(source, 0.02)
    second = backup_now(env, vault["id"], name="second")
    assert 0 < second["stored_bytes"] <= changed * 2 + 4 * MiB, (second["stored_bytes"], changed)
    assert second["stored_bytes"] < first["stored_bytes"] / 5
    used = env.get("region1", f"/vaults/{vault['id']}").json()["vault"]["billing"]["used"]
    assert used == -(-(first["stored_bytes"] + second["stored_bytes"]) // MiB)

    target = register_dir(env, name="target")
    log = restore(env, first["id"], {"resource_id": target["id"]})
    assert log["status"] == "success", log
    assert log["extra_info"]["common"]["progress"] == 100
    restored = log["extra_info"]["common"]["bytes_done"]  # the tar stream, 24 MiB and more
    assert restored == log["extra_info"]["common"]["bytes_total"] >= 24 * MiB
    assert_same_tree(snapshot_dir, env.roots["region1"] / "target")
    empty = register_dir(env, name="target2")
    log = restore(env, second["id"], {"resource_id": empty["id"]})
    assert log["status"] == "success", log
    assert_same_tree(source, env.roots["region1"] / "target2")


def test_incremental_tree_backup_does_not_read_unchanged_files(
    env: Env, tree: tuple[Path, dict[str, Any]]
) -> None:
    source, resource = tree
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    with structlog.testing.capture_logs() as events:
        backup_now(env, vault["id"])
    (first,) = [e for e in events if e["event"] == "backup unit written"]
    files = first["files_read"]
    assert first["files_reused"] == 0 and files > 2500
    with open(source / "big1.bin", "r+b") as handle:
        handle.write(b"changed")
    small = sorted((source / "many").rglob("*.txt"))[::500]  # 5 of 2,500 small files
    for path in small:
        with open(path, "r+b") as handle:  # in place: same size, new mtime and ctime
            handle.write(b"!")
    unchanged = sum((source / name).stat().st_size for name in ("big0.bin", "big2.bin"))
    with structlog.testing.capture_logs() as events:
        second = backup_now(env, vault["id"])
    (written,) = [e for e in events if e["event"] == "backup unit written"]
    # The changed large file and the groups of the 5 changed small files are read (a
    # group shares one chunk among at most GROUP_MAX_MEMBERS members, ~8 of these files
    # on average); every other file, large or small, is not.
    assert written["files_read"] + written["files_reused"] == files
    assert 1 + len(small) <= written["files_read"] <= 1 + len(small) * 20
    assert written["bytes_reused"] > unchanged
    assert second["stored_bytes"] < 8 * MiB  # big1.bin's 8 MiB are stored as ~1-4 chunks
    target = register_dir(env, name="target")
    assert restore(env, second["id"], {"resource_id": target["id"]})["status"] == "success"
    assert_same_tree(source, env.roots["region1"] / "target")


@pytest.mark.slow
def test_sparse_disk_image_backup_and_restore(env: Env) -> None:
    # 12 MiB of data in 256 MiB: storing or restoring the holes as data fails both bounds.
    size = 256 * MiB
    disk = register_disk(env, name="sda", size=size)
    image = env.roots["region1"] / "sda.img"
    rng = random.Random(5)
    blocks = {}
    with open(image, "r+b") as handle:
        for _ in range(12):
            offset = rng.randrange(0, size - MiB)
            data = rng.randbytes(MiB)
            handle.seek(offset)
            handle.write(data)
            blocks[offset] = data
    vault = create_vault(
        env, object_type="disk", resources=[{"id": disk["id"], "type": "OS::Cinder::Volume"}]
    )
    backup = backup_now(env, vault["id"])
    assert backup["size_bytes"] == size
    assert backup["stored_bytes"] < 64 * MiB
    target = register_disk(env, name="sdb", size=0)
    log = restore(env, backup["id"], {"volume_id": target["id"]})
    assert log["status"] == "success", log
    restored = env.roots["region1"] / "sdb.img"
    assert restored.stat().st_size == size
    assert restored.stat().st_blocks * 512 < 128 * MiB  # holes stay holes
    with open(image, "rb") as want, open(restored, "rb") as got:
        while chunk := want.read(16 * MiB):
            assert got.read(len(chunk)) == chunk


def test_operation_logs_follow_backup_and_restore(env: Env, tmp_path: Path) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "hello.txt").write_text("hello")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"], name="nightly", description="first")
    logs = env.get(
        "region1", "/operation-logs", params={"operation_type": "backup", "vault_id": vault["id"]}
    ).json()
    assert logs["count"] == 1
    entry = logs["operation_logs"][0]
    assert entry["status"] == "success" and entry["ended_at"] is not None
    assert entry["extra_info"]["backup"]["backup_id"] == backup["id"]
    assert entry["extra_info"]["resource"]["id"] == resource["id"]
    assert entry["vault_name"] == vault["name"]
    # opencbr's byte counts: the tar stream read (headers, 512-byte blocks, end marker).
    common = entry["extra_info"]["common"]
    assert common["progress"] == 100
    assert common["bytes_done"] == common["bytes_total"] >= 2048
    shown = env.get("region1", f"/operation-logs/{entry['id']}").json()["operation_log"]
    assert shown["id"] == entry["id"]
    assert_error(env.get("region1", "/operation-logs/nope"), 404, "BackupService.6500")
    assert_error(
        env.get("region1", "/operation-logs", params={"operation_type": "bogus"}),
        400,
        "BackupService.9900",
    )
    assert env.get("region1", "/operation-logs", params={"status": "failed"}).json()["count"] == 0


def test_backup_list_filters_sort_and_update(env: Env) -> None:
    resource = register_dir(env)
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    made = [backup_now(env, vault["id"], name=f"b{i}") for i in range(3)]
    listing = env.get("region1", "/backups", params={"vault_id": vault["id"]}).json()
    assert listing["count"] == 3
    assert [b["id"] for b in listing["backups"]] == [b["id"] for b in reversed(made)]
    by_name = env.get("region1", "/backups", params={"sort": "name:asc"}).json()["backups"]
    assert [b["name"] for b in by_name] == ["b0", "b1", "b2"]
    assert (
        env.get("region1", "/backups", params={"name": "b1"}).json()["backups"][0]["id"]
        == made[1]["id"]
    )
    assert (
        env.get(
            "region1", "/backups", params=[("status", "error"), ("status", "available")]
        ).json()["count"]
        == 3
    )
    assert env.get("region1", "/backups", params={"image_type": "replication"}).json()["count"] == 0
    page = env.get("region1", "/backups", params={"limit": 1, "marker": made[2]["id"]}).json()[
        "backups"
    ]
    assert [b["id"] for b in page] == [made[1]["id"]]
    assert (
        env.get("region1", "/backups", params={"start_time": "2000-01-01T00:00:00Z"}).json()[
            "count"
        ]
        == 3
    )
    assert (
        env.get("region1", "/backups", params={"end_time": "2000-01-01T00:00:00Z"}).json()["count"]
        == 0
    )
    assert_error(
        env.get("region1", "/backups", params={"sort": "size:up"}), 400, "BackupService.9900"
    )
    assert_error(
        env.get("region1", "/backups", params={"start_time": "yesterday"}),
        400,
        "BackupService.9900",
    )
    renamed = env.put(
        "region1", f"/backups/{made[0]['id']}", {"backup": {"name": "renamed"}}
    ).json()["backup"]
    assert renamed["name"] == "renamed"
    assert_error(
        env.put("region1", f"/backups/{made[0]['id']}", {"backup": {"name": 7}}),
        400,
        "BackupService.9900",
    )
    assert_error(env.get("region1", "/backups/unknown"), 404, "BackupService.6200")


def test_delete_backup_then_garbage_collection_reclaims_space(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "blob").write_bytes(random.Random(1).randbytes(3 * MiB))
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"])
    assert env.get("region1", f"/vaults/{vault['id']}").json()["vault"]["billing"]["used"] >= 3
    assert env.delete("region1", f"/backups/{backup['id']}").status_code == 204
    env.wait_for("region1", "/backups", lambda b: b["count"] == 0)
    env.wait_for("region1", f"/vaults/{vault['id']}", lambda b: b["vault"]["billing"]["used"] == 0)
    assert not chunk_names(env, "region1", vault["id"])
    logs = env.get("region1", "/operation-logs", params={"operation_type": "delete"}).json()[
        "operation_logs"
    ]
    assert (
        logs[0]["status"] == "success"
        and logs[0]["extra_info"]["delete"]["backup_id"] == backup["id"]
    )
    assert_error(env.delete("region1", f"/backups/{backup['id']}"), 404, "BackupService.6200")


def test_corrupted_chunk_is_detected_at_restore(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "blob").write_bytes(random.Random(2).randbytes(2 * MiB))
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"])
    victim = largest_chunk(env, "region1", vault["id"])
    flip_byte(victim)
    target = register_dir(env, name="target")
    log = restore(env, backup["id"], {"resource_id": target["id"]})
    assert log["status"] == "failed"
    # The chunk is named, in words for people (no exception class, no store path).
    assert log["error_info"]["message"].startswith(f"chunk {victim.name}")
    assert str(env.settings.data_dir) not in log["error_info"]["message"]
    assert env.get("region1", f"/backups/{backup['id']}").json()["backup"]["status"] == "available"


def test_checkpoint_validation(env: Env) -> None:
    empty = create_vault(env, name="empty")
    assert_error(
        env.post("region1", "/checkpoints", {"checkpoint": {"vault_id": empty["id"]}}),
        400,
        "BackupService.0001",
    )
    assert_error(
        env.post("region1", "/checkpoints", {"checkpoint": {"vault_id": "nope"}}),
        404,
        "BackupService.6105",
    )
    assert_error(env.post("region1", "/checkpoints", {"checkpoint": {}}), 400, "BackupService.9900")
    replication = create_vault(env, name="repl", protect_type="replication")
    assert_error(
        env.post("region1", "/checkpoints", {"checkpoint": {"vault_id": replication["id"]}}),
        400,
        "BackupService.6124",
    )
    resource = register_dir(env)
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    body = {"checkpoint": {"vault_id": vault["id"], "parameters": {"resources": ["other"]}}}
    assert_error(env.post("region1", "/checkpoints", body), 400, "BackupService.6135")
    assert_error(env.get("region1", "/checkpoints/nope"), 404, "BackupService.6217")
    viewer = env.client.post(
        env.url("region1", "/checkpoints"),
        json={"checkpoint": {"vault_id": vault["id"]}},
        headers=env.headers("region1", "viewer"),
    )
    assert_error(viewer, 403, "APIGW.0302")


def test_backup_exceeding_capacity_fails_with_6114(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "big").write_bytes(random.Random(9).randbytes(3 * MiB))
    vault = create_vault(env, size=1, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    env.client.app.state.db  # noqa: B018 - the vault is 1 GB; shrink it below the data instead
    with env.db.transaction() as session:
        from opencbr.db.vaults import Vault

        row = session.get(Vault, vault["id"])
        assert row is not None
        row.used_bytes = (1 << 30) - MiB  # almost full: 1 MiB left
    response = env.post("region1", "/checkpoints", {"checkpoint": {"vault_id": vault["id"]}})
    checkpoint = response.json()["checkpoint"]
    done = env.wait_for(
        "region1",
        f"/checkpoints/{checkpoint['id']}",
        lambda b: b["checkpoint"]["status"] != "protecting",
    )
    assert done["checkpoint"]["status"] == "error"
    logs = env.get("region1", "/operation-logs", params={"operation_type": "backup"}).json()[
        "operation_logs"
    ]
    assert logs[0]["status"] == "failed" and logs[0]["error_info"]["code"] == "BackupService.6114"


def test_vault_delete_removes_backups_and_store(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "f").write_bytes(b"x" * 1000)
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"])
    assert env.delete("region1", f"/vaults/{vault['id']}").status_code == 204
    assert_error(env.get("region1", f"/backups/{backup['id']}"), 404, "BackupService.6200")
    store = env.settings.data_dir / "store" / "region1" / "vaults" / vault["id"]
    env.wait_for("region1", "/vaults", lambda _b: not store.exists())


def test_a_vault_is_deleted_with_a_backup_still_being_deleted(env: Env) -> None:
    """Deleting a backup, then its vault at once (a cleanup script): the backup on its way
    out goes with the vault (not 6203 "performing backups"), its delete log ends, and its
    delete task, run after, finds nothing to do and leaves no store behind."""
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "f").write_bytes(b"x" * 1000)
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"])
    jobs = env.client.app.state.jobs  # type: ignore[attr-defined]
    jobs.stop()  # the delete task waits in the queue: the backup stays `deleting`
    assert env.delete("region1", f"/backups/{backup['id']}").status_code == 204
    shown = env.get("region1", f"/backups/{backup['id']}").json()["backup"]
    assert shown["status"] == "deleting"
    assert env.delete("region1", f"/vaults/{vault['id']}").status_code == 204
    assert_error(env.get("region1", f"/backups/{backup['id']}"), 404, "BackupService.6200")
    assert_error(env.get("region1", f"/vaults/{vault['id']}"), 404, "BackupService.6105")
    logs = env.get("region1", "/operation-logs", params={"operation_type": "delete"}).json()
    [log] = logs["operation_logs"]
    assert log["status"] == "success" and log["extra_info"]["delete"]["backup_id"] == backup["id"]
    jobs.start(workers=1)  # the queued delete task and the vault's purge run now
    store = env.settings.data_dir / "store" / "region1" / "vaults" / vault["id"]
    env.wait_for("region1", "/vaults", lambda _b: not store.exists())
    env.wait_for(
        "region1",
        "/operation-logs",
        lambda b: all(entry["status"] != "running" for entry in b["operation_logs"]),
    )


def test_server_backup_has_volume_children_and_restores_by_mapping(env: Env) -> None:
    root = env.roots["region1"]
    image = bytearray(8 * MiB)  # mostly zeros: not stored, restored as holes
    image[MiB : MiB + 7000] = b"payload" * 1000
    server = register_web_server(env, bytes(image))
    vault = create_vault(
        env, object_type="server", resources=[{"id": server["id"], "type": "OS::Nova::Server"}]
    )
    backup = backup_now(env, vault["id"])
    assert {c["resource_name"] for c in backup["children"]} == {"sys", "data"}
    assert backup["extend_info"]["supported_restore_mode"] == "backup"
    (root / "web2" / "sys").mkdir(parents=True)
    (root / "web2" / "data.img").write_bytes(b"")
    other = register_server(
        env, {"a": root / "web2" / "sys", "b": root / "web2" / "data.img"}, name="web2"
    )
    volumes = {c["name"]: c["id"] for c in other["children"]}
    children = {c["resource_name"]: c["id"] for c in backup["children"]}
    mappings = [
        {"backup_id": children["sys"], "volume_id": volumes["a"]},
        {"backup_id": children["data"], "volume_id": volumes["b"]},
    ]
    log = restore(
        env, backup["id"], {"server_id": other["id"], "mappings": mappings, "power_on": True}
    )
    assert log["status"] == "success", log
    assert (root / "web2" / "sys" / "etc.conf").read_text() == "port=80\n"
    assert (root / "web2" / "data.img").read_bytes() == (root / "web" / "data.img").read_bytes()


def test_restore_validation(env: Env) -> None:
    resource = register_dir(env)
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"])
    assert_error(
        env.post("region1", "/backups/nope/restore", {"restore": {}}), 404, "BackupService.6200"
    )
    assert_error(
        env.post(
            "region1", f"/backups/{backup['id']}/restore", {"restore": {"resource_id": "nope"}}
        ),
        404,
        "BackupService.6302",
    )
    disk = register_disk(env)
    assert_error(
        env.post(
            "region1", f"/backups/{backup['id']}/restore", {"restore": {"resource_id": disk["id"]}}
        ),
        404,
        "BackupService.6302",
    )
    assert_error(
        env.post(
            "region1",
            f"/backups/{backup['id']}/restore",
            {"restore": {"details": {"destination_path": "../../escape"}}},
        ),
        400,
        "BackupService.9900",
    )
    assert_error(
        env.post("region1", f"/backups/{backup['id']}/restore", {"restore": "x"}),
        400,
        "BackupService.9900",
    )


def test_a_restore_target_field_of_another_kind_is_refused_not_ignored(env: Env) -> None:
    """A directory backup given `volume_id`, `server_id` or `mappings` (the fields of disk
    and server restores) once went to the backed-up directory itself, over the data the
    caller meant to keep: now each is refused, and the source is untouched."""
    source = env.roots["region1"] / "data"
    source.mkdir()
    (source / "kept.txt").write_bytes(b"the original")
    resource = register_dir(env)
    other = register_dir(env, name="other")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"])
    (source / "kept.txt").write_bytes(b"changed since the backup")
    url = f"/backups/{backup['id']}/restore"
    for body in (
        {"volume_id": other["id"]},
        {"server_id": other["id"]},
        {"mappings": [{"backup_id": backup["id"], "volume_id": other["id"]}]},
        {"resource_id": other["id"], "volume_id": other["id"]},
    ):
        response = env.post("region1", url, {"restore": body})
        assert_error(response, 400, "BackupService.9900")
        assert "does not apply to the restore of a directory (turbo) backup" in response.text
    disk = register_disk(env)
    disk_vault = create_vault(
        env,
        name="disks",
        object_type="disk",
        resources=[{"id": disk["id"], "type": "OS::Cinder::Volume"}],
    )
    disk_backup = backup_now(env, disk_vault["id"])
    for body in (
        {"details": {"destination_path": "sub"}},
        {"server_id": disk["id"]},
        {"volume_id": disk["id"], "resource_id": other["id"]},
    ):
        response = env.post("region1", f"/backups/{disk_backup['id']}/restore", {"restore": body})
        assert_error(response, 400, "BackupService.9900")
    assert (source / "kept.txt").read_bytes() == b"changed since the backup"
    assert (
        env.get("region1", "/operation-logs", params={"operation_type": "restore"}).json()["count"]
        == 0
    )
    restore(env, backup["id"], {"resource_id": other["id"]})  # the right field
    assert (source / "kept.txt").read_bytes() == b"changed since the backup"
    assert (env.roots["region1"] / "other" / "kept.txt").read_bytes() == b"the original"


def test_one_directory_registered_twice_is_one_place_to_restore_into(env: Env) -> None:
    """A directory may be registered as two resources (to keep it in two vaults), but a
    restore into one is refused while the other is restored into (2010) or backed up
    (2002): they are one place to write."""
    source = env.roots["region1"] / "data"
    source.mkdir()
    (source / "f").write_bytes(b"x" * 1000)
    first = register_dir(env)
    second = register_dir(env, name="again", subdir="data")
    assert first["id"] != second["id"]
    vault = create_vault(env, resources=[{"id": first["id"], "type": "OS::Sfs::Turbo"}])
    other_vault = create_vault(
        env, name="v2", resources=[{"id": second["id"], "type": "OS::Sfs::Turbo"}]
    )
    backup = backup_now(env, vault["id"])
    url = f"/backups/{backup['id']}/restore"
    other_url = f"/backups/{backup_now(env, other_vault['id'])['id']}/restore"
    jobs = env.client.app.state.jobs  # type: ignore[attr-defined]
    jobs.stop()  # what is started stays under way
    assert env.post("region1", url, {"restore": {"resource_id": first["id"]}}).status_code == 202
    into_second = env.post("region1", other_url, {"restore": {"resource_id": second["id"]}})
    assert_error(into_second, 400, "BackupService.2010")
    jobs.start(workers=1)
    logs = "/operation-logs?operation_type=restore"
    env.wait_for("region1", logs, lambda b: b["operation_logs"][0]["status"] == "success")
    jobs.stop()
    checkpoint = {"checkpoint": {"vault_id": other_vault["id"], "parameters": {}}}
    assert env.post("region1", "/checkpoints", checkpoint).status_code == 200
    into_first = env.post("region1", url, {"restore": {"resource_id": first["id"]}})
    assert_error(into_first, 400, "BackupService.2002")
    jobs.start(workers=1)
    env.wait_for(
        "region1",
        f"/backups?vault_id={other_vault['id']}",
        lambda b: [x["status"] for x in b["backups"]] == ["available", "available"],
    )


def test_a_torn_chunk_file_left_by_a_crash_is_rewritten_by_the_next_backup(env: Env) -> None:
    """Chunks are published before the flush that makes them durable: after a power cut
    a chunk's name can exist without its data (and stays until garbage collection's
    margin). A backup that needs that chunk rewrites it instead of trusting the name."""
    first_tree = env.roots["region1"] / "first"
    build_tree(first_tree, big_files=2, big_size=3 * 1024 * 1024)
    first = register_dir(env, name="first")
    vault_a = create_vault(env, name="a", resources=[{"id": first["id"], "type": "OS::Sfs::Turbo"}])
    backup_now(env, vault_a["id"])
    second_tree = env.roots["region1"] / "second"
    subprocess.run(["cp", "-a", str(first_tree), str(second_tree)], check=True)  # same times
    second = register_dir(env, name="second")
    vault_b = create_vault(
        env, name="b", resources=[{"id": second["id"], "type": "OS::Sfs::Turbo"}]
    )
    torn = []
    for name in chunk_names(env, "region1", vault_a["id"]):
        leftover = chunks_dir(env, "region1", vault_b["id"]) / name[:2] / name
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b"")
        torn.append(leftover)
    backup = backup_now(env, vault_b["id"])
    assert backup["status"] == "available"
    rewritten = [path for path in torn if path.stat().st_size > 0]
    assert rewritten, "the second tree shares no chunk with the first"
    referenced = _referenced(env, backup["id"])
    assert all(p.stat().st_size > 0 for p in torn if p.name in referenced)
    target = register_dir(env, name="restored")
    log = restore(env, backup["id"], {"resource_id": target["id"]})
    assert log["status"] == "success", log
    assert_same_tree(second_tree, env.roots["region1"] / "restored")


def _referenced(env: Env, backup_id: str) -> set[str]:
    with env.db.reading() as session:
        return {d for d, _p, _s in chunks.missing_in_vault(session, backup_id, "none")}


def test_linking_counts_the_chunks_the_vault_indexes_whether_or_not_linked_already(
    env: Env,
) -> None:
    """The commit's check that every chunk a backup references is indexed rests on
    link_backup's count: a chunk the index lacks is counted out, one linked already is
    counted in (and not linked twice)."""
    build_tree(env.roots["region1"] / "linked", big_files=1, big_size=2 * 1024 * 1024)
    resource = register_dir(env, name="linked")
    vault = create_vault(
        env, name="l", resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}]
    )
    backup = backup_now(env, vault["id"])
    referenced = _referenced(env, backup["id"])
    with env.db.transaction() as session:
        before = chunks.backup_totals(session, backup["id"])
        assert chunks.link_backup(session, backup["id"], vault["id"], referenced) == len(referenced)
        unknown = [*referenced, "0" * 64]
        assert chunks.link_backup(session, backup["id"], vault["id"], unknown) == len(referenced)
        assert chunks.backup_totals(session, backup["id"]) == before
    assert before[0] == len(referenced) > 1


@pytest.fixture
def slow_store_env(tmp_path: Path, database: Database) -> Iterator[Env]:
    """Like `env`, but region1's store takes 0.25 s per chunk: a backup is seen running."""
    storage = f"faulty+{tmp_path / 'data' / 'store' / 'region1'}?delay=0.25"
    regions = [RegionSettings(name="region1", storage=storage)]
    with serving(make_settings(tmp_path, regions=regions), database) as running:
        yield running


@pytest.mark.slow
def test_an_incremental_takes_its_progress_total_from_the_previous_backup(
    slow_store_env: Env,
) -> None:
    """A tree backed up before is not walked for its size first (a walk of many small
    files costs about as much as their incremental): its progress total is the stream
    size its previous backup recorded, and the final count is what it read."""
    env = slow_store_env
    tree = env.roots["region1"] / "shrinking"
    tree.mkdir()
    rng = random.Random(1)
    for n in range(12):
        (tree / f"{n:02d}.bin").write_bytes(rng.randbytes(MiB))
    resource = register_dir(env, name="shrinking")
    vault = create_vault(
        env, name="g", resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}]
    )
    backup_now(env, vault["id"])
    [first] = _backup_logs(env, vault["id"])
    recorded = first["extra_info"]["common"]["bytes_total"]
    for n in range(12):  # smaller now, and new chunks the slow store takes seconds to write
        (tree / f"{n:02d}.bin").write_bytes(rng.randbytes(3 * MiB // 4))
    env.post("region1", "/checkpoints", {"checkpoint": {"vault_id": vault["id"]}})
    logs = f"/operation-logs?operation_type=backup&vault_id={vault['id']}"
    running = env.wait_for(
        "region1",
        logs,
        lambda body: any(
            log["status"] == "running" and "bytes_total" in log["extra_info"].get("common", {})
            for log in body["operation_logs"]
        ),
        timeout=60,
    )
    [seen] = [log for log in running["operation_logs"] if log["status"] == "running"]
    assert seen["extra_info"]["common"]["bytes_total"] == recorded > 12 * MiB
    env.wait_for(
        "region1",
        logs,
        lambda body: all(log["status"] == "success" for log in body["operation_logs"]),
    )
    final = next(log for log in _backup_logs(env, vault["id"]) if log["id"] == seen["id"])
    common = final["extra_info"]["common"]
    assert 9 * MiB < common["bytes_done"] == common["bytes_total"] < 10 * MiB


def _backup_logs(env: Env, vault_id: str) -> list[dict[str, Any]]:
    params = {"operation_type": "backup", "vault_id": vault_id}
    logs: list[dict[str, Any]] = env.get("region1", "/operation-logs", params=params).json()[
        "operation_logs"
    ]
    return logs
