"""IAM-style permanent access keys at /v3.0/OS-CREDENTIAL/credentials (cbr-api.md §6.6).

Also served under ``/identity``. Authenticated by ``X-Auth-Token`` only. A user manages its
own keys; an admin also those of users it administers (see ``services.credentials``). The
secret is in the create response only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response

from opencbr.api.deps import DbDep, SettingsDep
from opencbr.api.schemas.credentials import (
    CredentialCreateBody,
    CredentialListResponse,
    CredentialResponse,
    CredentialUpdateBody,
    NewCredentialResponse,
    credential_out,
    new_credential_out,
)
from opencbr.errors import UNAUTHORIZED, CbrError
from opencbr.services import credentials, identity
from opencbr.services.identity import AuthContext

PATH = "/v3.0/OS-CREDENTIAL/credentials"
_keys = APIRouter(tags=["credentials"])


def token_caller(db: DbDep, x_auth_token: Annotated[str | None, Header()] = None) -> AuthContext:
    if not x_auth_token:
        raise CbrError(
            UNAUTHORIZED, "Incorrect IAM authentication information: x-auth-token not found"
        )
    return identity.context_for_token(db, x_auth_token)


TokenCallerDep = Annotated[AuthContext, Depends(token_caller)]


@_keys.post("", status_code=201, response_model=NewCredentialResponse)
def create_credential(
    body: CredentialCreateBody, ctx: TokenCallerDep, db: DbDep, settings: SettingsDep
) -> NewCredentialResponse:
    box = credentials.secret_box(settings)
    user_id = body.credential.user_id or ctx.user_id
    created = credentials.create(db, box, ctx, user_id, body.credential.description)
    return NewCredentialResponse(credential=new_credential_out(created.credential, created.secret))


@_keys.get("", response_model=CredentialListResponse)
def list_credentials(
    ctx: TokenCallerDep, db: DbDep, user_id: str | None = None
) -> CredentialListResponse:
    found = credentials.list_for_user(db, ctx, user_id or ctx.user_id)
    return CredentialListResponse(credentials=[credential_out(c) for c in found])


@_keys.get("/{access}", response_model=CredentialResponse)
def show_credential(access: str, ctx: TokenCallerDep, db: DbDep) -> CredentialResponse:
    return CredentialResponse(credential=credential_out(credentials.get(db, ctx, access)))


@_keys.put("/{access}", response_model=CredentialResponse)
def update_credential(
    access: str, body: CredentialUpdateBody, ctx: TokenCallerDep, db: DbDep
) -> CredentialResponse:
    changes = body.credential
    updated = credentials.update(db, ctx, access, changes.status, changes.description)
    return CredentialResponse(credential=credential_out(updated))


@_keys.delete("/{access}", status_code=204, response_class=Response)
def delete_credential(access: str, ctx: TokenCallerDep, db: DbDep) -> Response:
    credentials.delete(db, ctx, access)
    return Response(status_code=204)


# IAM's own path (the Huawei SDK calls it at the root of the endpoint's host), and the same
# under /identity with the rest of opencbr's Keystone subset.
router = APIRouter()
router.include_router(_keys, prefix=PATH)
router.include_router(_keys, prefix=f"/identity{PATH}", include_in_schema=False)
