"""The tree walk reads everything from directory descriptors: entries swapped between
their lstat and their open are skipped with a warning (never followed, never blocking),
and the descriptors it holds stay bounded by the depth it allows."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencbr.archive import tree
from opencbr.archive.confined import opened
from opencbr.archive.pipeline import StreamChunker
from opencbr.archive.sink import ArchiveError
from opencbr.archive.tree import _TarWriter, _walk, backup_tree, max_walk_depth, new_cdc
from tests.unit.archive_support import MemoryVault


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(b"TOP-SECRET")
    return folder


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "tree"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "mine.txt").write_bytes(b"mine")
    (folder / "z.txt").write_bytes(b"a file")
    return folder


@pytest.fixture
def source_fd(source: Path) -> Iterator[int]:
    with opened(os.open(source, os.O_RDONLY | os.O_DIRECTORY)) as fd:
        yield fd


def _writer() -> tuple[_TarWriter, list[bytes]]:
    data: list[bytes] = []
    writer = _TarWriter(StreamChunker(data.append, new_cdc()), lambda chunk: None)
    return writer, data


def _walk_until(walk: Iterator[tree.Member], arcname: str, writer: _TarWriter) -> tree.Member:
    for member in walk:
        if member[0] == arcname:
            return member
        writer.add(*member)
    raise AssertionError(f"{arcname} not walked")


def _finish(walk: Iterator[tree.Member], writer: _TarWriter, data: list[bytes]) -> bytes:
    names = []
    for member in walk:
        names.append(member[0])
        writer.add(*member)
    writer.close()
    return b"".join(data) + " ".join(names).encode()


def test_a_directory_swapped_for_a_symlink_after_its_lstat_is_not_entered(
    source: Path, source_fd: int, outside: Path
) -> None:
    writer, data = _writer()
    walk = _walk(source_fd, writer.warn, writer.close_directory)
    member = _walk_until(walk, "sub", writer)
    writer.add(*member)
    (source / "sub").rename(source / "sub.moved")
    (source / "sub").symlink_to(outside)  # the walk opens `sub` when it resumes
    stream = _finish(walk, writer, data)
    assert b"TOP-SECRET" not in stream and b"secret.txt" not in stream
    assert writer.warnings == ["skipped the contents of 'sub': replaced while being read"]


def test_a_directory_swapped_for_another_directory_is_not_entered(
    source: Path, source_fd: int, outside: Path
) -> None:
    writer, data = _writer()
    walk = _walk(source_fd, writer.warn, writer.close_directory)
    writer.add(*_walk_until(walk, "sub", writer))
    (source / "sub").rename(source / "sub.moved")
    (source / "sub").mkdir()  # another inode than the one looked up
    (source / "sub" / "planted.txt").write_bytes(b"planted")
    stream = _finish(walk, writer, data)
    assert b"planted" not in stream
    assert writer.warnings == ["skipped the contents of 'sub': replaced while being read"]


@pytest.mark.parametrize("swap", ["symlink", "fifo", "other file"])
def test_a_file_swapped_after_its_lstat_is_skipped_without_blocking(
    source: Path, source_fd: int, outside: Path, swap: str
) -> None:
    writer, data = _writer()
    walk = _walk(source_fd, writer.warn, writer.close_directory)
    member = _walk_until(walk, "z.txt", writer)
    (source / "z.txt").rename(source / "a.txt")  # kept: its inode number is not reused
    if swap == "symlink":
        (source / "z.txt").symlink_to(outside / "secret.txt")
    elif swap == "fifo":
        os.mkfifo(source / "z.txt")  # opening it for reading would wait for a writer
    else:
        (source / "z.txt").write_bytes(b"TOP-SECRET of another inode")
    started = time.monotonic()
    writer.add(*member)
    assert time.monotonic() - started < 5
    stream = _finish(walk, writer, data)
    assert b"TOP-SECRET" not in stream
    assert len(writer.warnings) == 1 and writer.warnings[0].startswith("skipped 'z.txt'")


def test_the_walk_holds_one_descriptor_per_level_and_closes_them_all(tmp_path: Path) -> None:
    deepest = tmp_path / "tree"
    for level in range(40):
        deepest = deepest / f"d{level}"
    deepest.mkdir(parents=True)
    (deepest / "bottom.txt").write_bytes(b"bottom")
    before = len(os.listdir("/proc/self/fd"))
    with opened(os.open(tmp_path / "tree", os.O_RDONLY | os.O_DIRECTORY)) as fd:
        peak = 0
        for _member in _walk(fd, lambda message: None):
            peak = max(peak, len(os.listdir("/proc/self/fd")))
        result = backup_tree(fd, MemoryVault())
    assert peak <= before + 1 + 40 + 1  # the tree's own fd, one per level, the listing
    assert len(os.listdir("/proc/self/fd")) == before
    assert not result.warnings


@pytest.fixture
def low_fd_limit() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        yield max_walk_depth()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_tree_deeper_than_the_descriptor_limit_allows_fails_cleanly(
    tmp_path: Path, low_fd_limit: int
) -> None:
    assert low_fd_limit == 64  # 256 descriptors / 8, never fewer than 64 levels
    root = tmp_path / "tree"
    root.mkdir()
    with opened(os.open(root, os.O_RDONLY | os.O_DIRECTORY)) as fd:
        current = os.dup(fd)
        for level in range(low_fd_limit + 2):
            os.mkdir(f"d{level}", dir_fd=current)
            child = os.open(f"d{level}", os.O_RDONLY | os.O_DIRECTORY, dir_fd=current)
            os.close(current)
            current = child
        os.close(current)
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(ArchiveError, match="nested deeper than 64 levels"):
            backup_tree(fd, MemoryVault())
        assert len(os.listdir("/proc/self/fd")) == before


def test_the_size_probe_walks_without_following_symlinks(source: Path, outside: Path) -> None:
    (outside / "big").write_bytes(bytes(1 << 20))
    (source / "link").symlink_to(outside)
    with opened(os.open(source, os.O_RDONLY | os.O_DIRECTORY)) as fd:
        size = tree.tree_size(fd)
    # mine.txt, z.txt and the symlink itself; nothing of the outside directory.
    assert size == 4 + 6 + len(str(outside)) + 3 * 512
