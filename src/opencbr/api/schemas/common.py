"""Shared wire conventions: strict request models, timestamps, paging parameters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from opencbr.db.paging import MAX_LIMIT, MAX_OFFSET, PageRequest

# Names of vaults, backups, policies: letters, digits, '_' and '-' (and CJK), 1-64 chars.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-\u4e00-\u9fa5]{1,64}$")]
Description = Annotated[str, StringConstraints(max_length=255, pattern=r"^[^<>]*$")]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class RequestModel(BaseModel):
    """Requests: wrong JSON types are refused (no "10" for 10); unknown fields are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def wire_time(value: datetime | None) -> str | None:
    """CBR's timestamp form: ISO-8601 UTC without zone, microseconds."""
    return value.isoformat(timespec="microseconds") if value is not None else None


def zulu_time(value: datetime | None) -> str | None:
    """Operation logs' form: seconds with a trailing Z."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def page_request(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    marker: Annotated[str | None, Query(max_length=64)] = None,
) -> PageRequest:
    return PageRequest(limit=limit, offset=offset, marker=marker or None)


class Tag(RequestModel):
    key: Annotated[str, StringConstraints(min_length=1, max_length=36)]
    value: Annotated[str, StringConstraints(max_length=43)] = ""


class TagOut(ResponseModel):
    key: str
    value: str


class BindRules(RequestModel):
    tags: Annotated[list[Tag], Field(max_length=5)] | None = None
