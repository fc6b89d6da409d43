"""Issue 11 §1-2 over HTTP: a registered path is confined at every backup, not only at
registration. A tenant who can rename entries under its root swaps a registered
directory, image, parent directory or server volume for a symlink out of the root (or a
FIFO); the backup fails with BackupService.6302 and no byte from outside is ever stored."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opencbr.services.stores import StoreRegistry, VaultSource
from tests.api.helpers import (
    Env,
    assert_error,
    create_vault,
    register_dir,
    register_disk,
    register_web_server,
)

MiB = 1 << 20
INVALID = "BackupService.6302"


@pytest.fixture
def secret() -> bytes:
    """Bytes that must never reach a vault: planted in places outside every root."""
    return b"TOP-SECRET-" + secrets.token_hex(16).encode()


@pytest.fixture
def outside(tmp_path: Path, secret: bytes) -> Path:
    """A directory outside every configured root, holding a secret."""
    folder = tmp_path / "outside"
    (folder / "data").mkdir(parents=True)
    (folder / "secret.txt").write_bytes(secret)
    (folder / "data" / "secret.txt").write_bytes(secret)
    return folder


def checkpoint(env: Env, vault_id: str, region: str = "region1") -> str:
    response = env.post(region, "/checkpoints", {"checkpoint": {"vault_id": vault_id}})
    assert response.status_code == 200, response.text
    return str(response.json()["checkpoint"]["id"])


def settled(env: Env, checkpoint_id: str, region: str = "region1", timeout: float = 60) -> Any:
    """The single backup of a checkpoint once it is no longer protecting."""
    env.wait_for(
        region,
        f"/checkpoints/{checkpoint_id}",
        lambda body: body["checkpoint"]["status"] != "protecting",
        timeout=timeout,
    )
    backups = env.get(region, "/backups", params={"checkpoint_id": checkpoint_id}).json()
    assert backups["count"] == 1, backups
    return backups["backups"][0]


def backup_once(env: Env, vault_id: str, region: str = "region1") -> Any:
    return settled(env, checkpoint(env, vault_id, region), region)


def assert_path_invalid(env: Env, backup: Any, region: str = "region1") -> None:
    assert backup["status"] == "error", backup
    assert backup["fail_reason"].startswith("resource path is no longer valid: "), backup
    logs = env.get(
        region,
        "/operation-logs",
        params={"operation_type": "backup", "vault_id": backup["vault_id"]},
    ).json()["operation_logs"]
    entry = next(log for log in logs if log["extra_info"]["backup"]["backup_id"] == backup["id"])
    assert entry["status"] == "failed", entry
    assert entry["error_info"]["code"] == INVALID, entry


def stored_plaintext(env: Env, region: str, vault_id: str) -> bytes:
    """Every chunk the vault's store holds, decoded (manifest chunks or not)."""
    registry = StoreRegistry({r.name: r.storage for r in env.settings.regions})
    try:
        store = registry.vault(region, vault_id)
        runtime = env.client.app.state.runtime  # type: ignore[attr-defined]
        source = VaultSource(store, codec=runtime.reader)  # opens sealed chunks too
        return b"".join(source.load(digest) for digest in store.list_chunks())
    finally:
        registry.close()


def _vault_for(
    env: Env, resource: dict[str, Any], object_type: str, region: str = "region1"
) -> Any:
    types = {"turbo": "OS::Sfs::Turbo", "disk": "OS::Cinder::Volume", "server": "OS::Nova::Server"}
    return create_vault(
        env,
        region,
        object_type=object_type,
        resources=[{"id": resource["id"], "type": types[object_type]}],
    )


def test_a_registered_directory_swapped_for_a_symlink_to_the_data_dir_is_not_backed_up(
    env: Env, secret: bytes
) -> None:
    # The attack of issue 11: back up data_dir (admin password, secret key, database)
    # through a registered directory swapped for a symlink after registration.
    planted = env.settings.data_dir / "planted-secret"
    planted.write_bytes(secret)
    resource = register_dir(env, name="home")
    (env.roots["region1"] / "home" / "notes.txt").write_text("mine\n")
    vault = _vault_for(env, resource, "turbo")
    home = env.roots["region1"] / "home"
    home.rename(env.roots["region1"] / "home.orig")
    home.symlink_to(env.settings.data_dir)

    backup = backup_once(env, vault["id"])

    assert_path_invalid(env, backup)
    assert "symbolic link" in backup["fail_reason"]
    plain = stored_plaintext(env, "region1", vault["id"])
    assert secret not in plain and b"opencbr.db" not in plain and b"secret.key" not in plain


