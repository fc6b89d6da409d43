"""A ChunkStore wrapper that retries transient storage errors, so callers never do.

After restic's retry backend and kopia's retrying storage: one rule (`is_retriable`)
decides, and every method of the store goes through it. TransientStorageError (an I/O
hiccup) is retried with backoff; everything else (permanent faults, corrupt or missing
objects, malformed names) is raised at once, since a repeat would answer the same. Each
method of the ChunkStore protocol documents why repeating it is safe; listings are retried
only until their first item, because starting one again would yield items twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import structlog

from opencbr.storage.store import ChunkStore, TransientStorageError

log = structlog.get_logger(__name__)

T = TypeVar("T")
# Pauses between attempts: six attempts over about 3.75 s, then the error is raised.
RETRY_DELAYS: tuple[float, ...] = (0.05, 0.2, 0.5, 1.0, 2.0)


def is_retriable(exc: BaseException) -> bool:
    """Whether a failed store call may succeed when repeated: transient faults only."""
    return isinstance(exc, TransientStorageError)


class RetryingChunkStore:
    """Delegates every call to `inner`, repeating it after each pause in `delays` while
    it fails with a retriable error; the last attempt's error is raised.

    Thread rules and lifecycle: those of `inner` (this wrapper keeps no state).
    """

    def __init__(
        self,
        inner: ChunkStore,
        delays: Sequence[float] = RETRY_DELAYS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.delays = tuple(delays)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"RetryingChunkStore({self.inner!r})"

    def put_chunk(self, digest: str, blob: bytes) -> bool:
        return self._retry("put_chunk", lambda: self.inner.put_chunk(digest, blob))

    def get_chunk(self, digest: str) -> bytes:
        return self._retry("get_chunk", lambda: self.inner.get_chunk(digest))

    def has_chunk(self, digest: str) -> bool:
        return self._retry("has_chunk", lambda: self.inner.has_chunk(digest))

    def delete_chunk(self, digest: str) -> bool:
        return self._retry("delete_chunk", lambda: self.inner.delete_chunk(digest))

    def delete_chunks(self, digests: Sequence[str]) -> None:
        self._retry("delete_chunks", lambda: self.inner.delete_chunks(digests))

    def list_chunks(self) -> Iterator[str]:
        return self._listing("list_chunks", self.inner.list_chunks)

    def chunk_mtime(self, digest: str) -> float:
        return self._retry("chunk_mtime", lambda: self.inner.chunk_mtime(digest))

    def put_manifest(self, name: str, data: bytes) -> None:
        self._retry("put_manifest", lambda: self.inner.put_manifest(name, data))

    def get_manifest(self, name: str) -> bytes:
        return self._retry("get_manifest", lambda: self.inner.get_manifest(name))

    def delete_manifest(self, name: str) -> bool:
        return self._retry("delete_manifest", lambda: self.inner.delete_manifest(name))

    def list_manifests(self) -> Iterator[str]:
        return self._listing("list_manifests", self.inner.list_manifests)

    def flush(self) -> None:
        self._retry("flush", self.inner.flush)

    def close(self) -> None:
        self._retry("close", self.inner.close)

    def destroy(self) -> None:
        self._retry("destroy", self.inner.destroy)

    def _retry(self, method: str, call: Callable[[], T]) -> T:
        for attempt, delay in enumerate(self.delays, start=1):
            try:
                return call()
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                # Store errors name objects, never paths: safe to log.
                log.info(
                    "storage call failed, retrying", call=method, attempt=attempt, error=str(exc)
                )
            self._sleep(delay)
        return call()

    def _listing(self, method: str, start: Callable[[], Iterator[str]]) -> Iterator[str]:
        """Stream a listing, retrying its start (up to the first item) only."""

        def first_item() -> tuple[str | None, Iterator[str]]:
            items = start()
            return next(items, None), items

        first, items = self._retry(method, first_item)
        if first is None:
            return
        yield first
        yield from items
