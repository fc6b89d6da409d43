"""ChunkStore conformance suite, run against every backend in conftest.BACKENDS.

The first part uses only the protocol (plus the harness hooks), so a new
backend passes it or breaks the contract. The parts after it test what only
one implementation has: the local backend's files, the faulty wrapper, and
`open_store`'s URLs. The retrying wrapper has its own file, test_retrying.py.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from opencbr.storage import local
from opencbr.storage.chunk import decode_chunk, digest, encode_chunk
from opencbr.storage.faulty import FaultyChunkStore
from opencbr.storage.local import LocalChunkStore
from opencbr.storage.location import open_store
from opencbr.storage.retrying import RetryingChunkStore
from opencbr.storage.store import (
    ChunkNotFoundError,
    ChunkStore,
    CorruptChunkError,
    ManifestNotFoundError,
    PermanentStorageError,
    TransientStorageError,
)

if TYPE_CHECKING:  # pytest imports conftest itself; the harness type is only for readers
    from tests.contract.conftest import Backend


def make_chunk(seed: int, size: int = 4096) -> tuple[str, bytes]:
    """A distinct (digest, stored blob) pair; the data compresses, like real text."""
    data = (f"chunk {seed} ".encode() * (size // 8 + 1))[:size]
    return digest(data), encode_chunk(data)


# -- conformance: chunks -------------------------------------------------------


def test_put_then_get_returns_the_stored_bytes(store: ChunkStore) -> None:
    name, blob = make_chunk(1)
    assert store.put_chunk(name, blob) is True
    assert store.get_chunk(name) == blob
    assert decode_chunk(store.get_chunk(name), name) == (b"chunk 1 " * 513)[:4096]


def test_put_of_an_empty_chunk_round_trips(store: ChunkStore) -> None:
    blob = encode_chunk(b"")
    assert store.put_chunk(digest(b""), blob) is True
    assert decode_chunk(store.get_chunk(digest(b"")), digest(b"")) == b""


def test_second_put_returns_false_and_keeps_the_first_blob(store: ChunkStore) -> None:
    name, blob = make_chunk(2)
    store.put_chunk(name, blob)
    assert store.put_chunk(name, b"other bytes") is False
    assert store.get_chunk(name) == blob


def test_get_of_a_missing_chunk_raises_chunk_not_found(store: ChunkStore) -> None:
    name, _ = make_chunk(3)
    with pytest.raises(ChunkNotFoundError, match=name):
        store.get_chunk(name)
    with pytest.raises(ChunkNotFoundError):
        store.chunk_mtime(name)


def test_a_missing_chunk_error_carries_its_digest(store: ChunkStore) -> None:
    name, _ = make_chunk(3)
    with pytest.raises(ChunkNotFoundError) as raised:
        store.get_chunk(name)
    assert raised.value.digest == name


def test_has_chunk_follows_put_and_delete(store: ChunkStore) -> None:
    name, blob = make_chunk(4)
    assert store.has_chunk(name) is False
    store.put_chunk(name, blob)
    assert store.has_chunk(name) is True
    assert store.delete_chunk(name) is True
    assert store.has_chunk(name) is False
    with pytest.raises(ChunkNotFoundError):
        store.get_chunk(name)


def test_delete_chunk_is_idempotent(store: ChunkStore) -> None:
    name, blob = make_chunk(5)
    assert store.delete_chunk(name) is False
    store.put_chunk(name, blob)
    assert store.delete_chunk(name) is True
    assert store.delete_chunk(name) is False


def test_delete_chunks_removes_many_and_skips_absent_ones(store: ChunkStore) -> None:
    names = [store_chunk(store, i) for i in range(6)]
    absent, _ = make_chunk(99)
    store.delete_chunks([*names[:4], absent])
    assert set(store.list_chunks()) == set(names[4:])
    store.delete_chunks([*names[:4], absent])  # idempotent
    store.delete_chunks([])
    assert store.get_chunk(names[5]) == make_chunk(5)[1]


def test_a_deleted_chunk_can_be_put_again(store: ChunkStore) -> None:
    name, blob = make_chunk(6)
    store.put_chunk(name, blob)
    store.delete_chunk(name)
    assert store.put_chunk(name, blob) is True
    assert store.get_chunk(name) == blob


def test_list_chunks_streams_every_chunk_once(store: ChunkStore) -> None:
    assert list(store.list_chunks()) == []
    names = {store_chunk(store, i) for i in range(300)}  # spans most digest prefixes
    listed = store.list_chunks()
    assert isinstance(listed, Iterator)
    assert next(listed) in names  # yields before the whole listing is built
    everything = list(store.list_chunks())
    assert len(everything) == len(names)
    assert set(everything) == names


def test_list_chunks_omits_deleted_chunks(store: ChunkStore) -> None:
    names = [store_chunk(store, i) for i in range(10)]
    store.delete_chunk(names[0])
    assert set(store.list_chunks()) == set(names[1:])


def test_chunk_mtime_is_the_time_of_the_put(store: ChunkStore) -> None:
    before = time.time()
    name = store_chunk(store, 7)
    # File system clocks may lag the process clock by a tick.
    assert before - 2 <= store.chunk_mtime(name) <= time.time() + 2


def test_put_of_an_existing_chunk_refreshes_its_mtime_where_the_backend_says(
    store: ChunkStore, backend: Backend
) -> None:
    """Local stores refresh it; S3 stores do not (one request per put, and garbage
    collection relies on the database's writer exclusion: see ChunkStore.put_chunk)."""
    name, blob = make_chunk(8)
    store.put_chunk(name, blob)
    backend.backdate_chunk(name, 3600)
    assert store.chunk_mtime(name) < time.time() - 3000
    assert store.put_chunk(name, blob) is False
    assert (store.chunk_mtime(name) > time.time() - 60) is backend.refreshes_mtime_on_put


BAD_DIGESTS = [
    "",
    "abc",
    "A" * 64,
    "g" * 64,
    "0" * 63,
    "0" * 65,
    "../" + "0" * 61,
    "00/" + "0" * 61,
]


@pytest.mark.parametrize("bad", BAD_DIGESTS)
@pytest.mark.parametrize(
    "call",
    [
        lambda s, d: s.put_chunk(d, b"x"),
        lambda s, d: s.get_chunk(d),
        lambda s, d: s.has_chunk(d),
        lambda s, d: s.delete_chunk(d),
        lambda s, d: s.chunk_mtime(d),
        lambda s, d: s.delete_chunks([make_chunk(1)[0], d]),
    ],
    ids=["put", "get", "has", "delete", "mtime", "delete-many"],
)
def test_malformed_digests_are_rejected(
    store: ChunkStore, call: Callable[[ChunkStore, str], object], bad: str
) -> None:
    good = store_chunk(store, 1)
    with pytest.raises(ValueError, match="digest"):
        call(store, bad)
    assert store.has_chunk(good)  # a batch with a bad digest removes nothing


# -- conformance: manifests ----------------------------------------------------


def test_manifest_round_trip_and_listing(store: ChunkStore) -> None:
    assert list(store.list_manifests()) == []
    store.put_manifest("backup-1.json", b'{"chunks": []}')
    store.put_manifest("backup-2", b"")
    assert store.get_manifest("backup-1.json") == b'{"chunks": []}'
    assert store.get_manifest("backup-2") == b""
    assert sorted(store.list_manifests()) == ["backup-1.json", "backup-2"]


def test_put_manifest_replaces_a_manifest_of_the_same_name(store: ChunkStore) -> None:
    store.put_manifest("m", b"first")
    store.put_manifest("m", b"second")
    assert store.get_manifest("m") == b"second"
    assert list(store.list_manifests()) == ["m"]


def test_missing_manifest_raises_manifest_not_found(store: ChunkStore) -> None:
    with pytest.raises(ManifestNotFoundError, match="nope"):
        store.get_manifest("nope")


def test_delete_manifest_is_idempotent(store: ChunkStore) -> None:
    store.put_manifest("m", b"x")
    assert store.delete_manifest("m") is True
    assert store.delete_manifest("m") is False
    with pytest.raises(ManifestNotFoundError):
        store.get_manifest("m")
    assert list(store.list_manifests()) == []


def test_manifests_and_chunks_are_separate_namespaces(store: ChunkStore) -> None:
    name, blob = make_chunk(9)
    store.put_manifest(name, b"manifest named like a digest")
    assert store.has_chunk(name) is False
    assert list(store.list_chunks()) == []
    store.put_chunk(name, blob)
    assert store.get_manifest(name) == b"manifest named like a digest"


@pytest.mark.parametrize("good", ["a", "A_b.c-9", "x" * 255, "..hidden", "0" * 64])
def test_simple_manifest_names_are_accepted(store: ChunkStore, good: str) -> None:
    store.put_manifest(good, b"ok")
    assert store.get_manifest(good) == b"ok"


BAD_NAMES = ["", ".", "..", "a/b", "../x", "a b", "naïve", "x" * 256, "a\x00b", "a\\b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize(
    "call",
    [
        lambda s, n: s.put_manifest(n, b"x"),
        lambda s, n: s.get_manifest(n),
        lambda s, n: s.delete_manifest(n),
    ],
    ids=["put", "get", "delete"],
)
def test_invalid_manifest_names_are_rejected(
    store: ChunkStore, call: Callable[[ChunkStore, str], object], bad: str
) -> None:
    with pytest.raises(ValueError, match="manifest name"):
        call(store, bad)


# -- conformance: concurrency, durability, crashes ------------------------------


def test_concurrent_puts_of_one_digest_report_new_exactly_once(store: ChunkStore) -> None:
    name, blob = make_chunk(10, size=256 * 1024)
    start = threading.Barrier(8)

    def put() -> bool:
        start.wait()
        return store.put_chunk(name, blob)

    for _ in range(20):  # the race is narrow; repeat it
        store.delete_chunk(name)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: put(), range(8)))
        assert results.count(True) == 1
        assert store.get_chunk(name) == blob


