"""Small members are written in groups between chunk boundaries: an incremental backup
reads only the groups of changed members, stores only those, and restores byte-identical."""

from __future__ import annotations

import bisect
import io
import itertools
import os
import random
import tarfile
from pathlib import Path

import pytest

from opencbr.archive import tree
from opencbr.archive.catalog import CatalogEntry, iter_catalog
from opencbr.archive.confined import opened
from opencbr.archive.extract import restore_tree
from opencbr.archive.manifest import Manifest
from opencbr.archive.parent import PreviousBackup, padded
from opencbr.archive.pipeline import BackupResult, StreamChunker
from tests.unit.archive_support import MemoryVault, assert_same_tree, build_small_files
from tests.unit.opening import backup_tree_at

MiB = 1 << 20
FILES = 600


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    build_small_files(root, FILES, per_folder=150, sizes=(1024, 16 * 1024))
    (root / "s001" / "big.bin").write_bytes(random.Random(5).randbytes(3 * MiB))
    return root


def _rewrite_in_place(paths: list[Path]) -> None:
    """New bytes in the middle of each file: same size, new mtime and ctime."""
    rng = random.Random(11)
    for path in paths:
        with open(path, "r+b") as handle:
            handle.seek(100)
            handle.write(rng.randbytes(200))


def _regular(manifest: Manifest, vault: MemoryVault) -> list[CatalogEntry]:
    return [e for e in iter_catalog(manifest, vault) if e.type == tarfile.REGTYPE]


def _chunk_span(manifest: Manifest, entry: CatalogEntry) -> range:
    """Indexes of the data chunks that hold any byte of `entry`'s headers and data."""
    starts = list(itertools.accumulate((ref.length for ref in manifest.chunks), initial=0))
    first = bisect.bisect_right(starts, entry.header_offset) - 1
    last = bisect.bisect_left(starts, entry.data_offset + padded(entry.size)) - 1
    return range(first, last + 1)


def _restored_equal(result: BackupResult, vault: MemoryVault, root: Path, target: Path) -> None:
    target.mkdir()
    restore_tree(result.manifest, vault, target)
    assert_same_tree(root, target)


def test_only_the_groups_of_changed_files_are_read_and_stored(
    small_tree: Path, tmp_path: Path
) -> None:
    vault = MemoryVault()
    first = backup_tree_at(small_tree, vault)
    assert first.files_read == FILES + 1 and first.files_reused == 0
    changed = sorted(small_tree.glob("s*/*.dat"))[::100]  # 6 files spread over the tree
    _rewrite_in_place(changed)
    entries = _regular(first.manifest, vault)
    changed_paths = {os.fsencode(p.relative_to(small_tree)) for p in changed}
    dirty = {i for e in entries if e.path in changed_paths for i in _chunk_span(first.manifest, e)}
    expected_read = [e for e in entries if dirty & set(_chunk_span(first.manifest, e))]

    second = backup_tree_at(small_tree, vault, previous=PreviousBackup(first.manifest, vault))

    # Exactly the files sharing a chunk with a changed one are read; the rest (the large
    # file among them) are not, and only the chunks of those groups are new.
    assert second.files_read == len(expected_read) < FILES // 5
    assert second.files_reused == FILES + 1 - len(expected_read)
    dirty_bytes = sum(first.manifest.chunks[i].length for i in dirty)
    catalog_bytes = sum(ref.length for ref in second.manifest.catalog)
    assert second.bytes_new <= dirty_bytes + catalog_bytes
    assert len(second.manifest.chunks) == len(first.manifest.chunks)  # no boundary moved
    _restored_equal(second, vault, small_tree, tmp_path / "restored")


def test_a_group_is_one_chunk_of_whole_members(small_tree: Path) -> None:
    vault = MemoryVault()
    result = backup_tree_at(small_tree, vault)
    starts = set(itertools.accumulate(ref.length for ref in result.manifest.chunks))
    entries = list(iter_catalog(result.manifest, vault))
    ends = {e.data_offset + padded(e.size) for e in entries}
    large = [range(e.data_offset, e.data_offset + e.size) for e in entries if e.size >= MiB]
    inside_large = {end for end in starts if any(end in data for data in large)}
    # Every chunk of the tar stream (but its end-of-archive tail, and CDC's inside a
    # large file) ends where a member does.
    assert starts - ends - inside_large == {result.manifest.size}
    groups = len(starts - inside_large) - 1
    assert FILES / tree.GROUP_MAX_MEMBERS < groups < FILES / 2  # neither one file nor all