def test_a_registered_disk_image_swapped_for_a_symlink_is_not_read(
    env: Env, outside: Path, secret: bytes
) -> None:
    resource = register_disk(env, name="sdb", size=MiB)
    image = env.roots["region1"] / "sdb.img"
    vault = _vault_for(env, resource, "disk")
    image.unlink()
    image.symlink_to(outside / "secret.txt")

    backup = backup_once(env, vault["id"])

    assert_path_invalid(env, backup)
    assert secret not in stored_plaintext(env, "region1", vault["id"])


def test_a_parent_directory_swapped_for_a_symlink_to_a_tree_of_the_same_shape_fails(
    env: Env, outside: Path, secret: bytes
) -> None:
    # Registered: <root>/home/data. The tenant renames home away and puts a symlink to an
    # outside tree that also has a `data` directory: the full path resolves again.
    resource = register_dir(env, name="data", subdir="home/data")
    (env.roots["region1"] / "home" / "data" / "mine.txt").write_text("mine\n")
    vault = _vault_for(env, resource, "turbo")
    home = env.roots["region1"] / "home"
    home.rename(env.roots["region1"] / "home.orig")
    home.symlink_to(outside)

    backup = backup_once(env, vault["id"])

    assert_path_invalid(env, backup)
    assert secret not in stored_plaintext(env, "region1", vault["id"])


# renameat2(RENAME_EXCHANGE) swaps two names atomically: the flipper below turns each
# subdirectory into a symlink out of the root and back, as fast as the kernel allows.
_FLIPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
pairs = [(a.encode(), b.encode()) for a, b in zip(sys.argv[1::2], sys.argv[2::2])]
sys.stdout.write("ready\\n"); sys.stdout.flush()
while True:
    for a, b in pairs:
        libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)
