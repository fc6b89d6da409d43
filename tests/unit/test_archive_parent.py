"""Incremental tree backups: unchanged files are taken from the previous backup unread."""

from __future__ import annotations

import os
import random
import struct
import tarfile
from pathlib import Path

import pytest

from opencbr.archive.catalog import CATALOG_MAGIC_V1, iter_catalog
from opencbr.archive.extract import restore_tree
from opencbr.archive.manifest import Manifest
from opencbr.archive.parent import REUSE_MIN_SIZE, PreviousBackup
from opencbr.archive.sink import ChunkRef
from tests.unit.archive_support import MemoryVault, assert_same_tree, build_tree
from tests.unit.opening import backup_tree_at

MiB = 1 << 20
BIG_NAMES = ("a_same.bin", "b_rewritten.bin", "c_appended.bin", "d_chmod.bin", "e_touched.bin")


def _big_tree(root: Path) -> dict[str, int]:
    """build_tree's small files plus five large files with small files between them."""
    build_tree(root, big_files=0)
    rng = random.Random(3)
    sizes = {}
    for index, name in enumerate(BIG_NAMES):
        size = REUSE_MIN_SIZE + index * 700_001
        (root / name).write_bytes(rng.randbytes(size))
        (root / f"{name}.note").write_bytes(rng.randbytes(3000))  # shares chunks
        sizes[name] = size
    return sizes


def _change(root: Path) -> None:
    rewritten = root / "b_rewritten.bin"
    before = rewritten.stat()
    with open(rewritten, "r+b") as handle:  # same size, and the mtime put back:
        handle.seek(5000)  # only ctime tells the change
        handle.write(b"\xaa" * 4096)
    os.utime(rewritten, ns=(before.st_atime_ns, before.st_mtime_ns))
    with open(root / "c_appended.bin", "ab") as handle:
        handle.write(b"more")
    os.chmod(root / "d_chmod.bin", 0o600)
    touched = root / "e_touched.bin"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 1))
    (root / "new_big.bin").write_bytes(random.Random(9).randbytes(2 * MiB))
    (root / "dir03" / "sub" / "f007.dat").unlink()


@pytest.fixture()
def two_backups(tmp_path: Path) -> tuple[Path, MemoryVault, Manifest, int]:
    root = tmp_path / "tree"
    sizes = _big_tree(root)
    vault = MemoryVault()
    first = backup_tree_at(root, vault)
    _change(root)
    return root, vault, first.manifest, sizes["a_same.bin"]


def test_only_unchanged_files_are_reused(
    two_backups: tuple[Path, MemoryVault, Manifest, int], tmp_path: Path
) -> None:
    root, vault, first, same_size = two_backups
    vault.loads.clear()
    second = backup_tree_at(root, vault, previous=PreviousBackup(first, vault))
    # Rewritten with its mtime put back (ctime differs), appended, chmod-ed, touched
    # and new large files are all read again; of the large files only a_same.bin is not.
    assert set(vault.loads) <= {ref.digest for ref in first.catalog}  # no data chunk read
    # Small files are read again only in the groups of a changed or removed member.
    regular = [e for e in iter_catalog(second.manifest, vault) if e.type == tarfile.REGTYPE]
    large = sum(e.size for e in regular if e.size >= REUSE_MIN_SIZE)
    assert second.files_reused + second.files_read == len(regular)
    assert second.files_read >= 5 and second.files_reused > len(regular) // 2
    assert large - same_size + second.bytes_reused <= sum(e.size for e in regular)
    target = tmp_path / "restored"
    target.mkdir()
    restore_tree(second.manifest, vault, target)
    assert_same_tree(root, target)


def test_reused_chunks_are_exactly_what_reading_the_files_gives(
    two_backups: tuple[Path, MemoryVault, Manifest, int],
) -> None:
    root, vault, first, _ = two_backups
    reused = backup_tree_at(root, vault, previous=PreviousBackup(first, vault))
    read = backup_tree_at(root, MemoryVault())
    assert reused.manifest.chunks == read.manifest.chunks
    assert reused.manifest.catalog == read.manifest.catalog
    assert read.bytes_reused == 0


def test_large_files_start_and_end_on_chunk_boundaries(
    two_backups: tuple[Path, MemoryVault, Manifest, int],
) -> None:
    _root, vault, first, _ = two_backups
    starts, position = set(), 0
    for ref in first.chunks:
        starts.add(position)
        position += ref.length
    starts.add(position)
    large = [e for e in iter_catalog(first, vault) if e.size >= REUSE_MIN_SIZE]
    assert len(large) == len(BIG_NAMES)
    for entry in large:
        end = entry.data_offset + entry.size + (-entry.size % tarfile.BLOCKSIZE)
        assert {entry.header_offset, end} <= starts
        assert entry.inode and entry.ctime_ns and len(entry.header_digest) == 8


def test_unchanged_tree_reads_no_file_and_stores_nothing(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    _big_tree(root)
    vault = MemoryVault()
    first = backup_tree_at(root, vault)
    again = backup_tree_at(root, vault, previous=PreviousBackup(first.manifest, vault))
    regular = [e for e in iter_catalog(first.manifest, vault) if e.type == tarfile.REGTYPE]
    assert (again.files_read, again.files_reused) == (0, len(regular))
    assert again.bytes_reused == sum(e.size for e in regular)
    assert again.manifest.chunks == first.manifest.chunks
    assert again.manifest.catalog == first.manifest.catalog
    assert (again.chunks_new, again.bytes_new) == (0, 0)


def test_a_moved_tree_is_read_again(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    _big_tree(root)
    vault = MemoryVault()
    first = backup_tree_at(root, vault)
    (root / "a_same.bin").rename(root / "z_moved.bin")  # same inode, another name
    second = backup_tree_at(root, vault, previous=PreviousBackup(first.manifest, vault))
    others = sum((root / name).stat().st_size for name in BIG_NAMES if name != "a_same.bin")
    moved = (root / "z_moved.bin").stat().st_size
    assert second.files_read >= 1  # z_moved.bin, and the small files grouped with it
    total = sum(e.size for e in iter_catalog(second.manifest, vault) if e.type == tarfile.REGTYPE)
    assert others <= second.bytes_reused <= total - moved


def test_version_1_catalogs_are_read_with_no_file_taken_as_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "big.bin").write_bytes(random.Random(1).randbytes(2 * MiB))
    vault = MemoryVault()
    current = backup_tree_at(root, vault).manifest
    entries = list(iter_catalog(current, vault))
    record = struct.Struct("<cIIIQqQQII")
    stream = CATALOG_MAGIC_V1 + b"".join(
        record.pack(e.type, e.mode, e.uid, e.gid, e.size, e.mtime_ns, e.header_offset,
                    e.data_offset, len(e.path), len(e.linkname)) + e.path + e.linkname
        for e in entries
    )  # fmt: skip
    old = Manifest(
        kind="tree",
        size=current.size,
        chunks=current.chunks,
        catalog=(ChunkRef(vault.put_plain(stream), len(stream)),),
    )
    decoded = list(iter_catalog(old, vault))
    assert [e[:10] for e in decoded] == [e[:10] for e in entries]
    assert {(e.ctime_ns, e.inode, e.header_digest) for e in decoded} == {(0, 0, b"")}
    again = backup_tree_at(root, vault, previous=PreviousBackup(old, vault))
    assert again.bytes_reused == 0
    assert again.manifest.chunks == current.chunks
