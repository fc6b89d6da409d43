"""Opening user-named paths confined beneath a trusted root (invariant 7).

A registered resource or a restore target is a path inside a root the operator configured.
Anyone who can rename entries under that root can, after registration, swap a component
for a symlink (to the data directory, `/etc`, a device) or the leaf for a FIFO. So every use
opens the path relative to a descriptor of its root and refuses any symlink and any `..`
on the way: with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) where the kernel has it
(Linux 5.6+), else by opening one component at a time with O_NOFOLLOW. Data leaves (disk
images, block devices) are opened non-blocking and checked for their kind before any read
or write, so a FIFO or a device of the wrong kind can neither block a worker nor be written.

Nothing here follows a symlink below the root; the root itself is the operator's and is
opened as configured.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import stat
from collections.abc import Iterator
from contextlib import contextmanager

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_STEP_FLAGS = DIRECTORY_FLAGS | os.O_NOFOLLOW

_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
# openat2 has the same number on every architecture of the generic syscall table.
_SYS_OPENAT2 = 437 if platform.machine() in ("x86_64", "aarch64", "arm64") else None


class PathNotConfined(OSError):
    """A component of the path is a symlink or `..`, or the leaf is not of the wanted kind."""

    def __init__(self, relative: str, why: str) -> None:
        super().__init__(errno.ELOOP, f"resource path is no longer valid: {why}")
        self.relative = relative
        self.why = why


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _Openat2:
    """The openat2(2) system call through libc's syscall(), or None where it is missing."""

    def __init__(self) -> None:
        self._syscall = None
        self.available = False
        if _SYS_OPENAT2 is None:
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            return
        syscall = libc.syscall
        syscall.restype = ctypes.c_long
        self._syscall = syscall
        self.available = True

    def __call__(self, dir_fd: int, path: bytes, flags: int, mode: int) -> int:
        assert self._syscall is not None
        # openat2 refuses a mode without O_CREAT/O_TMPFILE (EINVAL), unlike open(2).
        creates = flags & os.O_CREAT or flags & os.O_TMPFILE == os.O_TMPFILE
        mode = mode if creates else 0
        how = _OpenHow(flags, mode, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS)
        fd = int(
            self._syscall(
                ctypes.c_long(_SYS_OPENAT2 or -1),
                ctypes.c_int(dir_fd),
                ctypes.c_char_p(path),
                ctypes.byref(how),
                ctypes.c_size_t(ctypes.sizeof(how)),
            )
        )
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return fd


_openat2 = _Openat2()


def _parts(relative: str) -> list[str]:
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PathNotConfined(relative, "it contains '..'")
    return parts


def open_root(root: str | os.PathLike[str]) -> int:
    """A directory descriptor of an operator-configured root (its own symlinks are trusted)."""
    return os.open(root, DIRECTORY_FLAGS)


def open_beneath(root_fd: int, relative: str, flags: int, mode: int = 0o600) -> int:
    """Open `relative` (below the directory `root_fd`; "" is the root) without following links.

    Raises PathNotConfined when a component is a symlink or `..`; other OSErrors (ENOENT,
    ENOTDIR, EACCES, ENXIO ...) as open(2) raises them. The caller owns the descriptor.
    """
    parts = _parts(relative)
    flags |= os.O_CLOEXEC | os.O_NOFOLLOW
    if _openat2.available:
        return _via_openat2(root_fd, relative, parts, flags, mode)
    return _via_walk(root_fd, relative, parts, flags, mode)


def _via_openat2(root_fd: int, relative: str, parts: list[str], flags: int, mode: int) -> int:
    path = os.fsencode("/".join(parts) or ".")
    try:
        return _openat2(root_fd, path, flags, mode)
    except OSError as exc:
        if exc.errno == errno.ENOSYS:  # seccomp or an old kernel: walk instead, from now on
            _openat2.available = False
            return _via_walk(root_fd, relative, parts, flags, mode)
        if exc.errno in (errno.ELOOP, errno.EXDEV):
            raise PathNotConfined(relative, "a component is a symbolic link") from None
        if exc.errno == errno.ENOTDIR:
            # With O_DIRECTORY, a symlinked leaf also reads ENOTDIR: the walk tells which.
            return _via_walk(root_fd, relative, parts, flags, mode)
        raise


def _via_walk(root_fd: int, relative: str, parts: list[str], flags: int, mode: int) -> int:
    if not parts:
        return os.open(".", flags, mode, dir_fd=root_fd)
    current = root_fd
    try:
        for part in parts[:-1]:
            step = _step(current, part, relative, _STEP_FLAGS, 0)
            if current != root_fd:
                os.close(current)
            current = step
        return _step(current, parts[-1], relative, flags, mode)
    finally:
        if current != root_fd:
            os.close(current)


def _step(dir_fd: int, name: str, relative: str, flags: int, mode: int) -> int:
    try:
        return os.open(name, flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(dir_fd, name):
            raise PathNotConfined(relative, "a component is a symbolic link") from None
        raise


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_directory(root_fd: int, relative: str) -> int:
    """A directory descriptor of `relative` below `root_fd` (see open_beneath)."""
    return open_beneath(root_fd, relative, DIRECTORY_FLAGS)


DATA_KINDS = {"file": stat.S_ISREG, "block": stat.S_ISBLK}
_KIND_NAMES = {"file": "a regular file", "block": "a block device"}


def open_data(root_fd: int, relative: str, flags: int, kinds: tuple[str, ...]) -> int:
    """Open a disk image or block device below `root_fd`, checked to be one of `kinds`.

    Opened O_NONBLOCK so a FIFO (or a device that waits in open) cannot block the caller;
    the kind is checked on the open descriptor (no race with a swap), then blocking I/O is
    restored. A leaf of another kind raises PathNotConfined.
    """
    wrong_kind = "it is no longer " + " or ".join(_KIND_NAMES[kind] for kind in kinds)
    try:
        fd = open_beneath(root_fd, relative, flags | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing
            raise PathNotConfined(relative, wrong_kind) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not any(DATA_KINDS[kind](mode) for kind in kinds):
            raise PathNotConfined(relative, wrong_kind)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def opened(fd: int) -> Iterator[int]:
    """Close `fd` when the block ends."""
    try:
        yield fd
    finally:
        os.close(fd)
