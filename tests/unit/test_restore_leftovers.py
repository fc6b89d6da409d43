"""`extract.remove_leftovers`: what an interrupted restore left under temporary names goes,
and nothing else — never a directory, never anything through a link."""

from __future__ import annotations

import os
from pathlib import Path

from opencbr.archive.extract import TEMP_PREFIX, remove_leftovers


def plant(root: Path, outside: Path) -> None:
    (root / "keep").mkdir(parents=True)
    (root / "keep" / "file.txt").write_text("kept\n")
    (root / f"{TEMP_PREFIX}top").write_bytes(b"half a file")
    (root / "keep" / f"{TEMP_PREFIX}nested").write_bytes(b"half another")
    (root / f"{TEMP_PREFIX}dirlink").symlink_to(outside)  # a link to a directory: unlinked
    (root / "keep" / "into-outside").symlink_to(outside)  # never entered
    (root / f"{TEMP_PREFIX}realdir").mkdir()  # not ours to remove


def test_recursive_sweep_removes_only_temporary_non_directories(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / f"{TEMP_PREFIX}victim").write_text("not below the target\n")
    root = tmp_path / "target"
    plant(root, outside)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert remove_leftovers(fd, recursive=True) == 3
    finally:
        os.close(fd)
    assert sorted(os.listdir(root)) == [f"{TEMP_PREFIX}realdir", "keep"]
    assert sorted(os.listdir(root / "keep")) == ["file.txt", "into-outside"]
    assert (outside / f"{TEMP_PREFIX}victim").exists()


def test_a_flat_sweep_stays_in_the_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "target"
    plant(root, outside)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert remove_leftovers(fd, recursive=False) == 2
    finally:
        os.close(fd)
    assert (root / "keep" / f"{TEMP_PREFIX}nested").exists()
