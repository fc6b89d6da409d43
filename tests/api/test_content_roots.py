"""Content roots over HTTP: recorded at commit, equal on a replica, recomputed by the
destination before it publishes one (a disagreement fails the record with 1006)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from opencbr.archive.content_root import unit_root
from opencbr.archive.manifest import Manifest
from opencbr.db.backups import BackupChunk, VaultChunk
from opencbr.storage.layout import manifest_name
from tests.api.helpers import (
    Env,
    backup_now,
    chunks_dir,
    create_vault,
    read_manifest,
    register_dir,
    register_web_server,
    replicate_backup,
    wait_records,
)

MiB = 1 << 20


def _manifest(env: Env, region: str, vault_id: str, backup_id: str) -> Manifest:
    store = chunks_dir(env, region, vault_id).parent
    return read_manifest(env, store / "manifests" / manifest_name(backup_id))


def _tree(env: Env) -> tuple[Path, dict[str, Any]]:
    source = env.roots["region1"] / "source"
    source.mkdir()
    rng = random.Random(21)
    (source / "large.bin").write_bytes(rng.randbytes(3 * MiB))
    (source / "small.txt").write_bytes(rng.randbytes(3000))
    resource = register_dir(env, name="source")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    return source, vault


def _backup(env: Env, backup_id: str, region: str) -> dict[str, Any]:
    body: dict[str, Any] = env.get(region, f"/backups/{backup_id}").json()["backup"]
    return body


def test_a_backup_records_its_content_root_and_its_replica_shows_the_same(env: Env) -> None:
    _source, vault = _tree(env)
    backup = backup_now(env, vault["id"])
    manifest = _manifest(env, "region1", vault["id"], backup["id"])
    assert backup["content_root"] == unit_root(manifest.chunks, manifest.catalog).hex()
    dest = create_vault(env, "region2", name="dest", protect_type="replication")

    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "success", record
    assert record["extra_info"]["verified_root"] == backup["content_root"]
    replica = _backup(env, record["destination_backup_id"], "region2")
    assert replica["content_root"] == backup["content_root"]
    listed = env.get("region2", "/backups", params={"vault_id": dest["id"]}).json()["backups"]
    assert [b["content_root"] for b in listed] == [backup["content_root"]]


def test_a_server_backup_root_covers_its_volumes_and_replicates_equal(env: Env) -> None:
    server = register_web_server(env, random.Random(22).randbytes(2 * MiB))
    vault = create_vault(
        env, object_type="server", resources=[{"id": server["id"], "type": "OS::Nova::Server"}]
    )
    backup = backup_now(env, vault["id"])
    volumes = {child["resource_name"]: child["content_root"] for child in backup["children"]}
    assert set(volumes) == {"sys", "data"} and None not in volumes.values()
    assert backup["content_root"] not in (None, *volumes.values())
    dest = create_vault(
        env, "region2", name="dest", object_type="server", protect_type="replication"
    )
    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "success", record
    replica = _backup(env, record["destination_backup_id"], "region2")
    assert (
        replica["content_root"] == backup["content_root"] == record["extra_info"]["verified_root"]
    )
    assert {c["resource_name"]: c["content_root"] for c in replica["children"]} == volumes


def test_a_replica_whose_destination_index_disagrees_fails_with_1006_unpublished(
    env: Env,
) -> None:
    source, vault = _tree(env)
    first = backup_now(env, vault["id"], name="first")
    dest = create_vault(env, "region2", name="dest", protect_type="replication")
    assert replicate_backup(env, vault["id"], first["id"], dest["id"])["status"] == "success"
    (source / "new.txt").write_bytes(b"a file the second backup adds\n")
    second = backup_now(env, vault["id"], name="second")
    # The destination's index claims another length for a chunk both backups share, so
    # the copy skips it and only the recomputed root can notice.
    with env.db.transaction() as session:
        shared = session.scalars(
            select(BackupChunk.digest).where(BackupChunk.backup_id == first["id"])
        ).all()
        second_chunks = set(
            session.scalars(select(BackupChunk.digest).where(BackupChunk.backup_id == second["id"]))
        )
        victim = next(d for d in shared if d in second_chunks)
        session.execute(
            update(VaultChunk)
            .where(VaultChunk.vault_id == dest["id"], VaultChunk.digest == victim)
            .values(plain_size=VaultChunk.plain_size + 1)
        )

    body = {
        "replicate": {
            "destination_project_id": env.projects["region2"],
            "destination_region": "region2",
            "destination_vault_id": dest["id"],
        }
    }
    assert env.post("region1", f"/backups/{second['id']}/replicate", body).status_code == 200
    ended = wait_records(env, vault["id"], 2)
    record = next(r for r in ended if r["source_backup_id"] == second["id"])
    assert record["status"] == "fail", record
    assert record["extra_info"]["fail_code"] == "BackupService.1006"
    assert "content root mismatch" in record["extra_info"]["fail_reason"]
    assert record["extra_info"]["verified_root"] is None
    assert record["destination_backup_id"] is None
    listed = env.get("region2", "/backups", params={"vault_id": dest["id"]}).json()["backups"]
    assert [b["name"] for b in listed] == [first["name"]]
    store = chunks_dir(env, "region2", dest["id"]).parent
    assert not any((store / "manifests").glob("backup-*" + second["id"][-4:]))
