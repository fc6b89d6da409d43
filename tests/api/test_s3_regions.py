"""Regions whose vaults live in S3 (SeaweedFS, a real S3 server), over HTTP: backup,
restore, garbage collection, replication across store kinds (local -> S3, S3 -> local,
S3 -> S3), and an S3 server killed in the middle of a backup."""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import obstore
import pytest
from sqlalchemy import select

from opencbr.db.backups import VaultChunk
from opencbr.db.session import Database
from opencbr.services import gc
from opencbr.storage.chunk import digest, encode_chunk
from opencbr.storage.faulty import FaultyChunkStore
from opencbr.storage.s3 import S3Location, open_bucket
from opencbr.storage.store import ChunkStore
from tests.api.helpers import (
    Env,
    backup_now,
    create_vault,
    leaks,
    make_settings,
    plain_runs,
    register_dir,
    replicate_backup,
    restore,
    serving,
)
from tests.s3servers import SECRET_KEY, S3Server, SeaweedFS
from tests.unit.archive_support import assert_same_tree, build_tree, mutate_in_place

pytestmark = [pytest.mark.s3, pytest.mark.slow]  # 3-6 s each, on a real S3 server
MiB = 1 << 20
TURBO = "OS::Sfs::Turbo"


def region(tmp_path: Path, s3: S3Server, name: str, kind: str, wrap: str = "") -> dict[str, Any]:
    """Settings of region `name` on a local folder or a fresh bucket prefix; `wrap` puts a
    `faulty+` store with those options around it (it counts every call)."""
    if kind == "local":
        values: dict[str, Any] = {"name": name, "storage": str(tmp_path / "store" / name)}
    else:
        values = s3.region(name)
    if wrap:
        values["storage"] = f"faulty+{values['storage']}?{wrap}"
    return values


def bucket_url(values: dict[str, Any]) -> str:
    """The `s3://` URL of a region's settings, without a `faulty+` wrapper."""
    return str(values["storage"]).removeprefix("faulty+").partition("?")[0]


@contextmanager
def app(tmp_path: Path, database: Database, *regions: dict[str, Any]) -> Iterator[Env]:
    with serving(make_settings(tmp_path, regions=list(regions)), database) as env:
        yield env


def faulty_store(env: Env, region_name: str, vault_id: str) -> FaultyChunkStore:
    """The counting FaultyChunkStore of a vault, under the wrappers the opener adds."""
    store: Any = env.client.app.state.runtime.stores.vault(region_name, vault_id)
    while not isinstance(store, FaultyChunkStore):
        store = store.inner
    return store


def vault_store(env: Env, region_name: str, vault_id: str) -> ChunkStore:
    store: ChunkStore = env.client.app.state.runtime.stores.vault(region_name, vault_id)
    return store


def indexed(env: Env, vault_id: str) -> set[str]:
    with env.db.reading() as session:
        return set(
            session.scalars(select(VaultChunk.digest).where(VaultChunk.vault_id == vault_id))
        )


def stored(env: Env, region_name: str, vault_id: str) -> set[str]:
    return set(vault_store(env, region_name, vault_id).list_chunks())


def small_tree(root: Path) -> None:
    build_tree(root, big_files=2, big_size=3 * MiB)


def copy_tree(source: Path, target: Path) -> None:
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)


# -- backup, restore, garbage collection ---------------------------------------------------


