"""Restoring tree backups.

Restore parses the PAX tar stream with tarfile but creates each member itself, relative
to directory descriptors opened with O_NOFOLLOW: names that are absolute or hold `..`
are refused, a symlinked parent is refused, and nothing is ever written through a
symlink. Each regular file is written under a temporary name in its directory and
renamed over the old one only once complete, so a failed restore leaves every file it
did not finish as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

from opencbr.archive.catalog import require_kind
from opencbr.archive.confined import PathNotConfined
from opencbr.archive.manifest import Manifest
from opencbr.archive.pipeline import (
    ChunkStreamReader,
    ProgressCallback,
    ProgressMeter,
    RestoreResult,
    prefetch_chunks,
)
from opencbr.archive.sink import ArchiveError, ChunkSource
from opencbr.archive.tarheader import parse_ns

MiB = 1 << 20
DEFAULT_PREFETCH = 24  # chunks loaded ahead by a restore
_NS = 1_000_000_000
_ENCODING, _ERRORS = "utf-8", "surrogateescape"
_FILE_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE})
_MEMBER_TYPES = _FILE_TYPES | {tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
TEMP_PREFIX = ".opencbr-restore-"  # files a restore is still writing (see create_temp)


class UnsafeMemberError(ArchiveError, tarfile.FilterError):
    """A tar member would escape the target or be written through a symlink."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"refusing tar member {name!r}: {reason}")
        self.name = name


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


def restore_tree(
    manifest: Manifest,
    source: ChunkSource,
    target: Path | int,
    *,
    workers: int = 2,
    on_progress: ProgressCallback | None = None,
    max_in_flight: int = DEFAULT_PREFETCH,
) -> RestoreResult:
    """Restore a tree backup into the existing directory `target`, replacing what is there.

    `target` is a path the caller trusts, or a descriptor of the directory (left open:
    the caller owns it), which is how a confined restore names it. Entries of `target`
    the backup lacks are left alone; owners are restored only when running as root.
    Nothing is fsynced. On error the restore stops where it was: files already restored
    stay restored, the file being written keeps its old contents (its temporary file is
    removed), later ones are untouched. `on_progress` receives the cumulative tar-stream
    bytes restored.
    """
    require_kind(manifest, "tree")
    progress = ProgressMeter(on_progress)
    with ThreadPoolExecutor(workers, thread_name_prefix="restore") as pool:
        chunks = prefetch_chunks(source, manifest.chunks, pool, depth=max_in_flight)
        with closing(ChunkStreamReader(chunks)) as reader:

            def written() -> None:  # inside a large file too, not only between members
                progress.advance(reader.tell() - progress.done)

            with _Extractor(target, written) as extractor:
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

    def __init__(self, target: Path | int, written: Callable[[], None] = lambda: None) -> None:
        self._written = written  # called after each block of file data is written
        if isinstance(target, int):
            self._root = os.dup(target)  # O_CLOEXEC by default
        else:
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
        if member.isdir():
            self._clear(parent, name, parts, keep_dir=True)
            self._make_dir(parent, name)
            self._dirs.append(member)
            return
        temp = temp_name()
        try:
            if member.issym():
                os.symlink(member.linkname, temp, dir_fd=parent)
                self._set_link_attrs(parent, temp, member)
            elif member.islnk():
                self._make_hard_link(parent, temp, member)
            else:
                self._make_file(parent, temp, member, reader)
            self._replace(parent, temp, name, parts, hard_link=member.islnk())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=parent)
            raise

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
        # O_EXCL|O_NOFOLLOW: the random name is never an existing file or a planted link.
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
                self._written()
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

    def _replace(
        self, parent: int, temp: str, name: str, parts: tuple[str, ...], *, hard_link: bool
    ) -> None:
        """Put the finished entry `temp` in place of `name` (a rename replaces a file or a
        link itself, never writes through it; only a directory must go first)."""
        self._clear(parent, name, parts, keep_dir=False, only_dir=True)
        os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
        if hard_link:
            # rename() does nothing when both names are links to one inode (a hard link
            # restored over itself): the temporary name is then still there.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=parent)

    def _clear(
        self,
        parent: int,
        name: str,
        parts: tuple[str, ...],
        *,
        keep_dir: bool,
        only_dir: bool = False,
    ) -> None:
        try:
            existing = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        if keep_dir and stat.S_ISDIR(existing):
            return
        if only_dir and not stat.S_ISDIR(existing):
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


