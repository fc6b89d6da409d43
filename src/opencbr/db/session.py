"""Engine and sessions. SQLite runs in WAL mode with foreign keys on; PostgreSQL as is.

`Database` is created once per process and shared by threads; each unit of work opens its
own short transaction with `db.transaction()`. Long I/O (backups, copies) must never run
inside a transaction: SQLite has one writer at a time.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = structlog.get_logger(__name__)

READ_ONLY = "opencbr_read_only"
PRIVATE_FILE_MODE = 0o600
# The files SQLite keeps beside a database (the write-ahead log, its index, the journal).
_SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")
# SQLite checkpoints the write-ahead log into the database inside the commit that takes it
# past this many pages (SQLite's default: 1,000, 4 MiB). A request that wrote 10,000
# replication records paid ~20 ms for it. Every API process checkpoints on a thread of its
# own instead (`WalCheckpoints`, every WAL_CHECKPOINT_SECONDS); this only bounds the log,
# about 40 MiB, where none runs (worker processes alone) or it stalls.
WAL_AUTOCHECKPOINT_PAGES = 10_000
WAL_CHECKPOINT_SECONDS = 1.0
# The page cache a SQLite transaction that inserts thousands of rows takes
# (`large_page_cache`); SQLite's default is 2,000 KiB.
LARGE_PAGE_CACHE_KIB = 16_384
_LARGE_CACHE = "opencbr_large_page_cache"


def make_private_sqlite_file(path: Path) -> None:
    """Create the SQLite database at `path` as 0600 if absent, and take group and other
    permissions off it and its companion files if present.

    SQLite creates a database 0644 (less the umask) and gives its WAL and shared-memory
    files the database's own mode; a file created 0600 first keeps all three private.
    """
    if path.parent.is_dir():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE))
    for name in _SQLITE_COMPANIONS:
        companion = path.with_name(path.name + name)
        try:
            mode = stat.S_IMODE(companion.lstat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077 and companion.is_file() and not companion.is_symlink():
            companion.chmod(mode & ~0o077)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy own transaction boundaries (the pysqlite driver's own are unsafe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        # Back to the size it had (SQLite frees the pages above it at once): a pooled
        # connection keeps no large cache between transactions.
        previous = record.info.pop(_LARGE_CACHE, None)
        if previous is not None:
            dbapi_connection.execute(f"PRAGMA cache_size={int(previous)}")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that later writes
        # can fail with "database is locked" without waiting for busy_timeout. Read-only
        # work (`Database.reading`) begins deferred, so readers never wait for a writer.
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def large_page_cache(session: Session) -> None:
    """Give the session's SQLite connection a page cache of LARGE_PAGE_CACHE_KIB until it
    goes back to the pool (after the commit). For a transaction that inserts thousands of
    rows into a table with several indexes: with the default cache, pages of the indexes
    are evicted and read again mid-insert (10,000 replication records into a table of
    100,000: 116 -> 97 ms). Nothing for PostgreSQL."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    info = connection.connection.info
    if _LARGE_CACHE not in info:
        info[_LARGE_CACHE] = connection.exec_driver_sql("PRAGMA cache_size").scalar()
    connection.exec_driver_sql(f"PRAGMA cache_size=-{LARGE_PAGE_CACHE_KIB}")


def make_engine(url: str) -> Engine:
    # hide_parameters: a database error's text would otherwise carry the statement's values
    # (token digests, key material, tenants' names) into logs and tracebacks.
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            hide_parameters=True,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True
    )


class Database:
    """The process-wide engine plus a session factory. Thread-safe."""

    def __init__(self, url: str) -> None:
        self.url = url
        database_file = sqlite_file(url)
        if database_file is not None:
            make_private_sqlite_file(database_file)
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        reader = self.engine.execution_options(**{READ_ONLY: True})
        if not self.is_sqlite:
            # One snapshot for all the statements of a reading session, as SQLite's WAL
            # gives: under read committed each statement saw its own, so an answer built
            # from several (replication status: lag from one, last success from the next)
            # could mix two moments. Read-only, so it never fails to serialize.
            reader = reader.execution_options(isolation_level="REPEATABLE READ")
        self._readers = sessionmaker(reader, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only, seeing one snapshot of the database (as of its first
        statement); on SQLite it does not take the write lock."""
        with self._readers.begin() as session:
            yield session

    def checkpoint_wal(self) -> None:
        """Copy what the SQLite write-ahead log holds into the database, without waiting
        for readers or writers (PASSIVE): once all of it is copied, the next commit writes
        the log from its start again, so the log stays as large as what is written between
        two checkpoints. Nothing for PostgreSQL."""
        if not self.is_sqlite:
            return
        connection = self.engine.raw_connection()
        try:
            # Outside a transaction (the driver's own are off: see _configure_sqlite).
            cursor = connection.cursor()
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cursor.close()
        finally:
            connection.close()

    def dispose(self) -> None:
        self.engine.dispose()


class WalCheckpoints:
    """A thread that checkpoints a SQLite database's write-ahead log every
    WAL_CHECKPOINT_SECONDS (`Database.checkpoint_wal`) from `start` to `stop`: requests'
    commits then find the log short and never pay for a checkpoint. The checkpoint is of
    the file, so one process's thread serves every process that writes it."""

    def __init__(self, db: Database, on_start: Callable[[], None] = lambda: None) -> None:
        self._db = db
        self._on_start = on_start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(WAL_CHECKPOINT_SECONDS,), name="wal-checkpoints", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self, interval: float) -> None:
        self._on_start()
        while not self._stop.wait(interval):
            try:
                self._db.checkpoint_wal()
            except Exception:
                log.exception("WAL checkpoint failed; trying again next interval")
