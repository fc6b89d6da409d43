"""Shared machinery: cutting a stream into chunks, the bounded ordered backup pipeline,
and the bounded ordered chunk reader restores consume.

Throughput comes from threads, not processes: FastCDC, BLAKE3 and zstd all release the
GIL, so the owner thread (producing the stream) and a small pool (hashing, storing,
loading) scale ~1.8x on two cores. Memory is bounded by configuration (DESIGN invariant
6): a backup holds at most `max_in_flight` chunks plus one cutting buffer, a restore at
most `depth` prefetched chunks, never the whole stream.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from types import TracebackType

from pyfastcdc import FastCDC

from opencbr.archive.manifest import Manifest
from opencbr.archive.sink import ChunkData, ChunkRef, ChunkSink, ChunkSource, ChunkVerifyError

# pyfastcdc silently falls back to pure Python (~400x slower) when its extension fails
# to load; a backup would then crawl at a few MB/s. Fail loudly at import instead.
if not FastCDC.__module__.startswith("pyfastcdc.cy"):
    raise RuntimeError(
        "pyfastcdc's compiled extension (pyfastcdc.cy) did not load; the pure-Python "
        "fallback is ~400x slower. Reinstall pyfastcdc from a wheel for this platform."
    )

ProgressCallback = Callable[[int], None]
MiB = 1 << 20
# The minimum distance between two progress reports (a few chunks): callers keep the
# count for the lease heartbeat, which writes it every 2 s; not one call per chunk.
PROGRESS_STEP = 4 * MiB
MAX_BATCH = 32  # digests per missing() query: one round trip per ~40 MiB of a tree
# With a byte budget (small chunks), up to this many times more chunks in flight and in
# a batch: 16 x 16 chunks of a tree's ~50 KiB groups hold ~12 MiB.
SMALL_CHUNKS_FACTOR = 16
_UNRESOLVED = ChunkRef("", 0)  # the slot of a chunk whose digest is not known yet


@dataclass(frozen=True)
class BackupResult:
    """What one backup produced; `digests` feeds the vault's chunk index."""

    manifest: Manifest
    bytes_total: int  # logical bytes backed up (tar stream or disk image)
    bytes_new: int  # plain bytes of chunks this backup stored for the first time
    bytes_stored_new: int  # encoded (compressed) bytes of those chunks
    chunks_total: int  # chunk references in the manifest (data and catalog)
    chunks_new: int  # chunks this backup stored for the first time
    digests: frozenset[str]  # unique digests the manifest references
    warnings: tuple[str, ...] = ()  # what was skipped or changed while being read
    bytes_reused: int = 0  # file bytes not read: unchanged since the previous backup
    files_reused: int = 0  # regular files not read: unchanged since the previous backup
    files_read: int = 0  # regular files whose data was read


def backup_result(
    manifest: Manifest,
    pipelines: Sequence[ChunkPipeline],
    warnings: tuple[str, ...] = (),
    *,
    bytes_reused: int = 0,
    files_reused: int = 0,
    files_read: int = 0,
) -> BackupResult:
    """Sum what the finished `pipelines` (data, and catalog for a tree) did."""
    return BackupResult(
        manifest=manifest,
        bytes_total=manifest.size,
        bytes_new=sum(p.bytes_new for p in pipelines),
        bytes_stored_new=sum(p.bytes_stored_new for p in pipelines),
        chunks_total=len(manifest.chunks) + len(manifest.catalog),
        chunks_new=sum(p.chunks_new for p in pipelines),
        digests=frozenset().union(*(p.digests for p in pipelines)),
        warnings=warnings,
        bytes_reused=bytes_reused,
        files_reused=files_reused,
        files_read=files_read,
    )


@dataclass(frozen=True)
class RestoreResult:
    """What one restore did."""

    bytes_total: int  # logical bytes restored (stream bytes read, or image size)
    chunks_loaded: int  # chunks read from the source
    members: int = 0  # tree members (or files) written; 0 for a disk


