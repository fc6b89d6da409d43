"""Backends the ChunkStore conformance suite runs against.

Each backend is a `Backend` harness: it opens (and reopens) one store
location and offers the few hooks the suite needs that the protocol cannot
express, such as leaving behind what a crash in the middle of a put leaves.
To add a backend, write a harness and list it in BACKENDS. S3 harnesses run against moto's
in-process server (the `moto_s3` fixture), each on a fresh prefix of one bucket.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from opencbr.storage.location import open_store
from opencbr.storage.store import ChunkStore
from tests.s3servers import BUCKET, S3Server


class Backend(Protocol):
    # Whether a put of an existing chunk refreshes its time (local: yes; S3: no, garbage
    # collection relies on the database's writer exclusion instead: store.py).
    refreshes_mtime_on_put: bool

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
    refreshes_mtime_on_put = True

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


class S3Backend:
    """An S3ChunkStore on a fresh prefix of moto's bucket, opened through `open_store`."""

    retry_delays: tuple[float, ...] = (0.05, 0.2, 0.5, 1.0, 2.0)
    refreshes_mtime_on_put = False

    def __init__(self, server: S3Server) -> None:
        self.server = server
        self.base = server.fresh_url()

    def url(self) -> str:
        return self.base

    def open(self) -> ChunkStore:
        return open_store(self.url(), options=self.server.options(), retry_delays=self.retry_delays)

    def plant_partial_write(self, blob: bytes) -> None:
        """Nothing: a PUT is atomic on S3, so a writer killed mid-put leaves no object (the
        store never starts multipart uploads, which `partial_writes` counts)."""

    def partial_writes(self) -> int:
        location = self.base.removeprefix(f"s3://{BUCKET}/")
        uploads = _boto(self.server).list_multipart_uploads(Bucket=BUCKET, Prefix=location)
        return len(uploads.get("Uploads", []))

    def backdate_chunk(self, digest: str, seconds: float) -> None:
        # S3 cannot set LastModified; moto runs in this process, so its model can.
        from moto.s3.models import s3_backends

        key = f"{self.base.removeprefix(f's3://{BUCKET}/')}/chunks/{digest[:2]}/{digest}"
        for backend in s3_backends.values():
            for regional in backend.values():
                bucket = regional.buckets.get(BUCKET)
                if bucket is not None and key in bucket.keys:
                    fake = bucket.keys[key]
                    fake.last_modified = fake.last_modified - timedelta(seconds=seconds)
                    return
        raise AssertionError(f"no such key in moto: {key}")


class FaultyS3Backend(S3Backend):
    def url(self) -> str:
        return f"faulty+{self.base}?seed=1"


class FlakyS3Backend(S3Backend):
    retry_delays = (0.0,) * 5

    def url(self) -> str:
        return f"faulty+{self.base}?fail_put=0.1&fail_get=0.1&fail_other=0.1"


def _boto(server: S3Server) -> Any:
    import boto3  # moto's dependency, for what obstore cannot ask (multipart uploads)

    from tests.s3servers import ACCESS_KEY, SECRET_KEY

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


LOCAL_BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "local": LocalBackend,
    "faulty-local": FaultyLocalBackend,
    "flaky-local-retried": FlakyLocalBackend,
}
S3_BACKENDS: dict[str, Callable[[S3Server], Backend]] = {
    "s3": S3Backend,
    "faulty-s3": FaultyS3Backend,
    "flaky-s3-retried": FlakyS3Backend,
}
BACKENDS = sorted([*LOCAL_BACKENDS, *S3_BACKENDS])
# The S3 variants (moto in this process) cost most of the contract suite's time: `make unit`
# leaves them out (marked slow), `make test` runs them.
BACKEND_PARAMS = [
    pytest.param(name, marks=pytest.mark.slow) if name in S3_BACKENDS else name for name in BACKENDS
]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param in S3_BACKENDS:
        return S3_BACKENDS[request.param](request.getfixturevalue("moto_s3"))
    return LOCAL_BACKENDS[request.param](tmp_path / "store")


@pytest.fixture
def store(backend: Backend) -> Iterator[ChunkStore]:
    opened = backend.open()
    yield opened
    opened.close()
