"""Shared fixtures: a database per test (SQLite and PostgreSQL), the app, and callers."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from opencbr.db.migrate import upgrade
from opencbr.db.models import Base
from opencbr.db.session import Database
from tests.s3servers import ACCESS_KEY, BUCKET, SECRET_KEY, S3Server, SeaweedFS, require_weed
from tests.services import POSTGRES_ADMIN_URL, REDIS_URL, require_postgres, require_redis

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped at the end."""
    if not require_postgres():
        pytest.skip("PostgreSQL is not running here (CI=true makes this a failure)")
    name = f"opencbr_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
        # A throwaway database: a commit need not wait for the WAL to reach the disk (what
        # a test sees is the same; only a crash of the PostgreSQL server could lose it).
        connection.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    db = Database(url)
    upgrade(db)
    db.dispose()
    yield url
    admin.dispose()
    drop_database_in_background(name)


@pytest.fixture(scope="session")
def postgres_database(postgres_url: str) -> Iterator[Database]:
    """The session database's engine, shared by the tests (each empties it at its end): a
    new engine per test opened new connections (a server process each, on PostgreSQL) and
    compiled every statement again (SQLAlchemy caches compiled statements per engine):
    ~40 ms of every API test."""
    db = Database(postgres_url)
    yield db
    db.dispose()


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A new PostgreSQL database, not migrated (the processes under test migrate it),
    dropped at the end."""
    if not require_postgres():
        pytest.skip("PostgreSQL is not running here (CI=true makes this a failure)")
    name = f"opencbr_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_queue_url() -> Iterator[str]:
    """The test Redis database, emptied of opencbr's queue keys before and after."""
    if not require_redis():
        pytest.skip("Redis is not running here (CI=true makes this a failure)")
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = ("huey.redis.opencbr", "huey.schedule.opencbr", "huey.results.opencbr")
    client.delete(*keys)
    try:
        yield REDIS_URL
    finally:
        client.delete(*keys)
        client.close()


def drop_database_in_background(name: str) -> None:
    """Drop the session's database from a process the session does not wait for: DROP
    DATABASE waits for a checkpoint of the whole server, seconds on a quiet machine and
    tens of them on a busy one, and nothing in the session needs it done."""
    statement = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    subprocess.run(
        [sys.executable, "-c", _DROP_SCRIPT, POSTGRES_ADMIN_URL, statement],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=30,
    )


# The child forks and exits at once; its own child, in a session of its own (no Ctrl-C of
# the run reaches it), drops the database.
_DROP_SCRIPT = """
import os, sys
if os.fork():
    os._exit(0)
os.setsid()
from sqlalchemy import create_engine, text
engine = create_engine(sys.argv[1], isolation_level="AUTOCOMMIT")
with engine.connect() as connection:
    connection.execute(text(sys.argv[2]))
"""


def _empty_all_tables(db: Database) -> None:
    """Delete every row, children first. DELETE, not TRUNCATE: a test leaves a few rows,
    and TRUNCATE's new files per table cost ~0.3 s a test where DELETE costs ~10 ms."""
    with db.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """The session's migrated SQLite database, shared by its tests as PostgreSQL's is
    (`postgres_database`)."""
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'opencbr.db'}")
    upgrade(db)
    yield db
    db.dispose()


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """An empty, migrated database of each backend; state never leaks between tests: each
    backend's one database is shared by the session's tests, and emptied after each."""
    db: Database = request.getfixturevalue(f"{request.param}_database")
    try:
        yield db
    finally:
        _empty_all_tables(db)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    """moto's S3 server in this process (port 0), with the bucket `BUCKET`; tests use
    fresh prefixes of it, so they never see each other's objects."""
    import boto3  # moto's own dependency; imported here, not by every test run
    from moto.s3.responses import S3Response
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S3Response, "put_object", _atomic_create(S3Response.put_object))
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        s3 = S3Server(f"http://{host}:{port}")
        boto3.client(
            "s3",
            endpoint_url=s3.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ).create_bucket(Bucket=BUCKET)
        yield s3
        server.stop()


def _atomic_create(put_object: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """moto's PUT, with `If-None-Match: *` decided atomically, as S3 decides it: moto looks
    for the key, then writes, so two concurrent creates of one key could both succeed (the
    contract test of "stored exactly once under concurrency" failed 1 run in many on a
    loaded machine, against moto, never against SeaweedFS)."""
    creating = threading.Lock()

    def put(response: Any) -> Any:
        if response.headers.get("If-None-Match") == "*":
            with creating:
                return put_object(response)
        return put_object(response)

    return put


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """SeaweedFS `weed mini` for this session (see tests/s3servers.py); tests that kill it
    must start it again before they end."""
    server = SeaweedFS(require_weed(), tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs(weed: SeaweedFS) -> S3Server:
    """The SeaweedFS S3 endpoint, with the bucket `BUCKET`."""
    return S3Server(weed.endpoint)
