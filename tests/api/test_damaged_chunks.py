"""Damaged chunks over HTTP, with real files: a stored chunk whose bytes were flipped is
found by the first read that needs it, marked damaged in the vault's index, reported on
every backup that references it, and stored anew by the next backup or replication of
the same data. Store faults reach operation logs without server paths."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

from opencbr.storage.layout import manifest_name
from tests.api.helpers import (
    Env,
    backup_now,
    chunk_intact,
    chunk_names,
    chunks_dir,
    create_vault,
    flip_byte,
    largest_chunk,
    read_manifest,
    register_dir,
    register_disk,
    register_web_server,
    replicate_backup,
    wait_records,
)
from tests.unit.archive_support import assert_same_tree

MiB = 1 << 20


def restore(
    env: Env, backup_id: str, body: dict[str, Any], region: str = "region1"
) -> dict[str, Any]:
    """Restore and wait for this restore's own log (a backup may have failed ones before)."""
    query = {"operation_type": "restore"}
    before = {
        e["id"] for e in env.get(region, "/operation-logs", params=query).json()["operation_logs"]
    }
    response = env.post(region, f"/backups/{backup_id}/restore", {"restore": body})
    assert response.status_code == 202, response.text

    def ended(page: dict[str, Any]) -> bool:
        return any(
            e["id"] not in before and e["status"] in ("success", "failed")
            for e in page["operation_logs"]
        )

    page = env.wait_for(region, "/operation-logs?operation_type=restore", ended)
    entry: dict[str, Any] = next(e for e in page["operation_logs"] if e["id"] not in before)
    return entry


def _backup(env: Env, backup_id: str, region: str = "region1") -> dict[str, Any]:
    body: dict[str, Any] = env.get(region, f"/backups/{backup_id}").json()["backup"]
    return body


def _to(env: Env, dest: dict[str, Any]) -> dict[str, Any]:
    """The body replicating one backup into region2's vault `dest`."""
    return {
        "replicate": {
            "destination_project_id": env.projects["region2"],
            "destination_region": "region2",
            "destination_vault_id": dest["id"],
        }
    }


def _tree_with_a_large_file(env: Env) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    source = env.roots["region1"] / "source"
    source.mkdir()
    rng = random.Random(11)
    (source / "large.bin").write_bytes(rng.randbytes(6 * MiB))
    for index in range(20):
        (source / f"small{index}.txt").write_bytes(rng.randbytes(rng.randrange(1, 4096)))
    resource = register_dir(env, name="source")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    return source, resource, vault


def test_a_damaged_chunk_is_marked_reported_and_stored_anew_by_the_next_backup(
    env: Env,
) -> None:
    source, _resource, vault = _tree_with_a_large_file(env)
    old = backup_now(env, vault["id"], name="old")
    assert old["damaged_chunks"] == 0
    victim = largest_chunk(env, "region1", vault["id"])
    flip_byte(victim)

    failed = restore(env, old["id"], {"resource_id": register_dir(env, name="t1")["id"]})
    assert failed["status"] == "failed"
    assert victim.name in failed["error_info"]["message"]
    reported = _backup(env, old["id"])
    assert reported["status"] == "available"
    assert reported["damaged_chunks"] == 1
    assert "damaged" in reported["fail_reason"]
    listed = env.get("region1", "/backups", params={"vault_id": vault["id"]}).json()
    assert [b["damaged_chunks"] for b in listed["backups"]] == [1]

    # The large file is unchanged: without the mark its chunks would be reused unread.
    new = backup_now(env, vault["id"], name="new")
    assert new["status"] == "available" and new["damaged_chunks"] == 0
    assert chunk_intact(env, victim)
    log = restore(env, new["id"], {"resource_id": register_dir(env, name="t2")["id"]})
    assert log["status"] == "success", log
    assert_same_tree(source, env.roots["region1"] / "t2")

    # The chunk was stored anew, so the old backup is whole again.
    assert _backup(env, old["id"])["damaged_chunks"] == 0
    assert _backup(env, old["id"])["fail_reason"] is None
    log = restore(env, old["id"], {"resource_id": register_dir(env, name="t3")["id"]})
    assert log["status"] == "success", log
    assert_same_tree(source, env.roots["region1"] / "t3")