class ProgressMeter:
    """Cumulative byte counter that reports at most every `step` bytes, then at close.

    Lifecycle: advance() any number of times, close() once. Thread rules: owner thread.
    """

    def __init__(self, callback: ProgressCallback | None, step: int = PROGRESS_STEP) -> None:
        self._callback = callback
        self._step = step
        self.done = 0
        self._reported = 0

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self._callback is not None and self.done - self._reported >= self._step:
            self._reported = self.done
            self._callback(self.done)

    def close(self) -> None:
        if self._callback is not None and self.done != self._reported:
            self._reported = self.done
            self._callback(self.done)


class StreamChunker:
    """Cuts a byte stream into FastCDC chunks and emits each finished chunk in order.

    Streaming CDC: bytes collect in a fixed buffer; when it is full the buffer is cut and
    every chunk but the last is emitted. The last one may end only because the data
    did, so it is carried to the front and cut again with more data; FastCDC's cut
    points depend only on bytes from the chunk start to at most `max_size` on, so the
    chunks emitted are exactly those a single cut of the whole stream would give.

    Lifecycle: write()/write_from() any number of times, close() once (emits the rest).
    Thread rules: owner thread only; `emit` runs on it too.
    """

    def __init__(
        self,
        emit: Callable[[bytes], None],
        cdc: FastCDC,
        buffer_size: int = 16 * MiB,
        emit_known: Callable[[Sequence[ChunkRef]], None] | None = None,
    ) -> None:
        if buffer_size < 2 * cdc.max_size:
            raise ValueError("the cutting buffer must hold at least two maximal chunks")
        self._emit = emit
        self._emit_known = emit_known
        self._cdc = cdc
        self._buffer = bytearray(buffer_size)
        self._view = memoryview(self._buffer)
        self._fill = 0
        self.position = 0  # stream bytes written so far

    def write(self, data: bytes | memoryview) -> None:
        source = memoryview(data)
        while source:
            space = len(self._buffer) - self._fill
            take = min(space, len(source))
            self._view[self._fill : self._fill + take] = source[:take]
            self._advance(take)
            source = source[take:]

    def write_from(self, readinto: Callable[[memoryview], int | None], size: int) -> int:
        """Append up to `size` bytes read straight into the buffer (no extra copy).

        Returns the number of bytes appended; fewer than `size` means `readinto` hit EOF.
        """
        done = 0
        while done < size:
            space = len(self._buffer) - self._fill
            target = self._view[self._fill : self._fill + min(space, size - done)]
            got = readinto(target)
            if not got:
                break
            self._advance(got)
            done += got
        return done

    def cut(self) -> None:
        """Force a chunk boundary here: emit everything written so far.

        Cutting afresh from a forced boundary makes the chunks that follow a function of
        the bytes after it alone (how unchanged files keep their chunks).
        """
        if self._fill:
            self._cut(final=True)

    def append_known(self, refs: Sequence[ChunkRef]) -> None:
        """Append chunks already stored (from a previous backup) right after a cut()."""
        if self._fill:
            raise ValueError("append_known() needs a chunk boundary: call cut() first")
        if self._emit_known is None:
            raise ValueError("this stream was not given an emit_known callback")
        self._emit_known(refs)
        self.position += sum(ref.length for ref in refs)

    def close(self) -> None:
        self._cut(final=True)

    def _advance(self, nbytes: int) -> None:
        self._fill += nbytes
        self.position += nbytes
        if self._fill == len(self._buffer):
            self._cut(final=False)

    def _cut(self, *, final: bool) -> None:
        start = 0
        for chunk in self._cdc.cut_buf(self._view[: self._fill]):
            end = chunk.offset + chunk.length
            if end == self._fill and not final:
                break
            self._emit(bytes(chunk.data))
            start = end
        rest = self._fill - start
        # memoryview assignment memmoves overlapping ranges safely.
        self._view[:rest] = self._view[start : self._fill]
        self._fill = rest


