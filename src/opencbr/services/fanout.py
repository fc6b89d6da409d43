"""Read once, send to many: copying chunks from one vault's store to several others.

A chunk is read from the source and checked against its digest once, then written to
every destination (`Sink`) that lacks it. Replication (one source backup to every
destination due now, services/replication_runs.py) and migration (one destination) copy
through here; a chunk whose read fails verification is marked damaged at the source and
nothing unverified is written anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from opencbr.services.stores import DamageMarker, put_chunk_checked
from opencbr.storage.chunk import verify_chunk
from opencbr.storage.store import ChunkStore, CorruptChunkError, NotFoundError

IN_FLIGHT = 16
Job = TypeVar("Job")
Missing = tuple[str, int, int]  # (digest, plain size, stored size), as plans list them


@dataclass(frozen=True)
class Sink:
    """A destination store, and the index that marks its chunks found damaged."""

    store: ChunkStore
    damage: DamageMarker


@dataclass(frozen=True)
class ChunkCopier:
    """Copies chunks out of one vault's store, marking the chunks whose reads fail
    verification damaged in its index."""

    source: ChunkStore
    source_damage: DamageMarker

    def copy(self, digest: str, sinks: Sequence[Sink]) -> int:
        """Read one chunk's stored bytes once, check them against their digest, write the
        same bytes into every sink; their length."""
        try:
            blob = self.source.get_chunk(digest)
            verify_chunk(blob, digest)  # raises CorruptChunkError: nothing unverified is written
        except (CorruptChunkError, NotFoundError) as exc:
            self.source_damage.mark_failed_read(exc)
            raise
        for sink in sinks:
            put_chunk_checked(sink.store, digest, blob, sink.damage)
        return len(blob)


def copy_in_order(
    pool: ThreadPoolExecutor, copy: Callable[[Job], int], todo: Iterable[Job]
) -> Iterator[tuple[Job, int]]:
    """Run `copy` over `todo` in order with at most IN_FLIGHT jobs (hence bounded memory)
    under way; `todo` is consumed lazily, so it may pace the submissions."""
    pending: list[tuple[Job, Future[int]]] = []
    for job in todo:
        pending.append((job, pool.submit(copy, job)))
        if len(pending) >= IN_FLIGHT:
            done, future = pending.pop(0)
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
