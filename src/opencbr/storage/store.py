"""The chunk store contract every backend keeps, its errors, and `open_store`.

A chunk store holds two kinds of objects for one vault:

- chunks, named by the lowercase hex BLAKE3 digest of their plain bytes. The
  store keeps the *stored* bytes (see `opencbr.storage.chunk`) and never
  decodes them: verification is the reader's job.
- manifests, small named documents that commit a backup. Writing a manifest
  is the commit point, so it is durable when `put_manifest` returns.

Write ordering that keeps invariant 1 (a backup is available only when it is
durable): put every chunk, then `put_manifest` (which implies `flush`), then
mark the backup available. Deleting runs in reverse: the manifest first, the
chunks last.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit


class StorageError(Exception):
    """Base class of every error a chunk store raises.

    Messages name the object (`chunk <digest>`, `manifest <name>`) and the kind of fault,
    never a server path: they reach operation logs and API answers. `digest` is the
    chunk concerned, when there is one.
    """

    def __init__(self, message: str, *, digest: str | None = None) -> None:
        super().__init__(message)
        self.digest = digest


class NotFoundError(StorageError):
    """The named object does not exist (it was never written, or was deleted)."""


class ChunkNotFoundError(NotFoundError):
    """No chunk with this digest exists in the store."""


class ManifestNotFoundError(NotFoundError):
    """No manifest with this name exists in the store."""


class CorruptChunkError(StorageError):
    """Stored chunk bytes fail to parse, decompress or match their digest (`digest`)."""


class TransientStorageError(StorageError):
    """An I/O hiccup (EIO, EAGAIN, a timeout): retrying the call may succeed."""


class PermanentStorageError(StorageError):
    """A condition a retry will not fix (disk full, read-only, permission denied)."""


_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_MANIFEST_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,255}")


def check_digest(digest: str) -> None:
    """Raise ValueError unless `digest` is 64 lowercase hex characters.

    Every backend calls this first: a digest becomes part of a path or key,
    so anything else could escape the store's namespace.
    """
    if not _DIGEST_RE.fullmatch(digest):
        raise ValueError(f"invalid chunk digest {digest!r}: expected 64 lowercase hex characters")


def check_manifest_name(name: str) -> None:
    """Raise ValueError unless `name` is 1-255 of [A-Za-z0-9._-] and not '.' or '..'."""
    if not _MANIFEST_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"invalid manifest name {name!r}: use 1-255 of [A-Za-z0-9._-]")


@runtime_checkable
class ChunkStore(Protocol):
    """Chunks and manifests of one vault.

    Thread rules: every method may be called from several threads at once.
    Lifecycle: open (constructor or `open_store`), use, `close()`. No method
    may be called after `close()`. Every method raises ValueError for a
    malformed digest or manifest name, and StorageError subclasses for
    storage failures: TransientStorageError when a retry may help,
    PermanentStorageError when it will not.
    """

    def put_chunk(self, digest: str, blob: bytes) -> bool:
        """Store `blob` (already-encoded stored bytes) under `digest`.

        Atomic: readers see no chunk or the whole blob, never a part.
        Idempotent: if the chunk exists it is left unchanged and False is
        returned; True means this call wrote it (concurrent puts of one
        digest return True once). Either way the chunk's mtime is refreshed,
        so garbage collection sees that a writer still references it.
        Visible to get/has/list when it returns; durable only after the next
        `flush()` (or `put_manifest`) returns. A chunk that already existed
        when the store was opened is assumed durable.
        """
        ...

    def get_chunk(self, digest: str) -> bytes:
        """Return the stored bytes of a chunk; the caller decodes and verifies them.

        Raises ChunkNotFoundError if absent.
        """
        ...

    def has_chunk(self, digest: str) -> bool:
        """Whether the chunk exists now (visible, not necessarily durable)."""
        ...

    def delete_chunk(self, digest: str) -> bool:
        """Remove a chunk; True if it existed. Idempotent.

        Not durable: a machine crash may bring the chunk back, which is
        harmless since garbage collection runs again.
        """
        ...

    def list_chunks(self) -> Iterator[str]:
        """Yield the digest of every visible chunk, in no particular order.

        Streams (memory does not grow with the store). Chunks put or deleted
        while iterating may or may not be yielded.
        """
        ...

    def chunk_mtime(self, digest: str) -> float:
        """Seconds since the epoch when the chunk was last put (written or re-put).

        Garbage collection keeps chunks touched after its safety cut-off.
        Raises ChunkNotFoundError if absent.
        """
        ...

    def put_manifest(self, name: str, data: bytes) -> None:
        """Write a manifest, replacing any manifest of that name (last writer wins).

        First makes every chunk put so far durable, as `flush()` does, so a
        manifest can never commit chunks that a crash would lose. Atomic, and
        visible and durable when it returns.
        """
        ...

    def get_manifest(self, name: str) -> bytes:
        """Return a manifest's bytes. Raises ManifestNotFoundError if absent."""
        ...

    def delete_manifest(self, name: str) -> bool:
        """Remove a manifest; True if it existed. Idempotent; durable when it returns."""
        ...

    def list_manifests(self) -> Iterator[str]:
        """Yield every manifest name, in no particular order. Streams."""
        ...

    def flush(self) -> None:
        """Durability barrier.

        Every chunk whose put returned before this call is durable when it
        returns, including chunks put by other threads. Concurrent calls
        are safe. If it raises, the chunks stay pending and a later flush
        retries them.
        """
        ...

    def close(self) -> None:
        """Flush pending chunks and release resources. Idempotent."""
        ...


