"""The chunk store contract every backend keeps, and its errors.

Opening a store from its URL is `opencbr.storage.location`'s job; where a vault's
objects are named is `opencbr.storage.layout`'s. This module imports no backend.

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
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable


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


def is_digest(name: str) -> bool:
    """True for a well-formed digest (a chunk's name in a listing); never raises."""
    try:
        check_digest(name)
    except ValueError:
        return False
    return True


def is_manifest_name(name: str) -> bool:
    """True for a well-formed manifest name (in a listing); never raises."""
    try:
        check_manifest_name(name)
    except ValueError:
        return False
    return True


@runtime_checkable
class ChunkStore(Protocol):
    """Chunks and manifests of one vault.

    Thread rules: every method may be called from several threads at once.
    Lifecycle: open (`location.open_store`, or a backend's constructor), use,
    then `close()` or `destroy()`. No method may be called after either. Every
    method raises ValueError for a malformed digest or manifest name, and
    StorageError subclasses for storage failures: TransientStorageError when a
    retry may help, PermanentStorageError when it will not.

    Retries: stores opened by `location.open_store` retry TransientStorageError
    themselves (`retrying.RetryingChunkStore`), so callers never do. Each method
    says below why repeating it after a transient failure is safe ("Retry: ..."):
    a backend must keep that promise, i.e. a call that fails leaves nothing a
    repeat of it would trip over.
    """

    def put_chunk(self, digest: str, blob: bytes) -> bool:
        """Store `blob` (already-encoded stored bytes) under `digest`.

        Atomic: readers see no chunk or the whole blob, never a part.
        Idempotent: if the chunk exists it is left unchanged and False is
        returned; True means this call wrote it (concurrent puts of one
        digest return True once). A local store also refreshes an existing
        chunk's mtime; an S3 store does not (that would cost a copy-to-self
        per deduplicated chunk). Garbage collection never depends on it: it
        excludes writers through the database (`vaults.gc_until`, no collection
        while a backup of the vault is `protecting`), and reads `chunk_mtime`
        only to age chunks the index does not know (crash leftovers).
        Visible to get/has/list when it returns; durable only after the next
        `flush()` (or `put_manifest`) returns (an S3 put is durable at once).
        A chunk that already existed when the store was opened is assumed durable.

        Retry: safe. A failed put leaves no chunk, or (a backend that cannot tell
        whether its write landed) a whole one, so a repeat returns True or False.
        """
        ...

    def get_chunk(self, digest: str) -> bytes:
        """Return the stored bytes of a chunk; the caller decodes and verifies them.

        Raises ChunkNotFoundError if absent. Retry: safe (reads only).
        """
        ...

    def has_chunk(self, digest: str) -> bool:
        """Whether the chunk exists now (visible, not necessarily durable).

        Retry: safe (reads only).
        """
        ...

    def delete_chunk(self, digest: str) -> bool:
        """Remove a chunk; True if it existed (on S3: just before the delete, by a HEAD,
        since S3's DELETE does not tell). Idempotent.

        Not durable: a machine crash may bring the chunk back, which is
        harmless since garbage collection runs again. Retry: safe; a repeat after
        a delete that landed but failed to answer returns False.
        """
        ...

    def delete_chunks(self, digests: Sequence[str]) -> None:
        """Remove many chunks (garbage collection); absent ones are no error. Idempotent.

        One request per up to 1000 chunks on S3 (DeleteObjects) instead of two per chunk.
        Not durable, as for `delete_chunk`. Raises ValueError, before removing any, if a
        digest is malformed. Retry: safe; a repeat skips what the failed call removed.
        """
        ...

    def list_chunks(self) -> Iterator[str]:
        """Yield the digest of every visible chunk, in no particular order.

        Streams (memory does not grow with the store). Chunks put or deleted
        while iterating may or may not be yielded. Retry: only until the first
        digest is yielded; a listing that fails later raises, since starting it
        again would yield digests twice.
        """
        ...

    def chunk_mtime(self, digest: str) -> float:
        """Seconds since the epoch when the chunk was written (local: or last re-put;
        S3: its LastModified).

        Garbage collection keeps chunks touched after its safety cut-off.
        Raises ChunkNotFoundError if absent. Retry: safe (reads only).
        """
        ...

    def put_manifest(self, name: str, data: bytes) -> None:
        """Write a manifest, replacing any manifest of that name (last writer wins).

        First makes every chunk put so far durable, as `flush()` does, so a
        manifest can never commit chunks that a crash would lose. Atomic, and
        visible and durable when it returns. Retry: safe; the manifest is whole
        or absent after a failure, and a repeat writes the same bytes again.
        """
        ...

    def get_manifest(self, name: str) -> bytes:
        """Return a manifest's bytes. Raises ManifestNotFoundError if absent.

        Retry: safe (reads only).
        """
        ...

    def delete_manifest(self, name: str) -> bool:
        """Remove a manifest; True if it existed. Idempotent; durable when it returns.

        Retry: safe, as for `delete_chunk`.
        """
        ...

    def list_manifests(self) -> Iterator[str]:
        """Yield every manifest name, in no particular order. Streams.

        Retry: only until the first name is yielded, as for `list_chunks`.
        """
        ...

    def flush(self) -> None:
        """Durability barrier.

        Every chunk whose put returned before this call is durable when it
        returns, including chunks put by other threads. Concurrent calls
        are safe. If it raises, the chunks stay pending and a later flush
        retries them. Retry: safe, for that reason.
        """
        ...

    def close(self) -> None:
        """Flush pending chunks and release resources. Idempotent.

        Retry: safe; a failed close keeps its pending chunks, as a failed flush does.
        """
        ...

    def destroy(self) -> None:
        """Remove the store itself: every chunk, every manifest, and the location
        that held them (a local store's vault folder), then release resources.

        For a deleted vault; nothing may use the store afterwards. Idempotent: a
        store already gone is no error. Retry: safe, for that reason.
        """
        ...