def open_destination(target: int, relative: str, *, create: bool = True) -> int:
    """A descriptor of the directory `relative` below the directory `target`, made if
    missing and `create` (else FileNotFoundError).

    Each component is opened with O_NOFOLLOW|O_DIRECTORY (or made with mkdirat first), so
    a symlink anywhere on the way raises PathNotConfined, as does a component that is not
    a directory or a `..`. A directory made here takes the owner, group and permission
    bits of the directory it is made in. The caller owns the returned descriptor.
    """
    parts = relative.split("/") if relative else []
    if any(part in ("", ".", "..") or "\0" in part for part in parts):
        raise PathNotConfined(relative, "it is not a plain relative path")
    fd = os.dup(target)
    try:
        for part in parts:
            if create:
                child = _open_or_make_dir(fd, part, relative)
            else:
                found = _open_existing_dir(fd, part, relative)
                if found is None:
                    raise FileNotFoundError(errno.ENOENT, "a directory on the way is missing")
                child = found
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_or_make_dir(parent: int, part: str, relative: str) -> int:
    existing = _open_existing_dir(parent, part, relative)
    if existing is not None:
        return existing
    try:
        os.mkdir(part, 0o700, dir_fd=parent)
    except FileExistsError:  # made meanwhile by someone else: use it if it is a directory
        made = False
    else:
        made = True
    child = _open_existing_dir(parent, part, relative)
    if child is None:
        raise PathNotConfined(relative, "a component keeps changing")
    if made:
        try:
            _inherit_attrs(parent, child)
        except BaseException:
            os.close(child)
            raise
    return child


def _open_existing_dir(parent: int, part: str, relative: str) -> int | None:
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        is_link = stat.S_ISLNK(os.stat(part, dir_fd=parent, follow_symlinks=False).st_mode)
        why = "a component is a symbolic link" if is_link else "a component is not a directory"
        raise PathNotConfined(relative, why) from None


def _inherit_attrs(parent: int, child: int) -> None:
    # Made as root, it would otherwise be root's: the tenant owning the tree could not
    # use the directory its own restore made.
    info = os.fstat(parent)
    if os.geteuid() == 0:
        os.fchown(child, info.st_uid, info.st_gid)
    os.fchmod(child, stat.S_IMODE(info.st_mode))


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


# ---------------------------------------------------------------- temporary files


def temp_name() -> str:
    """A fresh name for an entry being restored: random, so nobody can plant it first."""
    return f"{TEMP_PREFIX}{secrets.token_hex(8)}"


def remove_leftovers(directory: int, *, recursive: bool) -> int:
    """Remove the temporary entries an interrupted restore left in `directory` (a
    descriptor), and with `recursive` in every directory below it, never following a
    link; return how many. Only a restore of the same target may call this: restores of
    one target never run at once, so every such name is a leftover."""
    removed = 0
    for _path, dirs, files, dir_fd in os.fwalk(".", dir_fd=directory, follow_symlinks=False):
        # A link to a directory is listed among `dirs` (and not entered): restores make
        # files, links and hard links under temporary names, never directories.
        for name in [*files, *dirs]:
            if name.startswith(TEMP_PREFIX) and not _is_directory(name, dir_fd):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dir_fd)
                    removed += 1
        if not recursive:
            break
    return removed


def _is_directory(name: str, parent: int) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def create_temp(parent: int) -> tuple[int, str]:
    """Create a new, empty, private file under a temp_name() in the directory `parent`.

    O_EXCL|O_NOFOLLOW: the name can be neither an existing file nor a planted link.
    Returns (write descriptor, name); the caller renames or removes it.
    """
    name = temp_name()
    return os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent), name
