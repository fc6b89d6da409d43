"""Chunk storage: the chunk format and the chunk stores of vaults.

- `chunk`: chunk digest (BLAKE3) and stored format (versioned header + zstd).
- `store`: the ChunkStore protocol every backend keeps (the contract) and its errors.
- `layout`: where a vault's objects live (store URLs, manifest names, chunk paths).
- `location`: `open_store(url)`, a registry of URL schemes and their backends.
- `retrying`: the wrapper `open_store` puts around every store to retry transient faults.
- `local`: the local-directory backend.
- `s3`: the S3 backend (`s3://BUCKET/PREFIX`, through obstore).
- `faulty`: a fault-injecting wrapper for tests (`faulty+<url>`).
- `probe`: whether a region's storage location is usable, checked at start-up.

Imports nothing of opencbr outside this package; every layer above may import it.
"""

from opencbr.storage.chunk import decode_chunk, digest, encode_chunk
from opencbr.storage.layout import manifest_name, vault_location
from opencbr.storage.location import open_store
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

__all__ = [
    "ChunkNotFoundError",
    "ChunkStore",
    "CorruptChunkError",
    "ManifestNotFoundError",
    "NotFoundError",
    "PermanentStorageError",
    "StorageError",
    "TransientStorageError",
    "decode_chunk",
    "digest",
    "encode_chunk",
    "manifest_name",
    "open_store",
    "vault_location",
]