def test_concurrent_puts_and_flushes_of_many_digests(store: ChunkStore) -> None:
    def worker(thread: int) -> dict[str, bytes]:
        written = {}
        for i in range(40):
            name, blob = make_chunk(thread * 1000 + i)
            assert store.put_chunk(name, blob) is True
            written[name] = blob
            if i % 10 == 9:
                store.flush()
        return written

    with ThreadPoolExecutor(8) as pool:
        expected = {k: v for part in pool.map(worker, range(8)) for k, v in part.items()}
    store.flush()
    assert set(store.list_chunks()) == set(expected)
    for name, blob in expected.items():
        assert store.get_chunk(name) == blob


def test_flush_with_nothing_pending_returns(store: ChunkStore) -> None:
    store.flush()
    store.flush()


def test_flush_after_deleting_an_unflushed_chunk_succeeds(store: ChunkStore) -> None:
    name = store_chunk(store, 11)
    store.delete_chunk(name)
    store.flush()
    assert store.has_chunk(name) is False


def test_flushed_chunks_and_manifests_survive_reopening(
    store: ChunkStore, backend: Backend
) -> None:
    names = {store_chunk(store, i) for i in range(50)}
    store.flush()
    store.put_manifest("backup-1", b"refs")
    assert backend.partial_writes() == 0
    store.close()
    reopened = backend.open()
    try:
        assert set(reopened.list_chunks()) == names
        assert reopened.get_manifest("backup-1") == b"refs"
        for name in names:
            decode_chunk(reopened.get_chunk(name), name)
    finally:
        reopened.close()


