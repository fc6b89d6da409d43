"""Request dependencies: the shared Database/Settings, and who is calling.

Every CBR route depends on `caller` (any role) or `writer` (admin or member). Both accept
`X-Auth-Token` (Keystone tokens) or an `SDK-HMAC-SHA256` signature (Huawei SDK AK/SK), and
require the path's project to be the credential's project (403 otherwise).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from opencbr.db.session import Database
from opencbr.errors import FORBIDDEN_ROLE, UNAUTHORIZED, WRONG_PROJECT, CbrError
from opencbr.jobs.queue import Jobs
from opencbr.services import identity
from opencbr.services.identity import AuthContext
from opencbr.settings import Settings


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ProjectId = Annotated[str, Path(max_length=64)]


async def _authenticate(request: Request, db: Database) -> AuthContext:
    token = request.headers.get("x-auth-token")
    if token:
        # The check reads the database: in the thread pool, like the signature check, so a
        # slow read never holds up the event loop and every other request with it.
        return await run_in_threadpool(identity.context_for_token, db, token)
    authorization = request.headers.get("authorization", "")
    if authorization.startswith("SDK-"):
        verify = request.app.state.verify_signature
        if verify is not None:
            context: AuthContext = await verify(request, db)
            return context
        raise CbrError(
            UNAUTHORIZED, "Incorrect IAM authentication information: verify aksk signature fail"
        )
    raise CbrError(UNAUTHORIZED, "Incorrect IAM authentication information: x-auth-token not found")


async def caller(request: Request, project_id: ProjectId, db: DbDep) -> AuthContext:
    """The authenticated caller, scoped to the project in the path."""
    context = await _authenticate(request, db)
    if context.project_id != project_id:
        raise CbrError(WRONG_PROJECT, "The credential is not valid for this project.")
    return context


async def writer(context: Annotated[AuthContext, Depends(caller)]) -> AuthContext:
    """A caller allowed to change things (roles admin or member; viewers only read)."""
    if not context.can_write:
        raise CbrError(FORBIDDEN_ROLE, "The viewer role may only read.")
    return context


CallerDep = Annotated[AuthContext, Depends(caller)]
WriterDep = Annotated[AuthContext, Depends(writer)]


def get_jobs(request: Request) -> Jobs:
    jobs: Jobs = request.app.state.jobs
    return jobs


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


JobsDep = Annotated[Jobs, Depends(get_jobs)]
RequestIdDep = Annotated[str, Depends(request_id)]
