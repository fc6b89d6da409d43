"""Bulk inserts that bypass SQLAlchemy's per-value parameter processing: every insert of
many rows goes through `insert_many` (or `insert_rows`, its form for rows as dicts)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import ColumnDefault, Table, insert
from sqlalchemy.orm import Session

from opencbr.db.base import Base


def table_of(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


def insert_rows(session: Session, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """`insert_many` of rows given as dicts, all with the same keys."""
    if rows:
        keys = tuple(rows[0])
        values = [tuple(row[key] for key in keys) for row in rows]
        insert_many(session, table_of(model), {}, keys, values)


def insert_many(
    session: Session,
    table: Table,
    common: dict[str, Any],
    keys: tuple[str, ...],
    rows: list[tuple[Any, ...]],
) -> None:
    """Insert rows that share the `common` values, each row giving the values of `keys`,
    with one executemany of the driver.

    The same as `session.execute(insert(table), [common | dict(zip(keys, row)) ...])` for a
    fraction of the cost: SQLAlchemy converts each value of each row, which for 1,000
    records costs more than SQLite's insert itself. Here the common values are converted
    once, and only the columns of `keys` that need it (SQLite: datetimes to text) value by
    value. A column given neither way takes its default, which must be a constant.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    compiled = insert(table).compile(dialect=dialect, column_keys=[*keys, *common])
    names = list(compiled.positiontup or compiled.binds)

    def convert(name: str) -> Callable[[Any], Any] | None:
        return table.c[name].type.dialect_impl(dialect).bind_processor(dialect)

    fixed = {}
    for name in (name for name in names if name not in keys):
        value = common[name] if name in common else _constant_default(table, name)
        fixed[name] = process(value) if (process := convert(name)) else value
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    for index, key in enumerate(keys):
        if process := convert(key):
            columns[index] = [process(value) for value in columns[index]]
    every, tail = (*keys, *fixed), tuple(fixed.values())
    if compiled.positional:
        pick = itemgetter(*(every.index(name) for name in names))
        params: list[Any] = [pick(row + tail) for row in zip(*columns, strict=True)]
    else:
        params = [dict(zip(every, row + tail, strict=True)) for row in zip(*columns, strict=True)]
    connection.exec_driver_sql(compiled.string, params)


def _constant_default(table: Table, name: str) -> Any:
    default = table.c[name].default
    if not isinstance(default, ColumnDefault) or not default.is_scalar:
        raise ValueError(f"{table.name}.{name} has no constant default: give its value")
    return default.arg
