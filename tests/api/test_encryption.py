"""Encryption at rest over HTTP, with real files: what reaches a region's storage reveals
neither content nor names; replicas into another project are sealed again with that
project's key; copies within a project move ciphertext without opening it; tampered
objects fail with the chunk named; a region with `encryption = false` stores plain chunks
(which is also what shows these checks can fail)."""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opencbr.db.session import Database
from opencbr.services import keys
from opencbr.settings import RegionSettings
from opencbr.storage import sealing
from opencbr.storage.chunk import SEALED_HEADER_SIZE, sealed_key_id
from tests.api.helpers import (
    Env,
    backup_now,
    chunks_dir,
    create_vault,
    leaks,
    make_settings,
    plain_runs,
    register_dir,
    replicate_backup,
    restore,
    serving,
)
from tests.unit.archive_support import assert_same_tree

MARKER = b"OPENCBR-MARKER-7f3a9c"
KiB = 1024
RUN = 64  # no run of this many plain bytes may reach the storage


def _tree(env: Env, name: str = "source") -> Path:
    """Files that repeat the marker (compressible, so zstd sees it too), one random file,
    and the marker in a file name (names travel in the catalog and the manifest)."""
    root = env.roots["region1"] / name
    (root / "sub").mkdir(parents=True)
    rng = random.Random(3)
    for index in range(12):
        text = b"".join(MARKER + b" line %d of file %d\n" % (i, index) for i in range(300))
        (root / f"note{index}.txt").write_bytes(text)
    (root / "sub" / "random.bin").write_bytes(rng.randbytes(200 * KiB))
    (root / "sub" / f"{MARKER.decode()}.txt").write_bytes(b"named after the marker\n")
    return root


def _backed_up(env: Env) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    root = _tree(env)
    resource = register_dir(env, name="source")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    return root, vault, backup_now(env, vault["id"])


def _stored_files(env: Env, region: str) -> Iterator[Path]:
    yield from (p for p in (env.settings.data_dir / "store" / region).rglob("*") if p.is_file())


def _leaks(env: Env, region: str, root: Path) -> list[str]:
    """Stored files holding the marker or any RUN-byte run of a plain file."""
    runs = plain_runs(root, RUN)
    return [
        path.name
        for path in _stored_files(env, region)
        if leaks(path.read_bytes(), MARKER, runs, RUN)
    ]


def test_storage_reveals_no_content_and_no_names_and_restores_are_exact(env: Env) -> None:
    root, vault, backup = _backed_up(env)
    assert backup["extend_info"]["encrypted"] is True
    assert list(_stored_files(env, "region1"))
    assert _leaks(env, "region1", root) == []
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "success", record
    assert _leaks(env, "region2", root) == []
    replica = env.get("region2", f"/backups/{record['destination_backup_id']}").json()["backup"]
    assert replica["extend_info"]["encrypted"] is True
    log = restore(env, backup["id"], {"resource_id": register_dir(env, name="back")["id"]})
    assert log["status"] == "success", log
    assert_same_tree(root, env.roots["region1"] / "back")
    # A replica names no target of its own region: say so, not just "not registered".
    unnamed = env.post("region2", f"/backups/{replica['id']}/restore", {"restore": {}})
    assert unnamed.status_code == 404 and "registered in its own region" in unnamed.text
    target = register_dir(env, "region2", name="copy")
    log = restore(env, replica["id"], {"resource_id": target["id"]}, "region2")
    assert log["status"] == "success", log
    assert_same_tree(root, env.roots["region2"] / "copy")


def test_a_replica_in_another_project_is_sealed_again_with_its_key(env: Env) -> None:
    """Each chunk's key is sealed again with the destination project's data key; the
    destination then reads its chunks with its own key alone (checked by the restores of
    the test above and by the unit tests of the format)."""
    _root, vault, backup = _backed_up(env)
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "success", record
    source = _chunk_files(env, "region1", vault["id"])
    copied = _chunk_files(env, "region2", dest["id"])
    assert copied and set(copied) <= set(source)  # the same names: dedup and planning
    for name, path in copied.items():
        before, after = source[name].read_bytes(), path.read_bytes()
        assert sealed_key_id(before, name) != sealed_key_id(after, name)
        assert before[:SEALED_HEADER_SIZE] != after[:SEALED_HEADER_SIZE]  # another envelope


