"""The retrying wrapper `open_store` puts around every store: every method retries
transient faults, and nothing else is ever repeated.

Faults come from the fault-injecting store (`faulty+` URLs) opened through `open_store`,
and from real missing objects; the faulty store counts the calls that reach it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opencbr.storage.chunk import digest, encode_chunk
from opencbr.storage.faulty import FaultyChunkStore
from opencbr.storage.location import open_store
from opencbr.storage.retrying import RetryingChunkStore
from opencbr.storage.store import (
    ChunkNotFoundError,
    ChunkStore,
    CorruptChunkError,
    ManifestNotFoundError,
    NotFoundError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
)

NO_PAUSES = (0.0,) * 5  # six attempts, as in production, without the waiting
ATTEMPTS = len(NO_PAUSES) + 1
DATA = b"some chunk data " * 64
NAME = digest(DATA)
BLOB = encode_chunk(DATA)

CALLS: dict[str, Callable[[ChunkStore], object]] = {
    "put_chunk": lambda s: s.put_chunk(NAME, BLOB),
    "get_chunk": lambda s: s.get_chunk(NAME),
    "has_chunk": lambda s: s.has_chunk(NAME),
    "delete_chunk": lambda s: s.delete_chunk(NAME),
    "delete_chunks": lambda s: s.delete_chunks([NAME]),
    "list_chunks": lambda s: list(s.list_chunks()),
    "chunk_mtime": lambda s: s.chunk_mtime(NAME),
    "put_manifest": lambda s: s.put_manifest("backup-1", b"refs"),
    "get_manifest": lambda s: s.get_manifest("backup-1"),
    "delete_manifest": lambda s: s.delete_manifest("backup-1"),
    "list_manifests": lambda s: list(s.list_manifests()),
    "flush": lambda s: s.flush(),
    "close": lambda s: s.close(),
    "destroy": lambda s: s.destroy(),
}
METHODS = sorted(CALLS)


def open_faulty(root: Path, options: str) -> tuple[ChunkStore, FaultyChunkStore]:
    """A store opened as services open one, and the fault injector inside it."""
    store = open_store(f"faulty+file://{root}?{options}", retry_delays=NO_PAUSES)
    assert isinstance(store, RetryingChunkStore)
    assert isinstance(store.inner, FaultyChunkStore)
    return store, store.inner


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Path]:
    """A store folder holding the chunk and the manifest the calls name."""
    store = open_store(str(tmp_path))
    store.put_chunk(NAME, BLOB)
    store.put_manifest("backup-1", b"refs")
    store.close()
    yield tmp_path


@pytest.mark.parametrize("method", METHODS)
def test_every_method_retries_transient_faults_then_gives_up(seeded: Path, method: str) -> None:
    store, faulty = open_faulty(seeded, "fail_put=1&fail_get=1&fail_other=1")
    with pytest.raises(TransientStorageError, match="injected fault"):
        CALLS[method](store)
    assert faulty.calls[method] == faulty.faults[method] == ATTEMPTS
    faulty.inner.close()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_succeeds_once_a_retry_gets_through(seeded: Path, method: str) -> None:
    store, faulty = open_faulty(seeded, "fail_put=0.3&fail_get=0.3&fail_other=0.3&seed=4")
    for _ in range(10):
        CALLS[method](store)  # none raises: each failure was retried away
    assert faulty.faults[method] > 0
    assert faulty.calls[method] == faulty.faults[method] + 10
    faulty.inner.close()


@pytest.mark.parametrize("kind", ["permanent", "corrupt"])
@pytest.mark.parametrize("method", METHODS)
def test_permanent_and_corrupt_faults_are_never_retried(
    seeded: Path, method: str, kind: str
) -> None:
    store, faulty = open_faulty(seeded, f"fail_put=1&fail_get=1&fail_other=1&fault={kind}")
    error = PermanentStorageError if kind == "permanent" else CorruptChunkError
    with pytest.raises(error, match="injected fault"):
        CALLS[method](store)
    assert faulty.calls[method] == 1
    faulty.inner.close()


@pytest.mark.parametrize(
    ("method", "error"),
    [
        ("get_chunk", ChunkNotFoundError),
        ("chunk_mtime", ChunkNotFoundError),
        ("get_manifest", ManifestNotFoundError),
    ],
)
def test_missing_objects_are_never_retried(
    tmp_path: Path, method: str, error: type[NotFoundError]
) -> None:
    store, faulty = open_faulty(tmp_path, "seed=1")  # an empty store, no injected faults
    with pytest.raises(error):
        CALLS[method](store)
    assert faulty.calls[method] == 1
    store.close()


def test_a_real_permanent_error_of_the_local_store_is_not_retried(tmp_path: Path) -> None:
    store, faulty = open_faulty(tmp_path, "seed=1")
    (tmp_path / "chunks" / NAME[:2] / NAME).mkdir()  # reading it fails: is a directory
    with pytest.raises(PermanentStorageError, match="is a directory"):
        store.get_chunk(NAME)
    assert faulty.calls["get_chunk"] == 1
    store.close()


def test_malformed_names_are_not_retried(tmp_path: Path) -> None:
    store, faulty = open_faulty(tmp_path, "fail_other=1")
    with pytest.raises(ValueError, match="digest"):
        store.has_chunk("../etc")
    with pytest.raises(ValueError, match="manifest name"):
        faulty.inner.get_manifest("../etc")
    assert faulty.faults.total() == 0
    faulty.inner.close()


def test_a_listing_is_retried_only_until_its_first_item(tmp_path: Path) -> None:
    store, faulty = open_faulty(tmp_path, "fail_other=1")
    for seed in range(3):
        faulty.inner.put_chunk(digest(b"%d" % seed), encode_chunk(b"%d" % seed))
    listing = store.list_chunks()
    faulty.fail_other_ratio = 0.0
    first = next(listing)  # the listing starts here, and gets through at the first try
    assert faulty.calls["list_chunks"] == 1
    faulty.fail_other_ratio = 1.0
    assert len([first, *listing]) == 3  # once it streams, nothing restarts it
    assert faulty.calls["list_chunks"] == 1
    faulty.inner.close()


def test_retries_pause_between_attempts(tmp_path: Path) -> None:
    store = open_store(f"faulty+file://{tmp_path}?fail_other=1", retry_delays=(0.01, 0.02))
    assert isinstance(store, RetryingChunkStore)
    with pytest.raises(StorageError):
        store.flush()
    assert store.delays == (0.01, 0.02)
    assert isinstance(store.inner, FaultyChunkStore)
    assert store.inner.calls["flush"] == 3
    store.inner.inner.close()
