"""Each vault's chunk store, and the adapters the archive engine writes and reads through.

A vault's chunks live under `<region storage>/vaults/<vault id>` (`storage.layout`). Stores
are opened once per process (`storage.location.open_store`, which also makes every call
retry transient faults) and shared by threads (the store classes are thread-safe).

Damaged chunks: every read that fails verification (or finds no file) marks the chunk
damaged in the vault's index (`DamageMarker`), in a short transaction of its own, so the
mark survives the failure of the work that found it. A damaged chunk counts as missing:
the next writer that produces it stores it again and `db.chunks.index_chunks` clears the
mark.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import structlog
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from opencbr.archive.manifest import Manifest
from opencbr.archive.parent import PreviousBackup
from opencbr.archive.sink import ChunkData, chunk_digest
from opencbr.db import chunks
from opencbr.db.backups import VaultChunk
from opencbr.db.session import Database
from opencbr.settings import RegionSettings
from opencbr.storage.chunk import encode_chunk, open_chunk, stored_digest, verify_chunk
from opencbr.storage.layout import vault_location
from opencbr.storage.location import NO_OPTIONS, StoreOptions, open_store
from opencbr.storage.s3 import S3Options
from opencbr.storage.sealing import (
    ChunkKeys,
    Sealing,
    keyed_digest,
    open_manifest,
    seal_manifest,
)
from opencbr.storage.store import (
    ChunkNotFoundError,
    ChunkStore,
    CorruptChunkError,
    PermanentStorageError,
    StorageError,
)

log = structlog.get_logger(__name__)

INDEX_BATCH = 500
# An object store answers each GET after a network round trip, so reading ahead needs many
# requests in flight; a local disk is saturated by `io_threads` (measured: a restore from
# SeaweedFS with 2 threads reached a third of the GET ceiling of 16 threads).
OBJECT_STORE_READ_THREADS = 16


def store_options(region: RegionSettings) -> StoreOptions:
    """How to reach a region's storage besides its URL (S3 endpoint and credentials)."""
    secret = region.s3_secret_access_key
    return StoreOptions(
        s3=S3Options(
            endpoint=region.s3_endpoint,
            region=region.s3_region,
            access_key_id=region.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
        )
    )


