"""Read once, send to many: copying chunks from one vault's store to several others.

A chunk is read from the source and checked once, then written to every destination
(`Sink`) that lacks it. The check (invariant 3): against the digest of its stored bytes
that the source's index records (no decompressing, no decrypting), or, for a chunk stored
before those were recorded, against its content digest. A sealed chunk going to another
project's vault gets its chunk key sealed again with that project's data key (`reseal`).
What each destination now holds is recorded (`Sink.recorded`) for its index.
Replication (one source backup to every destination due now, services/replication_runs.py)
and migration (one destination) copy through here; a chunk whose read fails verification
is marked damaged at the source and nothing unverified is written anywhere.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from opencbr.services.stores import PLAIN, DamageMarker, VaultCodec, put_chunk_checked
from opencbr.storage.chunk import reseal_chunk, verify_stored
from opencbr.storage.sealing import Sealing
from opencbr.storage.store import ChunkStore, CorruptChunkError, NotFoundError

IN_FLIGHT = 16
Job = TypeVar("Job")
Missing = tuple[str, int, int]  # (digest, plain size, stored size), as plans list them


@dataclass(frozen=True)
class Sink:
    """A destination store, and the index that marks its chunks found damaged; `reseal`
    when it belongs to another project than the source (sealed chunks get their chunk key
    sealed with its data key); `recorded`: the stored-bytes digest of each chunk written
    (dict item assignment is atomic: copy threads share it)."""

    store: ChunkStore
    damage: DamageMarker
    reseal: Sealing | None = None
    recorded: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkCopier:
    """Copies chunks out of one vault's store, marking the chunks whose reads fail
    verification damaged in its index."""

    source: ChunkStore
    source_damage: DamageMarker
    stored: Mapping[str, str] = field(default_factory=dict)  # the source's recorded digests
    codec: VaultCodec = PLAIN  # opens sealed chunks (older ones' check, resealing)

    def copy(self, digest: str, sinks: Sequence[Sink]) -> int:
        """Read one chunk's stored bytes once, check them, write them into every sink
        (sealed again for a sink of another project); their length (resealing keeps it)."""
        try:
            blob = self.source.get_chunk(digest)
            expected = self.stored.get(digest)
            # Raises CorruptChunkError: nothing unverified is written.
            if expected is None:
                self.codec.verify(blob, digest)
            else:
                verify_stored(blob, digest, expected)
            outgoing = [(sink, self._for(sink, blob, digest)) for sink in sinks]
        except (CorruptChunkError, NotFoundError) as exc:
            self.source_damage.mark_failed_read(exc)
            raise
        for sink, out in outgoing:
            put = put_chunk_checked(sink.store, digest, out, sink.damage, self.codec)
            sink.recorded[digest] = put.stored_digest
        return len(blob)

    def _for(self, sink: Sink, blob: bytes, digest: str) -> bytes:
        if sink.reseal is None or self.codec.keys is None:
            return blob
        return reseal_chunk(blob, digest, self.codec.keys, sink.reseal)


def copy_in_order(
    pool: ThreadPoolExecutor, copy: Callable[[Job], int], todo: Iterable[Job]
) -> Iterator[tuple[Job, int]]:
    """Run `copy` over `todo` in order with at most IN_FLIGHT jobs (hence bounded memory)
    under way; `todo` is consumed lazily, so it may pace the submissions. Finished jobs at
    the head are handed out after each submission, not only once IN_FLIGHT are under way:
    when `todo` is paced (a rate limit), progress follows the copy chunk by chunk instead
    of trailing it by IN_FLIGHT chunks."""
    pending: deque[tuple[Job, Future[int]]] = deque()
    for job in todo:
        pending.append((job, pool.submit(copy, job)))
        while pending and (len(pending) >= IN_FLIGHT or pending[0][1].done()):
            done, future = pending.popleft()
            yield done, future.result()
    for done, future in pending:
        yield done, future.result()


@dataclass(frozen=True)
class Wanted:
    """A chunk of the union: its digest, stored size, and the destinations (positions in
    the list given to `union`) that lack it."""

    digest: str
    stored: int
    by: tuple[int, ...]


def union(missing: Sequence[Sequence[Missing]]) -> list[Wanted]:
    """Each chunk any destination lacks, once, in the order the destinations list them."""
    wanted: dict[str, tuple[int, list[int]]] = {}
    for position, chunks in enumerate(missing):
        for digest, _plain, stored in chunks:
            wanted.setdefault(digest, (stored, []))[1].append(position)
    return [Wanted(digest, stored, tuple(by)) for digest, (stored, by) in wanted.items()]
