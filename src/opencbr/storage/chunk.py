"""Chunk digest and stored format.

Version 1 (plain): a chunk is named by the BLAKE3 digest of its plain bytes and stored
as a 16-byte header followed by the payload:

    offset size  field
    0      4     magic b"OCBC"
    4      1     format version (1)
    5      1     codec: 0 = raw, 1 = zstd (one frame carrying its content size)
    6      2     reserved, zero
    8      8     plain length, unsigned big-endian
    16     ...   payload

Version 2 (encrypted, `storage.sealing`): named by the BLAKE3 of its plain bytes keyed
with the deployment's naming secret; the same first 16 bytes (version 2), then an
envelope: a random key of its own (the chunk key) sealed by the project's data key, and
the payload sealed by the chunk key:

    16     4     data key id, unsigned big-endian
    20     12    nonce (random per object)
    32     48    AES-256-GCM of the chunk key under the data key, tag last;
                 associated data: bytes 0-31 and the chunk's name
    80     ...   AES-256-GCM of the payload (compressed first) under the chunk key, nonce
                 zero (a chunk key seals one payload only), tag last; associated data:
                 bytes 0-15 and the chunk's name

so a flipped bit, a truncation, or another chunk's file under this name fails
authentication. Sealing a chunk for another project's data key (`reseal_chunk`, a
replica in another project) seals its chunk key again and leaves the payload as it is:
48 bytes of work instead of the whole chunk. Version 1 chunks stay readable.

Every stored chunk also has a stored-bytes digest (BLAKE3 of the whole stored blob,
`stored_digest`), recorded in the vault's index by the writer, which copies check.

Encoding and decoding are pure functions, safe from any number of threads:
zstandard contexts are kept per thread because one shared compressor
crashed the process under concurrent use.
"""

from __future__ import annotations

import os
import struct
import threading

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from opencbr.storage.sealing import (
    KEY_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    ChunkKeys,
    Sealing,
    UnknownKeyError,
    keyed_digest,
    open_body,
    open_sealed,
    seal,
    seal_into,
)
from opencbr.storage.store import CorruptChunkError

MAGIC = b"OCBC"
FORMAT_VERSION = 1
SEALED_VERSION = 2
CODEC_RAW = 0
CODEC_ZSTD = 1
# Bounds the memory a corrupt header can make decode_chunk allocate; far
# above any chunk size the archive engine produces.
MAX_CHUNK_SIZE = 64 * 1024 * 1024

_HEADER = struct.Struct(">4sBBHQ")
HEADER_SIZE = _HEADER.size
_KEY_ID = struct.Struct(">I")
_WRAP_START = HEADER_SIZE + _KEY_ID.size + NONCE_SIZE  # where the sealed chunk key starts
SEALED_HEADER_SIZE = _WRAP_START + KEY_SIZE + TAG_SIZE  # where the sealed payload starts
_ZERO_NONCE = bytes(NONCE_SIZE)


class _Codecs(threading.local):
    """Per-thread zstandard contexts (contexts are not thread-safe)."""

    def __init__(self) -> None:
        self.compressors: dict[int, zstandard.ZstdCompressor] = {}
        self.decompressor = zstandard.ZstdDecompressor()

    def compressor(self, level: int) -> zstandard.ZstdCompressor:
        found = self.compressors.get(level)
        if found is None:
            found = self.compressors[level] = zstandard.ZstdCompressor(level=level)
        return found


_codecs = _Codecs()


def digest(data: bytes) -> str:
    """The chunk name of `data`: lowercase hex BLAKE3 (64 characters)."""
    return blake3.blake3(data).hexdigest()


def stored_digest(blob: bytes | memoryview) -> str:
    """The digest of a chunk's stored bytes (header and payload): lowercase hex BLAKE3.

    Recorded in the vault's index by the writer that verified the chunk's content when it
    stored it, so a copy to another store can check the bytes it moves against it without
    decompressing (or decrypting) them: several times cheaper than `verify_chunk`.
    """
    return blake3.blake3(blob).hexdigest()


def verify_stored(blob: bytes, name: str, expected: str) -> None:
    """Check stored bytes against their recorded `stored_digest`; raise CorruptChunkError
    naming the chunk if they differ (a flipped bit, a truncation, another chunk's file)."""
    if stored_digest(blob) != expected:
        raise CorruptChunkError(
            f"chunk {name}: stored bytes do not match their recorded digest", digest=name
        )


