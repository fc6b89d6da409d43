"""Vault tag wire models: /vault/{vault_id}/tags, /vault/tags, /vault/resource_instances."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from opencbr.api.schemas.common import (
    TAG_KEY_PATTERN,
    TAG_VALUE_PATTERN,
    RequestModel,
    ResponseModel,
    Tag,
    TagOut,
)
from opencbr.api.schemas.vaults import VaultOut
from opencbr.db.paging import MAX_LIMIT, MAX_OFFSET, PageRequest
from opencbr.errors import INVALID_PARAMETER, CbrError
from opencbr.services.tags import InstanceQuery, TagFilter

MAX_KEYS_PER_REQUEST = 10
_SYS_TAGS_REFUSED = "sys_tags need the op_service role, which opencbr does not have"


def _no_sys_tags(sys_tags: list[Any] | None) -> None:
    if sys_tags:
        raise ValueError(_SYS_TAGS_REFUSED)


def _unique_keys(keys: list[str], name: str) -> None:
    if len(set(keys)) != len(keys):
        raise ValueError(f"{name} must not repeat a key")


class TagCreateBody(RequestModel):
    tag: Tag


# A key or value as a delete names it: CBR checks no charset on delete (a key that cannot
# exist is simply not found), only that the key is there.
LooseKey = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=127)]
LooseValue = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)]


class BatchTag(RequestModel):
    key: LooseKey
    value: LooseValue | None = None


class BatchTagsBody(RequestModel):
    action: Literal["create", "delete"]
    tags: Annotated[list[BatchTag], Field(min_length=1, max_length=MAX_KEYS_PER_REQUEST)] | None = (
        None
    )
    sys_tags: list[Any] | None = None

    @model_validator(mode="after")
    def _valid_for_action(self) -> BatchTagsBody:
        _no_sys_tags(self.sys_tags)
        if self.tags is None:
            raise ValueError("tags is required")
        if self.action == "create":
            _unique_keys([tag.key for tag in self.tags], "tags")
            for tag in self.tags:
                if not re.fullmatch(TAG_KEY_PATTERN, tag.key):
                    raise ValueError(f"tag key {tag.key!r} is not 1-36 letters, digits, _ or -")
                if not re.fullmatch(TAG_VALUE_PATTERN, tag.value or ""):
                    raise ValueError(
                        f"tag value {tag.value!r} is not 0-43 letters, digits, _, - or ."
                    )
        return self

    def to_set(self) -> list[tuple[str, str]]:
        return [(tag.key, tag.value or "") for tag in self.tags or []]

    def to_delete(self) -> list[tuple[str, str | None]]:
        return [(tag.key, tag.value) for tag in self.tags or []]


class VaultTagsResponse(ResponseModel):
    tags: list[TagOut]
    sys_tags: list[TagOut]


class ProjectTag(ResponseModel):
    key: str
    values: list[str]


class ProjectTagsResponse(ResponseModel):
    tags: list[ProjectTag]


# --- resource_instances ---------------------------------------------------------------


class TagsReq(RequestModel):
    key: LooseKey
    values: Annotated[list[LooseValue], Field(max_length=MAX_KEYS_PER_REQUEST)] = []

    @model_validator(mode="after")
    def _values(self) -> TagsReq:
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"values of {self.key!r} must not repeat")
        if "*" in self.values:
            raise ValueError("a value cannot be '*' alone ('*abc' matches values containing abc)")
        return self

    def filter(self) -> TagFilter:
        return TagFilter(self.key, tuple(self.values))


TagsList = Annotated[list[TagsReq], Field(min_length=1, max_length=MAX_KEYS_PER_REQUEST)]


class MatchReq(RequestModel):
    key: Literal["resource_name"]
    value: Annotated[str, StringConstraints(max_length=255)]


class ResourceInstancesBody(RequestModel):
    action: Literal["filter", "count"]
    tags: TagsList | None = None
    tags_any: TagsList | None = None
    not_tags: TagsList | None = None
    not_tags_any: TagsList | None = None
    without_any_tag: bool = False
    sys_tags: list[Any] | None = None
    # The SDK types both as strings; plain numbers are accepted as well.
    limit: str | int | None = None
    offset: str | int | None = None
    matches: Annotated[list[MatchReq], Field(min_length=1, max_length=1)] | None = None
    cloud_type: Literal["public", "hybrid"] | None = None
    object_type: Literal["server", "disk", "turbo"] | None = None

    @model_validator(mode="after")
    def _valid(self) -> ResourceInstancesBody:
        _no_sys_tags(self.sys_tags)
        for name in ("tags", "tags_any", "not_tags", "not_tags_any"):
            listed: list[TagsReq] = getattr(self, name) or []
            _unique_keys([tag.key for tag in listed], name)
        return self

    def query(self) -> InstanceQuery:
        match = self.matches[0].value if self.matches else None
        return InstanceQuery(
            tags=tuple(tag.filter() for tag in self.tags or []),
            tags_any=tuple(tag.filter() for tag in self.tags_any or []),
            not_tags=tuple(tag.filter() for tag in self.not_tags or []),
            not_tags_any=tuple(tag.filter() for tag in self.not_tags_any or []),
            without_any_tag=self.without_any_tag,
            name_equals=match if match == "" else None,
            name_contains=match or None,
            cloud_type=self.cloud_type,
            object_type=self.object_type,
            page=self._page(),
        )

    def _page(self) -> PageRequest:
        if self.action == "count":
            return PageRequest(limit=1)  # only the total is answered
        limit = _number(self.limit, "limit", MAX_LIMIT, 1, MAX_LIMIT)
        offset = _number(self.offset, "offset", 0, 0, MAX_OFFSET)
        return PageRequest(limit=limit, offset=offset)


def _number(raw: str | int | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    text = str(raw)
    if not re.fullmatch(r"[0-9]{1,10}", text) or not low <= int(text) <= high:
        raise CbrError(INVALID_PARAMETER, f"{name} must be a whole number from {low} to {high}")
    return int(text)


class ResourceDetail(ResponseModel):
    vault: VaultOut


class TagResource(ResponseModel):
    resource_id: str
    resource_name: str
    resource_detail: ResourceDetail
    tags: list[TagOut]
    sys_tags: list[TagOut]


class ResourceInstancesResponse(ResponseModel):
    resources: list[TagResource]
    total_count: int


class ResourceCountResponse(ResponseModel):
    total_count: int
