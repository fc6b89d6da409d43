"""archive.confined: paths opened below a root descriptor, with openat2 and with the
O_NOFOLLOW walk used where openat2 is missing (both run on every test)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencbr.archive import confined
from opencbr.archive.confined import (
    PathNotConfined,
    open_beneath,
    open_data,
    open_directory,
    open_root,
    opened,
)


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2" and not confined._openat2.available:
        pytest.skip("this kernel has no openat2")
    if request.param == "walk":
        monkeypatch.setattr(confined._openat2, "available", False)
    return str(request.param)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """<tmp>/root holding a/b/file.txt, a symlink `up` to outside, `inner` to a/b."""
    base = tmp_path / "root"
    (base / "a" / "b").mkdir(parents=True)
    (base / "a" / "b" / "file.txt").write_bytes(b"inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "file.txt").write_bytes(b"outside")
    (base / "up").symlink_to(tmp_path / "outside")
    (base / "inner").symlink_to(base / "a" / "b")
    (base / "a" / "b" / "leaf").symlink_to(tmp_path / "outside" / "file.txt")
    return base


@pytest.fixture
def root_fd(root: Path) -> Iterator[int]:
    with opened(open_root(root)) as fd:
        yield fd


def _read(fd: int) -> bytes:
    with opened(fd):
        return os.read(fd, 100)


def test_a_path_below_the_root_opens(resolver: str, root_fd: int) -> None:
    assert _read(open_beneath(root_fd, "a/b/file.txt", os.O_RDONLY)) == b"inside"
    assert _read(open_beneath(root_fd, "/a//./b/file.txt", os.O_RDONLY)) == b"inside"


def test_the_empty_path_is_the_root_itself(resolver: str, root: Path, root_fd: int) -> None:
    with opened(open_directory(root_fd, "")) as fd:
        assert os.fstat(fd).st_ino == root.stat().st_ino


@pytest.mark.parametrize(
    "relative",
    ["up/file.txt", "inner/file.txt", "a/b/leaf", "up", "inner", "a/../a/b/file.txt"],
)
def test_any_symlink_or_dotdot_on_the_way_is_refused(
    resolver: str, root_fd: int, relative: str
) -> None:
    # Even a symlink that stays inside the root (`inner`): a registered path names the
    # real entry, so a symlink there means the path was swapped since.
    for flags in (os.O_RDONLY, confined.DIRECTORY_FLAGS):
        with pytest.raises(PathNotConfined, match="no longer valid"):
            os.close(open_beneath(root_fd, relative, flags))


def test_a_symlinked_directory_is_refused_by_open_directory(resolver: str, root_fd: int) -> None:
    # openat2 reports a symlinked O_DIRECTORY leaf as ENOTDIR, not ELOOP.
    with pytest.raises(PathNotConfined, match="symbolic link"):
        os.close(open_directory(root_fd, "inner"))


def test_other_errors_pass_through(resolver: str, root_fd: int) -> None:
    with pytest.raises(FileNotFoundError):
        open_beneath(root_fd, "a/missing", os.O_RDONLY)
    with pytest.raises(NotADirectoryError):
        open_directory(root_fd, "a/b/file.txt")
    with pytest.raises(NotADirectoryError):
        open_beneath(root_fd, "a/b/file.txt/x", os.O_RDONLY)


def test_files_can_be_created_below_the_root(resolver: str, root: Path, root_fd: int) -> None:
    fd = open_beneath(root_fd, "a/new.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with opened(fd):
        os.write(fd, b"new")
    assert (root / "a" / "new.txt").read_bytes() == b"new"
    umask = os.umask(0)  # the process's (an app started earlier in this process sets 077)
    os.umask(umask)
    assert stat.S_IMODE((root / "a" / "new.txt").stat().st_mode) == 0o640 & ~umask
    with pytest.raises(PathNotConfined):
        open_beneath(root_fd, "up/planted.txt", os.O_WRONLY | os.O_CREAT, 0o600)
    assert not (root.parent / "outside" / "planted.txt").exists()


def test_data_is_opened_blocking_once_its_kind_is_checked(resolver: str, root_fd: int) -> None:
    with opened(open_data(root_fd, "a/b/file.txt", os.O_RDONLY, ("file", "block"))) as fd:
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        assert os.read(fd, 100) == b"inside"
    with pytest.raises(PathNotConfined, match="no longer a block device"):
        open_data(root_fd, "a/b/file.txt", os.O_RDONLY, ("block",))
    with pytest.raises(PathNotConfined, match="symbolic link"):
        open_data(root_fd, "a/b/leaf", os.O_RDONLY, ("file",))


@pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_WRONLY, os.O_RDWR])
def test_a_fifo_is_refused_without_blocking(
    resolver: str, root: Path, root_fd: int, flags: int
) -> None:
    os.mkfifo(root / "a" / "pipe")
    started = time.monotonic()
    with pytest.raises(PathNotConfined, match="no longer a regular file or a block device"):
        _open_in_thread(lambda: open_data(root_fd, "a/pipe", flags, ("file", "block")))
    assert time.monotonic() - started < 5


def _open_in_thread(call: object) -> None:
    """Run `call` in a thread so a blocking open fails the test instead of hanging it."""
    outcome: list[BaseException | int] = []

    def run() -> None:
        try:
            outcome.append(call())  # type: ignore[operator]
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(5)
    assert outcome, "the open blocked"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    os.close(outcome[0])


def test_a_block_device_is_accepted_only_as_a_block_device(
    resolver: str, root: Path, root_fd: int
) -> None:
    device = root / "a" / "disk"
    try:
        os.mknod(device, stat.S_IFBLK | 0o600, os.makedev(7, 0))  # a loop device
    except PermissionError:
        pytest.skip("no CAP_MKNOD here")
    try:
        fd = open_data(root_fd, "a/disk", os.O_RDONLY, ("block",))
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENODEV, errno.EACCES, errno.EPERM):
            pytest.skip(f"no loop device to open here: {exc.strerror}")
        raise
    with opened(fd):
        assert stat.S_ISBLK(os.fstat(fd).st_mode)
    with pytest.raises(PathNotConfined, match="no longer a regular file"):
        open_data(root_fd, "a/disk", os.O_RDONLY, ("file",))


def test_a_character_device_is_never_data(resolver: str, root: Path, root_fd: int) -> None:
    try:
        os.mknod(root / "a" / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("no CAP_MKNOD here")
    with pytest.raises(PathNotConfined):
        open_data(root_fd, "a/null", os.O_RDONLY, ("file", "block"))


def test_the_walk_closes_every_descriptor_it_opened(
    root_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(confined._openat2, "available", False)
    before = len(os.listdir("/proc/self/fd"))
    for relative in ("a/b/file.txt", "up/file.txt", "a/missing/x", "inner/file.txt"):
        with contextlib.suppress(OSError):
            os.close(open_beneath(root_fd, relative, os.O_RDONLY))
    assert len(os.listdir("/proc/self/fd")) == before
