"""Chunk digest and stored format.

A chunk is named by the BLAKE3 digest of its plain bytes and stored as a
16-byte header followed by the payload:

    offset size  field
    0      4     magic b"OCBC"
    4      1     format version (1)
    5      1     codec: 0 = raw, 1 = zstd (one frame carrying its content size)
    6      2     reserved, zero in version 1
    8      8     plain length, unsigned big-endian
    16     ...   payload

Encoding and decoding are pure functions, safe from any number of threads:
zstandard contexts are kept per thread because one shared compressor
crashed the process under concurrent use.
"""

from __future__ import annotations

import struct
import threading

import blake3
import zstandard

from opencbr.storage.store import CorruptChunkError

MAGIC = b"OCBC"
FORMAT_VERSION = 1
CODEC_RAW = 0
CODEC_ZSTD = 1
# Bounds the memory a corrupt header can make decode_chunk allocate; far
# above any chunk size the archive engine produces.
MAX_CHUNK_SIZE = 64 * 1024 * 1024

_HEADER = struct.Struct(">4sBBHQ")
HEADER_SIZE = _HEADER.size


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


def encode_chunk(data: bytes, level: int = 3) -> bytes:
    """Return the stored form of `data`, zstd-compressed at `level` when that saves space.

    Incompressible data is stored raw so reading it costs no decompression.
    Raises ValueError if `data` exceeds MAX_CHUNK_SIZE.
    """
    if len(data) > MAX_CHUNK_SIZE:
        raise ValueError(f"chunk of {len(data)} bytes exceeds {MAX_CHUNK_SIZE}")
    compressed = _codecs.compressor(level).compress(data)
    if len(compressed) < len(data):
        return _HEADER.pack(MAGIC, FORMAT_VERSION, CODEC_ZSTD, 0, len(data)) + compressed
    return _HEADER.pack(MAGIC, FORMAT_VERSION, CODEC_RAW, 0, len(data)) + data


def decode_chunk(blob: bytes, expected_digest: str) -> bytes:
    """Return the plain bytes of a stored chunk after checking they hash to `expected_digest`.

    Raises CorruptChunkError, naming the digest, if the header is malformed
    or of an unknown version, the payload does not decompress to the
    recorded length, or the content does not match the digest.
    """
    return bytes(_verified_plain(blob, expected_digest))


def verify_chunk(blob: bytes, expected_digest: str) -> None:
    """Check a stored chunk as `decode_chunk` does, without keeping its plain bytes.

    For a raw chunk this hashes the payload in place: copying a chunk between stores
    verifies it without a second copy of its bytes.
    """
    _verified_plain(blob, expected_digest)


def _verified_plain(blob: bytes, expected_digest: str) -> bytes | memoryview:
    codec, length = _parse_header(blob, expected_digest)
    payload = memoryview(blob)[HEADER_SIZE:]
    data = _decompress(payload, length, expected_digest) if codec == CODEC_ZSTD else payload
    if len(data) != length:
        raise CorruptChunkError(
            f"chunk {expected_digest}: {len(data)} plain bytes, header says {length}",
            digest=expected_digest,
        )
    if blake3.blake3(data).hexdigest() != expected_digest:
        raise CorruptChunkError(
            f"chunk {expected_digest}: content does not match its digest", digest=expected_digest
        )
    return data


def _parse_header(blob: bytes, name: str) -> tuple[int, int]:
    """Return (codec, plain length) of a stored chunk or raise CorruptChunkError."""
    if len(blob) < HEADER_SIZE:
        raise CorruptChunkError(
            f"chunk {name}: {len(blob)} bytes, shorter than its header", digest=name
        )
    magic, version, codec, reserved, length = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptChunkError(f"chunk {name}: bad magic {magic!r}", digest=name)
    if version != FORMAT_VERSION:
        raise CorruptChunkError(f"chunk {name}: unsupported format version {version}", digest=name)
    if codec not in (CODEC_RAW, CODEC_ZSTD) or reserved != 0:
        raise CorruptChunkError(
            f"chunk {name}: unknown codec {codec} or flags {reserved:#x}", digest=name
        )
    if length > MAX_CHUNK_SIZE:
        raise CorruptChunkError(
            f"chunk {name}: plain length {length} exceeds {MAX_CHUNK_SIZE}", digest=name
        )
    return codec, length


def _decompress(payload: memoryview, length: int, name: str) -> bytes:
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
