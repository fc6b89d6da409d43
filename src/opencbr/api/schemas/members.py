"""Backup sharing wire models (cbr-sdk-models.md `AddMembersReq`, `UpdateMember`, `Member`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from opencbr.api.schemas.common import (
    Identifier,
    QueryModel,
    RequestModel,
    ResponseModel,
    wire_time,
)
from opencbr.db.backups import BackupMember
from opencbr.services.members import MAX_MEMBERS, MemberFilter

ProjectId = Annotated[str, Field(min_length=1, max_length=64)]


class AddMembersBody(RequestModel):
    members: Annotated[list[ProjectId], Field(min_length=1, max_length=MAX_MEMBERS)]
    # Sharing with whole domains (accounts) is CBR's public beta: not offered here.
    domains: Annotated[list[str], Field(max_length=0)] | None = None


class UpdateMemberBody(RequestModel):
    """The member's answer; CBR sends it unwrapped (no "member" key)."""

    status: Literal["accepted", "rejected"]
    vault_id: Identifier | None = None


class MemberQuery(QueryModel):
    dest_project_id: str | None = None
    image_id: str | None = None
    status: Literal["pending", "accepted", "rejected"] | None = None
    vault_id: str | None = None
    sort: Annotated[str | None, Field(max_length=255)] = None

    def filters(self) -> MemberFilter:
        return MemberFilter(
            dest_project_id=self.dest_project_id,
            image_id=self.image_id,
            status=self.status,
            vault_id=self.vault_id,
            sort=self.sort,
        )


class MemberOut(ResponseModel):
    id: str
    backup_id: str
    dest_project_id: str
    status: str
    vault_id: str | None
    image_id: str | None
    created_at: str | None
    updated_at: str | None


class MemberResponse(ResponseModel):
    member: MemberOut


class MembersResponse(ResponseModel):
    members: list[MemberOut]


class MemberListResponse(ResponseModel):
    members: list[MemberOut]
    count: int


def member_out(member: BackupMember) -> MemberOut:
    return MemberOut(
        id=member.id,
        backup_id=member.backup_id,
        dest_project_id=member.dest_project_id,
        status=member.status,
        vault_id=member.vault_id,
        image_id=None,  # opencbr registers no images
        created_at=wire_time(member.created_at),
        updated_at=wire_time(member.updated_at),
    )