class StoreRegistry:
    """Opens vault stores lazily and keeps them for the life of the process."""

    def __init__(
        self, region_storage: dict[str, str], region_options: dict[str, StoreOptions] | None = None
    ) -> None:
        self._region_storage = region_storage
        self._region_options = region_options or {}
        self._stores: dict[str, ChunkStore] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, regions: Iterable[RegionSettings]) -> StoreRegistry:
        """The registry of the configured regions (their storage URLs and options)."""
        regions = list(regions)
        return cls(
            {r.name: r.storage for r in regions}, {r.name: store_options(r) for r in regions}
        )

    def url(self, region: str, vault_id: str) -> str:
        return vault_location(self._storage_of(region), vault_id)

    def _storage_of(self, region: str) -> str:
        """The region's storage; a region missing from this process's configuration (every
        process of a deployment needs the same regions) is a permanent fault with a reason
        the work's row can show, not a KeyError."""
        try:
            return self._region_storage[region]
        except KeyError:
            raise PermanentStorageError(
                f"region {region} is not configured in this process: every process of the "
                "deployment needs the same [[regions]]"
            ) from None

    def read_threads(self, region: str, io_threads: int) -> int:
        """Threads that load one reader's chunks ahead in `region` (restores)."""
        if "s3://" in self._storage_of(region):
            return max(io_threads, OBJECT_STORE_READ_THREADS)
        return io_threads

    def vault(self, region: str, vault_id: str) -> ChunkStore:
        url = self.url(region, vault_id)
        with self._lock:
            store = self._stores.get(url)
            if store is None:
                store = self._stores[url] = self._open(region, url)
            return store

    def _open(self, region: str, url: str) -> ChunkStore:
        return open_store(url, options=self._region_options.get(region, NO_OPTIONS))

    def forget(self, region: str, vault_id: str) -> None:
        store = self._take(region, vault_id)
        if store is not None:
            store.close()

    def purge(self, region: str, vault_id: str) -> None:
        """Remove a deleted vault's whole store; the store removes itself.

        A failure is logged, not raised: the vault is gone from the API either way, and
        what is left of its store is only disk space.
        """
        try:
            url = self.url(region, vault_id)
            store = self._take(region, vault_id) or self._open(region, url)
            store.destroy()
        except StorageError as exc:
            log.warning(
                "could not remove a deleted vault's store", vault_id=vault_id, error=str(exc)
            )

    def _take(self, region: str, vault_id: str) -> ChunkStore | None:
        with self._lock:
            return self._stores.pop(self.url(region, vault_id), None)

    def close(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()


class DamageMarker:
    """Marks chunks of one vault damaged in its index (see the module docstring).

    Thread-safe: each mark is its own short transaction. Marking never raises: the read
    failure that led here is what the caller reports.
    """

    def __init__(self, db: Database, vault_id: str) -> None:
        self._db = db
        self.vault_id = vault_id

    def mark(self, digest: str) -> None:
        try:
            with self._db.transaction() as session:
                marked = chunks.mark_damaged(session, self.vault_id, digest)
        except SQLAlchemyError as exc:  # the read error the caller raises matters more
            log.warning("could not mark chunk damaged", digest=digest, error=type(exc).__name__)
            return
        if marked:
            log.warning("chunk marked damaged", vault_id=self.vault_id, digest=digest)

    def mark_failed_read(self, exc: BaseException) -> None:
        """Mark the chunk `exc` names if it is a content fault (corrupt or missing file).

        Other storage errors (permissions, a full disk, I/O hiccups) say nothing about the
        chunk's bytes, so they leave the index alone.
        """
        if isinstance(exc, (CorruptChunkError, ChunkNotFoundError)) and exc.digest:
            self.mark(exc.digest)


@dataclass(frozen=True)
class VaultCodec:
    """How chunks and manifests of one vault's backups are named, encoded and read back.

    `keys` opens sealed objects (any vault may hold some: a replica is sealed when its
    source is); `keyed`: the backup's chunks are named by keyed digest (an encrypted
    backup's); `sealing`, when set, makes writers seal what they store (format version
    2): an encrypted vault's backups, and replicas of encrypted backups. Immutable, so
    thread-safe.
    """

    keys: ChunkKeys | None = None
    sealing: Sealing | None = None
    keyed: bool = False

    def name(self, data: ChunkData) -> str:
        if self.keyed and self.keys is not None:
            return keyed_digest(self.keys.naming_key, data)
        return chunk_digest(data)

    def encode(self, name: str, data: bytes, level: int) -> bytes:
        return encode_chunk(data, level, self.sealing, name)

    def decode(self, blob: bytes, name: str) -> ChunkData:
        return open_chunk(blob, name, self.keys)

    def verify(self, blob: bytes, name: str) -> None:
        verify_chunk(blob, name, self.keys)

    def seal_manifest(self, name: str, data: bytes) -> bytes:
        return data if self.sealing is None else seal_manifest(data, name, self.sealing)

    def open_manifest(self, name: str, blob: bytes) -> bytes:
        return open_manifest(blob, name, self.keys)

    def put_manifest(self, store: ChunkStore, name: str, data: bytes) -> None:
        store.put_manifest(name, self.seal_manifest(name, data))

    def get_manifest(self, store: ChunkStore, name: str) -> bytes:
        return self.open_manifest(name, store.get_manifest(name))


PLAIN = VaultCodec()  # version 1 chunks and plain manifests only (tests, tools)


def put_chunk_checked(
    store: ChunkStore,
    digest: str,
    blob: bytes,
    damage: DamageMarker | None = None,
    codec: VaultCodec = PLAIN,
) -> Put:
    """Put a chunk the vault's index lacks (or marks damaged): whether this call wrote it,
    and the digest of the stored bytes now in the store under its name.

    A chunk file that is already there is trusted only after it verifies: chunks are
    published before the flush that makes them durable, so a machine that stopped in
    between can leave a name whose data never reached the disk, an index-less leftover
    is kept for `gc_safety_margin_seconds`, and a damaged chunk's file is still there.
    One that fails is marked in `damage` and replaced. Rare: the index normally says
    which chunks exist, so this costs a read only for chunks another writer of the vault
    just stored, a crash left behind, or a failed read marked damaged. The file found may
    hold other stored bytes than `blob` (another compression level), hence the digest.
    """
    if store.put_chunk(digest, blob):
        return Put(True, stored_digest(blob))
    try:
        found = store.get_chunk(digest)
        codec.verify(found, digest)
        return Put(False, stored_digest(found))
    except (CorruptChunkError, ChunkNotFoundError) as exc:
        if damage is not None:
            damage.mark_failed_read(exc)
        store.delete_chunk(digest)
        return Put(store.put_chunk(digest, blob), stored_digest(blob))


class Put(NamedTuple):
    created: bool  # this call wrote the chunk
    stored_digest: str  # of the bytes stored under the chunk's name


@dataclass(frozen=True)
class StoredChunk:
    digest: str
    plain_size: int
    stored_size: int
    stored_digest: str


class VaultSink:
    """The archive engine's ChunkSink for one vault: dedup against the vault's chunk index.

    Thread-safe. Chunks written here are not durable (nor indexed) until the caller
    flushes the store and calls `index_written()`.
    """

    def __init__(
        self,
        db: Database,
        store: ChunkStore,
        vault_id: str,
        level: int = 1,
        codec: VaultCodec = PLAIN,
    ) -> None:
        self._db = db
        self._store = store
        self._vault_id = vault_id
        self._level = level
        self._codec = codec
        self._damage = DamageMarker(db, vault_id)
        self._lock = threading.Lock()
        self.written: dict[str, StoredChunk] = {}

    def name(self, data: bytes | memoryview) -> str:
        return self._codec.name(data)

    def missing(self, digests: Sequence[str]) -> set[str]:
        """The digests the vault does not hold intact: absent, or marked damaged."""
        with self._lock:
            wanted = {d for d in digests if d not in self.written}
        if not wanted:
            return set()
        with self._db.reading() as session:
            known = set(
                session.scalars(
                    select(VaultChunk.digest).where(
                        VaultChunk.vault_id == self._vault_id,
                        VaultChunk.digest.in_(wanted),
                        VaultChunk.damaged_at.is_(None),
                    )
                )
            )
        return wanted - known

    def store(self, digest: str, data: bytes) -> int:
        with self._lock:
            if digest in self.written:
                return 0
        blob = self._codec.encode(digest, data, self._level)
        # The pipeline named the chunk by hashing `data` itself: its content is verified
        # by construction, so the digest of its stored bytes may be recorded (invariant 3).
        put = put_chunk_checked(self._store, digest, blob, self._damage, self._codec)
        with self._lock:
            self.written[digest] = StoredChunk(digest, len(data), len(blob), put.stored_digest)
        return len(blob) if put.created else 0

    def stored_digests(self) -> dict[str, str]:
        """The stored-bytes digest of every chunk written (for `index_chunks`)."""
        with self._lock:
            return {c.digest: c.stored_digest for c in self.written.values()}


class VaultSource:
    """The archive engine's ChunkSource for one vault: every read is hash-verified, and a
    chunk that fails (or has no file) is marked in `damage` when one is given."""

    def __init__(
        self, store: ChunkStore, damage: DamageMarker | None = None, codec: VaultCodec = PLAIN
    ) -> None:
        self._store = store
        self._damage = damage
        self._codec = codec

    def name(self, data: ChunkData) -> str:
        return self._codec.name(data)

    def load(self, digest: str) -> ChunkData:
        try:
            return self._codec.decode(self._store.get_chunk(digest), digest)
        except (CorruptChunkError, ChunkNotFoundError) as exc:
            if self._damage is not None:
                self._damage.mark_failed_read(exc)
            raise


def previous_backup(
    db: Database, store: ChunkStore, vault_id: str, blob: bytes, codec: VaultCodec = PLAIN
) -> PreviousBackup:
    """The previous backup of a tree (its manifest `blob`) for a new backup to reuse: its
    chunks the vault marks damaged are left out, so the files they hold are read again,
    and a catalog chunk found damaged is marked."""
    with db.reading() as session:
        damaged = chunks.damaged_digests(session, vault_id)
    source = VaultSource(store, DamageMarker(db, vault_id), codec)
    return PreviousBackup(Manifest.from_bytes(blob), source, damaged)


def failure_reason(exc: BaseException) -> str:
    """What an operation log or record may say about a failed storage call: the object
    and the kind of fault, never a server path (an OSError's file name is left out)."""
    if isinstance(exc, StorageError):
        return str(exc)  # storage messages carry no paths (storage.store.StorageError)
    if isinstance(exc, OSError):
        fault = exc.strerror or type(exc).__name__
        return f"storage I/O error ({fault.lower()})"
    return f"{type(exc).__name__}: {exc}"
