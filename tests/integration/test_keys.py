"""Keys of encryption at rest against both databases (services/keys.py): the master key
file, refusing a process with another master key, master-key rotation (staged, resumable,
switched at once) and new data keys, with sealed chunks readable throughout."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from opencbr.db.session import Database
from opencbr.services import credentials, identity, keys
from opencbr.storage.chunk import decode_chunk, encode_chunk, sealed_key_id
from tests.api.helpers import make_settings


def _master_file(path: Path) -> Path:
    path.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    return path


def _project(db: Database, tmp_path: Path) -> str:
    name = f"p{os.urandom(3).hex()}"
    return identity.create_project(db, make_settings(tmp_path), name, "region1").id


def _sealed(keyring: keys.Keyring, project_id: str, data: bytes) -> tuple[str, bytes]:
    sealing = keyring.sealing(project_id)
    return sealing.name(data), encode_chunk(data, sealing=sealing)


def test_the_master_key_file_is_created_private_once(database: Database, tmp_path: Path) -> None:
    path = make_settings(tmp_path).master_key_path
    first = keys.Keyring(database, path)
    assert keys.key_problem(first) is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_bytes().strip())) == 32
    content = path.read_bytes()
    assert keys.key_problem(keys.Keyring(database, path)) is None  # another process
    assert path.read_bytes() == content
    assert first.naming_key == keys.Keyring(database, path).naming_key


def test_a_process_with_another_master_key_refuses_to_start(
    database: Database, tmp_path: Path
) -> None:
    path = _master_file(tmp_path / "master.key")
    assert keys.key_problem(keys.Keyring(database, path)) is None
    other = _master_file(tmp_path / "other.key")
    problem = keys.key_problem(keys.Keyring(database, other))
    assert problem is not None and "\n" not in problem and str(other) in problem
    missing = keys.key_problem(keys.Keyring(database, tmp_path / "nothing" / "x.key"))
    assert missing is not None  # created, but not the key this database's keys need


def test_master_key_rotation_is_staged_then_switched_and_data_stays_readable(
    database: Database, tmp_path: Path
) -> None:
    old_path, new_path = _master_file(tmp_path / "old.key"), _master_file(tmp_path / "new.key")
    before = keys.Keyring(database, old_path)
    project = _project(database, tmp_path)
    name, blob = _sealed(before, project, b"payload sealed before the rotation" * 100)
    old = keys.MasterKey.load(old_path, create=False)
    new = keys.MasterKey.load(new_path, create=False)

    keys.stage_rotation(database, old, new)  # a crash here: both keys still serve
    assert keys.key_problem(keys.Keyring(database, old_path)) is None
    assert keys.key_problem(keys.Keyring(database, new_path)) is None
    keys.stage_rotation(database, old, new)  # resumed: nothing left to stage

    assert keys.switch_rotation(database, new) == 2  # naming secret + one data key
    assert keys.key_problem(keys.Keyring(database, old_path)) is not None
    after = keys.Keyring(database, new_path)
    assert keys.key_problem(after) is None
    assert decode_chunk(blob, name, after) == b"payload sealed before the rotation" * 100
    assert after.naming_key == before.naming_key  # chunk names never change
    assert keys.rotate_master(database, new, new) == 2  # again: a no-op


def test_a_new_data_key_seals_new_chunks_and_old_ones_stay_readable(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _master_file(tmp_path / "master.key")
    keyring = keys.Keyring(database, path)
    project = _project(database, tmp_path)
    old_name, old_blob = _sealed(keyring, project, b"old data")
    key_id = keys.new_data_key(database, keys.MasterKey.load(path, create=False), project)
    monkeypatch.setattr(keys, "CURRENT_KEY_SECONDS", 0.0)  # look for a newer key at once
    new_name, new_blob = _sealed(keyring, project, b"new data")
    assert sealed_key_id(new_blob, new_name) == key_id != sealed_key_id(old_blob, old_name)
    reader = keys.Keyring(database, path)
    assert decode_chunk(old_blob, old_name, reader) == b"old data"
    assert decode_chunk(new_blob, new_name, reader) == b"new data"


def _keyring_and_next_key(
    database: Database, tmp_path: Path
) -> tuple[keys.Keyring, Path, keys.MasterKey, keys.MasterKey]:
    """A running process's keyring (old master key), the new key's file, both keys."""
    old_path, new_path = _master_file(tmp_path / "old.key"), _master_file(tmp_path / "new.key")
    keyring = keys.Keyring(database, old_path)
    assert keys.key_problem(keyring) is None
    old = keys.MasterKey.load(old_path, create=False)
    return keyring, new_path, old, keys.MasterKey.load(new_path, create=False)


def test_a_process_not_restarted_after_a_rotation_makes_no_data_key_with_the_old_key(
    database: Database, tmp_path: Path
) -> None:
    """A process still holding the retired master key (a rotation switched, the process not
    restarted) that needs a new project's first data key is refused with one clear line,
    and writes nothing: the deployment keeps starting with the new key file."""
    stale, new_path, old, new = _keyring_and_next_key(database, tmp_path)
    keys.rotate_master(database, old, new)
    project = _project(database, tmp_path)  # its first sealed write makes its data key
    with pytest.raises(keys.KeyringError, match="restart it with the new master key file"):
        stale.sealing(project)
    assert keys.key_problem(keys.Keyring(database, new_path)) is None
    fresh = keys.Keyring(database, new_path)
    name, blob = _sealed(fresh, project, b"after the restart")
    assert decode_chunk(blob, name, keys.Keyring(database, new_path)) == b"after the restart"


def test_a_data_key_made_while_a_rotation_is_staged_is_staged_again_or_refused(
    database: Database, tmp_path: Path
) -> None:
    """During a staged rotation a process with the old key may still make a data key; the
    switch then refuses (run it again), and the second run stages it too."""
    keyring, new_path, old, new = _keyring_and_next_key(database, tmp_path)
    keys.stage_rotation(database, old, new)
    project = _project(database, tmp_path)
    name, blob = _sealed(keyring, project, b"made while staged")  # the old key is in force
    with pytest.raises(keys.KeyringError, match="run it again"):
        keys.switch_rotation(database, new)
    keys.rotate_master(database, old, new)
    after = keys.Keyring(database, new_path)
    assert keys.key_problem(after) is None
    assert decode_chunk(blob, name, after) == b"made while staged"


def test_key_files_copied_readable_by_others_are_made_private_when_loaded(
    database: Database, tmp_path: Path
) -> None:
    """A master key file made or copied under umask 022 (0644: every local user could
    unwrap every tenant's data keys) is taken back to 0600 by the first process that loads
    it; likewise the secret key file of stored access-key secrets."""
    path = _master_file(tmp_path / "master.key")
    path.chmod(0o644)
    assert keys.key_problem(keys.Keyring(database, path)) is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Through a symlink (an orchestrator's mounted secret): its target, 0600 and no more.
    linked = tmp_path / "linked.key"
    linked.symlink_to(path)
    path.chmod(0o640)
    assert keys.key_problem(keys.Keyring(database, linked)) is None
    assert linked.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = make_settings(tmp_path, secret_key_file=tmp_path / "secret.key")
    secret = tmp_path / "secret.key"
    assert credentials.key_problem(database, settings) is None  # creates it, 0600
    secret.chmod(0o640)
    assert credentials.key_problem(database, settings) is None
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
