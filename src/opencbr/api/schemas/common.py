"""Shared wire conventions: strict request models, timestamps, paging parameters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from opencbr.db.paging import MAX_LIMIT, MAX_OFFSET, PageRequest
from opencbr.errors import INVALID_PARAMETER, CbrError

# Names of vaults, backups, policies: letters, digits, '_' and '-' (and CJK), 1-64 chars.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-\u4e00-\u9fa5]{1,64}$")]
Description = Annotated[str, StringConstraints(max_length=255, pattern=r"^[^<>]*$")]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class RequestModel(BaseModel):
    """Requests: wrong JSON types are refused (no "10" for 10); unknown fields are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class QueryModel(BaseModel):
    """Query-string filters (`Annotated[Model, Query()]`): values arrive as text and are
    converted ("true" for True); parameters of no field (paging, unknown ones) are ignored."""

    model_config = ConfigDict(extra="ignore")


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def wire_time(value: datetime | None) -> str | None:
    """CBR's timestamp form: ISO-8601 UTC without zone, microseconds."""
    return value.isoformat(timespec="microseconds") if value is not None else None


def query_time(value: str | None, name: str) -> datetime | None:
    """Parse a `YYYY-MM-DDTHH:MM:SSZ` query parameter into naive UTC.

    A zone offset can carry a valid local time out of the years 1..9999 once moved to UTC
    (`0001-01-01T00:00:00+01:00`); that is an invalid parameter, not an overflow (a 500).
    """
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    except (ValueError, OverflowError):
        raise CbrError(
            INVALID_PARAMETER,
            f"{name} must look like 2018-02-01T12:00:00Z and lie within the years 1 to 9999 UTC",
        ) from None


def page_request(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    marker: Annotated[str | None, Query(max_length=64)] = None,
) -> PageRequest:
    return PageRequest(limit=limit, offset=offset, marker=marker or None)


# Tags (cbr-api.md §2.0 Tag): the key 1-36 letters, digits, '_', '-' (and CJK); the value
# up to 43 of those or '.', may be empty. Surrounding blanks are dropped, as CBR does.
TAG_KEY_PATTERN = r"^[A-Za-z0-9_\-\u4e00-\u9fa5]{1,36}$"
TAG_VALUE_PATTERN = r"^[A-Za-z0-9_.\-\u4e00-\u9fa5]{0,43}$"
TagKey = Annotated[str, StringConstraints(strip_whitespace=True, pattern=TAG_KEY_PATTERN)]
TagValue = Annotated[str, StringConstraints(strip_whitespace=True, pattern=TAG_VALUE_PATTERN)]


class Tag(RequestModel):
    key: TagKey
    value: TagValue = ""


class TagOut(ResponseModel):
    key: str
    value: str


class BindRules(RequestModel):
    tags: Annotated[list[Tag], Field(max_length=5)] | None = None
