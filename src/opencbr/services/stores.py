"""Each vault's chunk store, and the adapters the archive engine writes and reads through.

A vault's chunks live under `<region storage>/vaults/<vault id>`. Stores are opened once
per process and shared by threads (the store classes are thread-safe).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import select

from opencbr.db.backups import VaultChunk
from opencbr.db.session import Database
from opencbr.storage.chunk import decode_chunk, encode_chunk, verify_chunk
from opencbr.storage.store import (
    ChunkNotFoundError,
    ChunkStore,
    CorruptChunkError,
    TransientStorageError,
    open_store,
)

T = TypeVar("T")
RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0)  # transient storage errors: backoff, then give up
INDEX_BATCH = 500


class StoreRegistry:
    """Opens vault stores lazily and keeps them for the life of the process."""

    def __init__(self, region_storage: dict[str, str]) -> None:
        self._region_storage = region_storage
        self._stores: dict[str, ChunkStore] = {}
        self._lock = threading.Lock()

    def url(self, region: str, vault_id: str) -> str:
        base, sep, query = self._region_storage[region].partition("?")
        return f"{base.rstrip('/')}/vaults/{vault_id}{sep}{query}"

    def vault(self, region: str, vault_id: str) -> ChunkStore:
        url = self.url(region, vault_id)
        with self._lock:
            store = self._stores.get(url)
            if store is None:
                store = self._stores[url] = open_store(url)
            return store

    def forget(self, region: str, vault_id: str) -> None:
        with self._lock:
            store = self._stores.pop(self.url(region, vault_id), None)
        if store is not None:
            store.close()

    def purge(self, region: str, vault_id: str) -> None:
        """Remove a deleted vault's whole store (local directories only)."""
        self.forget(region, vault_id)
        location = self.url(region, vault_id).partition("?")[0].removeprefix("faulty+")
        location = location.removeprefix("file://")
        if location.startswith("/"):
            shutil.rmtree(location, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()


def with_retries(call: Callable[[], T]) -> T:
    """Run `call`, retrying transient storage errors with backoff."""
    for delay in RETRY_DELAYS:
        try:
            return call()
        except TransientStorageError:
            time.sleep(delay)
    return call()


def put_chunk_checked(store: ChunkStore, digest: str, blob: bytes) -> bool:
    """Put a chunk the vault's index lacks; True if this call wrote it.

    A chunk file that is already there is trusted only after it verifies: chunks are
    published before the flush that makes them durable, so a machine that stopped in
    between can leave a name whose data never reached the disk, and an index-less
    leftover is kept for `gc_safety_margin_seconds`. One that fails is replaced. Rare:
    the index normally says which chunks exist, so this costs a read only for chunks
    another writer of the vault just stored or a crash left behind.
    """
    if with_retries(lambda: store.put_chunk(digest, blob)):
        return True
    try:
        verify_chunk(with_retries(lambda: store.get_chunk(digest)), digest)
        return False
    except (CorruptChunkError, ChunkNotFoundError):
        with_retries(lambda: store.delete_chunk(digest))
        return with_retries(lambda: store.put_chunk(digest, blob))


@dataclass(frozen=True)
class StoredChunk:
    digest: str
    plain_size: int
    stored_size: int


class VaultSink:
    """The archive engine's ChunkSink for one vault: dedup against the vault's chunk index.

    Thread-safe. Chunks written here are not durable (nor indexed) until the caller
    flushes the store and calls `index_written()`.
    """

    def __init__(self, db: Database, store: ChunkStore, vault_id: str, level: int = 1) -> None:
        self._db = db
        self._store = store
        self._vault_id = vault_id
        self._level = level
        self._lock = threading.Lock()
        self.written: dict[str, StoredChunk] = {}

    def missing(self, digests: Sequence[str]) -> set[str]:
        with self._lock:
            wanted = {d for d in digests if d not in self.written}
        if not wanted:
            return set()
        with self._db.reading() as session:
            known = set(
                session.scalars(
                    select(VaultChunk.digest).where(
                        VaultChunk.vault_id == self._vault_id, VaultChunk.digest.in_(wanted)
                    )
                )
            )
        return wanted - known

    def store(self, digest: str, data: bytes) -> int:
        with self._lock:
            if digest in self.written:
                return 0
        blob = encode_chunk(data, self._level)
        created = put_chunk_checked(self._store, digest, blob)
        with self._lock:
            self.written[digest] = StoredChunk(digest, len(data), len(blob))
        return len(blob) if created else 0


class VaultSource:
    """The archive engine's ChunkSource for one vault: every read is hash-verified."""

    def __init__(self, store: ChunkStore) -> None:
        self._store = store

    def load(self, digest: str) -> bytes:
        blob = with_retries(lambda: self._store.get_chunk(digest))
        return decode_chunk(blob, digest)