def test_an_added_file_moves_only_the_boundaries_around_it(
    small_tree: Path, tmp_path: Path
) -> None:
    vault = MemoryVault()
    first = backup_tree_at(small_tree, vault)
    (small_tree / "s002" / "000700.dat.new").write_bytes(random.Random(2).randbytes(5000))
    second = backup_tree_at(small_tree, vault, previous=PreviousBackup(first.manifest, vault))
    old = set(first.manifest.chunks)
    new_chunks = [ref for ref in second.manifest.chunks if ref not in old]
    # The new file's group and its folder's group (the folder's mtime changed); boundaries
    # are drawn from names, so the groups after them are the same as before.
    assert len(new_chunks) <= 4
    _restored_equal(second, vault, small_tree, tmp_path / "restored")


def test_a_removed_file_is_not_brought_back_with_its_group(
    small_tree: Path, tmp_path: Path
) -> None:
    vault = MemoryVault()
    first = backup_tree_at(small_tree, vault)
    removed = small_tree / "s001" / "000150.dat"
    folder = removed.parent.stat()
    removed.unlink()
    # The folder's mtime put back: only the missing member tells its group changed.
    os.utime(removed.parent, ns=(folder.st_atime_ns, folder.st_mtime_ns))
    second = backup_tree_at(small_tree, vault, previous=PreviousBackup(first.manifest, vault))
    assert second.files_read >= 1
    _restored_equal(second, vault, small_tree, tmp_path / "restored")


def test_a_backup_made_before_groups_still_serves_as_the_previous_one(
    small_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = MemoryVault()
    with monkeypatch.context() as before_groups:
        # Groups never end: small files run through plain 1 MiB CDC, as they did before.
        before_groups.setattr(tree, "GROUP_MIN", 1 << 60)
        before_groups.setattr(tree, "GROUP_MAX", 1 << 60)
        before_groups.setattr(tree, "GROUP_MAX_MEMBERS", 1 << 60)
        old = backup_tree_at(small_tree, vault)
    assert len(old.manifest.chunks) < 30
    _rewrite_in_place(sorted(small_tree.glob("s*/*.dat"))[:1])
    second = backup_tree_at(small_tree, vault, previous=PreviousBackup(old.manifest, vault))
    # Small files are read again once (the old chunks hold many files each); the large
    # file, between its own boundaries in both layouts, is not.
    assert (second.files_read, second.files_reused) == (FILES, 1)
    _restored_equal(second, vault, small_tree, tmp_path / "restored")
    third = backup_tree_at(small_tree, vault, previous=PreviousBackup(second.manifest, vault))
    assert (third.files_read, third.bytes_new) == (0, 0)


def test_a_file_removed_before_its_group_is_written_is_skipped(small_tree: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    data: list[bytes] = []
    writer = tree._TarWriter(StreamChunker(data.append, tree.new_cdc()), lambda chunk: None)
    gone = ""
    with opened(os.open(small_tree, os.O_RDONLY | os.O_DIRECTORY)) as fd:
        walk = tree._walk(fd, writer.warn, writer.close_directory)
        for arcname, *rest in walk:
            writer.add(arcname, *rest)
            pending = writer._group[-1].arcname if writer._group else ""
            if not gone and arcname.startswith("s002/") and pending == arcname:
                gone = arcname  # in a group not written yet: not opened yet
                (small_tree / gone).unlink()
        writer.close()
        writer.abandon()
    assert writer.warnings == [f"skipped {gone!r}: No such file or directory"]
    assert writer.files_read == FILES
    with tarfile.open(fileobj=io.BytesIO(b"".join(data))) as archive:
        names = archive.getnames()
    assert gone not in names and len([n for n in names if n.endswith(".dat")]) == FILES - 1
    assert len(os.listdir("/proc/self/fd")) == before  # every held directory closed
