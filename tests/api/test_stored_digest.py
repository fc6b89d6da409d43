"""The stored-bytes digest (invariant 3), over HTTP with real files: a backup records the
BLAKE3 of each chunk's stored bytes in its vault's index; replication checks the bytes it
copies against that digest alone (no decompressing, no hashing of the plain bytes) and
records it at the destination; chunks indexed before it existed are checked by their
content digest, as before, and get one recorded when copied."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from opencbr.db.backups import VaultChunk
from opencbr.storage.chunk import digest, reseal_chunk
from tests.api.helpers import (
    Env,
    backup_now,
    chunk_keys,
    chunks_dir,
    create_vault,
    register_dir,
    replicate_backup,
    restore,
)
from tests.unit.archive_support import assert_same_tree

MiB = 1 << 20


def _index(env: Env, vault_id: str) -> dict[str, str | None]:
    with env.db.reading() as session:
        rows = session.execute(
            select(VaultChunk.digest, VaultChunk.stored_digest).where(
                VaultChunk.vault_id == vault_id
            )
        )
        return {d: s for d, s in rows}


def _files(env: Env, region: str, vault_id: str) -> dict[str, Path]:
    return {p.name: p for p in chunks_dir(env, region, vault_id).rglob("*") if p.is_file()}


def _backed_up_tree(env: Env) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    source = env.roots["region1"] / "source"
    source.mkdir()
    rng = random.Random(5)
    (source / "large.bin").write_bytes(rng.randbytes(3 * MiB))
    (source / "log.txt").write_bytes(b"a line of a log that compresses well\n" * 40000)
    resource = register_dir(env, name="source")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    return source, vault, backup_now(env, vault["id"])


def test_a_backup_records_the_digest_of_each_chunks_stored_bytes(env: Env) -> None:
    _source, vault, _backup = _backed_up_tree(env)
    files = _files(env, "region1", vault["id"])
    index = _index(env, vault["id"])
    assert index and set(index) == set(files)
    assert all(index[name] == digest(path.read_bytes()) for name, path in files.items())


def test_replication_checks_stored_bytes_against_their_recorded_digest(env: Env) -> None:
    source, vault, backup = _backed_up_tree(env)
    # A chunk sealed again (another nonce): the same content, authentic, so a restore
    # accepts it, but not the bytes the backup stored.
    name, path = next(iter(_files(env, "region1", vault["id"]).items()))
    keys = chunk_keys(env)
    sealing = keys.sealing(env.projects["region1"])
    path.write_bytes(reseal_chunk(path.read_bytes(), name, keys, sealing))
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "fail", record
    assert record["extra_info"]["fail_code"] == "BackupService.1006"
    assert f"chunk {name}: stored bytes do not match" in record["extra_info"]["fail_reason"]
    assert name not in _files(env, "region2", dest["id"])
    log = restore(env, backup["id"], {"resource_id": register_dir(env, name="back")["id"]})
    assert log["status"] == "success", log  # its content is intact: restores check that
    assert_same_tree(source, env.roots["region1"] / "back")


def test_chunks_without_a_recorded_digest_are_checked_by_content_and_get_one(env: Env) -> None:
    source, vault, backup = _backed_up_tree(env)
    with env.db.transaction() as session:  # as indexed before the digest was recorded
        session.execute(
            update(VaultChunk).where(VaultChunk.vault_id == vault["id"]).values(stored_digest=None)
        )
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "success", record
    files = _files(env, "region2", dest["id"])
    index = _index(env, dest["id"])
    assert set(index) == set(files)
    assert all(index[name] == digest(path.read_bytes()) for name, path in files.items())
    replica = record["destination_backup_id"]
    target = register_dir(env, "region2", name="t")
    log = restore(env, replica, {"resource_id": target["id"]}, "region2")
    assert log["status"] == "success", log
    assert_same_tree(source, env.roots["region2"] / "t")
