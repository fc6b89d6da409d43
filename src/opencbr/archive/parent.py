"""Reusing the previous backup of a tree: unchanged files of any size are not read again.

A tree backup forces chunk boundaries around every regular file of at least
`REUSE_MIN_SIZE` bytes: one before its tar headers, one after its data and padding.
Between those boundaries FastCDC starts afresh, so the chunks covering such a file are a
function of its headers and contents alone, whatever comes before or after it. Every
other member (small files, directories, links) belongs to a group of consecutive members
that also starts and ends on a chunk boundary (`opencbr.archive.tree`): an unchanged
group, every member of it unchanged and none removed from it, has the same chunks.

The next backup of the same tree walks the previous backup's catalog alongside its own
walk (both are in the same depth-first, byte-ordered sequence, so this is a merge, not
a lookup table: memory stays constant). A file whose previous record shows the same
size, mtime, ctime and inode, and the same tar headers (name, mode, owner, times), and
whose record lies between two chunk boundaries of the previous stream, is taken as
unchanged: its chunk references are copied and its bytes are never read. A group is
taken as unchanged when each of its members is (directories and links by their headers
alone), their previous records follow each other with nothing between them, and the
group's first header and last byte lie on chunk boundaries of the previous stream.
A previous backup made before groups existed has no boundaries there: its small files
are read again once, and the new backup has the groups. This is the
check restic and borg make (ctime catches a rewrite that restored the mtime).

Chunks the vault knows to be damaged are never reused: a file one of them covers is read
again, so the new backup stores the chunk anew. A previous catalog that cannot be read
ends reuse for the rest of the walk: a full read is always correct, only slower.
"""

from __future__ import annotations

import bisect
import itertools
import os
import stat
import tarfile
from collections.abc import Generator
from typing import NamedTuple

from opencbr.archive.catalog import CatalogEntry, header_digest, iter_catalog, require_kind
from opencbr.archive.manifest import Manifest
from opencbr.archive.sink import ArchiveError, ChunkRef, ChunkSource
from opencbr.storage.store import StorageError

REUSE_MIN_SIZE = 1 << 20  # CDC's average chunk: smaller files share chunks with others


class GroupMember(NamedTuple):
    """One member of a group as the new walk sees it (what its tar headers are made of)."""

    path: bytes  # relative, as the catalog records it
    st: os.stat_result  # its lstat
    typeflag: bytes
    size: int  # data bytes in the stream: st_size for a regular file, else 0
    linkname: bytes


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

    Lifecycle: unchanged() or unchanged_group() for members in stream order, then
    close(). Thread rules: owner thread only. Memory: the previous chunk offsets
    (8 bytes per chunk) and one catalog chunk in flight.
    """

    def __init__(self, previous: PreviousBackup, workers: int = 1) -> None:
        require_kind(previous.manifest, "tree")
        self._damaged = previous.damaged
        self._chunks = previous.manifest.chunks
        self._starts = list(itertools.accumulate((r.length for r in self._chunks), initial=0))
        self._entries: Generator[CatalogEntry, None, None] = iter_catalog(
            previous.manifest, previous.source, workers=workers
        )
        self._current: CatalogEntry | None = None  # the next previous record to match
        self._current_key: tuple[bytes, ...] | None = None  # its sort key, once needed
        self._taken = True  # whether a member matched _current (then move on first)
        self._exhausted = False
        self.files_reused = 0
        self.bytes_reused = 0

    def unchanged(self, arcname: str, st: os.stat_result, header: bytes) -> tuple[ChunkRef, ...]:
        """The previous chunks holding exactly this file's headers and data, or ()."""
        entry = self._seek(os.fsencode(arcname))
        if entry is None or not _same_file(entry, st, len(header), header_digest(header)):
            return ()
        refs = self._between(entry.header_offset, entry.data_offset + padded(entry.size))
        if any(ref.digest in self._damaged for ref in refs):
            return ()
        if refs:
            self.files_reused += 1
            self.bytes_reused += entry.size
        return refs

    def unchanged_group(
        self, members: list[GroupMember]
    ) -> tuple[tuple[ChunkRef, ...], list[CatalogEntry]]:
        """The previous chunks holding exactly this group of members and the members'
        previous records, or ((), [])."""
        entries: list[CatalogEntry] = []
        end = -1
        for member in members:
            entry = self._seek(member.path)
            if entry is None or not _same_member(entry, member):
                return (), []
            if entries and entry.header_offset != end:
                return (), []  # a member was removed from the group (or moved)
            entries.append(entry)
            end = entry.data_offset + padded(entry.size)
        refs = self._between(entries[0].header_offset, end) if entries else ()
        if not refs or any(ref.digest in self._damaged for ref in refs):
            return (), []
        regular = [m.size for m in members if m.typeflag == tarfile.REGTYPE]
        self.files_reused += len(regular)
        self.bytes_reused += sum(regular)
        return refs, entries

    def close(self) -> None:
        self._entries.close()

    def _seek(self, path: bytes) -> CatalogEntry | None:
        """The previous record of `path`, or None; paths come in the walk's order."""
        if self._taken:  # the walk's previous member: this one is after it
            self._advance()
        # In an unchanged stretch the next record is this very path: compared as bytes
        # first, the sort keys (a split of each path) are built only where they differ.
        if self._current is not None and self._current.path == path:
            self._taken = True
            return self._current
        key = _sort_key(path)
        while self._current is not None and self._current_sort_key() < key:
            self._advance()
            if self._current is not None and self._current.path == path:
                self._taken = True
                return self._current
        return None

    def _advance(self) -> None:
        self._taken = False
        self._current = None if self._exhausted else self._next_entry()
        self._exhausted = self._current is None
        self._current_key = None

    def _current_sort_key(self) -> tuple[bytes, ...]:
        assert self._current is not None
        if self._current_key is None:
            self._current_key = _sort_key(self._current.path)
        return self._current_key

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


def _same_member(entry: CatalogEntry, member: GroupMember) -> bool:
    """Whether the previous record has the same headers and (for a file) the same data.

    Compared field by field, without building the member's headers: they are a function
    of the path, type, mode, owner, size, mtime and link target compared here, and of
    the owner's user and group names, which the process looks up once per id (so a
    rename of a user or group shows in a group's headers when one of its files changes,
    or after a restart). A version-1 record (no header digest) never matches.
    """
    st = member.st
    same_headers = (
        entry.type == member.typeflag
        and entry.size == member.size
        and entry.mtime_ns == st.st_mtime_ns
        and entry.mode == stat.S_IMODE(st.st_mode)
        and entry.uid == st.st_uid
        and entry.gid == st.st_gid
        and entry.linkname == member.linkname
        and entry.header_digest != b""
    )
    if member.typeflag != tarfile.REGTYPE:
        return same_headers  # no data: the headers are all the stream has
    # ctime catches a rewrite that put the mtime back; a new inode, a replaced file.
    return same_headers and entry.ctime_ns == st.st_ctime_ns and entry.inode == st.st_ino


def _same_file(entry: CatalogEntry, st: os.stat_result, header_length: int, digest: bytes) -> bool:
    return (
        entry.type == tarfile.REGTYPE
        and entry.size == st.st_size
        and entry.size >= REUSE_MIN_SIZE
        and entry.mtime_ns == st.st_mtime_ns
        and entry.ctime_ns == st.st_ctime_ns
        and entry.inode == st.st_ino
        and entry.data_offset - entry.header_offset == header_length
        and entry.header_digest == digest
    )