def test_a_copy_within_a_project_moves_ciphertext_without_opening_it(env: Env) -> None:
    """migrateresources copies a project's chunks and manifests between its vaults as
    they are: not one sealed object is opened (counted in this process)."""
    _root, vault, backup = _backed_up(env)
    dest = create_vault(env, name="dest")
    resource_id = backup["resource_id"]
    before = _chunk_files(env, "region1", vault["id"])
    stored = {name: path.read_bytes() for name, path in before.items()}
    opened = sealing.OPENED.value
    body = {"destination_vault_id": dest["id"], "resource_ids": [resource_id]}
    response = env.post("region1", f"/vaults/{vault['id']}/migrateresources", body)
    assert response.status_code == 200, response.text
    env.wait_for(
        "region1",
        f"/backups/{backup['id']}",
        lambda body: body["backup"]["vault_id"] == dest["id"],
    )
    assert sealing.OPENED.value == opened
    after = _chunk_files(env, "region1", dest["id"])
    assert after and {name: path.read_bytes() for name, path in after.items()} == stored


@pytest.mark.parametrize("damage", ["flip", "swap", "truncate"])
def test_a_tampered_chunk_fails_restore_and_replication_naming_it(env: Env, damage: str) -> None:
    _root, vault, backup = _backed_up(env)
    files = _chunk_files(env, "region1", vault["id"])
    other, victim = sorted(files, key=lambda name: files[name].stat().st_size)[-2:]  # data
    path = files[victim]
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "swap":  # another valid sealed chunk put in its place (kept as well,
        # so the restore meets the victim whatever the order of the two in the stream)
        path.write_bytes(files[other].read_bytes())
    else:
        path.write_bytes(path.read_bytes()[:-100])
    log = restore(env, backup["id"], {"resource_id": register_dir(env, name="back")["id"]})
    assert log["status"] == "failed" and victim in log["error_info"]["message"], log
    assert not any((env.roots["region1"] / "back").rglob("*.bin"))  # nothing from it
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "fail", record
    assert record["extra_info"]["fail_code"] == "BackupService.1006"


@pytest.fixture
def plain_env(tmp_path: Path, database: Database) -> Iterator[Env]:
    """Both regions with `encryption = false` (trusted local disks)."""
    base = make_settings(tmp_path)
    regions = [
        RegionSettings(name=r.name, storage=r.storage, encryption=False) for r in base.regions
    ]
    with serving(make_settings(tmp_path, regions=regions), database) as running:
        yield running


def test_a_region_without_encryption_stores_plain_chunks(plain_env: Env) -> None:
    root, vault, backup = _backed_up(plain_env)
    assert backup["extend_info"]["encrypted"] is False
    assert _leaks(plain_env, "region1", root)  # the check above can fail
    files = _chunk_files(plain_env, "region1", vault["id"])
    assert all(sealed_key_id(path.read_bytes(), name) is None for name, path in files.items())
    log = restore(plain_env, backup["id"], {"resource_id": register_dir(plain_env, name="b")["id"]})
    assert log["status"] == "success", log
    assert_same_tree(root, plain_env.roots["region1"] / "b")


def _chunk_files(env: Env, region: str, vault_id: str) -> dict[str, Path]:
    return {p.name: p for p in chunks_dir(env, region, vault_id).rglob("*") if p.is_file()}


def test_a_backup_needing_a_data_key_after_a_rotation_this_process_missed_fails_clearly(
    env: Env, tmp_path: Path
) -> None:
    """The master key was rotated (by `opencbr admin key rotate` in another process) and
    this one not restarted: its next new data key is refused, the backup fails with a
    reason that says what to do (no traceback, no path), and nothing is wrapped by the
    retired key."""
    _backed_up(env)  # the process's keyring in use: its master key and region1's data key
    new_path = tmp_path / "new-master.key"
    new_path.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    old = keys.MasterKey.load(env.settings.master_key_path, create=False)
    keys.rotate_master(env.db, old, keys.MasterKey.load(new_path, create=False))
    (env.roots["region2"] / "data").mkdir(parents=True)
    (env.roots["region2"] / "data" / "f").write_bytes(b"region2's first sealed data")
    resource = register_dir(env, "region2")
    vault = create_vault(
        env, "region2", resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}]
    )
    backup = backup_now(env, vault["id"], region="region2", expect="error")
    assert backup["status"] == "error"
    reason = backup["fail_reason"]
    assert "restart it with the deployment's master key file" in reason
    assert str(env.settings.data_dir) not in reason
    assert keys.key_problem(keys.Keyring(env.db, new_path)) is None  # still starts
