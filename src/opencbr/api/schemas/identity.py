"""Keystone v3 wire models for password (and token re-scoping) authentication."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from opencbr.services.identity import PasswordAuth


class _Lenient(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class DomainRef(_Lenient):
    id: str | None = None
    name: str | None = None

    @property
    def ref(self) -> str | None:
        return self.id or self.name


class UserRef(_Lenient):
    id: str | None = None
    name: str | None = None
    domain: DomainRef | None = None
    password: str


class PasswordMethod(_Lenient):
    user: UserRef


class TokenMethod(_Lenient):
    id: str


class Identity(_Lenient):
    methods: list[str]
    password: PasswordMethod | None = None
    token: TokenMethod | None = None


class ProjectRef(_Lenient):
    id: str | None = None
    name: str | None = None
    domain: DomainRef | None = None


class Scope(_Lenient):
    project: ProjectRef | None = None


class Auth(_Lenient):
    identity: Identity
    scope: Scope | None = None


class AuthBody(_Lenient):
    auth: Auth

    def password_auth(self) -> PasswordAuth | None:
        identity, scope = self.auth.identity, self.auth.scope
        if identity.password is None or "password" not in identity.methods:
            return None
        user = identity.password.user
        project = scope.project if scope and scope.project else ProjectRef()
        return PasswordAuth(
            password=user.password,
            user_id=user.id,
            user_name=user.name,
            user_domain=user.domain.ref if user.domain else None,
            project_id=project.id,
            project_name=project.name,
            project_domain=project.domain.ref if project.domain else None,
        )


def version_document(base_url: str) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2023-01-01T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base_url}/identity/v3/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }
