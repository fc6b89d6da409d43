"""Backing up file trees: a PAX tar stream cut into content-defined chunks, plus a catalog.

Backup walks the tree depth-first, siblings in byte order (an unchanged tree gives an
identical stream, which dedups completely), and writes a POSIX.1-2001 (PAX) tar stream:
regular files, directories, symlinks and hard links with mode, uid/gid, uname/gname and
nanosecond mtimes (each member's PAX `mtime` record carries all nine decimals). Names
are bytes-safe: undecodable ones are stored with `hdrcharset=BINARY`. Sockets, FIFOs
and devices are skipped with a warning.

Beside the tar stream, a catalog stream records every member and its offsets
(`opencbr.archive.catalog`). Regular files of at least 1 MiB start and end on a chunk
boundary, so the next backup reuses the chunks of those it finds unchanged without
reading them (`opencbr.archive.parent`).

Restoring lives in `opencbr.archive.extract`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import grp
import os
import pwd
import stat
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pyfastcdc import FastCDC

from opencbr.archive.catalog import CatalogEntry, CatalogWriter, header_digest
from opencbr.archive.manifest import Manifest
from opencbr.archive.parent import REUSE_MIN_SIZE, ParentTree, PreviousBackup
from opencbr.archive.pipeline import (
    BackupResult,
    ChunkPipeline,
    ProgressCallback,
    ProgressMeter,
    StreamChunker,
    backup_result,
)
from opencbr.archive.sink import ArchiveError, ChunkSink
from opencbr.archive.tarheader import member_header

KiB, MiB = 1 << 10, 1 << 20
# 1 MiB nominal average (FastCDC yields avg + min, ~1.3 MiB in practice). Every chunk is
# one object in the store and durable object creation costs ~1 ms per thread, so
# 256 KiB chunks would cap a backup near 250 MiB/s per thread; 1 MiB keeps that cost
# small for ~2x the ideal incremental size (reference/performance-notes.md). min and
# max are FastCDC's usual avg/4 and 4*avg.
CDC_AVG, CDC_MIN, CDC_MAX = 1 * MiB, 256 * KiB, 4 * MiB
DEFAULT_MAX_IN_FLIGHT = 48  # chunks held by a backup: ~60 MiB typical, 192 MiB worst
_CATALOG_IN_FLIGHT = 4  # the catalog is ~1/10000 of the data
_MAX_WARNINGS = 1000
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NOATIME: int = getattr(os, "O_NOATIME", 0)  # Linux only
_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)


def new_cdc() -> FastCDC:
    """The chunker tree backups use (one per stream: FastCDC is not thread-safe)."""
    return FastCDC(CDC_AVG, min_size=CDC_MIN, max_size=CDC_MAX)


# ---------------------------------------------------------------- backup


def backup_tree(
    root: Path,
    sink: ChunkSink,
    *,
    workers: int = 2,
    on_progress: ProgressCallback | None = None,
    metadata: dict[str, Any] | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    previous: PreviousBackup | None = None,
) -> BackupResult:
    """Back up the directory tree at `root` into `sink`; return the manifest and counts.

    `on_progress` receives the cumulative tar-stream bytes processed. Only chunks are
    stored: making them durable and writing the manifest is the caller's job. With
    `previous` (an earlier backup of this tree whose chunks `sink` holds), unchanged
    large files are not read: their chunks are referenced again.
    """
    if not os.path.isdir(root):
        raise ArchiveError(f"{root} is not a directory")
    progress = ProgressMeter(on_progress)
    parent = ParentTree(previous) if previous is not None else None
    with ThreadPoolExecutor(workers, thread_name_prefix="backup") as pool:
        data = ChunkPipeline(sink, pool, max_in_flight=max_in_flight, progress=progress)
        catalog = ChunkPipeline(sink, pool, max_in_flight=_CATALOG_IN_FLIGHT, batch_size=2)
        with data, catalog, contextlib.ExitStack() as stack:
            if parent is not None:
                stack.callback(parent.close)
            stream = StreamChunker(data.submit, new_cdc(), emit_known=data.submit_known)
            writer = _TarWriter(stream, catalog.submit, parent)
            for arcname, path, st in _walk(os.fspath(root), writer.warn):
                writer.add(arcname, path, st)
            writer.close()
            data_refs, catalog_refs = data.finish(), catalog.finish()
    progress.close()
    manifest = Manifest(
        kind="tree",
        size=sum(ref.length for ref in data_refs),
        chunks=data_refs,
        catalog=catalog_refs,
        metadata=dict(metadata or {}),
    )
    reused = parent.bytes_reused if parent is not None else 0
    return backup_result(manifest, [data, catalog], tuple(writer.warnings), reused)


def _walk(root: str, warn: Callable[[str], None]) -> Iterator[tuple[str, str, os.stat_result]]:
    """Yield (arcname, path, lstat) depth-first; memory O(depth x siblings)."""
    yield ".", root, os.stat(root)
    stack = [_children(root, "", warn)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        arcname, path = entry
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue  # removed since its directory was listed
        yield arcname, path, st
        if stat.S_ISDIR(st.st_mode):
            stack.append(_children(path, arcname + "/", warn))


def _children(path: str, prefix: str, warn: Callable[[str], None]) -> Iterator[tuple[str, str]]:
    try:
        names = sorted(os.listdir(path), key=os.fsencode)
    except FileNotFoundError:
        names = []  # removed since it was listed
    except OSError as exc:
        warn(f"skipped the contents of {prefix or '.'!r}: {exc.strerror}")
        names = []
    base = path if path.endswith("/") else path + "/"
    return ((prefix + name, base + name) for name in names)


class _TarWriter:
    """Serialises members as PAX tar into a StreamChunker and writes the catalog.

    Hand-written rather than TarFile, which keeps every member in memory (~1 GiB for a
    million files), copies data through a 16 KiB buffer and spends ~70 us per header:
    here headers come from `tarheader` and file data is read straight into the
    chunker's 16 MiB buffer. Memory: the `_inodes` map of files with st_nlink > 1 only;
    nothing else grows with the number of members (catalog records are streamed out).
    Lifecycle: add() per member in stream order, close() once. Thread rules: owner only.
    """

    def __init__(
        self,
        stream: StreamChunker,
        emit_catalog_chunk: Callable[[bytes], None],
        parent: ParentTree | None = None,
    ) -> None:
        self._stream = stream
        self._catalog = CatalogWriter(emit_catalog_chunk, new_cdc())
        self._parent = parent
        self._inodes: dict[tuple[int, int], str] = {}  # only files with st_nlink > 1
        self._noatime = _O_NOATIME
        self.warnings: list[str] = []

    def add(self, arcname: str, path: str, st: os.stat_result) -> None:
        mode, size, linkname, fd = st.st_mode, 0, "", -1
        try:
            if stat.S_ISREG(mode):
                link = self._inodes.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
                if link is None:
                    typeflag, size, fd = tarfile.REGTYPE, st.st_size, self._open_regular(path)
                else:
                    typeflag, linkname = tarfile.LNKTYPE, link
            elif stat.S_ISDIR(mode):
                typeflag = tarfile.DIRTYPE
            elif stat.S_ISLNK(mode):
                typeflag, linkname = tarfile.SYMTYPE, os.readlink(path)
            else:
                self.warn(f"skipped {arcname!r}: not a file, directory or symlink")
                return
        except OSError as exc:
            self.warn(f"skipped {arcname!r}: {exc.strerror}")
            return
        uid, gid, mtime_ns = st.st_uid, st.st_gid, st.st_mtime_ns
        perms = stat.S_IMODE(mode)
        uname, gname = _user_name(uid), _group_name(gid)
        header = member_header(
            arcname, typeflag, perms, uid, gid, size, mtime_ns, linkname, uname, gname
        )
        header_offset = self._stream.position
        whole_chunks = size >= REUSE_MIN_SIZE  # starts and ends on a chunk boundary
        if whole_chunks:
            self._stream.cut()
        if fd >= 0:
            try:
                self._write_file(arcname, fd, st, header, reusable=whole_chunks)
            finally:
                os.close(fd)
            if st.st_nlink > 1:
                self._inodes[(st.st_dev, st.st_ino)] = arcname
        else:
            self._stream.write(header)
        if whole_chunks:
            self._stream.cut()
        entry = CatalogEntry(
            os.fsencode(arcname),
            typeflag,
            perms,
            uid,
            gid,
            size,
            mtime_ns,
            header_offset,
            header_offset + len(header),
            os.fsencode(linkname),
            st.st_ctime_ns,
            st.st_ino,
            header_digest(header),
        )
        self._catalog.add(entry)

    def close(self) -> None:
        # End of archive: two zero blocks, then zeros up to a whole tar record.
        end = self._stream.position + 2 * tarfile.BLOCKSIZE
        self._stream.write(bytes(2 * tarfile.BLOCKSIZE + (-end) % tarfile.RECORDSIZE))
        self._stream.close()
        self._catalog.close()

    def _open_regular(self, path: str) -> int:
        # O_NOFOLLOW: a file swapped for a symlink since lstat must not pull in its target.
        # O_NOATIME spares an inode update per file; only the owner (or root) may use it.
        if self._noatime:
            try:
                return os.open(path, _READ_FLAGS | self._noatime)
            except PermissionError as exc:
                if exc.errno != errno.EPERM:
                    raise
                if os.geteuid() != 0:
                    self._noatime = 0  # not our files: stop paying a failed open each
        return os.open(path, _READ_FLAGS)

    def _write_file(
        self, arcname: str, fd: int, st: os.stat_result, header: bytes, *, reusable: bool
    ) -> None:
        """Header and data of a regular file; only a whole-chunked file can be reused."""
        if reusable and self._parent is not None:
            known = self._parent.unchanged(arcname, st, header)
            if known:
                self._stream.append_known(known)
                return
        self._stream.write(header)
        self._copy_data(arcname, fd, st.st_size)

    def _copy_data(self, arcname: str, fd: int, size: int) -> None:
        got = self._stream.write_from(functools.partial(_readinto, fd), size)
        if got < size:
            # The header already promised `size` bytes; GNU tar pads the same way.
            self.warn(f"{arcname!r} shrank while being read; padded with zeros")
            for done in range(got, size, MiB):
                self._stream.write(bytes(min(MiB, size - done)))
        elif os.fstat(fd).st_size != size:
            self.warn(f"{arcname!r} changed size while being read")
        if size % tarfile.BLOCKSIZE:
            self._stream.write(_ZERO_BLOCK[: -size % tarfile.BLOCKSIZE])

    def warn(self, message: str) -> None:
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)


def _readinto(fd: int, buffer: memoryview) -> int:
    return os.readv(fd, (buffer,))


@functools.lru_cache(maxsize=4096)
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@functools.lru_cache(maxsize=4096)
def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""
