"""SQLite's write path: its write-ahead log is checkpointed by a thread of the API process
(with or without embedded workers), not inside the commit of whichever request grows it
past SQLite's threshold, and it stays bounded; a large insert's larger page cache lasts
until its connection goes back to the pool."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from opencbr.db import session as db_session
from opencbr.db.migrate import upgrade
from opencbr.db.session import (
    LARGE_PAGE_CACHE_KIB,
    WAL_AUTOCHECKPOINT_PAGES,
    Database,
    large_page_cache,
)
from opencbr.settings import Settings
from tests.api.helpers import Env, make_settings

MiB = 1 << 20
BATCHES = 8


@pytest.fixture(params=[True, False], ids=["embedded-worker", "api-only"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return make_settings(tmp_path, embedded_worker=request.param)


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """A SQLite database of its own (the log of the shared one holds other tests' writes),
    checkpointed every 50 ms."""
    monkeypatch.setattr(db_session, "WAL_CHECKPOINT_SECONDS", 0.05)
    db = Database(f"sqlite:///{tmp_path / 'opencbr.db'}")
    upgrade(db)
    yield db
    db.dispose()


def _log_frames(db_file: Path) -> tuple[int, int]:
    """(frames in the log, frames of it copied into the database), read from the wal-index
    (https://sqlite.org/walformat.html: mxFrame at byte 16 of its header, nBackfill at 96)."""
    index = db_file.with_name(db_file.name + "-shm").read_bytes()[:100]
    (frames,) = struct.unpack_from("=I", index, 16)
    (copied,) = struct.unpack_from("=I", index, 96)
    return frames, copied


def _wait_checkpointed(db_file: Path) -> None:
    deadline = time.monotonic() + 30
    while (progress := _log_frames(db_file))[0] != progress[1]:
        assert time.monotonic() < deadline, f"the log was not checkpointed: {progress}"
        time.sleep(0.02)


def test_the_log_is_checkpointed_in_the_background_and_stays_bounded(env: Env) -> None:
    db_file = Path(str(env.db.engine.url.database))
    with env.db.engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages == WAL_AUTOCHECKPOINT_PAGES  # far above what one request writes
    with env.db.transaction() as session:
        session.execute(text("CREATE TABLE scratch (payload BLOB)"))
    for _ in range(BATCHES):
        with env.db.transaction() as session:
            session.execute(text("INSERT INTO scratch VALUES (randomblob(:size))"), {"size": MiB})
        frames, _copied = _log_frames(db_file)
        assert frames > 0  # written to the log; the commit checkpointed nothing itself
        _wait_checkpointed(db_file)
    # Each commit started the log again from its beginning: it holds about one batch, not
    # the BATCHES MiB written (nor SQLite's 4 MiB threshold, nor ours, 40 MiB).
    assert db_file.with_name(db_file.name + "-wal").stat().st_size < 3 * MiB


def test_a_large_insert_takes_a_large_page_cache_until_its_connection_is_returned(
    env: Env,
) -> None:
    def cache_size(connection: Any) -> int:
        return int(connection.exec_driver_sql("PRAGMA cache_size").scalar())

    with env.db.engine.connect() as connection:
        default = cache_size(connection)
    assert default != -LARGE_PAGE_CACHE_KIB
    with env.db.transaction() as session:
        large_page_cache(session)
        large_page_cache(session)  # twice: the size to go back to is still the default
        used = session.connection()
        assert cache_size(used) == -LARGE_PAGE_CACHE_KIB
        raw = used.connection.dbapi_connection
    # The same connection, back in the pool: its cache is the default again.
    assert raw is not None
    assert raw.execute("PRAGMA cache_size").fetchone()[0] == default