def test_backup_restore_and_collection_in_an_s3_region(
    tmp_path: Path, database: Database, seaweedfs: S3Server, capfd: pytest.CaptureFixture[str]
) -> None:
    s3_region = region(tmp_path, seaweedfs, "region1", "s3", wrap="seed=1")
    with app(tmp_path, database, s3_region, region(tmp_path, seaweedfs, "region2", "local")) as env:
        tree = env.roots["region1"] / "data"
        small_tree(tree)
        resource = register_dir(env)
        vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
        first = backup_now(env, vault["id"])
        keys = seaweedfs.keys(bucket_url(s3_region))
        assert f"vaults/{vault['id']}/manifests/backup-{first['id']}" in keys
        assert stored(env, "region1", vault["id"]) == indexed(env, vault["id"])
        expected_first = tmp_path / "expected-first"
        copy_tree(tree, expected_first)

        mutate_in_place(tree, 0.05)
        second = backup_now(env, vault["id"])
        assert 0 < second["stored_bytes"] < first["stored_bytes"]  # deduplicated in S3

        target = register_dir(env, name="target")
        log = restore(env, first["id"], {"resource_id": target["id"]})
        assert log["status"] == "success", log
        assert_same_tree(expected_first, env.roots["region1"] / "target")

        store = vault_store(env, "region1", vault["id"])
        leftover = b"left by a crashed writer" * 100
        store.put_chunk(digest(leftover), encode_chunk(leftover))  # in S3, not in the index
        before = stored(env, "region1", vault["id"])
        assert env.delete("region1", f"/backups/{first['id']}").status_code == 204
        env.wait_for("region1", "/backups", lambda b: b["count"] == 1)
        # The delete task collects too (it may hold the vault right now); collecting again
        # is harmless once that collection has released it.
        deadline = time.monotonic() + 60
        while gc.collect(env.client.app.state.runtime, vault["id"]).skipped:
            assert time.monotonic() < deadline, "the vault stayed held by a collection"
            time.sleep(0.1)
        remaining = stored(env, "region1", vault["id"])
        assert remaining == indexed(env, vault["id"]) and digest(leftover) not in remaining
        assert len(remaining) < len(before) - 1  # the first backup's own chunks went too
        counting = faulty_store(env, "region1", vault["id"])
        # Deleted in batches; a time read only for the chunk the index did not know.
        assert counting.calls["delete_chunk"] == 0 and counting.calls["delete_chunks"] >= 1
        assert counting.calls["chunk_mtime"] == 1

        again = register_dir(env, name="again")
        log = restore(env, second["id"], {"resource_id": again["id"]})
        assert log["status"] == "success", log
        assert_same_tree(tree, env.roots["region1"] / "again")

        answers = [
            env.get("region1", f"/vaults/{vault['id']}").text,
            env.get("region1", "/backups").text,
            env.get("region1", "/replication-capabilities").text,
        ]
    captured = capfd.readouterr()
    for text in (*answers, captured.out, captured.err):
        assert SECRET_KEY not in text


# -- replication across store kinds -------------------------------------------------------


@pytest.mark.parametrize(
    ("source_kind", "destination_kind"), [("local", "s3"), ("s3", "local"), ("s3", "s3")]
)
def test_replication_across_store_kinds_copies_only_what_the_destination_lacks(
    tmp_path: Path,
    database: Database,
    seaweedfs: S3Server,
    source_kind: str,
    destination_kind: str,
) -> None:
    regions = (
        region(tmp_path, seaweedfs, "region1", source_kind),
        region(tmp_path, seaweedfs, "region2", destination_kind, wrap="seed=1"),
    )
    with app(tmp_path, database, *regions) as env:
        tree = env.roots["region1"] / "data"
        small_tree(tree)
        resource = register_dir(env)
        vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
        first = backup_now(env, vault["id"])
        expected_first = tmp_path / "expected-first"
        copy_tree(tree, expected_first)
        mutate_in_place(tree, 0.05)
        second = backup_now(env, vault["id"])
        dest = create_vault(env, "region2", name="dst", protect_type="replication")

        record = replicate_backup(env, vault["id"], first["id"], dest["id"])
        assert record["status"] == "success", record
        counting = faulty_store(env, "region2", dest["id"])
        after_first = indexed(env, dest["id"])
        assert counting.calls["put_chunk"] == len(after_first)

        body = {
            "replicate": {
                "destination_project_id": env.projects["region2"],
                "destination_region": "region2",
                "destination_vault_id": dest["id"],
            }
        }
        response = env.post("region1", f"/backups/{second['id']}/replicate", body)
        assert response.status_code == 200, response.text
        done = env.wait_for(
            "region2",
            "/backups",
            lambda b: any(
                r["source_backup_id"] == second["id"] and r["status"] == "available"
                for r in b["backups"]
            ),
            timeout=120,
        )
        new_chunks = indexed(env, dest["id"]) - after_first
        assert 0 < len(new_chunks) < len(after_first)
        # Only what the destination lacked was written, planned from the database index:
        # no existence check (HEAD) per chunk, no listing of the destination.
        assert counting.calls["put_chunk"] == len(after_first) + len(new_chunks)
        assert counting.calls["has_chunk"] == counting.calls["list_chunks"] == 0
        assert stored(env, "region2", dest["id"]) == indexed(env, dest["id"])

        replicas = [b for b in done["backups"] if b["vault_id"] == dest["id"]]
        assert sorted(b["source_backup_id"] for b in replicas) == sorted(
            [first["id"], second["id"]]
        )  # exactly one replica of each backup
        by_source = {b["source_backup_id"]: b["id"] for b in replicas}
        for name, source_id, expected in (
            ("r1", first["id"], expected_first),
            ("r2", second["id"], tree),
        ):
            target = register_dir(env, "region2", name=name)
            log = restore(env, by_source[source_id], {"resource_id": target["id"]}, "region2")
            assert log["status"] == "success", log
            assert_same_tree(expected, env.roots["region2"] / name)


