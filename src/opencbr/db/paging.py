"""Pages of a list: `limit`/`offset` like CBR, plus `marker` for openstacksdk.

Lists are ordered newest first (created_at, then id, both descending) unless the caller
names another order (`SortKey`s; backups take CBR's `sort`), always ending with the id so
that the order is total. A marker is the id of the last item of the previous page; the
next page holds the items strictly after it in that same order (keyset paging: the
marker's own sort values are read and compared, so a page never repeats or skips an item
whatever the order). Nullable keys sort their nulls last in both directions, on SQLite and
PostgreSQL alike. A marker is looked up within the caller's project only: another
project's id is as unknown as an id that never existed (it must not tell the caller that
the id exists elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from opencbr.errors import INVALID_PARAMETER, CbrError

T = TypeVar("T")
MAX_LIMIT = 1000
# Databases take OFFSET as a signed 64-bit integer (2**63 and above failed there with a 500);
# no listing comes near 2**31 rows, so larger offsets are refused as invalid.
MAX_OFFSET = 2**31 - 1


@dataclass(frozen=True)
class PageRequest:
    limit: int = MAX_LIMIT
    offset: int = 0
    marker: str | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    count: int
    limit: int
    offset: int


@dataclass(frozen=True)
class SortKey:
    """One key of a list's order; `nullable` keys put their nulls last."""

    column: InstrumentedAttribute[Any]
    descending: bool = True
    nullable: bool = False

    def clause(self) -> Any:
        ordered = self.column.desc() if self.descending else self.column.asc()
        return ordered.nulls_last() if self.nullable else ordered

    def beyond(self, value: Any) -> Any:
        """Rows whose key comes strictly after `value` in this key's order."""
        if value is None:
            return false()  # nulls come last: nothing follows a null
        past = self.column < value if self.descending else self.column > value
        return or_(past, self.column.is_(None)) if self.nullable else past

    def equal(self, value: Any) -> Any:
        return self.column.is_(None) if value is None else self.column == value


def fetch_page(
    session: Session,
    query: Select[T],
    created_at: InstrumentedAttribute[datetime],
    ident: InstrumentedAttribute[str],
    request: PageRequest,
    in_project: ColumnElement[bool],
    order: Sequence[SortKey] = (),
) -> Page[T]:
    """Run `query` (already filtered) as one page; `count` is the total number of matches.

    `in_project` is the caller's project condition (`Vault.project_id == ...`): the marker
    is looked up under it. `order` replaces the default newest-first order; `ident`
    (descending) ends it unless it names `ident` itself.
    """
    keys = _total_order(order or (SortKey(created_at),), ident)
    count = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    if request.marker:
        query = query.where(_after_marker(session, keys, ident, request.marker, in_project))
    query = query.order_by(*(key.clause() for key in keys))
    items = list(session.scalars(query.limit(request.limit).offset(request.offset)))
    return Page(items, count, request.limit, request.offset)


def _total_order(order: Sequence[SortKey], ident: InstrumentedAttribute[str]) -> list[SortKey]:
    """`order`, ended by the id (unique) so that no two rows tie."""
    keys = list(order)
    if not any(key.column is ident for key in keys):
        keys.append(SortKey(ident))
    return keys


def _after_marker(
    session: Session,
    keys: list[SortKey],
    ident: InstrumentedAttribute[str],
    marker: str,
    in_project: ColumnElement[bool],
) -> Any:
    """Rows strictly after the marker's row: the first key beyond it, or equal and the
    second beyond, and so on (a lexicographic comparison that honours each direction)."""
    row = session.execute(
        select(*(key.column for key in keys)).where(ident == marker, in_project)
    ).first()
    if row is None:
        raise CbrError(INVALID_PARAMETER, f"marker {marker} does not exist")
    alternatives = []
    equal_so_far: list[Any] = []
    for key, value in zip(keys, row, strict=True):
        alternatives.append(and_(*equal_so_far, key.beyond(value)))
        equal_so_far.append(key.equal(value))
    return or_(*alternatives)
