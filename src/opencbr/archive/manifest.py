"""The manifest: everything needed to rebuild one backup from the chunks of its vault.

Wire format (version 1): one zstd frame holding a UTF-8 JSON object with exactly these
keys (unknown or missing keys are refused, so an old reader never half-understands a
newer manifest):

    format        "opencbr-manifest"
    version       1
    kind          "tree" (PAX tar stream of a file tree) | "disk" (raw image)
    size          logical bytes: the tar stream's length, or the disk image's size
    chunks        [[digest, plain_length], ...] in stream order; for a disk only the
                  non-zero blocks, which fill, in order, the gaps between zero_ranges
    zero_ranges   [[offset, length], ...] sorted, disjoint: disk bytes known to be zero
                  (never stored); [] for a tree
    block_size    fixed block size of a disk backup; null for a tree
    catalog       [[digest, plain_length], ...]: the chunks of the tree's catalog
                  stream (see `opencbr.archive.catalog`); [] for a disk
    metadata      free-form JSON object describing the resource (opaque to the engine)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import zstandard

from opencbr.archive.sink import DIGEST_RE, ArchiveError, ChunkRef

FORMAT_NAME = "opencbr-manifest"
FORMAT_VERSION = 1
Kind = Literal["tree", "disk"]

# A manifest lists ~1 chunk per MiB of data; 1 GiB of JSON covers petabyte-scale
# streams while stopping a hostile frame from allocating without bound.
MAX_MANIFEST_JSON = 1 << 30
_KEYS = frozenset(
    {"format", "version", "kind", "size", "chunks", "zero_ranges", "block_size"}
    | {"catalog", "metadata"}
)
_ZSTD_LEVEL = 3


class ManifestError(ArchiveError):
    """A manifest is malformed, inconsistent or of an unknown format version."""


class ZeroRange(NamedTuple):
    """A run of disk bytes that are all zero and therefore not stored."""

    offset: int
    length: int


@dataclass(frozen=True)
class Manifest:
    """One backup's layout. Immutable; validated on construction and on load."""

    kind: Kind
    size: int
    chunks: tuple[ChunkRef, ...]
    catalog: tuple[ChunkRef, ...] = ()
    zero_ranges: tuple[ZeroRange, ...] = ()
    block_size: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _validate(self)

    def digests(self) -> frozenset[str]:
        """Every chunk digest this backup references (data and catalog)."""
        return frozenset(ref.digest for ref in (*self.chunks, *self.catalog))

    def to_bytes(self) -> bytes:
        """Serialise to the versioned wire format (deterministic for equal manifests)."""
        document = {
            "format": FORMAT_NAME,
            "version": self.version,
            "kind": self.kind,
            "size": self.size,
            "chunks": [list(ref) for ref in self.chunks],
            "zero_ranges": [list(zero) for zero in self.zero_ranges],
            "block_size": self.block_size,
            "catalog": [list(ref) for ref in self.catalog],
            "metadata": self.metadata,
        }
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(text.encode())

    @classmethod
    def from_bytes(cls, blob: bytes) -> Manifest:
        """Parse and strictly validate a serialised manifest; raise `ManifestError`."""
        document = _decode_document(blob)
        if set(document) != _KEYS:
            raise ManifestError(f"manifest keys {sorted(document)} != {sorted(_KEYS)}")
        if document["format"] != FORMAT_NAME:
            raise ManifestError(f"not a manifest: format {document['format']!r}")
        if document["version"] != FORMAT_VERSION:
            raise ManifestError(f"unsupported manifest version {document['version']!r}")
        if not isinstance(document["metadata"], dict):
            raise ManifestError("metadata must be a JSON object")
        block_size = document["block_size"]
        return cls(
            kind=document["kind"],
            size=document["size"],
            chunks=tuple(_parse_refs(document["chunks"], "chunks")),
            catalog=tuple(_parse_refs(document["catalog"], "catalog")),
            zero_ranges=tuple(_parse_zero_ranges(document["zero_ranges"])),
            block_size=None if block_size is None else _int(block_size, "block_size"),
            metadata=document["metadata"],
        )