# -- the S3 server dies during a backup ------------------------------------------------------


def test_an_s3_server_killed_mid_backup_never_leaves_an_available_backup_without_its_chunks(
    tmp_path: Path, database: Database, weed: SeaweedFS, seaweedfs: S3Server
) -> None:
    kill_mid_backup(tmp_path, database, weed, seaweedfs, down_seconds=0.5)


# One database is enough here: what is tested is the store's retries giving up.
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_an_s3_server_down_longer_than_the_retries_fails_the_backup_cleanly(
    tmp_path: Path, database: Database, weed: SeaweedFS, seaweedfs: S3Server
) -> None:
    # Longer than the store's retries (pauses of 3.75 s, plus obstore's own two).
    kill_mid_backup(tmp_path, database, weed, seaweedfs, down_seconds=12.0)


def kill_mid_backup(
    tmp_path: Path, database: Database, weed: SeaweedFS, seaweedfs: S3Server, down_seconds: float
) -> None:
    """Kill SeaweedFS once a backup has written two chunks, start it again after
    `down_seconds`: the backup ends available with every chunk or (down longer than the
    retries) fails cleanly."""
    # Chunk puts take 50 ms each, so the kill lands while the backup writes.
    s3_region = region(tmp_path, seaweedfs, "region1", "s3", wrap="delay=0.05")
    with app(tmp_path, database, s3_region, region(tmp_path, seaweedfs, "region2", "local")) as env:
        tree = env.roots["region1"] / "data"
        tree.mkdir()
        rng = random.Random(11)
        for index in range(6):
            (tree / f"f{index}").write_bytes(rng.randbytes(4 * MiB))
        resource = register_dir(env)
        vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
        response = env.post("region1", "/checkpoints", {"checkpoint": {"vault_id": vault["id"]}})
        assert response.status_code == 200, response.text
        checkpoint = response.json()["checkpoint"]["id"]
        chunk_prefix = f"vaults/{vault['id']}/chunks/"
        deadline = time.monotonic() + 60
        while sum(k.startswith(chunk_prefix) for k in seaweedfs.keys(bucket_url(s3_region))) < 2:
            assert time.monotonic() < deadline, "the backup wrote no chunk"
            time.sleep(0.02)
        weed.kill()
        try:
            time.sleep(down_seconds)
        finally:
            weed.start()
        ended = env.wait_for(
            "region1",
            f"/checkpoints/{checkpoint}",
            lambda b: b["checkpoint"]["status"] != "protecting",
            timeout=120,
        )["checkpoint"]
        backups = env.get("region1", "/backups", params={"checkpoint_id": checkpoint}).json()
        assert ended["status"] in ("available", "error"), ended
        for backup in backups["backups"]:
            assert backup["status"] in ("available", "error"), backup
            if backup["status"] != "available":
                continue
            # Every chunk it references is in the bucket, and it restores.
            assert indexed(env, vault["id"]) <= stored(env, "region1", vault["id"])
            target = register_dir(env, name="target")
            log = restore(env, backup["id"], {"resource_id": target["id"]})
            assert log["status"] == "success", log
            assert_same_tree(tree, env.roots["region1"] / "target")
        if down_seconds > 10:
            failed_cleanly(env, vault["id"], tree, backups["backups"])