def test_a_damaged_catalog_of_the_previous_backup_means_a_full_read_not_a_failure(
    env: Env,
) -> None:
    source, _resource, vault = _tree_with_a_large_file(env)
    old = backup_now(env, vault["id"])
    store = chunks_dir(env, "region1", vault["id"]).parent
    manifest = read_manifest(env, store / "manifests" / manifest_name(old["id"]))
    catalog = manifest.catalog[0].digest
    flip_byte(store / "chunks" / catalog[:2] / catalog)

    new = backup_now(env, vault["id"])
    assert new["status"] == "available" and new["damaged_chunks"] == 0
    new_manifest = read_manifest(env, store / "manifests" / manifest_name(new["id"]))
    if catalog in new_manifest.digests():
        assert chunk_intact(env, store / "chunks" / catalog[:2] / catalog)  # stored anew
        assert _backup(env, old["id"])["damaged_chunks"] == 0
    else:
        assert _backup(env, old["id"])["damaged_chunks"] == 1  # known, reported
    log = restore(env, new["id"], {"resource_id": register_dir(env, name="t")["id"]})
    assert log["status"] == "success", log
    assert_same_tree(source, env.roots["region1"] / "t")


def test_a_disk_backup_of_the_same_data_rewrites_a_damaged_chunk(env: Env) -> None:
    """Disks have no parent reuse: this is the dedup query trusting the index."""
    disk = register_disk(env, name="sda", size=16 * MiB)
    image = env.roots["region1"] / "sda.img"
    image.write_bytes(random.Random(12).randbytes(16 * MiB))
    vault = create_vault(
        env, object_type="disk", resources=[{"id": disk["id"], "type": "OS::Cinder::Volume"}]
    )
    old = backup_now(env, vault["id"])
    victim = largest_chunk(env, "region1", vault["id"])
    flip_byte(victim)
    target = register_disk(env, name="sdb", size=0)
    failed = restore(env, old["id"], {"volume_id": target["id"]})
    assert failed["status"] == "failed" and victim.name in failed["error_info"]["message"]
    assert _backup(env, old["id"])["damaged_chunks"] == 1

    new = backup_now(env, vault["id"])
    assert new["damaged_chunks"] == 0 and chunk_intact(env, victim)
    log = restore(env, new["id"], {"volume_id": target["id"]})
    assert log["status"] == "success", log
    assert (env.roots["region1"] / "sdb.img").read_bytes() == image.read_bytes()


def test_a_server_backup_reports_the_damaged_chunks_of_its_volumes(env: Env) -> None:
    server = register_web_server(env, random.Random(13).randbytes(6 * MiB))
    vault = create_vault(
        env, object_type="server", resources=[{"id": server["id"], "type": "OS::Nova::Server"}]
    )
    backup = backup_now(env, vault["id"])
    flip_byte(largest_chunk(env, "region1", vault["id"]))  # a block of the data volume
    failed = restore(env, backup["id"], {"server_id": server["id"]})
    assert failed["status"] == "failed"
    reported = _backup(env, backup["id"])
    volumes = {c["resource_name"]: c["damaged_chunks"] for c in reported["children"]}
    assert volumes == {"sys": 0, "data": 1}
    assert reported["damaged_chunks"] == 1 and "damaged" in reported["fail_reason"]
    listed = env.get("region1", "/backups", params={"vault_id": vault["id"]}).json()
    assert [b["damaged_chunks"] for b in listed["backups"]] == [1]


def test_a_replication_copies_again_a_chunk_damaged_in_the_destination(env: Env) -> None:
    source, _resource, vault = _tree_with_a_large_file(env)
    first = backup_now(env, vault["id"], name="first")
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    record = replicate_backup(env, vault["id"], first["id"], dest["id"])
    assert record["status"] == "success", record
    victim = largest_chunk(env, "region2", dest["id"])
    flip_byte(victim)
    replica = record["destination_backup_id"]
    target = register_dir(env, "region2", name="t1")
    failed = restore(env, replica, {"resource_id": target["id"]}, "region2")
    assert failed["status"] == "failed" and victim.name in failed["error_info"]["message"]
    assert _backup(env, replica, "region2")["damaged_chunks"] == 1

    (source / "another.txt").write_text("a second backup of the same large file")
    second = backup_now(env, vault["id"], name="second")
    assert (
        env.post("region1", f"/backups/{second['id']}/replicate", _to(env, dest)).status_code == 200
    )
    ended = wait_records(env, vault["id"], 2)
    again = next(r for r in ended if r["source_backup_id"] == second["id"])
    assert again["status"] == "success", again
    assert chunk_intact(env, victim)
    assert _backup(env, again["destination_backup_id"], "region2")["damaged_chunks"] == 0
    assert _backup(env, replica, "region2")["damaged_chunks"] == 0
    target = register_dir(env, "region2", name="t2")
    log = restore(env, again["destination_backup_id"], {"resource_id": target["id"]}, "region2")
    assert log["status"] == "success", log
    assert_same_tree(source, env.roots["region2"] / "t2")


