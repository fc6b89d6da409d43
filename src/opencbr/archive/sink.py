"""The archive engine's only view of a vault: where backups write and restores read.

The engine never talks to a chunk store directly. The storage layer (or a test) adapts
a vault's store to these two protocols, so chunk encoding, durability and indexing stay
storage's business while chunking, hashing and ordering stay ours.

A chunk is named by its digest, which the sink or source gives (`name`): the lowercase
hex BLAKE3 of its plain (uncompressed) bytes (`chunk_digest`), or, in an encrypted vault,
that BLAKE3 keyed with the deployment's naming secret (`opencbr.storage.sealing`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import blake3

DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def chunk_digest(data: ChunkData) -> str:
    """Name of a chunk: hex BLAKE3 of its plain bytes (releases the GIL on large input)."""
    return blake3.blake3(data).hexdigest()


# The plain bytes of a chunk as a source hands them over: a buffer, so a source need not
# copy what decryption or reading produced into a `bytes` of its own.
ChunkData = bytes | bytearray | memoryview


class ChunkRef(NamedTuple):
    """One chunk of a stream, in stream order: its digest and its plain length."""

    digest: str
    length: int


class ArchiveError(Exception):
    """Base of every error the archive engine raises on purpose."""


class ChunkVerifyError(ArchiveError):
    """A chunk read back does not match the digest or length the manifest records.

    The engine checks every chunk it loads even though sources promise verified bytes:
    a restore must never write data it cannot vouch for.
    """

    def __init__(self, digest: str, reason: str) -> None:
        super().__init__(f"chunk {digest}: {reason}")
        self.digest = digest


class ChunkSink(Protocol):
    """Where a backup writes: one vault's chunk store, seen from the engine.

    Thread rules: every method may be called concurrently from several threads.
    """

    def name(self, data: bytes | memoryview) -> str:
        """The digest this vault names the chunk of plain `data` by. Pure."""
        ...

    def missing(self, digests: Sequence[str]) -> set[str]:
        """Return the subset of `digests` the vault does not hold, in one batched query.

        Read-only and idempotent. May answer with digests that another writer stores in
        the meantime; `store` must then be harmless (it returns 0). Raises on I/O or
        database failure; the backup fails with it.
        """
        ...

    def store(self, digest: str, data: bytes) -> int:
        """Encode and write one chunk of plain `data` named `digest`.

        Idempotent: storing a digest the vault already holds writes nothing and returns
        0; otherwise returns the number of stored (encoded, compressed) bytes, always
        > 0. Atomic per chunk: readers see either no chunk or the whole chunk. Durability
        may be deferred to a later barrier of the caller's (see DESIGN, invariant 1).
        Raises on I/O failure; the backup fails with it.
        """
        ...


class ChunkSource(Protocol):
    """Where a restore reads: one vault's chunk store, seen from the engine.

    Thread rules: `load` may be called concurrently from several threads.
    """

    def name(self, data: ChunkData) -> str:
        """The digest the vault names the chunk of plain `data` by (the engine re-verifies
        what it loads with it). Pure."""
        ...

    def load(self, digest: str) -> ChunkData:
        """Return the plain, hash-verified bytes of chunk `digest` (the caller only reads
        them).

        Read-only. Raises when the chunk is missing or corrupt (the store's own error
        types); the engine also re-verifies and raises `ChunkVerifyError`.
        """
        ...