def _decode_document(blob: bytes) -> dict[str, Any]:
    try:
        declared = zstandard.frame_content_size(blob)
        if declared > MAX_MANIFEST_JSON:
            raise ManifestError(f"manifest declares {declared} bytes, over the limit")
        text = zstandard.ZstdDecompressor().decompress(blob, max_output_size=MAX_MANIFEST_JSON)
        document = json.loads(text, parse_constant=_refuse_constant)
    except (zstandard.ZstdError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"unreadable manifest: {exc}") from exc
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    return document


def _refuse_constant(name: str) -> None:
    # json accepts NaN/Infinity by default; they are not JSON and never written by us.
    raise ValueError(f"non-JSON constant {name}")


def _int(value: object, what: str) -> int:
    # bool is an int subclass; `true` must not pass for a size.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ManifestError(f"{what} must be an integer, got {value!r}")
    return value


def _pair(item: object, what: str) -> tuple[object, object]:
    if not isinstance(item, list) or len(item) != 2:
        raise ManifestError(f"{what} entries must be 2-element lists, got {item!r}")
    return item[0], item[1]


def _parse_refs(items: object, what: str) -> Iterator[ChunkRef]:
    if not isinstance(items, list):
        raise ManifestError(f"{what} must be a list")
    for item in items:
        digest, length = _pair(item, what)
        if not isinstance(digest, str):
            raise ManifestError(f"{what}: digest must be a string, got {digest!r}")
        yield ChunkRef(digest, _int(length, f"{what} length"))


def _parse_zero_ranges(items: object) -> Iterator[ZeroRange]:
    if not isinstance(items, list):
        raise ManifestError("zero_ranges must be a list")
    for item in items:
        offset, length = _pair(item, "zero_ranges")
        yield ZeroRange(_int(offset, "zero range offset"), _int(length, "zero range length"))


def _validate(manifest: Manifest) -> None:
    if manifest.version != FORMAT_VERSION:
        raise ManifestError(f"unsupported manifest version {manifest.version!r}")
    _int(manifest.size, "size")
    _validate_refs(manifest.chunks, "chunks")
    _validate_refs(manifest.catalog, "catalog")
    try:
        json.dumps(manifest.metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"metadata is not JSON-serialisable: {exc}") from exc
    if manifest.kind == "tree":
        _validate_tree(manifest)
    elif manifest.kind == "disk":
        _validate_disk(manifest)
    else:
        raise ManifestError(f"unknown manifest kind {manifest.kind!r}")


def _validate_refs(refs: Iterable[ChunkRef], what: str) -> None:
    for digest, length in refs:
        if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
            raise ManifestError(f"{what}: malformed digest {digest!r}")
        if _int(length, f"{what} length") <= 0:
            raise ManifestError(f"{what}: chunk {digest} has length {length}")


def _validate_tree(manifest: Manifest) -> None:
    if manifest.zero_ranges or manifest.block_size is not None:
        raise ManifestError("a tree manifest has no zero ranges and no block size")
    if not manifest.catalog:
        raise ManifestError("a tree manifest must reference its catalog")
    stream = sum(ref.length for ref in manifest.chunks)
    if stream != manifest.size:
        raise ManifestError(f"chunks add up to {stream} bytes, manifest says {manifest.size}")


def _validate_disk(manifest: Manifest) -> None:
    if manifest.catalog:
        raise ManifestError("a disk manifest has no catalog")
    if manifest.block_size is None or _int(manifest.block_size, "block_size") <= 0:
        raise ManifestError("a disk manifest needs a positive block size")
    end = 0
    for offset, length in manifest.zero_ranges:
        if _int(offset, "zero range offset") < end or _int(length, "zero range length") <= 0:
            raise ManifestError(f"zero range ({offset}, {length}) overlaps or is unsorted")
        end = offset + length
    if end > manifest.size:
        raise ManifestError(f"zero ranges reach {end}, past the image size {manifest.size}")
    zeros = sum(zero.length for zero in manifest.zero_ranges)
    data = sum(ref.length for ref in manifest.chunks)
    if data + zeros != manifest.size:
        raise ManifestError(f"{data} data + {zeros} zero bytes != image size {manifest.size}")