def test_a_write_interrupted_by_a_crash_is_invisible_and_cleaned_on_reopen(
    store: ChunkStore, backend: Backend
) -> None:
    kept = store_chunk(store, 12)
    name, blob = make_chunk(13)
    backend.plant_partial_write(blob)
    assert set(store.list_chunks()) == {kept}
    assert store.has_chunk(name) is False
    store.close()
    reopened = backend.open()
    try:
        assert backend.partial_writes() == 0
        assert set(reopened.list_chunks()) == {kept}
        assert reopened.put_chunk(name, blob) is True
    finally:
        reopened.close()


def test_destroy_removes_the_store_and_is_idempotent(backend: Backend) -> None:
    store = backend.open()
    store_chunk(store, 14)
    store.flush()
    store.put_manifest("backup-1", b"refs")
    store.destroy()
    store.destroy()  # a store already gone is no error
    reopened = backend.open()
    try:
        assert list(reopened.list_chunks()) == []
        assert list(reopened.list_manifests()) == []
    finally:
        reopened.destroy()


def store_chunk(store: ChunkStore, seed: int) -> str:
    name, blob = make_chunk(seed)
    store.put_chunk(name, blob)
    return name


# -- local backend specifics -----------------------------------------------------


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[LocalChunkStore]:
    opened = LocalChunkStore(tmp_path)
    yield opened
    opened.close()