def encode_chunk(
    data: bytes, level: int = 3, sealing: Sealing | None = None, name: str | None = None
) -> bytes:
    """Return the stored form of `data`, zstd-compressed at `level` when that saves space;
    with `sealing`, encrypted (version 2) and bound to `name` (its keyed digest, computed
    here when not given).

    Incompressible data is stored raw so reading it costs no decompression.
    Raises ValueError if `data` exceeds MAX_CHUNK_SIZE.
    """
    if len(data) > MAX_CHUNK_SIZE:
        raise ValueError(f"chunk of {len(data)} bytes exceeds {MAX_CHUNK_SIZE}")
    compressed = _codecs.compressor(level).compress(data)
    codec, payload = (CODEC_ZSTD, compressed) if len(compressed) < len(data) else (CODEC_RAW, data)
    if sealing is None:
        return _HEADER.pack(MAGIC, FORMAT_VERSION, codec, 0, len(data)) + payload
    header = _HEADER.pack(MAGIC, SEALED_VERSION, codec, 0, len(data))
    identity = (name or sealing.name(data)).encode()
    chunk_key = os.urandom(KEY_SIZE)
    wrapped = seal(sealing.cipher, header + _KEY_ID.pack(sealing.key_id), chunk_key, identity)
    return seal_into(AESGCM(chunk_key), wrapped, _ZERO_NONCE, payload, header + identity)


def reseal_chunk(blob: bytes, name: str, keys: ChunkKeys, sealing: Sealing) -> bytes:
    """The same chunk sealed for another data key (replication into another project): its
    chunk key is opened with its own data key (authenticated, bound to `name`) and sealed
    with the other; the sealed payload is kept as it is. The caller has checked the whole
    blob first (its stored-bytes digest, or `verify_chunk`), so nothing unverified is
    passed on. A version 1 chunk is returned as it is. Raises CorruptChunkError when the
    envelope does not open."""
    if _parse_header(blob, name)[0] != SEALED_VERSION:
        return blob
    chunk_key = _chunk_key(blob, name, keys)
    header = blob[:HEADER_SIZE] + _KEY_ID.pack(sealing.key_id)
    envelope = seal(sealing.cipher, header, chunk_key, name.encode())
    return b"".join((envelope, memoryview(blob)[SEALED_HEADER_SIZE:]))  # one copy


def decode_chunk(blob: bytes, expected_digest: str, keys: ChunkKeys | None = None) -> bytes:
    """Return the plain bytes of a stored chunk after checking they hash to `expected_digest`
    (keyed with `keys.naming_key` for a version 2 chunk, which `keys` also opens).

    Raises CorruptChunkError, naming the digest, if the header is malformed
    or of an unknown version, a sealed chunk does not authenticate, the payload does not
    decompress to the recorded length, or the content does not match the digest.
    """
    return bytes(open_chunk(blob, expected_digest, keys))


def open_chunk(
    blob: bytes, expected_digest: str, keys: ChunkKeys | None = None
) -> bytes | bytearray | memoryview:
    """`decode_chunk` without its last copy: the plain bytes as the decoding left them (a
    view into `blob` for a raw version 1 chunk, the buffer decryption or decompression
    filled otherwise), checked as `decode_chunk` checks them. For readers that only pass
    the bytes on (restores write them out): a copy of a 1 MiB chunk holds the GIL."""
    return _verified_plain(blob, expected_digest, keys)


def verify_chunk(blob: bytes, expected_digest: str, keys: ChunkKeys | None = None) -> None:
    """Check a stored chunk as `decode_chunk` does, without keeping its plain bytes.

    For a raw chunk this hashes the payload in place: copying a chunk between stores
    verifies it without a second copy of its bytes.
    """
    _verified_plain(blob, expected_digest, keys)


def sealed_key_id(blob: bytes, name: str) -> int | None:
    """The data key id of a version 2 chunk; None for version 1."""
    if _parse_header(blob, name)[0] != SEALED_VERSION:
        return None
    return int(_KEY_ID.unpack_from(blob, HEADER_SIZE)[0])