class ChunkPipeline:
    """Ordered, bounded pipeline: hash every chunk, ask the sink in batches which are
    missing, store those, and collect the chunk list in stream order.

    Each distinct digest is queried and stored at most once per pipeline, so a stream
    that repeats itself costs one store. Several pipelines may share one executor.

    Lifecycle: submit() every chunk in stream order, then finish() once for the chunk
    list. On error, leave the `with` block (or call abort()): queued jobs are cancelled.
    Thread rules: submit/finish/abort from the owner thread only; hashing and storing
    run on the executor. Memory: at most `max_in_flight` chunks are held at a time; with
    `max_bytes_in_flight`, at most that many bytes (plus the chunk being submitted) in
    at most SMALL_CHUNKS_FACTOR x `max_in_flight` chunks, and a batch is resolved once it
    holds half of either: a stream of small chunks (a tree's groups of small files) then
    asks the sink once per many chunks instead of once per `max_in_flight / 2`.
    """

    def __init__(
        self,
        sink: ChunkSink,
        executor: Executor,
        *,
        max_in_flight: int = 48,
        batch_size: int | None = None,
        progress: ProgressMeter | None = None,
        max_bytes_in_flight: int | None = None,
    ) -> None:
        factor = 1 if max_bytes_in_flight is None else SMALL_CHUNKS_FACTOR
        max_in_flight *= factor
        # One missing() query per batch; half the window keeps stores flowing meanwhile.
        batch_size = batch_size or min(MAX_BATCH * factor, max_in_flight // 2)
        if not 0 < batch_size < max_in_flight:
            raise ValueError("need 0 < batch_size < max_in_flight")
        self._sink = sink
        self._executor = executor
        self._max_in_flight = max_in_flight
        self._batch_size = batch_size
        self._max_bytes = max_bytes_in_flight or 0  # 0: no byte budget
        self._held_bytes = 0  # of the chunks hashing and storing
        self._hashing_bytes = 0
        self._progress = progress
        # (digest being computed, the chunk, its slot in _refs), in stream order.
        self._hashing: deque[tuple[Future[str], bytes, int]] = deque()
        self._storing: deque[tuple[Future[int], int]] = deque()
        self._refs: list[ChunkRef] = []
        # Digests already known present or scheduled for storing; by the end, exactly
        # the unique digests this stream references.
        self.digests: set[str] = set()
        self.chunks_new = 0
        self.bytes_new = 0
        self.bytes_stored_new = 0

    def __enter__(self) -> ChunkPipeline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()

    def submit(self, data: bytes) -> None:
        """Queue the next chunk of the stream; blocks while the window is full."""
        while self._storing and self._window_full():
            self._reap_oldest()
        self._hashing.append((self._executor.submit(self._sink.name, data), data, len(self._refs)))
        self._refs.append(_UNRESOLVED)  # its slot, filled when its batch is resolved
        self._hashing_bytes += len(data)
        self._held_bytes += len(data)
        if len(self._hashing) >= self._batch_size or (
            self._max_bytes and 2 * self._hashing_bytes >= self._max_bytes
        ):
            self._resolve_batch()

    def _window_full(self) -> bool:
        if len(self._storing) + len(self._hashing) >= self._max_in_flight:
            return True
        return bool(self._max_bytes) and self._held_bytes >= self._max_bytes

    def submit_known(self, refs: Sequence[ChunkRef]) -> None:
        """Append, in stream order, chunks the sink is known to hold (a previous backup's
        chunks of an unchanged file): they are neither hashed nor queried nor stored. The
        batch being collected stays open (its chunks keep their slots before these), so
        changed files scattered among unchanged ones are still asked for together."""
        self._refs.extend(refs)
        self.digests.update(ref.digest for ref in refs)
        if self._progress is not None:
            self._progress.advance(sum(ref.length for ref in refs))

    def finish(self) -> tuple[ChunkRef, ...]:
        self._resolve_batch()
        while self._storing:
            self._reap_oldest()
        assert _UNRESOLVED not in self._refs
        return tuple(self._refs)

    def abort(self) -> None:
        for hashing, _data, _slot in self._hashing:
            hashing.cancel()
        for storing, _ in self._storing:
            storing.cancel()
        self._hashing.clear()
        self._storing.clear()
        self._held_bytes = self._hashing_bytes = 0

    def _resolve_batch(self) -> None:
        batch = [(future.result(), data, slot) for future, data, slot in self._hashing]
        self._hashing.clear()
        self._hashing_bytes = 0
        unknown = list(dict.fromkeys(d for d, _, _ in batch if d not in self.digests))
        missing = self._sink.missing(unknown) if unknown else set()
        self.digests.update(d for d in unknown if d not in missing)
        for digest, data, slot in batch:
            self._refs[slot] = ChunkRef(digest, len(data))
            if digest not in self.digests:
                self.digests.add(digest)
                future = self._executor.submit(self._sink.store, digest, data)
                self._storing.append((future, len(data)))
            else:
                self._held_bytes -= len(data)  # present already: not held any longer
        if self._progress is not None:
            self._progress.advance(sum(len(data) for _, data, _ in batch))

    def _reap_oldest(self) -> None:
        future, length = self._storing.popleft()
        stored = future.result()
        self._held_bytes -= length
        # 0 means a concurrent writer stored the chunk between missing() and store().
        if stored > 0:
            self.chunks_new += 1
            self.bytes_new += length
            self.bytes_stored_new += stored


def load_verified(source: ChunkSource, ref: ChunkRef) -> ChunkData:
    """Load one chunk and check its length and digest; raise `ChunkVerifyError`."""
    try:
        data = source.load(ref.digest)
    except Exception as exc:
        exc.add_note(f"while loading chunk {ref.digest}")
        raise
    if len(data) != ref.length:
        raise ChunkVerifyError(ref.digest, f"expected {ref.length} bytes, got {len(data)}")
    if source.name(data) != ref.digest:
        raise ChunkVerifyError(ref.digest, "content does not match its digest")
    return data


def prefetch_chunks(
    source: ChunkSource, refs: Iterable[ChunkRef], executor: Executor, depth: int
) -> Generator[ChunkData, None, None]:
    """Yield the verified bytes of `refs` in order, loading up to `depth` ahead.

    Close the generator when stopping early (contextlib.closing) so queued loads are
    cancelled at once rather than when it is garbage-collected.
    """
    pending: deque[Future[ChunkData]] = deque()
    try:
        for ref in refs:
            pending.append(executor.submit(load_verified, source, ref))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


class ChunkStreamReader:
    """Read-only, forward-only file object over an iterator of chunks.

    Serves tarfile (read/tell/seek) and zero-copy consumers (`read_view`). Seeking
    backwards is possible only within the current chunk, which is all tarfile needs.
    Lifecycle: read until EOF, then close(). Thread rules: one thread at a time.
    """

    def __init__(self, chunks: Iterator[ChunkData]) -> None:
        self._chunks = chunks
        self._chunk = memoryview(b"")
        self._chunk_start = 0  # stream offset of self._chunk[0]
        self._pos = 0  # offset within self._chunk
        self.chunks_read = 0

    def tell(self) -> int:
        return self._chunk_start + self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset < self._chunk_start:
            raise io.UnsupportedOperation("chunk streams only seek forward")
        while offset > self._chunk_start + len(self._chunk):
            if not self._next_chunk():
                break
        self._pos = min(offset - self._chunk_start, len(self._chunk))
        return self.tell()

    def read_view(self, size: int) -> memoryview:
        """Return up to `size` next bytes without copying; empty only at EOF."""
        if self._pos == len(self._chunk) and not self._next_chunk():
            return memoryview(b"")
        view = self._chunk[self._pos : self._pos + size]
        self._pos += len(view)
        return view

    def read(self, size: int = -1) -> bytes:
        if 0 <= size <= len(self._chunk) - self._pos:  # within the current chunk (catalogs)
            start = self._pos
            self._pos += size
            return bytes(self._chunk[start : self._pos])
        if size < 0:
            return b"".join(iter(lambda: bytes(self.read_view(MiB)), b""))
        parts = []
        while size > 0:
            view = self.read_view(size)
            if not view:
                break
            parts.append(view)
            size -= len(view)
        return b"".join(parts)

    def write(self, data: bytes) -> int:
        raise io.UnsupportedOperation("chunk streams are read-only")

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def _next_chunk(self) -> bool:
        self._chunk_start += len(self._chunk)
        self._pos = 0
        data = next(self._chunks, None)
        self._chunk = memoryview(b"" if data is None else data)
        if data is None:
            return False
        self.chunks_read += 1
        return True
