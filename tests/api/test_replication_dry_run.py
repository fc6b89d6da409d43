"""?dry_run=true on the replicate calls: the same checks as the real call, nothing created,
and the bytes it announces are, to the byte, what the real call then copies."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from opencbr.db import chunks
from opencbr.db.backups import Backup, BackupChunk, Checkpoint, OperationLog, ReplicationRecord
from opencbr.db.vaults import Vault
from opencbr.services import identity
from tests.api.helpers import (
    PASSWORD,
    Env,
    assert_error,
    backup_now,
    chunk_names,
    create_vault,
    flip_byte,
    issue,
    largest_chunk,
    neighbour,
    register_dir,
    register_server,
    replicate_backup,
    verify_vault,
    wait_records,
)

MiB = 1 << 20
DRY = {"dry_run": "true"}


def vault_body(env: Env, vault_id: str, dest_vault_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "replicate": {
            "destination_project_id": env.projects["region2"],
            "destination_region": "region2",
            "destination_vault_id": dest_vault_id,
            "vault_id": vault_id,
            **extra,
        }
    }


def backup_body(env: Env, dest_vault_id: str, **extra: Any) -> dict[str, Any]:
    body = vault_body(env, "", dest_vault_id, **extra)
    del body["replicate"]["vault_id"]
    return body


def write(path: Path, size: int, seed: int) -> None:
    path.write_bytes(random.Random(seed).randbytes(size))


def source_vault(env: Env) -> tuple[Path, dict[str, Any]]:
    tree = env.roots["region1"] / "data"
    tree.mkdir()
    write(tree / "a.bin", 3 * MiB, 1)
    write(tree / "b.bin", 2 * MiB, 2)
    resource = register_dir(env, name="data")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    return tree, vault


def row_counts(env: Env) -> dict[str, int]:
    with env.db.reading() as session:
        return {
            model.__name__: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (ReplicationRecord, OperationLog, Backup, Checkpoint)
        }


def referenced_in_both(env: Env, backup_id: str, dest_vault_id: str) -> str:
    """A digest `backup_id` references that the destination vault already indexes."""
    with env.db.reading() as session:
        referenced = set(
            session.scalars(select(BackupChunk.digest).where(BackupChunk.backup_id == backup_id))
        )
        return sorted(referenced & chunks.referenced_digests(session, dest_vault_id))[0]


def test_dry_run_bytes_equal_what_the_real_vault_replication_copies(env: Env) -> None:
    tree, vault = source_vault(env)
    first = backup_now(env, vault["id"])
    write(tree / "c.bin", 2 * MiB, 3)  # in the second and the third backup: counted once
    second = backup_now(env, vault["id"])
    write(tree / "d.bin", 1 * MiB, 4)
    write(tree / "a.bin", 3 * MiB, 5)
    third = backup_now(env, vault["id"])
    dest = create_vault(env, "region2", name="dst", protect_type="replication")

    before = env.post(
        "region1", f"/backups/{first['id']}/replicate", backup_body(env, dest["id"]), params=DRY
    )
    # Before any copy between the regions there is no measured rate.
    assert before.status_code == 200, before.text
    assert before.json()["replication"]["estimated_seconds"] is None
    record = replicate_backup(env, vault["id"], first["id"], dest["id"])
    assert record["status"] == "success"
    assert record["extra_info"]["bytes_copied"] == before.json()["replication"]["missing_bytes"]
    # The destination now holds the first backup's chunks; one of them, which the second
    # backup references too, is damaged there: the copy writes it again.
    damaged = referenced_in_both(env, second["id"], dest["id"])
    with env.db.transaction() as session:
        assert chunks.mark_damaged(session, dest["id"], damaged)

    counts = row_counts(env)
    response = env.post(
        "region1", "/checkpoints/replicate", vault_body(env, vault["id"], dest["id"]), params=DRY
    )
    assert response.status_code == 200, response.text
    plan = response.json()["replication"]
    assert row_counts(env) == counts  # nothing created: no record, replica, log, checkpoint
    assert plan["dry_run"] is True and plan["vault_id"] == vault["id"]
    assert [b["backup_id"] for b in plan["backups"]] == [second["id"], third["id"]]
    assert plan["missing_bytes"] == sum(b["missing_bytes"] for b in plan["backups"]) > 0
    assert plan["measured_bytes_per_second"] > 0 and plan["fits"] is True
    assert plan["estimated_seconds"] == plan["missing_bytes"] / plan["measured_bytes_per_second"]

    real = env.post("region1", "/checkpoints/replicate", vault_body(env, vault["id"], dest["id"]))
    assert real.status_code == 200, real.text
    done = [r for r in wait_records(env, vault["id"], 3) if r["source_backup_id"] != first["id"]]
    assert {r["status"] for r in done} == {"success"}, done
    by_backup = {r["source_backup_id"]: r["extra_info"] for r in done}
    for announced in plan["backups"]:
        copied = by_backup[announced["backup_id"]]
        assert announced["missing_bytes"] == copied["bytes_copied"], (announced, copied)
        assert announced["missing_chunks"] == copied["chunks_copied"], (announced, copied)
    replicas = env.get("region2", "/backups", params={"vault_id": dest["id"]}).json()["backups"]
    added = sum(b["stored_bytes"] for b in replicas if b["source_backup_id"] != first["id"])
    # The replicas add what was copied, less the damaged chunk, which was already counted.
    with env.db.reading() as session:
        size = session.scalar(
            select(BackupChunk.stored_size).where(
                BackupChunk.backup_id == second["id"], BackupChunk.digest == damaged
            )
        )
    assert added == plan["missing_bytes"] - size
    assert damaged in chunk_names(env, "region2", dest["id"])


def test_a_dry_run_names_the_backups_whose_source_chunks_are_damaged(env: Env) -> None:
    """A backup whose chunk a verify found damaged would fail at once: the dry run says so
    beside the bytes, and the real call then fails exactly that backup's record."""
    tree, vault = source_vault(env)
    first = backup_now(env, vault["id"])
    write(tree / "c.bin", 1 * MiB, 6)
    (tree / "a.bin").unlink()  # the largest chunk is the first backup's alone
    (tree / "b.bin").unlink()
    second = backup_now(env, vault["id"])
    flip_byte(largest_chunk(env, "region1", vault["id"]))
    assert verify_vault(env, "region1", vault["id"])["damaged"] == 1
    dest = create_vault(env, "region2", name="dst", protect_type="replication")

    body = vault_body(env, vault["id"], dest["id"])
    plan = env.post("region1", "/checkpoints/replicate", body, params=DRY).json()["replication"]
    damaged = {b["backup_id"]: b["damaged_chunks"] for b in plan["backups"]}
    assert damaged == {first["id"]: 1, second["id"]: 0}
    assert plan["damaged_chunks"] == 1

    assert env.post("region1", "/checkpoints/replicate", body).status_code == 200
    outcome = {r["source_backup_id"]: r for r in wait_records(env, vault["id"], 2)}
    assert outcome[second["id"]]["status"] == "success"
    failed = outcome[first["id"]]
    assert failed["status"] == "fail" and "damaged" in failed["extra_info"]["fail_reason"], failed


