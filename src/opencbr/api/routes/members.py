"""Backup sharing: /v3/{project_id}/backups/{backup_id}/members (services/members.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from opencbr.api.deps import CallerDep, DbDep, WriterDep
from opencbr.api.schemas.common import page_request
from opencbr.api.schemas.members import (
    AddMembersBody,
    MemberListResponse,
    MemberQuery,
    MemberResponse,
    MembersResponse,
    UpdateMemberBody,
    member_out,
)
from opencbr.db.paging import PageRequest
from opencbr.services import members

router = APIRouter(prefix="/v3/{project_id}/backups/{backup_id}/members", tags=["members"])


@router.post("", response_model=MembersResponse)
def add_member(backup_id: str, body: AddMembersBody, ctx: WriterDep, db: DbDep) -> MembersResponse:
    added = members.add(db, ctx, backup_id, body.members)
    return MembersResponse(members=[member_out(member) for member in added])


@router.get("", response_model=MemberListResponse)
def show_members_detail(
    backup_id: str,
    ctx: CallerDep,
    db: DbDep,
    query: Annotated[MemberQuery, Query()],
    page: Annotated[PageRequest, Depends(page_request)],
) -> MemberListResponse:
    found = members.list_page(db, ctx, backup_id, query.filters(), page)
    return MemberListResponse(members=[member_out(m) for m in found.items], count=found.count)


@router.get("/{member_id}", response_model=MemberResponse)
def show_member_detail(backup_id: str, member_id: str, ctx: CallerDep, db: DbDep) -> MemberResponse:
    return MemberResponse(member=member_out(members.get(db, ctx, backup_id, member_id)))


@router.put("/{member_id}", response_model=MemberResponse)
def update_member_status(
    backup_id: str, member_id: str, body: UpdateMemberBody, ctx: WriterDep, db: DbDep
) -> MemberResponse:
    member = members.answer(db, ctx, backup_id, member_id, body.status, body.vault_id)
    return MemberResponse(member=member_out(member))


@router.delete("/{member_id}", status_code=204, response_class=Response)
def delete_member(backup_id: str, member_id: str, ctx: WriterDep, db: DbDep) -> Response:
    members.remove(db, ctx, backup_id, member_id)
    return Response(status_code=204)