def failed_cleanly(env: Env, vault_id: str, tree: Path, backups: list[dict[str, Any]]) -> None:
    """The backup failed with a storage reason, kept no index rows and no used bytes, and
    the next backup, with the server back, is available and restores."""
    assert [b["status"] for b in backups] == ["error"], backups
    assert indexed(env, vault_id) == set()
    vault = env.get("region1", f"/vaults/{vault_id}").json()["vault"]
    assert vault["billing"]["used"] == 0, vault
    logs = env.get("region1", "/operation-logs", params={"vault_id": vault_id}).json()
    [failed] = [x for x in logs["operation_logs"] if x["status"] == "failed"]
    assert "storage" in failed["error_info"]["message"].lower(), failed
    response = env.post("region1", "/checkpoints", {"checkpoint": {"vault_id": vault_id}})
    checkpoint = response.json()["checkpoint"]["id"]
    again = env.wait_for(
        "region1",
        f"/checkpoints/{checkpoint}",
        lambda b: b["checkpoint"]["status"] != "protecting",
        timeout=120,
    )["checkpoint"]
    assert again["status"] == "available", again
    [backup] = env.get("region1", "/backups", params={"checkpoint_id": checkpoint}).json()[
        "backups"
    ]
    assert indexed(env, vault_id) <= stored(env, "region1", vault_id)
    target = register_dir(env, name="after")
    log = restore(env, backup["id"], {"resource_id": target["id"]})
    assert log["status"] == "success", log
    assert_same_tree(tree, env.roots["region1"] / "after")


# -- encryption at rest in S3 ----------------------------------------------------------------

MARKER = b"OPENCBR-S3-MARKER-41c7"


def test_an_encrypted_s3_region_stores_no_plain_content_and_restores_exactly(
    tmp_path: Path, database: Database, seaweedfs: S3Server
) -> None:
    s3_region = region(tmp_path, seaweedfs, "region1", "s3")
    with app(tmp_path, database, s3_region, region(tmp_path, seaweedfs, "region2", "local")) as env:
        tree = env.roots["region1"] / "data"
        tree.mkdir()
        for index in range(8):
            lines = (MARKER + b" line %d of file %d\n" % (i, index) for i in range(300))
            (tree / f"note{index}.txt").write_bytes(b"".join(lines))
        (tree / f"{MARKER.decode()}.bin").write_bytes(random.Random(5).randbytes(100_000))
        resource = register_dir(env)
        vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
        backup = backup_now(env, vault["id"])
        assert backup["extend_info"]["encrypted"] is True, backup
        url = bucket_url(s3_region)
        bucket = open_bucket(S3Location.parse(url), seaweedfs.options().s3)
        keys = seaweedfs.keys(url)
        assert any("/chunks/" in key for key in keys) and any("/manifests/" in key for key in keys)
        runs = plain_runs(tree, 64)
        leaking = [
            key
            for key in keys
            if MARKER.decode() in key
            or leaks(bytes(obstore.get(bucket, key).bytes()), MARKER, runs, 64)
        ]
        assert leaking == []
        target = register_dir(env, name="target")
        log = restore(env, backup["id"], {"resource_id": target["id"]})
        assert log["status"] == "success", log
        assert_same_tree(tree, env.roots["region1"] / "target")
