"""Content roots: one BLAKE3 that names exactly which chunks, in which order and of which
lengths, a backup is made of. Pure functions of a manifest's chunk lists (no store, no
database), so a writer, a replica's destination and a verify job compute the same value.

Encoding (version 1), all integers unsigned big-endian:

    unit root   = BLAKE3( b"opencbr/content-root/unit/v1\\0"
                          || u64(len(chunks))  || for each data chunk:
                                                    digest (32 raw bytes) || u64(length)
                          || u64(len(catalog)) || for each catalog chunk:
                                                    digest (32 raw bytes) || u64(length) )
    server root = BLAKE3( b"opencbr/content-root/server/v1\\0"
                          || u64(number of volumes)
                          || for each volume, sorted by (name as UTF-8, unit root):
                             u64(len(name)) || name (UTF-8) || unit root (32 bytes) )

A unit is a tree or disk backup (a volume of a server); data chunks come in stream order,
then the catalog's chunks (trees; none for disks). The counts in front of each list keep
the two lists apart (no entry can be read as belonging to the other list), and the
domain prefixes keep a unit root from ever equalling a server root. A server backup's
root covers its volumes by name, so it does not depend on row ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import blake3

from opencbr.archive.sink import ChunkRef

UNIT_PREFIX = b"opencbr/content-root/unit/v1\x00"
SERVER_PREFIX = b"opencbr/content-root/server/v1\x00"
ROOT_BYTES = 32


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _refs(hasher: blake3.blake3, refs: Sequence[ChunkRef]) -> None:
    hasher.update(_u64(len(refs)))
    for digest, length in refs:
        hasher.update(bytes.fromhex(digest))
        hasher.update(_u64(length))


def unit_root(chunks: Sequence[ChunkRef], catalog: Sequence[ChunkRef] = ()) -> bytes:
    """The root of one tree or disk backup: its data chunks in stream order, then its
    catalog chunks (digests are 64 lower-case hex characters, lengths plain bytes)."""
    hasher = blake3.blake3(UNIT_PREFIX)
    _refs(hasher, chunks)
    _refs(hasher, catalog)
    return hasher.digest()


def server_root(volumes: Iterable[tuple[str, bytes]]) -> bytes:
    """The root of a server backup from its volumes' (name, unit root)."""
    ordered = sorted((name.encode(), root) for name, root in volumes)
    hasher = blake3.blake3(SERVER_PREFIX)
    hasher.update(_u64(len(ordered)))
    for name, root in ordered:
        if len(root) != ROOT_BYTES:
            raise ValueError(f"a unit root has {ROOT_BYTES} bytes, not {len(root)}")
        hasher.update(_u64(len(name)))
        hasher.update(name)
        hasher.update(root)
    return hasher.digest()
