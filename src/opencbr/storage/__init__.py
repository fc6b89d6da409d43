"""Chunk storage: the chunk format and the chunk stores of vaults.

- `chunk`: chunk digest (BLAKE3) and stored format (versioned header + zstd).
- `store`: the ChunkStore protocol every backend keeps, its errors, `open_store`.
- `local`: the local-directory backend.
- `faulty`: a fault-injecting wrapper for tests.

Imports nothing of opencbr outside this package; every layer above may import it.
"""

from opencbr.storage.chunk import decode_chunk, digest, encode_chunk
from opencbr.storage.faulty import FaultyChunkStore
from opencbr.storage.local import LocalChunkStore
from opencbr.storage.store import (
    ChunkNotFoundError,
    ChunkStore,
    CorruptChunkError,
    ManifestNotFoundError,
    NotFoundError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
    open_store,
)

__all__ = [
    "ChunkNotFoundError",
    "ChunkStore",
    "CorruptChunkError",
    "FaultyChunkStore",
    "LocalChunkStore",
    "ManifestNotFoundError",
    "NotFoundError",
    "PermanentStorageError",
    "StorageError",
    "TransientStorageError",
    "decode_chunk",
    "digest",
    "encode_chunk",
    "open_store",
]