@pytest.mark.slow
def test_a_dry_run_answers_with_the_real_calls_errors(env: Env) -> None:
    _tree, vault = source_vault(env)
    backup = backup_now(env, vault["id"])
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    plain_r2 = create_vault(env, "region2", name="plain")
    repl_r1 = create_vault(env, "region1", name="repl-r1", protect_type="replication")
    empty = create_vault(env, name="empty")
    tiny = create_vault(env, "region2", name="tiny", protect_type="replication", size=1)
    with env.db.transaction() as session:
        full = session.get(Vault, tiny["id"])
        assert full is not None
        full.used_bytes = 1 << 30
    vault_cases = [
        vault_body(env, "nope", dest["id"]),
        vault_body(env, vault["id"], dest["id"], destination_region="region9"),
        vault_body(env, vault["id"], dest["id"], destination_project_id=env.projects["region1"]),
        vault_body(env, vault["id"], "nope"),
        vault_body(env, vault["id"], plain_r2["id"]),
        vault_body(env, repl_r1["id"], dest["id"]),
        vault_body(env, vault["id"], dest["id"], cross_account_urn="urn:x"),
        vault_body(env, vault["id"], dest["id"], auto_trigger="yes"),
        vault_body(env, empty["id"], dest["id"]),
        vault_body(env, vault["id"], tiny["id"]),
        {"replicate": {"vault_id": vault["id"]}},
    ]
    for body in vault_cases:
        real = env.post("region1", "/checkpoints/replicate", body)
        dry = env.post("region1", "/checkpoints/replicate", body, params=DRY)
        assert real.status_code >= 400, real.text
        assert (dry.status_code, dry.json()) == (real.status_code, real.json())
    single = f"/backups/{backup['id']}/replicate"
    backup_cases = [
        (single, backup_body(env, "nope")),
        (single, backup_body(env, dest["id"], destination_region="region1")),
        ("/backups/nope/replicate", backup_body(env, dest["id"])),
    ]
    for path, body in backup_cases:
        real = env.post("region1", path, body)
        dry = env.post("region1", path, body, params=DRY)
        assert real.status_code >= 400, real.text
        assert (dry.status_code, dry.json()) == (real.status_code, real.json())
    # Another tenant's caller sees neither the vault nor the backup, dry run or not.
    other = neighbour(env)
    for path, body in (
        ("/checkpoints/replicate", vault_body(env, vault["id"], dest["id"])),
        (single, backup_body(env, dest["id"])),
    ):
        real, dry = other.post(path, body), other.post(f"{path}?dry_run=true", body)
        assert real.status_code == 404
        assert (dry.status_code, dry.json()) == (real.status_code, real.json())
    # A reader may not replicate, dry run or not.
    identity.create_user(env.db, env.settings, "reader", PASSWORD)
    identity.grant_role(env.db, "reader", "region1", "viewer")
    token = issue(env.client, "reader", PASSWORD, env.projects["region1"])
    url = env.url("region1", single)
    real = env.client.post(url, json=backup_body(env, dest["id"]), headers={"X-Auth-Token": token})
    dry = env.client.post(
        url, json=backup_body(env, dest["id"]), headers={"X-Auth-Token": token}, params=DRY
    )
    assert real.status_code == 403
    assert (dry.status_code, dry.json()) == (real.status_code, real.json())
    # Once a backup is replicated, a dry run refuses it as the real call does.
    replicate_backup(env, vault["id"], backup["id"], dest["id"])
    again = env.post("region1", single, backup_body(env, dest["id"]))
    dry = env.post("region1", single, backup_body(env, dest["id"]), params=DRY)
    assert_error(again, 400, "BackupService.1009")
    assert (dry.status_code, dry.json()) == (again.status_code, again.json())


