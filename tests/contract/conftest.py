"""Backends the ChunkStore conformance suite runs against.

Each backend is a `Backend` harness: it opens (and reopens) one store
location and offers the few hooks the suite needs that the protocol cannot
express, such as leaving behind what a crash in the middle of a put leaves.
To add a backend (S3 next), write a harness and list it in BACKENDS.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from opencbr.storage.location import open_store
from opencbr.storage.store import ChunkStore


class Backend(Protocol):
    def open(self) -> ChunkStore:
        """Open the store at this harness's location; a second call reopens the same data."""
        ...

    def plant_partial_write(self, blob: bytes) -> None:
        """Leave what a process killed in the middle of a chunk put leaves, aged past cleanup."""
        ...

    def partial_writes(self) -> int:
        """How many leftovers of interrupted writes exist now."""
        ...

    def backdate_chunk(self, digest: str, seconds: float) -> None:
        """Make a chunk look `seconds` older than now (tests of chunk_mtime)."""
        ...


class LocalBackend:
    """A LocalChunkStore in a fresh folder, opened through `open_store` (so behind the
    retrying wrapper every store is opened with)."""

    retry_delays: tuple[float, ...] = (0.05, 0.2, 0.5, 1.0, 2.0)

    def __init__(self, root: Path) -> None:
        self.root = root

    def url(self) -> str:
        return str(self.root)

    def open(self) -> ChunkStore:
        return open_store(self.url(), retry_delays=self.retry_delays)

    def plant_partial_write(self, blob: bytes) -> None:
        leftover = self.root / "tmp" / "99999-1-1.tmp"
        leftover.write_bytes(blob[: len(blob) // 2])
        two_hours_ago = time.time() - 7200
        os.utime(leftover, (two_hours_ago, two_hours_ago))

    def partial_writes(self) -> int:
        return len(os.listdir(self.root / "tmp"))

    def backdate_chunk(self, digest: str, seconds: float) -> None:
        path = self.root / "chunks" / digest[:2] / digest
        then = time.time() - seconds
        os.utime(path, (then, then))


class FaultyLocalBackend(LocalBackend):
    """The fault-injecting wrapper with faults off: it must keep the contract too."""

    def url(self) -> str:
        return f"faulty+file://{self.root}?seed=1"


class FlakyLocalBackend(LocalBackend):
    """A tenth of every call fails transiently: the retrying wrapper must hide that, so
    the contract holds as if nothing failed (six failures in a row: one call in 10^6)."""

    retry_delays = (0.0,) * 5

    def url(self) -> str:
        return f"faulty+file://{self.root}?fail_put=0.1&fail_get=0.1&fail_other=0.1"


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "local": LocalBackend,
    "faulty-local": FaultyLocalBackend,
    "flaky-local-retried": FlakyLocalBackend,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    factory = BACKENDS[request.param]
    return factory(tmp_path / "store")


@pytest.fixture
def store(backend: Backend) -> Iterator[ChunkStore]:
    opened = backend.open()
    yield opened
    opened.close()
