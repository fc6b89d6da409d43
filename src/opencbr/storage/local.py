"""Chunk store in a local directory.

Layout under the root directory (names from `opencbr.storage.layout`):

    chunks/<first 2 hex of digest>/<digest>   stored chunk bytes (256 fan-out folders)
    manifests/<name>                          manifests
    tmp/<pid>-<thread>-<n>.tmp                files being written; same file system,
                                              so publishing them is a link or rename

A chunk is written to tmp/, then hard-linked to its final name: the link
fails if the name exists, so a concurrent put of the same digest never
replaces a chunk and reports True once. The file is fsync'd later, by
`flush()`, in parallel with the other pending chunks, because an fsync per
chunk halves backup throughput. Meanwhile each chunk's writeback is started
as soon as it is written (sync_file_range(2) on Linux), so the disk works
while the backup computes and the final flush has little left to wait for.
Manifests are the commit point and are fsync'd (file and folder) before
`put_manifest` returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from opencbr.storage import layout
from opencbr.storage.store import (
    ChunkNotFoundError,
    ManifestNotFoundError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
    check_digest,
    check_manifest_name,
    is_digest,
    is_manifest_name,
)

_TRANSIENT_ERRNOS = frozenset(
    {errno.EIO, errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE}
)
# Errors telling that the file system cannot hard-link (FAT, some network or FUSE mounts).
_NO_LINK_ERRNOS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP})
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_FILE_MODE = 0o600  # backup data is private to the service's user
# Writeback is started at once only for files this large (see _start_writeback). For a
# small file the call costs more than it saves: 36 KiB chunk files (groups of small
# files) took 216-228 us each with it and 165-198 us without, while the final sync of
# 3,000 of them took 4-69 ms either way; the benchmark's small-files backup ran
# 18.7-19.4 -> 17.4-17.9 s.
# Chunks of large files (CDC: 256 KiB and more) keep the early writeback.
WRITEBACK_MIN_SIZE = 256 * 1024
_STALE_TEMP_AGE = 3600.0
_sync_data: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def _storage_error(exc: OSError, what: str, doing: str, digest: str | None = None) -> StorageError:
    """Classify an OSError: transient if a retry may help, permanent otherwise.

    Unknown errnos count as permanent so callers do not retry blindly. The message names
    the object (`what`), the kind of fault and what was being done, but no path: store
    paths are the server's business, and these messages reach operation logs.
    """
    kind = TransientStorageError if exc.errno in _TRANSIENT_ERRNOS else PermanentStorageError
    fault = os.strerror(exc.errno) if exc.errno else (exc.strerror or type(exc).__name__)
    return kind(f"{what}: storage I/O error ({fault.lower()}) while {doing}", digest=digest)


def _chunk_error(exc: OSError, digest: str, doing: str) -> StorageError:
    return _storage_error(exc, f"chunk {digest}", doing, digest)


_STORE = "chunk store"


class LocalChunkStore:
    """A ChunkStore in a local directory (see the module docstring for the layout).

    Lifecycle: the constructor creates the layout and removes temp files a
    crash left behind; `close()` flushes and stops the flush threads.
    Thread rules: every method may be called from any thread; `flush()`
    calls are serialised so one returning means earlier puts are durable.
    """

    def __init__(
        self,
        root: Path,
        *,
        flush_workers: int = 4,
        stale_temp_age: float = _STALE_TEMP_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(os.path.abspath(root))  # a later chdir must not move the store
        self._root = str(self.root)
        self._chunks = str(self.root / layout.CHUNKS_FOLDER)
        self._manifests = str(self.root / layout.MANIFESTS_FOLDER)
        self._tmp = str(self.root / layout.TMP_FOLDER)
        self._temp_names = itertools.count()
        self._pending: set[str] = set()  # chunk paths put since the last flush
        self._lock = threading.Lock()  # guards _pending
        self._flush_lock = threading.Lock()
        self._can_link = True
        self._flush_workers = flush_workers
        self._executor: ThreadPoolExecutor | None = None
        self._create_layout()
        self._remove_stale_temps(clock() - stale_temp_age)

    def __repr__(self) -> str:
        return f"LocalChunkStore({str(self.root)!r})"

    # -- chunks ---------------------------------------------------------------

    def put_chunk(self, digest: str, blob: bytes) -> bool:
        check_digest(digest)
        final = self._chunk_path(digest)
        if self._touch(final):
            return False
        # Pending before visible: a thread that finds the chunk already there
        # and then flushes must cover it too.
        with self._lock:
            self._pending.add(final)
        temp = self._write_temp(blob, f"chunk {digest}", sync=False)
        try:
            return self._publish(temp, final, digest)
        finally:
            _remove_quietly(temp)

    def get_chunk(self, digest: str) -> bytes:
        check_digest(digest)
        try:
            with open(self._chunk_path(digest), "rb", buffering=0) as f:
                return f.read()
        except FileNotFoundError:
            raise ChunkNotFoundError(f"chunk {digest} not found", digest=digest) from None
        except OSError as exc:
            raise _chunk_error(exc, digest, "reading it") from exc

    def has_chunk(self, digest: str) -> bool:
        check_digest(digest)
        try:
            os.stat(self._chunk_path(digest))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _chunk_error(exc, digest, "looking it up") from exc
        return True

    def delete_chunk(self, digest: str) -> bool:
        check_digest(digest)
        try:
            os.unlink(self._chunk_path(digest))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _chunk_error(exc, digest, "deleting it") from exc
        return True

    def delete_chunks(self, digests: Sequence[str]) -> None:
        for digest in digests:
            check_digest(digest)
        for digest in digests:
            self.delete_chunk(digest)

    def list_chunks(self) -> Iterator[str]:
        for folder in layout.chunk_folders():
            yield from (name for name in _scan(f"{self._root}/{folder}") if is_digest(name))

    def chunk_mtime(self, digest: str) -> float:
        check_digest(digest)
        try:
            return os.stat(self._chunk_path(digest)).st_mtime
        except FileNotFoundError:
            raise ChunkNotFoundError(f"chunk {digest} not found", digest=digest) from None
        except OSError as exc:
            raise _chunk_error(exc, digest, "reading its time") from exc

    # -- manifests ------------------------------------------------------------

    def put_manifest(self, name: str, data: bytes) -> None:
        check_manifest_name(name)
        self.flush()
        temp = self._write_temp(data, f"manifest {name}", sync=True)
        try:
            os.replace(temp, os.path.join(self._manifests, name))
        except OSError as exc:
            _remove_quietly(temp)
            raise _storage_error(exc, f"manifest {name}", "publishing it") from exc
        _sync_dir(self._manifests)

    def get_manifest(self, name: str) -> bytes:
        check_manifest_name(name)
        try:
            with open(os.path.join(self._manifests, name), "rb", buffering=0) as f:
                return f.read()
        except FileNotFoundError:
            raise ManifestNotFoundError(f"manifest {name} not found") from None
        except OSError as exc:
            raise _storage_error(exc, f"manifest {name}", "reading it") from exc

    def delete_manifest(self, name: str) -> bool:
        check_manifest_name(name)
        try:
            os.unlink(os.path.join(self._manifests, name))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _storage_error(exc, f"manifest {name}", "deleting it") from exc
        _sync_dir(self._manifests)
        return True

    def list_manifests(self) -> Iterator[str]:
        # Names the store could not have written (editor backups, ...) are skipped.
        return (name for name in _scan(self._manifests) if is_manifest_name(name))

    # -- durability and lifecycle ---------------------------------------------

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                paths, self._pending = self._pending, set()
            if not paths:
                return
            try:
                self._sync_all(paths)
            except BaseException:
                with self._lock:
                    self._pending |= paths
                raise

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._stop_flushing()

    def destroy(self) -> None:
        with self._lock:
            self._pending = set()  # the chunks go: nothing is left to make durable
        self._stop_flushing()
        try:
            shutil.rmtree(self._root)
        except FileNotFoundError:
            return  # gone already (a repeat, or removed by hand)
        except OSError as exc:
            raise _storage_error(exc, _STORE, "removing its folder") from exc

    # -- internals ------------------------------------------------------------

    def _stop_flushing(self) -> None:
        with self._flush_lock:
            if self._executor is not None:
                self._executor.shutdown()
                self._executor = None

    def _chunk_path(self, digest: str) -> str:
        return f"{self._root}/{layout.chunk_path(digest)}"

    def _create_layout(self) -> None:
        try:
            for folder in (self._manifests, self._tmp):
                os.makedirs(folder, exist_ok=True)
            for folder in layout.chunk_folders():
                os.makedirs(f"{self._root}/{folder}", exist_ok=True)
            # The folders must survive a crash before chunks are linked into them.
            for folder in (self._chunks, str(self.root), str(self.root.parent)):
                _sync_dir(folder)
        except OSError as exc:
            raise _storage_error(exc, _STORE, "creating its folders") from exc

    def _remove_stale_temps(self, cutoff: float) -> None:
        # Younger temp files may belong to another process writing right now.
        try:
            with os.scandir(self._tmp) as entries:
                for entry in entries:
                    _remove_if_older(entry, cutoff)
        except OSError as exc:
            raise _storage_error(exc, _STORE, "removing stale temporary files") from exc

    def _touch(self, path: str) -> bool:
        """Refresh an existing file's mtime (garbage collection reads it); False if absent."""
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _chunk_error(exc, os.path.basename(path), "refreshing its time") from exc
        return True

    def _write_temp(self, data: bytes, what: str, *, sync: bool) -> str:
        """Write `data` (of object `what`) to a new temp file and return its path; no temp
        file is left on error."""
        path = f"{self._tmp}/{os.getpid()}-{threading.get_ident()}-{next(self._temp_names)}.tmp"
        try:
            fd = os.open(path, _WRITE_FLAGS, _FILE_MODE)
        except OSError as exc:
            raise _storage_error(exc, what, "creating its temporary file") from exc
        try:
            try:
                _write_all(fd, data)
                if sync:
                    _sync_data(fd)
                elif len(data) >= WRITEBACK_MIN_SIZE:
                    _start_writeback(fd)
            finally:
                os.close(fd)  # close can report a failed write too (NFS)
        except OSError as exc:
            _remove_quietly(path)
            raise _storage_error(exc, what, "writing its temporary file") from exc
        return path

    def _publish(self, temp: str, final: str, digest: str) -> bool:
        """Give the temp file its final name unless that name exists; True if it was free."""
        if self._can_link:
            try:
                os.link(temp, final)
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in _NO_LINK_ERRNOS:
                    raise _chunk_error(exc, digest, "publishing it") from exc
                self._can_link = False
        return self._publish_by_rename(temp, final, digest)

    def _publish_by_rename(self, temp: str, final: str, digest: str) -> bool:
        # Without hard links two racing writers may both rename; the loser
        # replaces identical content atomically, so readers stay safe.
        if os.path.exists(final):
            return False
        try:
            os.replace(temp, final)
        except OSError as exc:
            raise _chunk_error(exc, digest, "publishing it") from exc
        return True

    def _sync_all(self, paths: set[str]) -> None:
        """fsync the files, then their folders, on the flush thread pool.

        Many files at once are made durable with one syncfs(2) of the store's file system
        instead: what `cp` + `sync` does, and several times faster than hundreds of fsyncs
        on the virtual disks measured (bench/README.md). It also covers the folders.
        """
        if len(paths) >= SYNCFS_MIN_FILES and _syncfs(str(self.root)):
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._flush_workers, "chunk-flush")
        _drain(self._executor.map(_sync_file, paths))
        _drain(self._executor.map(_sync_dir, {os.path.dirname(p) for p in paths}))


