"""The catalog of a tree backup: one record per tar member, in stream order.

The catalog is a second stream beside the tar stream, stored as chunks through the same
sink. Version 2 (written today): the magic `OCBRCAT2`, then per member a struct
`<cIIIQqQQqQ8sII` (tar typeflag, mode, uid, gid, size, mtime_ns, header offset, data
offset, ctime_ns, inode, the first 8 bytes of the BLAKE3 of the member's tar headers,
path length, link length), the path bytes and the link-target bytes. Version 1
(`OCBRCAT1`) lacks ctime, inode and header digest; it is still read, with those
fields zero, so no file of a version-1 backup is ever taken as unchanged.

Offsets point into the tar stream, so one file can be restored from only the chunks
covering its data, and an unchanged file's chunks can be reused by the next backup
(`opencbr.archive.parent`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import NamedTuple

import blake3
from pyfastcdc import FastCDC

from opencbr.archive.manifest import Manifest
from opencbr.archive.pipeline import ChunkStreamReader, StreamChunker, prefetch_chunks
from opencbr.archive.sink import ArchiveError, ChunkSource

CATALOG_MAGIC_V1 = b"OCBRCAT1"
CATALOG_MAGIC = b"OCBRCAT2"
_RECORD_V1 = struct.Struct("<cIIIQqQQII")
_RECORD = struct.Struct("<cIIIQqQQqQ8sII")
HEADER_DIGEST_SIZE = 8  # enough to tell a changed header; the data is checked apart


class CatalogEntry(NamedTuple):
    """One tar member as the catalog records it; `path` is relative, b"." is the root."""

    path: bytes
    type: bytes  # tar typeflag: tarfile.REGTYPE, DIRTYPE, SYMTYPE or LNKTYPE
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    header_offset: int  # stream offset of the member's first header block
    data_offset: int  # stream offset of its data (the end of its headers)
    linkname: bytes  # symlink target or hard-link target path; b"" otherwise
    ctime_ns: int = 0  # 0 in a version-1 catalog
    inode: int = 0
    header_digest: bytes = b""  # header_digest() of the member's headers; b"" in version 1


def header_digest(header: bytes) -> bytes:
    """The short digest of a member's tar headers that the catalog records."""
    return blake3.blake3(header).digest(HEADER_DIGEST_SIZE)


class CatalogWriter:
    """Encodes catalog records into their own chunk stream.

    Records collect in a small buffer handed to the chunker `_FLUSH_BYTES` at a time:
    the chunks depend only on the bytes of the stream, and one write per record (about
    a hundred bytes, one per file) cost a tenth of an incremental backup of small files.

    Lifecycle: add() per member in stream order, close() once. Thread rules: owner only.
    """

    _FLUSH_BYTES = 64 * 1024

    def __init__(self, emit_chunk: Callable[[bytes], None], cdc: FastCDC) -> None:
        # The catalog is ~1/10000 of the data: the smallest cutting buffer will do.
        self._stream = StreamChunker(emit_chunk, cdc, buffer_size=2 * cdc.max_size)
        self._pending = bytearray(CATALOG_MAGIC)

    def add(self, entry: CatalogEntry) -> None:
        pending = self._pending
        pending += _RECORD.pack(
            entry.type,
            entry.mode,
            entry.uid,
            entry.gid,
            entry.size,
            entry.mtime_ns,
            entry.header_offset,
            entry.data_offset,
            entry.ctime_ns,
            entry.inode,
            entry.header_digest,
            len(entry.path),
            len(entry.linkname),
        )
        pending += entry.path
        pending += entry.linkname
        if len(pending) >= self._FLUSH_BYTES:
            self._flush()

    def close(self) -> None:
        self._flush()
        self._stream.close()

    def _flush(self) -> None:
        self._stream.write(memoryview(self._pending))
        self._pending = bytearray()


def iter_catalog(
    manifest: Manifest, source: ChunkSource, *, workers: int = 2
) -> Generator[CatalogEntry, None, None]:
    """Yield the catalog of a tree backup in stream order, loading it chunk by chunk.

    Close the generator when stopping early (contextlib.closing).
    """
    require_kind(manifest, "tree")
    with ThreadPoolExecutor(workers, thread_name_prefix="catalog") as pool:
        chunks = prefetch_chunks(source, manifest.catalog, pool, depth=2 * workers)
        with closing(ChunkStreamReader(chunks)) as reader:
            magic = reader.read(len(CATALOG_MAGIC))
            if magic == CATALOG_MAGIC:
                decode = _decode_v2
            elif magic == CATALOG_MAGIC_V1:
                decode = _decode_v1
            else:
                raise ArchiveError("catalog stream does not start with its magic")
            size = _RECORD.size if decode is _decode_v2 else _RECORD_V1.size
            while head := reader.read(size):
                if len(head) != size:
                    raise ArchiveError("catalog stream is truncated")
                yield decode(head, reader)


def _decode_v2(head: bytes, reader: ChunkStreamReader) -> CatalogEntry:
    type_, mode, uid, gid, size, mtime_ns, header, data, ctime_ns, inode, digest, *lengths = (
        _RECORD.unpack(head)
    )
    path, link = _read_names(reader, *lengths)
    return CatalogEntry(
        path, type_, mode, uid, gid, size, mtime_ns, header, data, link, ctime_ns, inode, digest
    )


def _decode_v1(head: bytes, reader: ChunkStreamReader) -> CatalogEntry:
    type_, mode, uid, gid, size, mtime_ns, header, data, *lengths = _RECORD_V1.unpack(head)
    path, link = _read_names(reader, *lengths)
    return CatalogEntry(path, type_, mode, uid, gid, size, mtime_ns, header, data, link)


def _read_names(reader: ChunkStreamReader, path_len: int, link_len: int) -> tuple[bytes, bytes]:
    names = reader.read(path_len + link_len)
    if len(names) != path_len + link_len:
        raise ArchiveError("catalog stream is truncated")
    return names[:path_len], names[path_len:]


def require_kind(manifest: Manifest, kind: str) -> None:
    if manifest.kind != kind:
        raise ArchiveError(f"expected a {kind} manifest, got a {manifest.kind} one")
