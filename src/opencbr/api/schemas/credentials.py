"""IAM permanent access keys on the wire: /v3.0/OS-CREDENTIAL/credentials (cbr-api.md §6.6)."""

from __future__ import annotations

from typing import Literal

from opencbr.api.schemas.common import Description, Identifier, RequestModel, ResponseModel
from opencbr.db.credentials import Credential


class CredentialCreate(RequestModel):
    user_id: Identifier | None = None  # IAM requires it; opencbr defaults to the caller
    description: Description = ""


class CredentialCreateBody(RequestModel):
    credential: CredentialCreate


class CredentialUpdate(RequestModel):
    status: Literal["active", "inactive"] | None = None
    description: Description | None = None


class CredentialUpdateBody(RequestModel):
    credential: CredentialUpdate


class CredentialOut(ResponseModel):
    user_id: str
    access: str
    status: str
    create_time: str
    description: str


class NewCredentialOut(CredentialOut):
    secret: str


class CredentialResponse(ResponseModel):
    credential: CredentialOut


class NewCredentialResponse(ResponseModel):
    credential: NewCredentialOut


class CredentialListResponse(ResponseModel):
    credentials: list[CredentialOut]


def iam_time(credential: Credential) -> str:
    """IAM's timestamp form, e.g. 2020-01-08T02:26:19.708000Z."""
    return credential.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def credential_out(credential: Credential) -> CredentialOut:
    return CredentialOut(
        user_id=credential.user_id,
        access=credential.access,
        status=credential.status,
        create_time=iam_time(credential),
        description=credential.description,
    )


def new_credential_out(credential: Credential, secret: str) -> NewCredentialOut:
    return NewCredentialOut(**credential_out(credential).model_dump(), secret=secret)
