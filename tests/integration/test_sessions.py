"""What a reading session sees: one snapshot for all its statements, on both databases
(SQLite's WAL gives it by itself; PostgreSQL's default, read committed, gives each
statement its own, and an answer built from several statements could mix two moments)."""

from __future__ import annotations

from sqlalchemy import func, select

from opencbr.db.service_state import ServiceValue
from opencbr.db.session import Database


def test_a_reading_session_does_not_see_what_commits_after_its_first_read(
    database: Database,
) -> None:
    with database.transaction() as session:
        session.add(ServiceValue(name="one", value="1"))
    count = select(func.count()).select_from(ServiceValue)
    with database.reading() as reader:
        assert reader.scalar(count) == 1
        with database.transaction() as writer:  # commits while the reader is open
            writer.add(ServiceValue(name="two", value="2"))
        assert reader.scalar(count) == 1
        assert reader.scalar(select(ServiceValue.value).where(ServiceValue.name == "two")) is None
    with database.reading() as reader:
        assert reader.scalar(count) == 2