"""


@pytest.fixture
def flipping_tree(env: Env, outside: Path) -> Iterator[Path]:
    """A registered tree whose 64 subdirectories a separate process keeps swapping with
    symlinks to a directory outside the root (a file of the same name waits there)."""
    source = env.roots["region1"] / "flip"
    pairs: list[str] = []
    for index in range(64):
        sub = source / f"sub{index:02d}"
        sub.mkdir(parents=True)
        (sub / "secret.txt").write_bytes(b"inside\n")
        (sub / "other.txt").write_bytes(b"inside too\n")
        link = source / f"link{index:02d}"
        link.symlink_to(outside)
        pairs += [str(sub), str(link)]
    if not _has_rename_exchange(source):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    flipper = subprocess.Popen(
        [sys.executable, "-c", _FLIPPER, *pairs], stdout=subprocess.PIPE, text=True
    )
    try:
        assert flipper.stdout is not None and flipper.stdout.readline() == "ready\n"
        yield source
    finally:
        flipper.kill()
        flipper.wait()
        if flipper.stdout is not None:
            flipper.stdout.close()


def _has_rename_exchange(folder: Path) -> bool:
    (folder / "probe-a").mkdir()
    (folder / "probe-b").symlink_to(folder / "probe-a")
    libc = ctypes.CDLL(None, use_errno=True)
    done = libc.renameat2(-100, bytes(folder / "probe-a"), -100, bytes(folder / "probe-b"), 2)
    os.unlink(folder / ("probe-a" if done == 0 else "probe-b"))
    os.rmdir(folder / ("probe-b" if done == 0 else "probe-a"))
    return bool(done == 0)


def test_subdirectories_swapped_for_symlinks_during_the_backup_never_leak_outside_files(
    env: Env, flipping_tree: Path, secret: bytes
) -> None:
    resource = register_dir(env, name="flip")
    vault = _vault_for(env, resource, "turbo")
    for _ in range(5):
        backup = backup_once(env, vault["id"])
        assert backup["status"] == "available", backup
    assert secret not in stored_plaintext(env, "region1", vault["id"])


def test_a_server_whose_volume_was_swapped_fails_and_reads_no_volume(
    env: Env, outside: Path, secret: bytes
) -> None:
    server = register_web_server(env, b"image bytes of the data volume" * 100)
    root = env.roots["region1"]
    (root / "web" / "sys").rename(root / "web" / "sys.orig")
    (root / "web" / "sys").symlink_to(outside)
    vault = _vault_for(env, server, "server")  # bound after the swap

    backup = backup_once(env, vault["id"])

    assert_path_invalid(env, backup)
    assert str(root / "web" / "sys") in backup["fail_reason"]
    plain = stored_plaintext(env, "region1", vault["id"])
    assert secret not in plain
    assert b"image bytes of the data volume" not in plain  # nothing read before the check

    # The image volume swapped for a symlink fails the same way.
    (root / "web" / "sys").unlink()
    (root / "web" / "sys.orig").rename(root / "web" / "sys")
    (root / "web" / "data.img").unlink()
    (root / "web" / "data.img").symlink_to(outside / "secret.txt")
    backup = backup_once(env, vault["id"])
    assert_path_invalid(env, backup)
    assert secret not in stored_plaintext(env, "region1", vault["id"])


def test_a_disk_image_swapped_for_a_fifo_fails_at_once_and_blocks_no_other_tenant(
    env: Env,
) -> None:
    resource = register_disk(env, name="sdb", size=MiB)
    vault = _vault_for(env, resource, "disk")
    image = env.roots["region1"] / "sdb.img"
    image.unlink()
    os.mkfifo(image)
    other = register_dir(env, "region2", name="docs")
    (env.roots["region2"] / "docs" / "readme.txt").write_text("region2's data\n")
    other_vault = _vault_for(env, other, "turbo", "region2")
    try:
        started = time.monotonic()
        stuck_id = checkpoint(env, vault["id"])
        other_id = checkpoint(env, other_vault["id"], "region2")
        stuck = settled(env, stuck_id, timeout=10)
        assert time.monotonic() - started < 10
        assert_path_invalid(env, stuck)
        assert stuck["fail_reason"].endswith("it is no longer a regular file")
        assert settled(env, other_id, "region2", timeout=30)["status"] == "available"
    finally:
        _release_readers(image)


def _release_readers(fifo: Path) -> None:
    """Open the FIFO's write end once: a worker blocked reading it (the bug) returns."""
    with contextlib.suppress(OSError):  # ENXIO: no reader, nothing is blocked
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_unregistering_never_opens_the_path(env: Env) -> None:
    resource = register_disk(env, name="sdb", size=MiB)
    image = env.roots["region1"] / "sdb.img"
    image.unlink()
    os.mkfifo(image)  # opening it for reading would wait for a writer forever
    started = time.monotonic()
    response = env.delete("region1", f"/protectables/disk/instances/{resource['id']}")
    assert response.status_code == 204, response.text
    assert time.monotonic() - started < 5


def test_registration_opens_devices_only_as_what_they_are(env: Env) -> None:
    root = env.roots["region1"]
    try:
        os.mknod(root / "loop", stat.S_IFBLK | 0o600, os.makedev(7, 0))
        os.mknod(root / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("no CAP_MKNOD here")
    os.mkfifo(root / "pipe")
    for name in ("null", "pipe"):
        response = env.post(
            "region1",
            "/protectables/disk/instances",
            {"instance": {"name": name, "path": str(root / name)}},
        )
        assert_error(response, 400, "BackupService.9900")
        assert "must be a file or block device" in response.json()["error_msg"]
    try:
        os.close(os.open(root / "loop", os.O_RDONLY | os.O_NONBLOCK))
    except OSError:
        pytest.skip("no loop device to open here")
    response = env.post(
        "region1",
        "/protectables/disk/instances",
        {"instance": {"name": "loop", "path": str(root / "loop")}},
    )
    assert response.status_code == 200, response.text


def test_a_disk_is_backed_up_only_as_the_node_it_was_registered_as(env: Env) -> None:
    # A tenant able to create device nodes (CAP_MKNOD in a container sharing the root)
    # swaps its image file for a node of a host block device: never read.
    resource = register_disk(env, name="sdb", size=MiB)
    vault = _vault_for(env, resource, "disk")
    image = env.roots["region1"] / "sdb.img"
    image.unlink()
    try:
        os.mknod(image, stat.S_IFBLK | 0o600, os.makedev(7, 0))
    except PermissionError:
        pytest.skip("no CAP_MKNOD here")

    backup = backup_once(env, vault["id"])

    assert_path_invalid(env, backup)
    assert backup["fail_reason"].endswith("it is no longer a regular file")
