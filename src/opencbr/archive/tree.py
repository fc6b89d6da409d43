"""File trees <-> a PAX tar stream cut into content-defined chunks, plus a catalog.

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

Restore parses the stream with tarfile but creates each member itself, relative to
directory descriptors opened with O_NOFOLLOW: names that are absolute or hold `..` are
refused, a symlinked parent is refused, and nothing is ever written through a symlink.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import functools
import grp
import itertools
import os
import pwd
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

from pyfastcdc import FastCDC

from opencbr.archive.catalog import CATALOG_MAGIC as CATALOG_MAGIC
from opencbr.archive.catalog import (
    CatalogEntry,
    CatalogWriter,
    header_digest,
    require_kind,
)
from opencbr.archive.catalog import iter_catalog as iter_catalog
from opencbr.archive.manifest import Manifest
from opencbr.archive.parent import REUSE_MIN_SIZE, ParentTree, PreviousBackup
from opencbr.archive.pipeline import (
    BackupResult,
    ChunkPipeline,
    ChunkStreamReader,
    ProgressCallback,
    ProgressMeter,
    RestoreResult,
    StreamChunker,
    backup_result,
    prefetch_chunks,
)
from opencbr.archive.sink import ArchiveError, ChunkRef, ChunkSink, ChunkSource
from opencbr.archive.tarheader import format_ns as format_ns
from opencbr.archive.tarheader import member_header

KiB, MiB = 1 << 10, 1 << 20
# 1 MiB nominal average (FastCDC yields avg + min, ~1.3 MiB in practice). Every chunk is
# one object in the store and durable object creation costs ~1 ms per thread, so
# 256 KiB chunks would cap a backup near 250 MiB/s per thread; 1 MiB keeps that cost
# small for ~2x the ideal incremental size (reference/performance-notes.md). min and
# max are FastCDC's usual avg/4 and 4*avg.
CDC_AVG, CDC_MIN, CDC_MAX = 1 * MiB, 256 * KiB, 4 * MiB
DEFAULT_MAX_IN_FLIGHT = 48  # chunks held by a backup: ~60 MiB typical, 192 MiB worst
DEFAULT_PREFETCH = 24  # chunks loaded ahead by a restore
_CATALOG_IN_FLIGHT = 4  # the catalog is ~1/10000 of the data
_NS = 1_000_000_000
_ENCODING, _ERRORS = "utf-8", "surrogateescape"
_FILE_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE})
_MEMBER_TYPES = _FILE_TYPES | {tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_WARNINGS = 1000
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NOATIME: int = getattr(os, "O_NOATIME", 0)  # Linux only
_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)


class UnsafeMemberError(ArchiveError, tarfile.FilterError):
    """A tar member would escape the target or be written through a symlink."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"refusing tar member {name!r}: {reason}")
        self.name = name


class MemberNotFoundError(ArchiveError):
    """The catalog has no such member, or it is not a regular file."""


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
                self._write_file(arcname, fd, st, header)
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

    def _write_file(self, arcname: str, fd: int, st: os.stat_result, header: bytes) -> None:
        if st.st_size >= REUSE_MIN_SIZE and self._parent is not None:
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


def parse_ns(text: str) -> int:
    """Inverse of `format_ns`; accepts any PAX decimal, truncating past nanoseconds."""
    sign = -1 if text[:1] == "-" else 1
    whole, _, fraction = text[1:].partition(".") if text[:1] in "+-" else text.partition(".")
    digits = whole + fraction
    if not text or not digits or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"not a PAX time value: {text!r}")
    return sign * (int(whole or "0") * _NS + int((fraction + "0" * 9)[:9]))


# ---------------------------------------------------------------- restore


def member_parts(name: str) -> tuple[str, ...]:
    """Split a member name into components, dropping "" and "." (() is the root).

    Raises `UnsafeMemberError` for absolute names, `..` components and NUL bytes.
    """
    if name.startswith("/"):
        raise UnsafeMemberError(name, "absolute path")
    if "\0" in name:
        raise UnsafeMemberError(name, "NUL byte in name")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnsafeMemberError(name, "'..' component")
    return parts