SYNCFS_MIN_FILES = 64
_LIBC = ctypes.CDLL(None, use_errno=True)


def _syncfs(path: str) -> bool:
    """syncfs(2) the file system holding `path`; False where unsupported (then fsync each)."""
    syncfs = getattr(_LIBC, "syncfs", None)
    if syncfs is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _storage_error(exc, _STORE, "syncing its file system") from exc
    try:
        if syncfs(fd) == 0:
            return True
        error = ctypes.get_errno()
        if error == errno.ENOSYS:
            return False
        raise _storage_error(OSError(error, os.strerror(error)), _STORE, "syncing its file system")
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writeback of dirty pages, do not wait
_sync_file_range = getattr(_LIBC, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file out now, without waiting for it.

    Durability still comes from flush(); this only spreads the disk's work over the
    backup instead of leaving it all to the final barrier (0.4 s -> ~0 for 570 MiB on
    the bench machine). A failure here is harmless and left to flush() to report.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync_file(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # deleted since it was put: nothing left to make durable
    except OSError as exc:
        raise _chunk_error(exc, os.path.basename(path), "opening it to sync") from exc
    try:
        _sync_data(fd)
    except OSError as exc:
        raise _chunk_error(exc, os.path.basename(path), "syncing it") from exc
    finally:
        os.close(fd)


def _sync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _storage_error(exc, _STORE, f"syncing its folder {os.path.basename(path)}") from exc


def _scan(folder: str) -> Iterator[str]:
    """Names of the regular files in `folder`, streamed."""
    try:
        with os.scandir(folder) as entries:
            yield from (entry.name for entry in entries if entry.is_file(follow_symlinks=False))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _storage_error(exc, _STORE, f"listing its folder {os.path.basename(folder)}") from exc


def _remove_if_older(entry: os.DirEntry[str], cutoff: float) -> None:
    try:
        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
            os.unlink(entry.path)
    except FileNotFoundError:
        pass  # another process cleaned it first


def _remove_quietly(path: str) -> None:
    # Only temp files come here; a leftover is removed at the next open anyway.
    with contextlib.suppress(OSError):
        os.unlink(path)


def _drain(results: Iterable[None]) -> None:
    """Consume an executor.map result so the first worker exception is raised."""
    for _ in results:
        pass
