"""Backing up a test tree or image by path: the archive layer takes open descriptors
(services open them confined below a root; a test's own tmp_path needs no confinement)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from opencbr.archive.confined import opened
from opencbr.archive.disk import backup_disk
from opencbr.archive.pipeline import BackupResult
from opencbr.archive.sink import ChunkSink
from opencbr.archive.tree import backup_tree


def backup_tree_at(path: Path, sink: ChunkSink, **options: Any) -> BackupResult:
    with opened(os.open(path, os.O_RDONLY | os.O_CLOEXEC)) as fd:
        return backup_tree(fd, sink, **options)


def backup_disk_at(path: Path, sink: ChunkSink, **options: Any) -> BackupResult:
    with opened(os.open(path, os.O_RDONLY | os.O_CLOEXEC)) as fd:
        return backup_disk(fd, sink, **options)
