"""Pages of a list: `limit`/`offset` like CBR, plus `marker` for openstacksdk.

Lists are ordered newest first (created_at, then id, both descending). A marker is the id
of the last item of the previous page; the next page holds the items strictly after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from opencbr.errors import INVALID_PARAMETER, CbrError

T = TypeVar("T")
MAX_LIMIT = 1000


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


def fetch_page(
    session: Session,
    query: Select[T],
    created_at: InstrumentedAttribute[datetime],
    ident: InstrumentedAttribute[str],
    request: PageRequest,
) -> Page[T]:
    """Run `query` (already filtered) as one page; `count` is the total number of matches."""
    count = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    if request.marker:
        query = query.where(_after_marker(session, query, created_at, ident, request.marker))
    query = query.order_by(created_at.desc(), ident.desc())
    items = list(session.scalars(query.limit(request.limit).offset(request.offset)))
    return Page(items, count, request.limit, request.offset)


def _after_marker(
    session: Session,
    query: Select[Any],
    created_at: InstrumentedAttribute[datetime],
    ident: InstrumentedAttribute[str],
    marker: str,
) -> Any:
    row = session.execute(select(created_at, ident).where(ident == marker)).first()
    if row is None:
        raise CbrError(INVALID_PARAMETER, f"marker {marker} does not exist")
    marker_time, marker_id = row
    return or_(created_at < marker_time, and_(created_at == marker_time, ident < marker_id))