def restore_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    """Extraction filter for `tarfile.TarFile.extractall(filter=...)` built on our rules.

    Accepts regular files, directories, symlinks (any target: recreated as they were,
    never followed) and hard links to members inside the archive; refuses absolute
    names, `..`, NUL bytes, sparse and special members, and members whose parent under
    `dest_path` is a symlink (for instance one this extraction created). restore_tree
    enforces the parent rule race-free through O_NOFOLLOW descriptors instead.
    """
    safe = _sanitize(member)
    for name in (safe.name, safe.linkname) if safe.islnk() else (safe.name,):
        _refuse_symlinked_parent(dest_path, member_parts(name), member.name)
    return safe


def _sanitize(member: tarfile.TarInfo) -> tarfile.TarInfo:
    parts = member_parts(member.name)
    if member.type not in _MEMBER_TYPES or member.sparse is not None:
        raise UnsafeMemberError(member.name, f"unsupported member type {member.type!r}")
    if member.islnk() and not member_parts(member.linkname):
        raise UnsafeMemberError(member.name, "hard link to the archive root")
    if "\0" in member.linkname:
        raise UnsafeMemberError(member.name, "NUL byte in link target")
    if not parts and not member.isdir():
        raise UnsafeMemberError(member.name, "the archive root must be a directory")
    return member.replace(name="/".join(parts) or ".", mode=member.mode & 0o7777, deep=False)


def _refuse_symlinked_parent(dest_path: str, parts: tuple[str, ...], name: str) -> None:
    path = dest_path
    for part in parts[:-1]:
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise UnsafeMemberError(name, f"parent component {part!r} is a symlink")


def restore_tree(
    manifest: Manifest,
    source: ChunkSource,
    target: Path,
    *,
    workers: int = 2,
    on_progress: ProgressCallback | None = None,
    max_in_flight: int = DEFAULT_PREFETCH,
) -> RestoreResult:
    """Restore a tree backup into the existing directory `target`, replacing what is there.

    Entries of `target` the backup lacks are left alone; owners are restored only when
    running as root. Nothing is fsynced. On error the restore stops where it was.
    `on_progress` receives the cumulative tar-stream bytes restored.
    """
    require_kind(manifest, "tree")
    progress = ProgressMeter(on_progress)
    with ThreadPoolExecutor(workers, thread_name_prefix="restore") as pool:
        chunks = prefetch_chunks(source, manifest.chunks, pool, depth=max_in_flight)
        with closing(ChunkStreamReader(chunks)) as reader, _Extractor(target) as extractor:
            members = _extract_all(reader, extractor, progress)
    progress.close()
    return RestoreResult(progress.done, reader.chunks_read, members)


def _extract_all(reader: ChunkStreamReader, extractor: _Extractor, progress: ProgressMeter) -> int:
    members = 0
    try:
        tar = _StreamTarFile(fileobj=reader, mode="r", encoding=_ENCODING, errors=_ERRORS)
        while (member := tar.next()) is not None:
            extractor.extract(_sanitize(member), reader)
            members += 1
            progress.advance(reader.tell() - progress.done)
    except (tarfile.ReadError, tarfile.HeaderError) as exc:
        raise ArchiveError(f"damaged tar stream at {reader.tell()}: {exc}") from exc
    # tarfile ends quietly at an unreadable header: only zeros may follow the last
    # member, anything else means members were lost rather than the archive ended.
    while view := reader.read_view(MiB):
        if bytes(view).count(0) != len(view):
            raise ArchiveError(f"damaged tar stream: data after its end at {reader.tell()}")
    extractor.finish()
    progress.advance(reader.tell() - progress.done)
    return members


class _StreamTarFile(tarfile.TarFile):
    """TarFile forgetting each member once read: it otherwise keeps all (~1 KiB each)
    and a restore must stay bounded for any number of files. Only next() is used."""

    members: list[tarfile.TarInfo]  # undocumented TarFile attribute

    def next(self) -> tarfile.TarInfo | None:
        member = super().next()
        self.members.clear()
        return member


