"""Reusing the previous backup of a tree: unchanged large files are not read again.

A tree backup forces chunk boundaries around every regular file of at least
`REUSE_MIN_SIZE` bytes: one before its tar headers, one after its data and padding.
Between those boundaries FastCDC starts afresh, so the chunks covering such a file are a
function of its headers and contents alone, whatever comes before or after it.

The next backup of the same tree walks the previous backup's catalog alongside its own
walk (both are in the same depth-first, byte-ordered sequence, so this is a merge, not
a lookup table: memory stays constant). A file whose previous record shows the same
size, mtime, ctime and inode, and the same tar headers (name, mode, owner, times), and
whose record lies between two chunk boundaries of the previous stream, is taken as
unchanged: its chunk references are copied and its bytes are never read. This is the
check restic and borg make (ctime catches a rewrite that restored the mtime).

Chunks the vault knows to be damaged are never reused: a file one of them covers is read
again, so the new backup stores the chunk anew. A previous catalog that cannot be read
ends reuse for the rest of the walk: a full read is always correct, only slower.
"""

from __future__ import annotations

import bisect
import itertools
import os
import tarfile
from collections.abc import Generator
from typing import NamedTuple

from opencbr.archive.catalog import CatalogEntry, header_digest, iter_catalog, require_kind
from opencbr.archive.manifest import Manifest
from opencbr.archive.sink import ArchiveError, ChunkRef, ChunkSource
from opencbr.storage.store import StorageError

REUSE_MIN_SIZE = 1 << 20  # CDC's average chunk: smaller files share chunks with others


class PreviousBackup(NamedTuple):
    """The previous backup of the same tree, where its chunks can be read, and which of
    them the vault marks damaged (never reused)."""

    manifest: Manifest
    source: ChunkSource
    damaged: frozenset[str] = frozenset()


def padded(size: int) -> int:
    """A member's data length in the tar stream: rounded up to whole 512-byte blocks."""
    return size + (-size % tarfile.BLOCKSIZE)


def _sort_key(path: bytes) -> tuple[bytes, ...]:
    # Tuples of components compare exactly in the walk's order: depth-first, siblings
    # by bytes ("a", "a/x", "a.txt").
    return () if path == b"." else tuple(path.split(b"/"))


class ParentTree:
    """Finds the chunks of unchanged files in the previous backup's stream.

    Lifecycle: unchanged() for members in stream order, then close(). Thread rules:
    owner thread only. Memory: the previous chunk offsets (8 bytes per chunk) and one
    catalog chunk in flight.
    """

    def __init__(self, previous: PreviousBackup, workers: int = 1) -> None:
        require_kind(previous.manifest, "tree")
        self._damaged = previous.damaged
        self._chunks = previous.manifest.chunks
        self._starts = list(itertools.accumulate((r.length for r in self._chunks), initial=0))
        self._entries: Generator[CatalogEntry, None, None] = iter_catalog(
            previous.manifest, previous.source, workers=workers
        )
        self._current: CatalogEntry | None = None
        self._current_key: tuple[bytes, ...] = ()
        self._exhausted = False
        self.files_reused = 0
        self.bytes_reused = 0

    def unchanged(self, arcname: str, st: os.stat_result, header: bytes) -> tuple[ChunkRef, ...]:
        """The previous chunks holding exactly this file's headers and data, or ()."""
        entry = self._seek(os.fsencode(arcname))
        if entry is None or not _same_file(entry, st, header):
            return ()
        refs = self._between(entry.header_offset, entry.data_offset + padded(entry.size))
        if any(ref.digest in self._damaged for ref in refs):
            return ()
        if refs:
            self.files_reused += 1
            self.bytes_reused += entry.size
        return refs

    def close(self) -> None:
        self._entries.close()

    def _seek(self, path: bytes) -> CatalogEntry | None:
        key = _sort_key(path)
        while not self._exhausted and (self._current is None or self._current_key < key):
            self._current = self._next_entry()
            if self._current is None:
                self._exhausted = True
            else:
                self._current_key = _sort_key(self._current.path)
        if self._current is not None and self._current_key == key:
            return self._current
        return None

    def _next_entry(self) -> CatalogEntry | None:
        try:
            return next(self._entries, None)
        except (ArchiveError, StorageError):
            # The catalog reader closed itself when it raised; nothing more is reused.
            return None

    def _between(self, start: int, end: int) -> tuple[ChunkRef, ...]:
        first = bisect.bisect_left(self._starts, start)
        last = bisect.bisect_left(self._starts, end, lo=first)
        if last >= len(self._starts) or self._starts[first] != start:
            return ()
        if self._starts[last] != end or first == last:
            return ()
        return self._chunks[first:last]


def _same_file(entry: CatalogEntry, st: os.stat_result, header: bytes) -> bool:
    return (
        entry.type == tarfile.REGTYPE
        and entry.size == st.st_size
        and entry.size >= REUSE_MIN_SIZE
        and entry.mtime_ns == st.st_mtime_ns
        and entry.ctime_ns == st.st_ctime_ns
        and entry.inode == st.st_ino
        and entry.data_offset - entry.header_offset == len(header)
        and entry.header_digest == header_digest(header)
    )
