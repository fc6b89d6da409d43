"""Garbage collection never deletes what a backup or replica in progress may reference."""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from opencbr.db.backups import Backup, BackupChunk
from opencbr.services import gc
from opencbr.settings import Settings
from opencbr.storage.chunk import digest, encode_chunk
from opencbr.storage.store import ChunkStore
from tests.api.helpers import (
    Env,
    backup_now,
    chunk_names,
    chunks_dir,
    create_vault,
    make_settings,
    register_dir,
    restore,
)

MiB = 1 << 20
SAFETY_MARGIN = 600.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Leftover chunks younger than the margin must survive collection."""
    return make_settings(tmp_path, gc_safety_margin_seconds=SAFETY_MARGIN)


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


def plant_leftover(env: Env, store: ChunkStore, vault_id: str, seed: int, age: float) -> str:
    """A chunk in the vault's store that the index does not know (as a crash leaves one),
    last written `age` seconds ago."""
    data = b"leftover %d " % seed * 100
    name = digest(data)
    store.put_chunk(name, encode_chunk(data))
    then = time.time() - age
    os.utime(chunks_dir(env, "region1", vault_id) / name[:2] / name, (then, then))
    return name


def test_collection_checks_the_store_against_the_index_in_batches(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "blob").write_bytes(random.Random(6).randbytes(3 * MiB))
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup_now(env, vault["id"])
    referenced = chunk_names(env, "region1", vault["id"])
    runtime = env.client.app.state.runtime  # type: ignore[attr-defined]
    store = runtime.stores.vault("region1", vault["id"])
    old = {plant_leftover(env, store, vault["id"], i, 2 * SAFETY_MARGIN) for i in range(7)}
    young = {plant_leftover(env, store, vault["id"], 100 + i, 10) for i in range(4)}
    lookups: list[Any] = []

    def record_index_lookup(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        if sql.lstrip().upper().startswith("SELECT") and "vault_chunks.digest IN" in sql:
            lookups.append(params)

    event.listen(env.db.engine, "before_cursor_execute", record_index_lookup)
    try:
        result = gc.collect(runtime, vault["id"], batch_size=3)
    finally:
        event.remove(env.db.engine, "before_cursor_execute", record_index_lookup)
    assert result.chunks_deleted == len(old)
    assert chunk_names(env, "region1", vault["id"]) == referenced | young
    listed = len(referenced) + len(old) + len(young)
    assert len(lookups) == math.ceil(listed / 3)  # one query per batch of listed digests
    assert max(len(params) for params in lookups) == 1 + 3  # the vault id and the batch