def open_store(url: str) -> ChunkStore:
    """Open the chunk store named by `url`.

    - `/abs/or/relative/path` or `file:///abs/path`: a LocalChunkStore,
      created if absent.
    - `faulty+<inner-url>?<options>`: a FaultyChunkStore around the store of
      `<inner-url>`, for fault-injection tests. The options are the query
      after the last '?': `fail_put=<0..1>` (ratio of put_chunk calls that
      fail), `fail_get=<0..1>` (ratio of get_chunk calls that fail),
      `seed=<int>` (makes failures repeatable), `corrupt=<digest>` (get_chunk
      returns that chunk damaged; repeat the option or separate digests by
      commas). Example: `faulty+file:///srv/cbr?fail_put=0.1&seed=1`.
    - `s3://...`: not supported yet (ValueError).

    Raises ValueError for a URL it cannot open.
    """
    if url.startswith("faulty+"):
        return _open_faulty(url.removeprefix("faulty+"))
    if url.startswith("s3://"):
        raise ValueError("S3 storage is not supported yet")
    return _open_local(url)


def _open_local(url: str) -> ChunkStore:
    # Imported here because local.py imports this module.
    from opencbr.storage.local import LocalChunkStore

    if not url:
        raise ValueError("empty storage URL")
    if "://" not in url:
        return LocalChunkStore(Path(url))
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise ValueError(f"unsupported storage URL scheme {parts.scheme!r}")
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ValueError(f"file URL must be file:///absolute/path, got {url!r}")
    return LocalChunkStore(Path(unquote(parts.path)))


_FAULTY_OPTIONS = frozenset({"fail_put", "fail_get", "seed", "corrupt"})


def _open_faulty(spec: str) -> ChunkStore:
    from opencbr.storage.faulty import FaultyChunkStore

    inner_url, _, query = spec.rpartition("?") if "?" in spec else (spec, "", "")
    options = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    unknown = set(options) - _FAULTY_OPTIONS
    if unknown:
        raise ValueError(f"unknown faulty store options: {sorted(unknown)}")
    corrupt = {d for value in options.get("corrupt", []) for d in value.split(",") if d}
    seed = options.get("seed", [None])[-1]
    fail_put = float(options.get("fail_put", ["0"])[-1])
    fail_get = float(options.get("fail_get", ["0"])[-1])
    inner = open_store(inner_url)
    try:
        return FaultyChunkStore(
            inner,
            fail_put_ratio=fail_put,
            fail_get_ratio=fail_get,
            seed=None if seed is None else int(seed),
            corrupt_digests=frozenset(corrupt),
        )
    except ValueError:
        inner.close()  # options rejected: do not leak the store just opened
        raise