class _Extractor:
    """Creates sanitised tar members under `target`, never following a symlink.

    Paths are opened component by component from a descriptor of `target` with
    O_NOFOLLOW|O_DIRECTORY; whatever exists at a member's name is removed first and
    files are created with O_EXCL, so an old symlink or hard link is replaced, never
    written through. Directory attributes are set in finish(), deepest first.
    Lifecycle: extract() per member, finish() once; the `with` block closes descriptors.
    Thread rules: owner thread only. Memory: one small record per directory.
    """

    def __init__(self, target: Path) -> None:
        self._root = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._cached: tuple[tuple[str, ...], int] | None = None  # last parent opened
        self._dirs: list[tarfile.TarInfo] = []
        self._as_root = os.geteuid() == 0

    def __enter__(self) -> _Extractor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._drop_cache()
        os.close(self._root)

    def extract(self, member: tarfile.TarInfo, reader: ChunkStreamReader) -> None:
        parts = member_parts(member.name)
        if not parts:
            self._dirs.append(member)  # the root: `target` itself takes its attributes
            return
        parent, name = self._parent_fd(parts[:-1], member.name), parts[-1]
        self._clear(parent, name, parts, keep_dir=member.isdir())
        if member.isdir():
            self._make_dir(parent, name)
            self._dirs.append(member)
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=parent)
            self._set_link_attrs(parent, name, member)
        elif member.islnk():
            self._make_hard_link(parent, name, member)
        else:
            self._make_file(parent, name, member, reader)

    def finish(self) -> None:
        for member in reversed(self._dirs):
            fd = self._open_dir(member_parts(member.name), member.name, create=False)
            if fd is not None:
                try:
                    self._set_attrs(fd, member)
                finally:
                    self._close(fd)

    def _make_dir(self, parent: int, name: str) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            # Kept from before the restore: make sure its new contents can be written.
            mode = stat.S_IMODE(os.stat(name, dir_fd=parent).st_mode)
            os.chmod(name, mode | 0o700, dir_fd=parent)

    def _make_file(
        self, parent: int, name: str, member: tarfile.TarInfo, reader: ChunkStreamReader
    ) -> None:
        fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            reader.seek(member.offset_data)
            remaining = member.size
            while remaining:
                view = reader.read_view(remaining)
                if not view:
                    raise ArchiveError(f"tar stream ends inside {member.name!r}")
                _write_all(fd, view)
                remaining -= len(view)
            self._set_attrs(fd, member)
        finally:
            os.close(fd)

    def _make_hard_link(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        link = member_parts(member.linkname)
        source = self._open_dir(link[:-1], member.name, create=False)
        try:
            if source is None:
                raise FileNotFoundError(member.linkname)
            os.link(link[-1], name, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise ArchiveError(f"hard link {member.name!r}: target not restored") from exc
        finally:
            if source is not None:
                self._close(source)

    def _set_attrs(self, fd: int, member: tarfile.TarInfo) -> None:
        if self._as_root:
            os.fchown(fd, member.uid, member.gid)  # before chmod: chown clears set-id bits
        os.fchmod(fd, member.mode)
        mtime = _mtime_ns(member)
        os.utime(fd, ns=(mtime, mtime))

    def _set_link_attrs(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        if self._as_root:
            os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        mtime = _mtime_ns(member)
        os.utime(name, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)

    def _clear(self, parent: int, name: str, parts: tuple[str, ...], *, keep_dir: bool) -> None:
        try:
            existing = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        if keep_dir and stat.S_ISDIR(existing):
            return
        if self._cached is not None and self._cached[0][: len(parts)] == parts:
            self._drop_cache()  # the cached directory is about to be removed
        if stat.S_ISDIR(existing):
            shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)

    def _parent_fd(self, parts: tuple[str, ...], member_name: str) -> int:
        # Members come depth-first, so most share the previous member's parent.
        if self._cached is None or self._cached[0] != parts:
            self._drop_cache()
            fd = self._open_dir(parts, member_name, create=True)
            assert fd is not None  # create=True never answers None
            self._cached = (parts, fd)
        return self._cached[1]

    def _drop_cache(self) -> None:
        if self._cached is not None:
            self._close(self._cached[1])
        self._cached = None

    def _open_dir(self, parts: tuple[str, ...], member_name: str, *, create: bool) -> int | None:
        """Open target/parts without following symlinks; None if absent and not `create`."""
        fd: int | None = self._root
        for part in parts:
            assert fd is not None
            try:
                child = _open_component(fd, part, member_name, create=create)
            finally:
                self._close(fd)
            fd = child
            if fd is None:
                break
        return fd

    def _close(self, fd: int) -> None:
        if fd != self._root:
            os.close(fd)


def _open_component(parent: int, part: str, member_name: str, *, create: bool) -> int | None:
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            return None
        os.mkdir(part, 0o755, dir_fd=parent)  # a parent a hand-made stream left out
        return os.open(part, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        is_link = stat.S_ISLNK(os.stat(part, dir_fd=parent, follow_symlinks=False).st_mode)
        reason = "is a symlink" if is_link else "is not a directory"
        raise UnsafeMemberError(member_name, f"parent component {part!r} {reason}") from exc


def _mtime_ns(member: tarfile.TarInfo) -> int:
    # tarfile parses PAX mtime into a float (~0.2 us precision); the raw text is exact.
    text = member.pax_headers.get("mtime")
    if text is not None:
        with contextlib.suppress(ValueError):
            return parse_ns(text)
    return round(member.mtime * _NS)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


# ---------------------------------------------------------------- single file


def restore_file(
    manifest: Manifest,
    source: ChunkSource,
    member_path: bytes | str,
    dest: Path,
    *,
    workers: int = 2,
) -> RestoreResult:
    """Restore one regular file of a tree backup to the path `dest`, replacing it.

    Reads the catalog, then only the data chunks covering the file (a hard link is
    followed to the member holding the data). Raises `MemberNotFoundError`.
    """
    entry = _find_file(manifest, source, member_path, workers)
    refs, start = _covering_chunks(manifest.chunks, entry.data_offset, entry.size)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dest)  # replace: never write into an existing inode or through a link
    fd = os.open(dest, _NEW_FILE_FLAGS, 0o600)
    try:
        with (
            ThreadPoolExecutor(workers, thread_name_prefix="restore") as pool,
            closing(prefetch_chunks(source, refs, pool, depth=2 * workers)) as chunks,
        ):
            _write_range(fd, chunks, start, entry)
        if os.geteuid() == 0:
            os.fchown(fd, entry.uid, entry.gid)
        os.fchmod(fd, entry.mode)
        os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
    finally:
        os.close(fd)
    return RestoreResult(entry.size, len(refs), 1)


def _find_file(
    manifest: Manifest, source: ChunkSource, member_path: bytes | str, workers: int
) -> CatalogEntry:
    entry = _find_entry(manifest, source, member_path, workers)
    if entry.type == tarfile.LNKTYPE:
        entry = _find_entry(manifest, source, entry.linkname, workers)
    if entry.type not in _FILE_TYPES:
        raise MemberNotFoundError(f"{member_path!r} is not a regular file")
    if entry.data_offset + entry.size > manifest.size:
        raise ArchiveError(f"catalog places {member_path!r} past the end of the stream")
    return entry


def _find_entry(
    manifest: Manifest, source: ChunkSource, member_path: bytes | str, workers: int
) -> CatalogEntry:
    key = os.fsencode("/".join(member_parts(os.fsdecode(member_path))) or ".")
    # A linear scan: the catalog is in stream order, not sorted, and ~1/10000 the data.
    with closing(iter_catalog(manifest, source, workers=workers)) as entries:
        for entry in entries:
            if entry.path == key:
                return entry
    raise MemberNotFoundError(f"no member {key!r} in this backup")


def _covering_chunks(
    chunks: tuple[ChunkRef, ...], offset: int, size: int
) -> tuple[list[ChunkRef], int]:
    """The chunks holding stream bytes [offset, offset + size), and the first one's offset."""
    if size == 0:
        return [], offset
    starts = list(itertools.accumulate((ref.length for ref in chunks), initial=0))
    first = bisect.bisect_right(starts, offset) - 1
    last = bisect.bisect_left(starts, offset + size) - 1
    return list(chunks[first : last + 1]), starts[first]


def _write_range(fd: int, chunks: Iterator[bytes], start: int, entry: CatalogEntry) -> None:
    position, end = start, entry.data_offset + entry.size
    for data in chunks:
        low, high = max(entry.data_offset - position, 0), min(end - position, len(data))
        _write_all(fd, memoryview(data)[low:high])
        position += len(data)