def test_a_replication_of_a_backup_with_a_known_damaged_chunk_fails_at_once(env: Env) -> None:
    _source, _resource, vault = _tree_with_a_large_file(env)
    backup = backup_now(env, vault["id"])
    victim = largest_chunk(env, "region1", vault["id"])
    flip_byte(victim)
    failed = restore(env, backup["id"], {"resource_id": register_dir(env, name="t")["id"]})
    assert failed["status"] == "failed"
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "fail"
    assert record["extra_info"]["fail_code"] == "BackupService.1006"
    assert victim.name in record["extra_info"]["fail_reason"]
    assert record["extra_info"]["chunks_copied"] == 0  # refused before copying anything
    assert chunk_names(env, "region2", dest["id"]) == set()


def test_a_chunk_found_corrupt_by_replication_is_marked_damaged_at_the_source(
    env: Env,
) -> None:
    _source, _resource, vault = _tree_with_a_large_file(env)
    backup = backup_now(env, vault["id"])
    victim = largest_chunk(env, "region1", vault["id"])
    flip_byte(victim)
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "fail"
    assert record["extra_info"]["fail_code"] == "BackupService.1006"
    assert victim.name in record["extra_info"]["fail_reason"]
    assert _backup(env, backup["id"])["damaged_chunks"] == 1


def test_a_corrupt_source_manifest_fails_the_record_at_once_with_1006(env: Env) -> None:
    _source, _resource, vault = _tree_with_a_large_file(env)
    backup = backup_now(env, vault["id"])
    manifest = (
        env.settings.data_dir
        / "store"
        / "region1"
        / "vaults"
        / vault["id"]
        / "manifests"
        / manifest_name(backup["id"])
    )
    manifest.write_bytes(manifest.read_bytes()[:-7])  # a truncated zstd frame
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "fail", record
    assert record["extra_info"]["fail_code"] == "BackupService.1006"
    reason = record["extra_info"]["fail_reason"]
    assert "manifest" in reason and backup["id"] in reason
    _assert_no_path(env, reason)
    assert record["extra_info"]["chunks_copied"] == 0
    # Nothing is left to block the vault: a later record into it runs.
    other = backup_now(env, vault["id"])
    assert (
        env.post("region1", f"/backups/{other['id']}/replicate", _to(env, dest)).status_code == 200
    )
    ended = wait_records(env, vault["id"], 2)
    assert next(r for r in ended if r["source_backup_id"] == other["id"])["status"] == "success"


def _assert_no_path(env: Env, message: str) -> None:
    assert str(env.settings.data_dir) not in message
    assert not re.search(r"(^|[\s'\"(=:])/", message), message  # no absolute path at all


def _plant_directory(chunk: Path) -> None:
    chunk.unlink(missing_ok=True)
    (chunk / "inside").mkdir(parents=True)


def test_a_store_fault_names_the_chunk_and_no_server_path(env: Env) -> None:
    source, _resource, vault = _tree_with_a_large_file(env)
    backup = backup_now(env, vault["id"])
    victim = largest_chunk(env, "region1", vault["id"])
    _plant_directory(victim)
    failed = restore(env, backup["id"], {"resource_id": register_dir(env, name="t")["id"]})
    assert failed["status"] == "failed"
    message = failed["error_info"]["message"]
    assert victim.name in message and "is a directory" in message
    _assert_no_path(env, message)

    # A backup that must write that chunk (a copy of the tree in another vault's store,
    # with the same directory planted) fails the same way.
    copy = env.roots["region1"] / "copy"
    shutil.copytree(source, copy)
    resource = register_dir(env, name="copy")
    other = create_vault(
        env, name="other", resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}]
    )
    _plant_directory(chunks_dir(env, "region1", other["id"]) / victim.name[:2] / victim.name)
    checkpoint = env.post(
        "region1", "/checkpoints", {"checkpoint": {"vault_id": other["id"], "parameters": {}}}
    ).json()["checkpoint"]
    env.wait_for(
        "region1",
        f"/checkpoints/{checkpoint['id']}",
        lambda body: body["checkpoint"]["status"] != "protecting",
    )
    logs = env.get("region1", "/operation-logs", params={"operation_type": "backup"}).json()
    entry = next(log for log in logs["operation_logs"] if log["checkpoint_id"] == checkpoint["id"])
    assert entry["status"] == "failed"
    message = entry["error_info"]["message"]
    assert victim.name in message and "is a directory" in message
    _assert_no_path(env, message)
    failed_backup = env.get(
        "region1", "/backups", params={"checkpoint_id": checkpoint["id"]}
    ).json()["backups"][0]
    _assert_no_path(env, failed_backup["fail_reason"])
