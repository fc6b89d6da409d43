"""Garbage collection never deletes what a backup or replica in progress may reference."""

from __future__ import annotations

import random

from opencbr.db.backups import Backup, BackupChunk
from opencbr.services import gc
from tests.api.conftest import Env
from tests.api.helpers import chunk_names, create_vault, register_dir
from tests.api.test_backups import backup_now, restore

MiB = 1 << 20


def test_collection_waits_while_a_backup_is_being_written(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "blob").write_bytes(random.Random(3).randbytes(2 * MiB))
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"])
    runtime = env.client.app.state.runtime  # type: ignore[attr-defined]
    with env.db.transaction() as session:
        row = session.get(Backup, backup["id"])
        assert row is not None
        row.status = "protecting"  # as if a writer were in flight in the vault
    before = chunk_names(env, "region1", vault["id"])
    with env.db.transaction() as session:  # its chunks are not referenced until it commits
        session.query(BackupChunk).filter(BackupChunk.backup_id == backup["id"]).delete()
    result = gc.collect(runtime, vault["id"])
    assert result.skipped and result.chunks_deleted == 0
    assert chunk_names(env, "region1", vault["id"]) == before
    with env.db.transaction() as session:
        row = session.get(Backup, backup["id"])
        assert row is not None
        row.status = "error"  # the writer gave up: its unreferenced chunks are garbage now
    result = gc.collect(runtime, vault["id"])
    assert not result.skipped and result.chunks_deleted == len(before)
    assert chunk_names(env, "region1", vault["id"]) == set()


def test_collection_keeps_chunks_still_referenced(env: Env) -> None:
    resource = register_dir(env)
    data = env.roots["region1"] / "data"
    (data / "a").write_bytes(random.Random(4).randbytes(2 * MiB))
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    first = backup_now(env, vault["id"])
    (data / "b").write_bytes(random.Random(5).randbytes(2 * MiB))
    backup_now(env, vault["id"])
    kept = chunk_names(env, "region1", vault["id"])
    assert env.delete("region1", f"/backups/{first['id']}").status_code == 204
    env.wait_for("region1", "/backups", lambda b: b["count"] == 1)
    runtime = env.client.app.state.runtime  # type: ignore[attr-defined]
    gc.collect(runtime, vault["id"])
    remaining = chunk_names(env, "region1", vault["id"])
    assert remaining and remaining <= kept
    target = register_dir(env, name="target")
    second = env.get("region1", "/backups").json()["backups"][0]
    log = restore(env, second["id"], {"resource_id": target["id"]})
    assert log["status"] == "success", log
    assert (env.roots["region1"] / "target" / "a").read_bytes() == (data / "a").read_bytes()