class SyncSpy:
    """Records which files and folders get fsync'd, by path."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real_sync_data, real_fsync = local._sync_data, os.fsync
        monkeypatch.setattr(local, "_sync_data", self._recording(real_sync_data))
        monkeypatch.setattr(os, "fsync", self._recording(real_fsync))

    def _recording(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            self.paths.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)

        return sync


def test_local_flush_syncs_each_new_chunk_and_its_folder(
    local_store: LocalChunkStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SyncSpy(monkeypatch)
    names = [store_chunk(local_store, i) for i in range(20)]
    assert spy.paths == []  # deferred: per-chunk fsync halves throughput
    local_store.flush()
    for name in names:
        assert str(tmp_path / "chunks" / name[:2] / name) in spy.paths
        assert str(tmp_path / "chunks" / name[:2]) in spy.paths
    spy.paths.clear()
    local_store.flush()
    assert spy.paths == []


def test_local_put_manifest_syncs_pending_chunks_first(
    local_store: LocalChunkStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SyncSpy(monkeypatch)
    name = store_chunk(local_store, 1)
    local_store.put_manifest("m", b"refs")
    chunk_sync = spy.paths.index(str(tmp_path / "chunks" / name[:2] / name))
    folder_sync = spy.paths.index(str(tmp_path / "manifests"))
    assert chunk_sync < folder_sync


def test_local_failed_flush_keeps_chunks_pending_for_the_next_flush(
    local_store: LocalChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_chunk(local_store, 1)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    with monkeypatch.context() as patch:
        patch.setattr(local, "_sync_data", broken)
        with pytest.raises(TransientStorageError):
            local_store.flush()
    spy = SyncSpy(monkeypatch)
    local_store.flush()
    assert len(spy.paths) == 2  # the chunk and its folder, retried


@pytest.mark.parametrize(
    ("code", "error"),
    [(errno.ENOSPC, PermanentStorageError), (errno.EIO, TransientStorageError)],
)
def test_local_write_errors_are_classified_and_leave_nothing_behind(
    local_store: LocalChunkStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    error: type[Exception],
) -> None:
    def failing_write(fd: int, data: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "write", failing_write)
    name, blob = make_chunk(1)
    with pytest.raises(error):
        local_store.put_chunk(name, blob)
    with pytest.raises(error):
        local_store.put_manifest("m", b"x")
    monkeypatch.undo()
    assert os.listdir(tmp_path / "tmp") == []
    assert local_store.has_chunk(name) is False
    local_store.flush()  # the failed put left no pending work that breaks the barrier


def test_local_errors_name_the_chunk_and_the_fault_never_a_path(
    local_store: LocalChunkStore, tmp_path: Path
) -> None:
    """Store errors reach operation logs: `[Errno 21] Is a directory: '/srv/…'` must not."""
    name = store_chunk(local_store, 1)
    chunk = tmp_path / "chunks" / name[:2] / name
    chunk.unlink()
    chunk.mkdir()
    with pytest.raises(PermanentStorageError) as raised:
        local_store.get_chunk(name)
    message = str(raised.value)
    assert message == f"chunk {name}: storage I/O error (is a directory) while reading it"
    assert raised.value.digest == name
    os.mkdir(tmp_path / "manifests" / "m")
    with pytest.raises(PermanentStorageError) as raised:
        local_store.put_manifest("m", b"x")
    assert str(raised.value).startswith("manifest m: storage I/O error (")
    assert str(tmp_path) not in str(raised.value)


def test_corrupt_chunk_errors_carry_their_digest() -> None:
    name, blob = make_chunk(4)
    damaged = bytearray(blob)
    damaged[-1] ^= 0xFF
    with pytest.raises(CorruptChunkError) as raised:
        decode_chunk(bytes(damaged), name)
    assert raised.value.digest == name and name in str(raised.value)


def test_local_open_keeps_young_temp_files_of_other_writers(tmp_path: Path) -> None:
    LocalChunkStore(tmp_path).close()
    young = tmp_path / "tmp" / "1-1-1.tmp"
    young.write_bytes(b"being written by another process")
    LocalChunkStore(tmp_path).close()
    assert young.exists()
    LocalChunkStore(tmp_path, clock=lambda: time.time() + 7200).close()
    assert not young.exists()


def test_local_destroy_removes_the_vault_folder(tmp_path: Path) -> None:
    store = LocalChunkStore(tmp_path / "vault")
    store_chunk(store, 1)  # pending, never flushed: destroy must not trip over it
    store.destroy()
    assert not (tmp_path / "vault").exists()
    assert os.listdir(tmp_path) == []


def test_local_listings_skip_foreign_files(local_store: LocalChunkStore, tmp_path: Path) -> None:
    name = store_chunk(local_store, 1)
    (tmp_path / "chunks" / name[:2] / "notes.txt").write_bytes(b"")
    (tmp_path / "manifests" / "bad name").write_bytes(b"")
    assert list(local_store.list_chunks()) == [name]
    assert list(local_store.list_manifests()) == []


_KILLED_WRITER = """
import sys
from pathlib import Path
from opencbr.storage.chunk import digest, encode_chunk
from opencbr.storage.local import LocalChunkStore