def test_dry_run_takes_true_or_false_in_any_case_and_nothing_else(env: Env) -> None:
    _tree, vault = source_vault(env)
    backup = backup_now(env, vault["id"])
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    path = f"/backups/{backup['id']}/replicate"
    body = backup_body(env, dest["id"])
    for value in ("TRUE", "True", "true"):
        answer = env.post("region1", path, body, params={"dry_run": value})
        assert answer.status_code == 200 and answer.json()["replication"]["dry_run"] is True
        assert answer.json()["replication"]["backups"][0]["backup_id"] == backup["id"]
    for value in ("maybe", "2", ""):
        assert_error(
            env.post("region1", path, body, params={"dry_run": value}), 400, "BackupService.9900"
        )
    assert row_counts(env)["ReplicationRecord"] == 0
    real = env.post("region1", path, body, params={"dry_run": "False"})
    assert real.status_code == 200 and real.json()["replication"]["replication_record_id"]


def test_volumes_sharing_chunks_are_counted_and_copied_once(env: Env) -> None:
    """Two disks of one server hold the same image: their chunks are the same, and the
    copy (like the count) writes each once, with the first volume."""
    disks = env.roots["region1"] / "disks"
    disks.mkdir()
    write(disks / "a.img", 2 * MiB, 7)
    write(disks / "b.img", 2 * MiB, 7)
    server = register_server(env, {"a": disks / "a.img", "b": disks / "b.img"})
    resources = [{"id": server["id"], "type": "OS::Nova::Server"}]
    vault = create_vault(env, name="servers", object_type="server", resources=resources)
    first = backup_now(env, vault["id"])
    with open(disks / "b.img", "r+b") as image:
        image.write(random.Random(8).randbytes(MiB))
    second = backup_now(env, vault["id"])
    dest = create_vault(
        env, "region2", name="dst", object_type="server", protect_type="replication"
    )
    body = vault_body(env, vault["id"], dest["id"])
    plan = env.post("region1", "/checkpoints/replicate", body, params=DRY).json()["replication"]
    assert [b["backup_id"] for b in plan["backups"]] == [first["id"], second["id"]]

    assert env.post("region1", "/checkpoints/replicate", body).status_code == 200
    done = {r["source_backup_id"]: r for r in wait_records(env, vault["id"], 2)}
    assert {r["status"] for r in done.values()} == {"success"}, done
    for announced in plan["backups"]:
        copied = done[announced["backup_id"]]["extra_info"]
        assert announced["missing_bytes"] == copied["bytes_copied"], (announced, copied)
        assert announced["missing_chunks"] == copied["chunks_copied"], (announced, copied)
    replicas = env.get("region2", "/backups", params={"vault_id": dest["id"]}).json()["backups"]
    assert sum(b["stored_bytes"] for b in replicas) == plan["missing_bytes"]
    # The shared image is counted once: the first backup adds about one disk, not two.
    assert plan["backups"][0]["missing_bytes"] < first["stored_bytes"] * 1.01