def _verified_plain(
    blob: bytes, expected_digest: str, keys: ChunkKeys | None
) -> bytes | bytearray | memoryview:
    version, codec, length = _parse_header(blob, expected_digest)
    naming_key: bytes | None = None  # plain BLAKE3 names (version 1)
    if version == SEALED_VERSION:
        if keys is None:
            raise CorruptChunkError(
                f"chunk {expected_digest}: encrypted, and no keys given", digest=expected_digest
            )
        payload: bytes | bytearray | memoryview = _open(blob, expected_digest, keys)
        naming_key = keys.naming_key
    else:
        payload = memoryview(blob)[HEADER_SIZE:]
    data = _decompress(payload, length, expected_digest) if codec == CODEC_ZSTD else payload
    if len(data) != length:
        raise CorruptChunkError(
            f"chunk {expected_digest}: {len(data)} plain bytes, header says {length}",
            digest=expected_digest,
        )
    named = keyed_digest(naming_key, data) if naming_key else blake3.blake3(data).hexdigest()
    if named != expected_digest:
        raise CorruptChunkError(
            f"chunk {expected_digest}: content does not match its digest", digest=expected_digest
        )
    return data


def _open(blob: bytes, name: str, keys: ChunkKeys) -> bytes | bytearray:
    """The payload of a version 2 chunk, authenticated, or CorruptChunkError."""
    chunk_key = _chunk_key(blob, name, keys)
    identity = blob[:HEADER_SIZE] + name.encode()
    payload = open_body(AESGCM(chunk_key), blob, SEALED_HEADER_SIZE, _ZERO_NONCE, identity)
    if payload is None:
        raise CorruptChunkError(
            f"chunk {name}: does not authenticate (tampered, truncated or swapped)", digest=name
        )
    return payload


def _chunk_key(blob: bytes, name: str, keys: ChunkKeys) -> bytes:
    """The chunk key of a version 2 chunk, opened with its data key, or CorruptChunkError."""
    if len(blob) < SEALED_HEADER_SIZE + TAG_SIZE:
        raise CorruptChunkError(f"chunk {name}: shorter than its sealed header", digest=name)
    key_id = int(_KEY_ID.unpack_from(blob, HEADER_SIZE)[0])
    try:
        cipher = keys.cipher(key_id)
    except UnknownKeyError:  # keys are never deleted: the header is damaged
        raise CorruptChunkError(f"chunk {name}: unknown data key {key_id}", digest=name) from None
    chunk_key = open_sealed(cipher, blob[:SEALED_HEADER_SIZE], _WRAP_START, name.encode())
    if chunk_key is None:
        raise CorruptChunkError(
            f"chunk {name}: does not authenticate (tampered, truncated or swapped)", digest=name
        )
    return bytes(chunk_key)


def _parse_header(blob: bytes, name: str) -> tuple[int, int, int]:
    """Return (version, codec, plain length) of a stored chunk or raise CorruptChunkError."""
    if len(blob) < HEADER_SIZE:
        raise CorruptChunkError(
            f"chunk {name}: {len(blob)} bytes, shorter than its header", digest=name
        )
    magic, version, codec, reserved, length = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptChunkError(f"chunk {name}: bad magic {magic!r}", digest=name)
    if version not in (FORMAT_VERSION, SEALED_VERSION):
        raise CorruptChunkError(f"chunk {name}: unsupported format version {version}", digest=name)
    if codec not in (CODEC_RAW, CODEC_ZSTD) or reserved != 0:
        raise CorruptChunkError(
            f"chunk {name}: unknown codec {codec} or flags {reserved:#x}", digest=name
        )
    if length > MAX_CHUNK_SIZE:
        raise CorruptChunkError(
            f"chunk {name}: plain length {length} exceeds {MAX_CHUNK_SIZE}", digest=name
        )
    return version, codec, length


def _decompress(payload: bytes | bytearray | memoryview, length: int, name: str) -> bytes:
    # The frame's own content size is checked first so a damaged frame
    # cannot make the decompressor allocate an arbitrary buffer.
    try:
        if zstandard.frame_content_size(payload) != length:
            raise CorruptChunkError(
                f"chunk {name}: zstd frame size differs from header", digest=name
            )
        return _codecs.decompressor.decompress(payload, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CorruptChunkError(
            f"chunk {name}: zstd payload is damaged: {exc}", digest=name
        ) from exc
