"""A restore from an S3 region reads ahead: many GETs are under way at once, yet the files
come back byte for byte, and a GET that fails in the middle ends the restore cleanly (no
temporary file left, every file it wrote whole, the reads still queued cancelled).

moto's S3 server in this process; the region's store is a `faulty+` store around it whose
every chunk get waits a little (a remote server's round trip), so the GETs under way at
once can be counted (`FaultyChunkStore.peak_gets`)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from opencbr.archive.extract import TEMP_PREFIX
from opencbr.db.session import Database
from opencbr.services.stores import OBJECT_STORE_READ_THREADS
from opencbr.storage.faulty import FaultyChunkStore
from tests.api.helpers import (
    Env,
    backup_now,
    create_vault,
    make_settings,
    register_dir,
    restore,
    serving,
)
from tests.s3servers import S3Server

pytestmark = pytest.mark.slow  # moto in this process: a few seconds each
MiB = 1 << 20
TURBO = "OS::Sfs::Turbo"


def s3_region(s3: S3Server, options: str) -> dict[str, Any]:
    values = s3.region("region1")
    values["storage"] = f"faulty+{values['storage']}?{options}"
    return values


def counting_store(env: Env, vault_id: str) -> FaultyChunkStore:
    store: Any = env.client.app.state.runtime.stores.vault("region1", vault_id)
    while not isinstance(store, FaultyChunkStore):
        store = store.inner
    return store


def files_of_one_chunk(root: Path, count: int) -> None:
    """`count` incompressible files of 1 MiB: a chunk or two each, in stream order."""
    rng = random.Random(11)
    root.mkdir(parents=True)
    for index in range(count):
        (root / f"file{index:03d}.bin").write_bytes(rng.randbytes(MiB))


def backed_up(env: Env, count: int) -> tuple[Path, dict[str, Any], FaultyChunkStore]:
    tree = env.roots["region1"] / "data"
    files_of_one_chunk(tree, count)
    resource = register_dir(env)
    vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
    backup = backup_now(env, vault["id"])
    assert backup["status"] == "available", backup
    store = counting_store(env, vault["id"])
    assert store.calls["get_chunk"] == 0  # a first backup reads no chunk back
    return tree, backup, store


def seed_failing_call(call: int, ratio: float) -> int:
    """A seed whose draws fail (fall below `ratio`) first at draw number `call` (0-based):
    the faulty store fails exactly that get, the ones before it succeed."""
    seed = 0
    while True:
        draws = random.Random(seed)
        values = [draws.random() for _ in range(call + 1)]
        if min(values[:call]) >= ratio > values[call]:
            return seed
        seed += 1


def test_a_restore_from_s3_keeps_many_gets_under_way_and_restores_byte_for_byte(
    tmp_path: Path, database: Database, moto_s3: S3Server
) -> None:
    local = {"name": "region2", "storage": str(tmp_path / "store" / "region2")}
    regions = [s3_region(moto_s3, "delay=0.05"), local]
    with serving(make_settings(tmp_path, regions=regions), database) as env:
        tree, backup, store = backed_up(env, 24)
        target = register_dir(env, name="target")
        log = restore(env, backup["id"], {"resource_id": target["id"]})
        assert log["status"] == "success", log
        restored = env.roots["region1"] / "target"
        for source in tree.iterdir():
            assert (restored / source.name).read_bytes() == source.read_bytes(), source.name
        assert store.calls["get_chunk"] >= 24
        # One GET at a time would keep the peak at 1; the read-ahead keeps up to
        # OBJECT_STORE_READ_THREADS under way (half of them is plenty on a busy machine).
        assert store.peak_gets >= OBJECT_STORE_READ_THREADS // 2, store.peak_gets


def test_a_get_failing_mid_restore_ends_it_cleanly(
    tmp_path: Path, database: Database, moto_s3: S3Server
) -> None:
    # The eleventh chunk get is the first to fail, for good (no retry helps); gets started
    # after it may fail too.
    ratio, failing = 0.5, 10
    seed = seed_failing_call(failing, ratio)
    options = f"fail_get={ratio}&fault=permanent&seed={seed}&delay=0.02"
    local = {"name": "region2", "storage": str(tmp_path / "store" / "region2")}
    with serving(
        make_settings(tmp_path, regions=[s3_region(moto_s3, options), local]), database
    ) as env:
        tree, backup, store = backed_up(env, 48)
        target = register_dir(env, name="target")
        log = restore(env, backup["id"], {"resource_id": target["id"]})
        assert log["status"] == "failed", log
        assert "injected fault: get of chunk" in log["error_info"]["message"], log
        assert store.failed_gets >= 1
        restored = env.roots["region1"] / "target"
        entries = list(restored.iterdir())
        assert not [e.name for e in entries if e.name.startswith(TEMP_PREFIX)]
        for entry in entries:  # every file the restore left is whole
            assert entry.read_bytes() == (tree / entry.name).read_bytes(), entry.name
        assert len(entries) < 48
        # The restore stopped reading at the failure (at most its read-ahead further on).
        assert failing < store.calls["get_chunk"] < 48, store.calls
