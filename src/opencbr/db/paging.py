"""Pages of a list: `limit`/`offset` like CBR, plus `marker` for openstacksdk.

Lists are ordered newest first (created_at, then id, both descending). A marker is the id
of the last item of the previous page; the next page holds the items strictly after it.
A marker is looked up within the caller's project only: another project's id is as unknown
as an id that never existed (it must not tell the caller that the id exists elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
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


def fetch_page(
    session: Session,
    query: Select[T],
    created_at: InstrumentedAttribute[datetime],
    ident: InstrumentedAttribute[str],
    request: PageRequest,
    in_project: ColumnElement[bool],
) -> Page[T]:
    """Run `query` (already filtered) as one page; `count` is the total number of matches.

    `in_project` is the caller's project condition (`Vault.project_id == ...`): the marker
    is looked up under it.
    """
    count = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    if request.marker:
        after = _after_marker(session, created_at, ident, request.marker, in_project)
        query = query.where(after)
    query = query.order_by(created_at.desc(), ident.desc())
    items = list(session.scalars(query.limit(request.limit).offset(request.offset)))
    return Page(items, count, request.limit, request.offset)


def _after_marker(
    session: Session,
    created_at: InstrumentedAttribute[datetime],
    ident: InstrumentedAttribute[str],
    marker: str,
    in_project: ColumnElement[bool],
) -> Any:
    row = session.execute(select(created_at, ident).where(ident == marker, in_project)).first()
    if row is None:
        raise CbrError(INVALID_PARAMETER, f"marker {marker} does not exist")
    marker_time, marker_id = row
    return or_(created_at < marker_time, and_(created_at == marker_time, ident < marker_id))
