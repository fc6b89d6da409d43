"""Bulk inserts convert values as SQLAlchemy would: a SQLite datetime's own fast path
writes exactly SQLAlchemy's text."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy.dialects import sqlite

from opencbr.db.bulk import _bind_processor, table_of
from opencbr.db.models import ReplicationRecord


def test_a_sqlite_datetime_is_written_as_sqlalchemy_writes_it() -> None:
    dialect = sqlite.dialect()
    column = table_of(ReplicationRecord).c.created_at
    sqlalchemys = column.type.dialect_impl(dialect).bind_processor(dialect)
    fast = _bind_processor(column, dialect)
    assert sqlalchemys is not None and fast is not None and fast is not sqlalchemys
    values = [
        datetime(2026, 11, 29, 13, 50, 7, 123456),
        datetime(2026, 11, 29, 13, 50, 7),  # no microseconds: still six digits
        datetime(1, 1, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
        datetime(2026, 11, 29, 13, 50, 7, 5, tzinfo=UTC),
        date(2026, 11, 29),
        None,
    ]
    assert [fast(value) for value in values] == [sqlalchemys(value) for value in values]
    assert fast(values[1]) == "2026-11-29 13:50:07.000000"
