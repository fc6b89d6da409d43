"""Backing up file trees: a PAX tar stream cut into content-defined chunks, plus a catalog.

Backup walks the tree depth-first, siblings in byte order (an unchanged tree gives an
identical stream, which dedups completely), and writes a POSIX.1-2001 (PAX) tar stream:
regular files, directories, symlinks and hard links with mode, uid/gid, uname/gname and
nanosecond mtimes (each member's PAX `mtime` record carries all nine decimals). Names
are bytes-safe: undecodable ones are stored with `hdrcharset=BINARY`. Sockets, FIFOs
and devices are skipped with a warning.

Beside the tar stream, a catalog stream records every member and its offsets
(`opencbr.archive.catalog`). Regular files of at least 1 MiB start and end on a chunk
boundary. Every other member (small files, directories, links) belongs to a group of
consecutive members, about `GROUP_MIN + GROUP_SPREAD` bytes of stream, that starts and
ends on a chunk boundary; where a group ends depends on its members' names and sizes
alone. So the next backup reuses the chunks of unchanged large files and of groups whose
members are all unchanged, without reading them (`opencbr.archive.parent`).

Restoring lives in `opencbr.archive.extract`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import grp
import os
import pwd
import resource
import stat
import tarfile
import zlib
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from pyfastcdc import FastCDC

from opencbr.archive.catalog import CatalogEntry, CatalogWriter, header_digest
from opencbr.archive.manifest import Manifest
from opencbr.archive.parent import (
    REUSE_MIN_SIZE,
    GroupMember,
    ParentTree,
    PreviousBackup,
    padded,
)
from opencbr.archive.pipeline import (
    BackupResult,
    ChunkPipeline,
    ProgressCallback,
    ProgressMeter,
    StreamChunker,
    backup_result,
)
from opencbr.archive.sink import ArchiveError, ChunkRef, ChunkSink
from opencbr.archive.tarheader import member_header

KiB, MiB = 1 << 10, 1 << 20
# 1 MiB nominal average (FastCDC yields avg + min, ~1.3 MiB in practice). Every chunk is
# one object in the store and durable object creation costs ~1 ms per thread, so
# 256 KiB chunks would cap a backup near 250 MiB/s per thread; 1 MiB keeps that cost
# small for ~2x the ideal incremental size (reference/performance-notes.md). min and
# max are FastCDC's usual avg/4 and 4*avg.
CDC_AVG, CDC_MIN, CDC_MAX = 1 * MiB, 256 * KiB, 4 * MiB
# Chunks a backup holds: a tree's window is max_in_flight x 1.25 MiB (60 MiB here) in up
# to 16x as many chunks (groups of small files), plus the chunk in hand (4 MiB at most).
DEFAULT_MAX_IN_FLIGHT = 48
_CATALOG_IN_FLIGHT = 4  # the catalog is ~1/10000 of the data
_MAX_WARNINGS = 1000
# O_NOFOLLOW: an entry swapped for a symlink since its lstat must not pull in the target.
# O_NONBLOCK: an entry swapped for a FIFO must not block the walk (its kind is checked on
# the opened descriptor; regular files get blocking reads back).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_MIN_DEPTH, _MAX_DEPTH = 64, 4096  # levels a walk may descend (see max_walk_depth)
_SWAPPED = "replaced while being read"
_O_NOATIME: int = getattr(os, "O_NOATIME", 0)  # Linux only
_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
# Groups of small members (see the module docstring). A group ends after a member once it
# holds GROUP_MIN bytes, with a chance of (member bytes / GROUP_SPREAD) drawn from the
# CRC-32 of the member's name, and always at GROUP_MAX bytes or GROUP_MAX_MEMBERS
# members. Smaller groups store less when a few files change (a changed group is stored
# again whole) but cost a chunk each: a store object, index rows, a reference row per
# backup, ~0.5 ms of a backup apiece on the benchmark machine. Measured on 10,000
# files of 1-16 KiB with 10% of them changed in place (fraction of the full backup
# stored again / chunks of the full backup): one file a chunk 0.11 / 10,022;
# 24+24 KiB 0.41 / 2,287; 32+32 KiB 0.52 / 1,628; 64+128 KiB 0.80 / 710; plain 1 MiB
# CDC (before groups) 1.00 / 77. GROUP_MAX keeps a group below CDC_MIN, so it is one
# chunk unless a member is larger; GROUP_MAX_MEMBERS bounds the descriptors it holds.
GROUP_MIN, GROUP_SPREAD, GROUP_MAX = 24 * KiB, 24 * KiB, 240 * KiB
GROUP_MAX_MEMBERS = 64
_CRC_RANGE = 1 << 32
_USUAL_HEADER = 3 * tarfile.BLOCKSIZE


def new_cdc() -> FastCDC:
    """The chunker tree backups use (one per stream: FastCDC is not thread-safe)."""
    return FastCDC(CDC_AVG, min_size=CDC_MIN, max_size=CDC_MAX)


# ---------------------------------------------------------------- backup


def backup_tree(
    directory_fd: int,
    sink: ChunkSink,
    *,
    workers: int = 2,
    on_progress: ProgressCallback | None = None,
    metadata: dict[str, Any] | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    previous: PreviousBackup | None = None,
) -> BackupResult:
    """Back up the directory open at `directory_fd` into `sink`; return the manifest and counts.

    The caller opens the directory (confined below its root: `archive.confined`) and keeps
    the descriptor; every entry below it is reached from its parent's descriptor, never by
    path, so nothing outside the tree is read however it changes meanwhile.
    `on_progress` receives the cumulative tar-stream bytes processed. Only chunks are
    stored: making them durable and writing the manifest is the caller's job. With
    `previous` (an earlier backup of this tree whose chunks `sink` holds), unchanged
    files (alone or in groups) are not read: their chunks are referenced again.
    """
    if not stat.S_ISDIR(os.fstat(directory_fd).st_mode):
        raise ArchiveError("the resource is not a directory")
    progress = ProgressMeter(on_progress)
    parent = ParentTree(previous) if previous is not None else None
    with ThreadPoolExecutor(workers, thread_name_prefix="backup") as pool:
        # Bytes bound the window, so groups of small files (tens of KiB each) fill it
        # with many more chunks than large files do, and ask the sink once per many.
        data = ChunkPipeline(
            sink,
            pool,
            max_in_flight=max_in_flight,
            progress=progress,
            max_bytes_in_flight=max_in_flight * (CDC_AVG + CDC_MIN),
        )
        catalog = ChunkPipeline(sink, pool, max_in_flight=_CATALOG_IN_FLIGHT, batch_size=2)
        with data, catalog, contextlib.ExitStack() as stack:
            if parent is not None:
                stack.callback(parent.close)
            stream = StreamChunker(data.submit, new_cdc(), emit_known=data.submit_known)
            writer = _TarWriter(stream, catalog.submit, parent)
            stack.callback(writer.abandon)  # after the walk has closed its descriptors
            walk = _walk(directory_fd, writer.warn, writer.close_directory)
            stack.enter_context(contextlib.closing(walk))
            for arcname, dir_fd, name, st in walk:
                writer.add(arcname, dir_fd, name, st)
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
    reused = (parent.files_reused, parent.bytes_reused) if parent is not None else (0, 0)
    return backup_result(
        manifest,
        [data, catalog],
        tuple(writer.warnings),
        bytes_reused=reused[1],
        files_reused=reused[0],
        files_read=writer.files_read,
    )


def tree_size(directory_fd: int) -> int:
    """About the tar stream size of the tree open at `directory_fd` (for progress only).

    Walked like a backup (from descriptors, no symlink followed); 0 if the walk fails.
    """
    total = 0
    try:
        with contextlib.closing(_walk(directory_fd, lambda _message: None)) as walk:
            for _arcname, _dir_fd, _name, st in walk:
                if not stat.S_ISDIR(st.st_mode):
                    total += st.st_size + tarfile.BLOCKSIZE
    except (OSError, ArchiveError):
        return 0
    return total


# (arcname, descriptor of the directory holding it, name in that directory, lstat)
Member = tuple[str, int, str, os.stat_result]


def _walk(
    directory_fd: int,
    warn: Callable[[str], None],
    close_directory: Callable[[int], None] = os.close,
) -> Generator[Member, None, None]:
    """Yield every member below `directory_fd` depth-first, siblings in byte order.

    Each entry is looked up (fstatat), opened and listed relative to its directory's
    descriptor: a component renamed or swapped for a symlink while the walk runs can
    never lead it out of the tree. Memory O(depth x siblings); descriptors: one per
    level being walked, at most `max_walk_depth()` (deeper trees fail cleanly). The
    caller keeps `directory_fd`; the walk hands every descriptor it opened to
    `close_directory` once it is done with it.
    """
    yield ".", directory_fd, ".", os.fstat(directory_fd)
    max_depth = max_walk_depth()
    stack = [_Level(directory_fd, _names(directory_fd, ".", warn), "")]
    try:
        while stack:
            level = stack[-1]
            name = next(level.names, None)
            if name is None:
                stack.pop()
                level.close(directory_fd, close_directory)
                continue
            try:
                st = os.stat(name, dir_fd=level.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since its directory was listed
            arcname = level.prefix + name
            yield arcname, level.fd, name, st
            if stat.S_ISDIR(st.st_mode):
                if len(stack) >= max_depth:
                    raise ArchiveError(f"the tree is nested deeper than {max_depth} levels")
                child = _open_subdirectory(level.fd, name, arcname, st, warn)
                if child >= 0:
                    stack.append(_Level(child, _names(child, arcname, warn), arcname + "/"))
    finally:
        for level in stack:
            level.close(directory_fd, close_directory)


class _Level:
    """A directory being walked: its descriptor, the names still to visit, its prefix."""

    __slots__ = ("fd", "names", "prefix")

    def __init__(self, fd: int, names: Iterator[str], prefix: str) -> None:
        self.fd, self.names, self.prefix = fd, names, prefix

    def close(self, keep: int, close_directory: Callable[[int], None]) -> None:
        if self.fd != keep:
            close_directory(self.fd)


def max_walk_depth() -> int:
    """How deep a tree walk may go: it holds one descriptor per level, and a deep tree must
    not starve the process (other backups, the database, HTTP) of descriptors."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_DEPTH
    return max(_MIN_DEPTH, min(_MAX_DEPTH, soft // 8))


def _names(fd: int, arcname: str, warn: Callable[[str], None]) -> Iterator[str]:
    try:
        names = sorted(os.listdir(fd), key=os.fsencode)
    except OSError as exc:
        _fatal_if_out_of_descriptors(exc)
        warn(f"skipped the contents of {arcname!r}: {exc.strerror}")
        names = []
    return iter(names)


def _open_subdirectory(
    parent_fd: int, name: str, arcname: str, st: os.stat_result, warn: Callable[[str], None]
) -> int:
    """A descriptor of the directory `st` describes, or -1 (with a warning) if `name` is no
    longer that directory (swapped for a symlink or another entry since the lstat)."""
    try:
        fd = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        _fatal_if_out_of_descriptors(exc)
        why = _SWAPPED if exc.errno in (errno.ELOOP, errno.ENOTDIR) else exc.strerror
        warn(f"skipped the contents of {arcname!r}: {why}")
        return -1
    if not _same_inode(os.fstat(fd), st):
        os.close(fd)
        warn(f"skipped the contents of {arcname!r}: {_SWAPPED}")
        return -1
    return fd


def _same_inode(opened: os.stat_result, looked_up: os.stat_result) -> bool:
    return opened.st_ino == looked_up.st_ino and opened.st_dev == looked_up.st_dev


def _fatal_if_out_of_descriptors(exc: OSError) -> None:
    # Skipping here would silently drop part of the tree for a passing shortage.
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        raise ArchiveError("out of file descriptors while walking the tree") from exc


class _Pending(NamedTuple):
    """A member of the group being collected, and where to read it from.

    `fd` is open only for a file with other hard links (opened at once, so a later link
    to it never names a file the backup skipped); others are opened when the group is
    written, and never when it is reused.
    """

    member: GroupMember
    arcname: str
    dir_fd: int
    name: str
    fd: int


class _TarWriter:
    """Serialises members as PAX tar into a StreamChunker and writes the catalog.

    Hand-written rather than TarFile, which keeps every member in memory (~1 GiB for a
    million files), copies data through a 16 KiB buffer and spends ~70 us per header:
    here headers come from `tarheader` and file data is read straight into the
    chunker's 16 MiB buffer. Memory: the `_inodes` map of files with st_nlink > 1 and
    one pending group (at most GROUP_MAX_MEMBERS members, and the directory descriptors
    they need: the walk hands its descriptors to close_directory(), which keeps those
    until the group is written); nothing else grows with the number of members.
    Lifecycle: add() per member in stream order, close() once; abandon() always, last.
    Thread rules: owner only.
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
        self._group: list[_Pending] = []
        self._group_bytes = 0
        self._held: set[int] = set()  # directory descriptors the pending group needs
        self._closing: set[int] = set()  # of those, the ones the walk is done with
        self.files_read = 0  # regular files whose data this backup read
        self.warnings: list[str] = []

    def add(self, arcname: str, dir_fd: int, name: str, st: os.stat_result) -> None:
        """Write the member `name` of the directory open at `dir_fd`, as `st` (its lstat)."""
        mode, size, linkname, fd = st.st_mode, 0, "", -1
        try:
            if stat.S_ISREG(mode):
                link = self._inodes.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
                if link is None:
                    typeflag, size = tarfile.REGTYPE, st.st_size
                    if size >= REUSE_MIN_SIZE or st.st_nlink > 1:
                        fd = self._open_regular(dir_fd, name, arcname, st)
                        if fd < 0:
                            return
                        if st.st_nlink > 1:
                            self._inodes[(st.st_dev, st.st_ino)] = arcname
                else:
                    typeflag, linkname = tarfile.LNKTYPE, link
            elif stat.S_ISDIR(mode):
                typeflag = tarfile.DIRTYPE
            elif stat.S_ISLNK(mode):
                typeflag, linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dir_fd)
            else:
                self.warn(f"skipped {arcname!r}: not a file, directory or symlink")
                return
        except OSError as exc:
            _fatal_if_out_of_descriptors(exc)
            self.warn(f"skipped {arcname!r}: {exc.strerror}")
            return
        target = os.fsencode(linkname) if linkname else b""
        member = GroupMember(os.fsencode(arcname), st, typeflag, size, target)
        if size >= REUSE_MIN_SIZE:
            self._flush_group()
            self._add_large(member, arcname, fd)
        else:
            self._add_to_group(_Pending(member, arcname, dir_fd, name, fd))

    def close(self) -> None:
        self._flush_group()
        # End of archive: two zero blocks, then zeros up to a whole tar record.
        end = self._stream.position + 2 * tarfile.BLOCKSIZE
        self._stream.write(bytes(2 * tarfile.BLOCKSIZE + (-end) % tarfile.RECORDSIZE))
        self._stream.close()
        self._catalog.close()

    def abandon(self) -> None:
        """Close every descriptor still held (after an error: the group never written)."""
        for pending in self._group:
            if pending.fd >= 0:
                os.close(pending.fd)
        self._group = []
        self._release_directories()

    def close_directory(self, fd: int) -> None:
        """The walk is done with directory `fd`: close it unless the group still needs it."""
        if fd in self._held:
            self._closing.add(fd)
        else:
            os.close(fd)

    # --- groups of small members

    def _add_to_group(self, pending: _Pending) -> None:
        self._group.append(pending)
        self._held.add(pending.dir_fd)
        # The usual header size (PAX mtime record + ustar) stands in for the real one,
        # which is built only if the group is written.
        nbytes = _USUAL_HEADER + padded(pending.member.size)
        self._group_bytes += nbytes
        if self._group_ends(pending.member.path, nbytes):
            self._flush_group()

    def _group_ends(self, path: bytes, nbytes: int) -> bool:
        if self._group_bytes >= GROUP_MAX or len(self._group) >= GROUP_MAX_MEMBERS:
            return True
        if self._group_bytes < GROUP_MIN:
            return False
        # Drawn from the name, not the contents: a file changed in place (same name and
        # size) moves no boundary, so every other group keeps its chunks.
        return zlib.crc32(path) * GROUP_SPREAD < nbytes * _CRC_RANGE

    def _flush_group(self) -> None:
        """Write the pending group between two chunk boundaries, or reuse its chunks."""
        group, self._group, self._group_bytes = self._group, [], 0
        if not group:
            return
        try:
            known: tuple[ChunkRef, ...] = ()
            previous: list[CatalogEntry] = []
            if self._parent is not None:
                members = [pending.member for pending in group]
                known, previous = self._parent.unchanged_group(members)
            if known:
                self._reuse_group(group, known, previous)
            else:
                for pending in group:
                    self._write_small(pending)
                self._stream.cut()
        finally:
            for pending in group:
                if pending.fd >= 0:
                    os.close(pending.fd)
            self._release_directories()

    def _reuse_group(
        self, group: list[_Pending], known: tuple[ChunkRef, ...], previous: list[CatalogEntry]
    ) -> None:
        """Reference the previous chunks; each record is the previous one moved to the new
        offsets (with the new ctime and inode of directories and links)."""
        shift = self._stream.position - previous[0].header_offset
        self._stream.append_known(known)
        for pending, entry in zip(group, previous, strict=True):
            st = pending.member.st
            self._catalog.add(
                CatalogEntry(
                    *entry[:7],  # path, type, mode, uid, gid, size, mtime: all compared equal
                    entry.header_offset + shift,
                    entry.data_offset + shift,
                    entry.linkname,
                    st.st_ctime_ns,
                    st.st_ino,
                    entry.header_digest,
                )
            )

    def _write_small(self, pending: _Pending) -> None:
        """Headers and data of one member; a file is opened here unless it was at add()
        (then _flush_group closes it)."""
        member, fd = pending.member, pending.fd
        if member.typeflag == tarfile.REGTYPE and fd < 0:
            fd = self._open_regular(pending.dir_fd, pending.name, pending.arcname, member.st)
            if fd < 0:
                return  # gone or swapped since the walk: skipped with a warning
            try:
                self._write_member(member, pending.arcname, fd)
            finally:
                os.close(fd)
        else:
            self._write_member(member, pending.arcname, fd)

    def _write_member(self, member: GroupMember, arcname: str, fd: int) -> None:
        header = _header(member, arcname)
        self._record(member, header, self._stream.position)
        self._stream.write(header)
        if member.typeflag == tarfile.REGTYPE:
            self._copy_data(arcname, fd, member.size)

    def _release_directories(self) -> None:
        for fd in self._closing:
            os.close(fd)
        self._held.clear()
        self._closing.clear()

    # --- large files

    def _add_large(self, member: GroupMember, arcname: str, fd: int) -> None:
        """A regular file of REUSE_MIN_SIZE or more, between two chunk boundaries."""
        header = _header(member, arcname)
        header_offset = self._stream.position
        self._stream.cut()
        try:
            known: tuple[ChunkRef, ...] = ()
            if self._parent is not None:
                known = self._parent.unchanged(arcname, member.st, header)
            if known:
                self._stream.append_known(known)
            else:
                self._stream.write(header)
                self._copy_data(arcname, fd, member.size)
        finally:
            os.close(fd)
        self._stream.cut()
        self._record(member, header, header_offset)

    def _record(self, member: GroupMember, header: bytes, header_offset: int) -> None:
        st = member.st
        self._catalog.add(
            CatalogEntry(
                member.path,
                member.typeflag,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                member.size,
                st.st_mtime_ns,
                header_offset,
                header_offset + len(header),
                member.linkname,
                st.st_ctime_ns,
                st.st_ino,
                header_digest(header),
            )
        )

    # --- reading files

    def _open_regular(self, dir_fd: int, name: str, arcname: str, st: os.stat_result) -> int:
        """A descriptor of the regular file `st` (its lstat) describes, ready for blocking
        reads; -1 with a warning if `name` has been swapped for anything else since."""
        try:
            fd, status_flags = self._open_nonblocking(dir_fd, name)
        except OSError as exc:
            _fatal_if_out_of_descriptors(exc)
            self.warn(f"skipped {arcname!r}: {exc.strerror}")
            return -1
        try:
            if not _is_file_of(os.fstat(fd), st):
                os.close(fd)
                self.warn(f"skipped {arcname!r}: {_SWAPPED}")
                return -1
            fcntl.fcntl(fd, fcntl.F_SETFL, status_flags)  # drops O_NONBLOCK
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_nonblocking(self, dir_fd: int, name: str) -> tuple[int, int]:
        """(descriptor, the F_SETFL status flags it was opened with, less O_NONBLOCK)."""
        # O_NOATIME spares an inode update per file; only the owner (or root) may use it.
        if self._noatime:
            try:
                return os.open(name, _READ_FLAGS | self._noatime, dir_fd=dir_fd), self._noatime
            except PermissionError as exc:
                if exc.errno != errno.EPERM:
                    raise
                if os.geteuid() != 0:
                    self._noatime = 0  # not our files: stop paying a failed open each
        return os.open(name, _READ_FLAGS, dir_fd=dir_fd), 0

    def _copy_data(self, arcname: str, fd: int, size: int) -> None:
        self.files_read += 1
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


def _header(member: GroupMember, arcname: str) -> bytes:
    st = member.st
    return member_header(
        arcname,
        member.typeflag,
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_gid,
        member.size,
        st.st_mtime_ns,
        os.fsdecode(member.linkname),
        _user_name(st.st_uid),
        _group_name(st.st_gid),
    )


def _is_file_of(opened: os.stat_result, looked_up: os.stat_result) -> bool:
    """Whether the descriptor opened is still the regular file the walk looked up."""
    return stat.S_ISREG(opened.st_mode) and _same_inode(opened, looked_up)


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
