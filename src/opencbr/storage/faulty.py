"""A ChunkStore wrapper that injects faults, for tests and fault-injection runs.

Test support, opened through `faulty+<url>` URLs (`opencbr.storage.location`); the store
contract does not know it. Faults are drawn from one `random.Random(seed)`, so a given
seed and call order always fail the same calls (with several threads the order, and so
the failing calls, depend on scheduling; the ratio does not).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence

from opencbr.storage.store import (
    ChunkStore,
    CorruptChunkError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
    check_digest,
)

# The kinds of error an injected fault raises, by the name URLs give them.
FAULT_KINDS: dict[str, type[StorageError]] = {
    "transient": TransientStorageError,
    "permanent": PermanentStorageError,
    "corrupt": CorruptChunkError,
}


class FaultyChunkStore:
    """Delegates to `inner`, except that a share of the calls fail before reaching it:

    - `fail_put_ratio` of `put_chunk` calls (nothing is written);
    - `fail_get_ratio` of `get_chunk` calls;
    - `fail_other_ratio` of the calls of every other method (manifests, listings,
      deletes, flush, close, destroy), so retries of every call can be tested;

    an injected fault raises `fault` (TransientStorageError unless told otherwise).
    Besides, `get_chunk` of a digest in `corrupt_digests` returns the stored bytes with the
    last byte flipped, so `decode_chunk` raises CorruptChunkError; and every `put_chunk`
    and `get_chunk` first sleeps `delay` seconds (a slow disk or network: small test data
    then takes long enough for progress to be watched).

    Thread rules: safe from any thread (counters and the random source are locked).
    `calls` counts the calls of each method, `faults` the faults injected into each,
    `peak_gets` the most `get_chunk` calls ever under way at once (how far a reader reads
    ahead).
    Lifecycle: `close()` closes the inner store.
    """

    def __init__(
        self,
        inner: ChunkStore,
        fail_put_ratio: float = 0.0,
        seed: int | None = None,
        corrupt_digests: frozenset[str] = frozenset(),
        fail_get_ratio: float = 0.0,
        fail_other_ratio: float = 0.0,
        fault: type[StorageError] = TransientStorageError,
        delay: float = 0.0,
    ) -> None:
        for ratio in (fail_put_ratio, fail_get_ratio, fail_other_ratio):
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"fault ratio {ratio} is not between 0 and 1")
        if not 0.0 <= delay <= 60.0:
            raise ValueError(f"delay {delay} is not between 0 and 60 seconds")
        self.delay = delay
        for digest in corrupt_digests:
            check_digest(digest)
        self.inner = inner
        self.fail_put_ratio = fail_put_ratio
        self.fail_get_ratio = fail_get_ratio
        self.fail_other_ratio = fail_other_ratio
        self.fault = fault
        self.corrupt_digests = corrupt_digests
        self.calls: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._gets_under_way = 0
        self.peak_gets = 0

    def __repr__(self) -> str:
        return f"FaultyChunkStore({self.inner!r})"

    @property
    def failed_puts(self) -> int:
        return self.faults["put_chunk"]

    @property
    def failed_gets(self) -> int:
        return self.faults["get_chunk"]

    def put_chunk(self, digest: str, blob: bytes) -> bool:
        check_digest(digest)  # a malformed digest is a caller bug, not a fault to inject
        self._enter("put_chunk", self.fail_put_ratio, f"put of chunk {digest}", digest)
        time.sleep(self.delay)
        return self.inner.put_chunk(digest, blob)

    def get_chunk(self, digest: str) -> bytes:
        check_digest(digest)
        self._enter("get_chunk", self.fail_get_ratio, f"get of chunk {digest}", digest)
        with self._lock:
            self._gets_under_way += 1
            self.peak_gets = max(self.peak_gets, self._gets_under_way)
        try:
            time.sleep(self.delay)
            blob = self.inner.get_chunk(digest)
        finally:
            with self._lock:
                self._gets_under_way -= 1
        if digest in self.corrupt_digests:
            return _flip_last_byte(blob)
        return blob

    def has_chunk(self, digest: str) -> bool:
        self._other("has_chunk", digest)
        return self.inner.has_chunk(digest)

    def delete_chunk(self, digest: str) -> bool:
        self._other("delete_chunk", digest)
        return self.inner.delete_chunk(digest)

    def delete_chunks(self, digests: Sequence[str]) -> None:
        for digest in digests:
            check_digest(digest)
        self._other("delete_chunks")
        self.inner.delete_chunks(digests)

    def list_chunks(self) -> Iterator[str]:
        self._other("list_chunks")
        return self.inner.list_chunks()

    def chunk_mtime(self, digest: str) -> float:
        self._other("chunk_mtime", digest)
        return self.inner.chunk_mtime(digest)

    def put_manifest(self, name: str, data: bytes) -> None:
        self._other("put_manifest")
        self.inner.put_manifest(name, data)

    def get_manifest(self, name: str) -> bytes:
        self._other("get_manifest")
        return self.inner.get_manifest(name)

    def delete_manifest(self, name: str) -> bool:
        self._other("delete_manifest")
        return self.inner.delete_manifest(name)

    def list_manifests(self) -> Iterator[str]:
        self._other("list_manifests")
        return self.inner.list_manifests()

    def flush(self) -> None:
        self._other("flush")
        self.inner.flush()

    def close(self) -> None:
        self._other("close")
        self.inner.close()

    def destroy(self) -> None:
        self._other("destroy")
        self.inner.destroy()

    def _other(self, method: str, digest: str | None = None) -> None:
        if digest is not None:
            check_digest(digest)
        self._enter(method, self.fail_other_ratio, method.replace("_", " "), digest)

    def _enter(self, method: str, ratio: float, what: str, digest: str | None) -> None:
        """Count a call of `method`; fail it (before it reaches the inner store) at `ratio`."""
        with self._lock:
            self.calls[method] += 1
            # A zero ratio leaves the random sequence untouched, so seeds stay repeatable.
            if ratio <= 0.0 or self._random.random() >= ratio:
                return
            self.faults[method] += 1
        raise self.fault(f"injected fault: {what}", digest=digest)


def _flip_last_byte(blob: bytes) -> bytes:
    if not blob:
        return b"\xff"
    return blob[:-1] + bytes([blob[-1] ^ 0xFF])
