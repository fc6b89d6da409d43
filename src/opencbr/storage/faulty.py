"""A ChunkStore wrapper that injects faults, for tests and fault-injection runs.

Faults are drawn from one `random.Random(seed)`, so a given seed and call
order always fail the same calls (with several threads the order, and so
the failing calls, depend on scheduling; the ratio does not).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

from opencbr.storage.store import ChunkStore, TransientStorageError, check_digest


class FaultyChunkStore:
    """Delegates to `inner`, except that:

    - a `fail_put_ratio` share of `put_chunk` calls raise TransientStorageError
      before anything is written (manifests are never failed);
    - a `fail_get_ratio` share of `get_chunk` calls raise TransientStorageError;
    - `get_chunk` of a digest in `corrupt_digests` returns the stored bytes with
      the last byte flipped, so `decode_chunk` raises CorruptChunkError.

    Thread rules: safe from any thread (the random source is locked). Counters
    `failed_puts` and `failed_gets` tell how many faults were injected.
    Lifecycle: `close()` closes the inner store.
    """

    def __init__(
        self,
        inner: ChunkStore,
        fail_put_ratio: float = 0.0,
        seed: int | None = None,
        corrupt_digests: frozenset[str] = frozenset(),
        fail_get_ratio: float = 0.0,
    ) -> None:
        for ratio in (fail_put_ratio, fail_get_ratio):
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"fault ratio {ratio} is not between 0 and 1")
        for digest in corrupt_digests:
            check_digest(digest)
        self.inner = inner
        self.fail_put_ratio = fail_put_ratio
        self.fail_get_ratio = fail_get_ratio
        self.corrupt_digests = corrupt_digests
        self.failed_puts = 0
        self.failed_gets = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FaultyChunkStore({self.inner!r})"

    def put_chunk(self, digest: str, blob: bytes) -> bool:
        check_digest(digest)  # a malformed digest is a caller bug, not a fault to inject
        if self._should_fail(self.fail_put_ratio):
            with self._lock:
                self.failed_puts += 1
            raise TransientStorageError(f"injected fault: put of chunk {digest}")
        return self.inner.put_chunk(digest, blob)

    def get_chunk(self, digest: str) -> bytes:
        check_digest(digest)
        if self._should_fail(self.fail_get_ratio):
            with self._lock:
                self.failed_gets += 1
            raise TransientStorageError(f"injected fault: get of chunk {digest}")
        blob = self.inner.get_chunk(digest)
        if digest in self.corrupt_digests:
            return _flip_last_byte(blob)
        return blob

    def has_chunk(self, digest: str) -> bool:
        return self.inner.has_chunk(digest)

    def delete_chunk(self, digest: str) -> bool:
        return self.inner.delete_chunk(digest)

    def list_chunks(self) -> Iterator[str]:
        return self.inner.list_chunks()

    def chunk_mtime(self, digest: str) -> float:
        return self.inner.chunk_mtime(digest)

    def put_manifest(self, name: str, data: bytes) -> None:
        self.inner.put_manifest(name, data)

    def get_manifest(self, name: str) -> bytes:
        return self.inner.get_manifest(name)

    def delete_manifest(self, name: str) -> bool:
        return self.inner.delete_manifest(name)

    def list_manifests(self) -> Iterator[str]:
        return self.inner.list_manifests()

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def _should_fail(self, ratio: float) -> bool:
        if ratio <= 0.0:
            return False  # keeps the random sequence untouched when faults are off
        with self._lock:
            return self._random.random() < ratio


def _flip_last_byte(blob: bytes) -> bytes:
    if not blob:
        return b"\xff"
    return blob[:-1] + bytes([blob[-1] ^ 0xFF])
