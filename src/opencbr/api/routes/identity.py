"""Identity (Keystone v3 subset) at /identity: discovery, tokens, project lookup."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from opencbr.api.deps import DbDep, SettingsDep
from opencbr.api.schemas.identity import (
    AuthBody,
    projects_body,
    region_projects_body,
    token_body,
    version_document,
)
from opencbr.db.identity import Token
from opencbr.errors import INVALID_PARAMETER, UNAUTHORIZED, CbrError
from opencbr.services import identity
from opencbr.services.identity import AuthContext

router = APIRouter(prefix="/identity", tags=["identity"])
# The Huawei SDK, given a region but no project id, asks `GET /v3/projects?name=<region>` at
# the root of the IAM endpoint it was given; serving it there too lets that endpoint be ours.
root_router = APIRouter()


@router.get("")
@router.get("/")
def versions(settings: SettingsDep) -> JSONResponse:
    return JSONResponse(
        {"versions": {"values": [version_document(settings.base_url)]}}, status_code=300
    )


@router.get("/v3")
@router.get("/v3/")
def version_v3(settings: SettingsDep) -> dict[str, Any]:
    return {"version": version_document(settings.base_url)}


@router.post("/v3/auth/tokens", status_code=201)
def issue_token(
    body: AuthBody,
    db: DbDep,
    settings: SettingsDep,
    nocatalog: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    if "token" in body.auth.identity.methods and body.auth.identity.token is not None:
        return _rescope(body, db, settings, nocatalog is None)
    auth = body.password_auth()
    if auth is None:
        raise CbrError(INVALID_PARAMETER, "only the password and token methods are supported")
    issued = identity.issue_token(db, settings, auth)
    payload = token_body(settings, issued.row, issued.roles, nocatalog is None, "password")
    return JSONResponse(payload, status_code=201, headers={"X-Subject-Token": issued.token})


def _rescope(body: AuthBody, db: DbDep, settings: SettingsDep, with_catalog: bool) -> JSONResponse:
    assert body.auth.identity.token is not None
    project = body.auth.scope.project if body.auth.scope and body.auth.scope.project else None
    issued = identity.rescope_token(
        db,
        settings,
        body.auth.identity.token.id,
        project.id if project else None,
        project.name if project else None,
    )
    payload = token_body(settings, issued.row, issued.roles, with_catalog, "token")
    return JSONResponse(payload, status_code=201, headers={"X-Subject-Token": issued.token})


def _subject(
    db: DbDep, x_auth_token: str | None, x_subject_token: str | None, action: str
) -> tuple[Token, tuple[str, ...]]:
    if not x_auth_token:
        raise CbrError(
            UNAUTHORIZED, "Incorrect IAM authentication information: x-auth-token not found"
        )
    return identity.subject_token(db, x_auth_token, x_subject_token or "", action)


@router.get("/v3/auth/tokens")
def validate_token(
    db: DbDep,
    settings: SettingsDep,
    x_auth_token: Annotated[str | None, Header()] = None,
    x_subject_token: Annotated[str | None, Header()] = None,
    nocatalog: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    row, roles = _subject(db, x_auth_token, x_subject_token, "validate_token")
    payload = token_body(settings, row, roles, nocatalog is None, "password")
    return JSONResponse(payload, headers={"X-Subject-Token": x_subject_token or ""})


@router.head("/v3/auth/tokens")
def check_token(
    db: DbDep,
    x_auth_token: Annotated[str | None, Header()] = None,
    x_subject_token: Annotated[str | None, Header()] = None,
) -> Response:
    _subject(db, x_auth_token, x_subject_token, "check_token")
    return Response(status_code=200)


@router.delete("/v3/auth/tokens", status_code=204)
def revoke_token(
    db: DbDep,
    x_auth_token: Annotated[str | None, Header()] = None,
    x_subject_token: Annotated[str | None, Header()] = None,
) -> Response:
    _subject(db, x_auth_token, x_subject_token, "revoke_token")
    identity.revoke_token(db, x_subject_token or "")
    return Response(status_code=204)


@router.get("/v3/projects")
@root_router.get("/v3/projects", tags=["identity"])
async def list_projects(
    request: Request, db: DbDep, settings: SettingsDep, name: str | None = None
) -> dict[str, Any]:
    """Used by the Huawei SDK (AK/SK signed) to find the project named after a region."""
    verify = request.app.state.verify_signature
    token = request.headers.get("x-auth-token")
    if token:
        context = await run_in_threadpool(identity.context_for_token, db, token)
    elif verify is not None and request.headers.get("authorization", "").startswith("SDK-"):
        context = await verify(request, db, require_project=False)
    else:
        raise CbrError(
            UNAUTHORIZED, "Incorrect IAM authentication information: x-auth-token not found"
        )
    projects = await run_in_threadpool(
        identity.projects_of_user, db, context.user_id, name, context.key_projects
    )
    return projects_body(settings.base_url, projects)


async def any_caller(request: Request, db: DbDep) -> AuthContext:
    """The caller of a call about no one project: a token's user, or a signed request's
    (in the project of X-Project-Id when it names one, else with no project)."""
    token = request.headers.get("x-auth-token")
    if token:
        return await run_in_threadpool(identity.context_for_token, db, token)
    verify = request.app.state.verify_signature
    if verify is not None and request.headers.get("authorization", "").startswith("SDK-"):
        context: AuthContext = await verify(request, db, require_project=False)
        return context
    raise CbrError(UNAUTHORIZED, "Incorrect IAM authentication information: x-auth-token not found")


AnyCallerDep = Annotated[AuthContext, Depends(any_caller)]


@root_router.get("/v3/region-projects", tags=["identity"])
def list_region_projects(ctx: AnyCallerDep, db: DbDep, settings: SettingsDep) -> dict[str, Any]:
    """CBR's list_projects: the caller's projects, every region (one listener serves all)."""
    projects = identity.projects_of_user(db, ctx.user_id, None, ctx.key_projects)
    return region_projects_body(settings.base_url, projects)


@root_router.get("/v3/domain/{domain_name}/projects", tags=["identity"])
def list_domain_projects(
    domain_name: Annotated[str, Path(max_length=255)], ctx: AnyCallerDep, db: DbDep
) -> dict[str, Any]:
    """The caller's projects in the named domain (tenant). Another tenant's domain and an
    unknown one answer alike: an empty list."""
    projects = identity.projects_of_user(db, ctx.user_id, None, ctx.key_projects)
    return {
        "projects": [
            {"project_id": p.id, "project_name": p.name}
            for p in projects
            if domain_name in (p.domain.name, p.domain_id)
        ]
    }