store = LocalChunkStore(Path(sys.argv[1]))
for i in range(10**9):
    data = (b"%d " % i) * 100000
    store.put_chunk(digest(data), encode_chunk(data))
    if i % 7 == 0:
        store.flush()
"""


def test_local_store_killed_mid_write_keeps_every_listed_chunk_whole(tmp_path: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 30
        while _count_chunks(tmp_path) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    reopened = LocalChunkStore(tmp_path, stale_temp_age=0)
    try:
        names = list(reopened.list_chunks())
        assert len(names) >= 40
        for name in names:
            decode_chunk(reopened.get_chunk(name), name)
        assert os.listdir(tmp_path / "tmp") == []
    finally:
        reopened.close()


def _count_chunks(root: Path) -> int:
    if not (root / "chunks").exists():
        return 0
    return sum(len(os.listdir(folder)) for folder in (root / "chunks").iterdir())


# -- faulty wrapper --------------------------------------------------------------


def failing_put_indexes(tmp_path: Path, seed: int) -> list[int]:
    store = FaultyChunkStore(LocalChunkStore(tmp_path), fail_put_ratio=0.3, seed=seed)
    failed = []
    for i in range(1000):
        name, blob = make_chunk(i, size=64)
        try:
            store.put_chunk(name, blob)
        except TransientStorageError:
            failed.append(i)
            assert store.inner.has_chunk(name) is False  # failed before writing
    store.close()
    assert store.failed_puts == len(failed)
    return failed


def test_faulty_fails_about_the_ratio_of_puts_repeatably(tmp_path: Path) -> None:
    first = failing_put_indexes(tmp_path / "a", seed=7)
    assert 230 <= len(first) <= 370
    assert failing_put_indexes(tmp_path / "b", seed=7) == first
    assert failing_put_indexes(tmp_path / "c", seed=8) != first


def test_faulty_fails_gets_at_the_ratio(tmp_path: Path) -> None:
    store = FaultyChunkStore(LocalChunkStore(tmp_path), fail_get_ratio=0.5, seed=1)
    name = store_chunk(store, 1)
    outcomes = []
    for _ in range(400):
        try:
            outcomes.append(store.get_chunk(name) is not None)
        except TransientStorageError:
            outcomes.append(False)
    store.close()
    assert 140 <= outcomes.count(False) <= 260
    assert store.failed_gets == outcomes.count(False)


def test_faulty_corrupt_digest_fails_decoding_only_for_that_chunk(tmp_path: Path) -> None:
    bad, bad_blob = make_chunk(1)
    good, good_blob = make_chunk(2)
    store = FaultyChunkStore(LocalChunkStore(tmp_path), corrupt_digests=frozenset({bad}))
    store.put_chunk(bad, bad_blob)
    store.put_chunk(good, good_blob)
    with pytest.raises(CorruptChunkError, match=bad):
        decode_chunk(store.get_chunk(bad), bad)
    assert decode_chunk(store.get_chunk(good), good)
    assert store.inner.get_chunk(bad) == bad_blob  # the stored chunk is intact
    store.close()


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_faulty_rejects_ratios_outside_zero_to_one(tmp_path: Path, ratio: float) -> None:
    inner = LocalChunkStore(tmp_path)
    with pytest.raises(ValueError, match="ratio"):
        FaultyChunkStore(inner, fail_put_ratio=ratio)
    inner.close()


# -- open_store ---------------------------------------------------------------------


def test_open_store_opens_plain_paths_and_file_urls(tmp_path: Path) -> None:
    for url in (str(tmp_path / "a"), f"file://{tmp_path / 'b'}", f"file://localhost{tmp_path}/c"):
        store = open_store(url)
        assert isinstance(store, RetryingChunkStore)
        assert isinstance(store.inner, LocalChunkStore)
        assert store.inner.root.is_dir()
        store.close()
    assert (tmp_path / "b" / "chunks").is_dir()


def test_open_store_parses_faulty_options(tmp_path: Path) -> None:
    one, two = make_chunk(1)[0], make_chunk(2)[0]
    url = (
        f"faulty+file://{tmp_path}?fail_put=0.25&fail_get=0.5&fail_other=0.125"
        f"&fault=permanent&seed=3&corrupt={one},{two}&delay=0.25"
    )
    store = open_store(url)
    assert isinstance(store, RetryingChunkStore)  # around the faulty store, not inside it
    faulty = store.inner
    assert isinstance(faulty, FaultyChunkStore)
    assert isinstance(faulty.inner, LocalChunkStore)
    assert faulty.inner.root == tmp_path
    assert (faulty.fail_put_ratio, faulty.fail_get_ratio, faulty.fail_other_ratio) == (
        0.25,
        0.5,
        0.125,
    )
    assert faulty.fault is PermanentStorageError
    assert faulty.corrupt_digests == {one, two}
    assert faulty.delay == 0.25
    faulty.inner.close()


def test_a_faulty_store_with_a_delay_is_slow_on_chunk_puts_and_gets(tmp_path: Path) -> None:
    store = open_store(f"faulty+file://{tmp_path}?delay=0.2")
    digest, blob = make_chunk(1)
    started = time.monotonic()
    store.put_chunk(digest, blob)
    assert store.get_chunk(digest) == blob
    assert time.monotonic() - started >= 0.4
    store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://Bad_Bucket/prefix", "invalid S3 bucket name"),
        ("s3://bucket/a/../b", "may not contain"),
        ("s3://bucket/prefix?endpoint=x", "s3://BUCKET/PREFIX"),
        ("", "empty"),
        ("ftp://host/x", "scheme"),
        ("file://host/x", "absolute"),
        ("faulty+/tmp/x?explode=1", "unknown faulty store options"),
        ("faulty+/tmp/x?fault=gremlins", "fault kind"),
        ("faulty+/tmp/x?delay=-1", "delay"),
        ("faulty+s3://b", "invalid S3 bucket name"),
    ],
)
def test_open_store_rejects_urls_it_cannot_open(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_local_flush_of_many_chunks_is_one_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = local._syncfs

    def counting(path: str) -> bool:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(local, "_syncfs", counting)
    store = LocalChunkStore(tmp_path / "store")
    blobs = {
        digest(bytes([i]) * 100): encode_chunk(bytes([i]) * 100)
        for i in range(local.SYNCFS_MIN_FILES)
    }
    for name, blob in blobs.items():
        store.put_chunk(name, blob)
    store.flush()
    assert calls == [str(store.root)]
    for name, blob in blobs.items():
        assert decode_chunk(store.get_chunk(name), name) == decode_chunk(blob, name)
    store.put_chunk(digest(b"one more"), encode_chunk(b"one more"))
    store.flush()  # a few files: fsync each, no syncfs
    assert len(calls) == 1
    store.close()
