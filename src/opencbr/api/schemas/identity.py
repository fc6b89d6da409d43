"""Keystone v3 on the wire: the password (and token re-scoping) request bodies, and the
token, project-list and version documents answered (built as plain dicts: they carry
Keystone's own names and shapes, which no client reads back into a model)."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict

from opencbr.db.identity import Project, Token
from opencbr.services.identity import PasswordAuth
from opencbr.settings import Settings


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


# --- response bodies ---------------------------------------------------------------------


def _keystone_time(token_row: Token, attribute: str) -> str:
    return str(getattr(token_row, attribute).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def _catalog(settings: Settings, project_id: str, region: str) -> list[dict[str, Any]]:
    """Identity in every region; CBR only in the project's own region, as on OTC, where a
    project belongs to one region: a client configured for another region fails to find
    its endpoint instead of silently working on this project's region."""
    base = settings.base_url

    def endpoint(kind: str, region: str, url: str) -> dict[str, str]:
        digest = hashlib.sha256(f"{kind}{region}{url}".encode()).hexdigest()[:32]
        return {
            "id": digest,
            "interface": "public",
            "region": region,
            "region_id": region,
            "url": url,
        }

    regions = [region.name for region in settings.regions]
    return [
        {
            "type": "identity",
            "name": "keystone",
            "id": "identity",
            "endpoints": [endpoint("identity", r, f"{base}/identity/v3") for r in regions],
        },
        {
            "type": "cbr",
            "name": "cbr",
            "id": "cbr",
            "endpoints": [endpoint("cbr", region, f"{base}/v3/{project_id}")],
        },
    ]


def token_body(
    settings: Settings, row: Token, roles: tuple[str, ...], with_catalog: bool, method: str
) -> dict[str, Any]:
    """The `token` document of an issued token (with its service catalog unless asked not)."""
    user, project = row.user, row.project
    body: dict[str, Any] = {
        "methods": [method],
        "expires_at": _keystone_time(row, "expires_at"),
        "issued_at": _keystone_time(row, "issued_at"),
        "audit_ids": [row.audit_id],
        "user": {
            "id": user.id,
            "name": user.name,
            "password_expires_at": None,
            "domain": {"id": user.domain.id, "name": user.domain.name},
        },
        "project": {
            "id": project.id,
            "name": project.name,
            "domain": {"id": project.domain.id, "name": project.domain.name},
        },
        "roles": [{"id": hashlib.md5(role.encode()).hexdigest(), "name": role} for role in roles],
    }
    if with_catalog:
        body["catalog"] = _catalog(settings, project.id, project.region)
    return {"token": body}


def projects_body(base: str, projects: list[Project]) -> dict[str, Any]:
    """`GET /v3/projects`: one page holding every project."""
    return {
        "projects": [_project_out(base, p) for p in projects],
        "links": {"self": f"{base}/identity/v3/projects", "next": None, "previous": None},
    }


def region_projects_body(base: str, projects: list[Project]) -> dict[str, Any]:
    """`GET /v3/region-projects` (CBR's list_projects): the caller's projects."""
    return {
        "projects": [_project_out(base, p) for p in projects],
        "links": {"self": f"{base}/identity/v3/auth/projects"},
    }


def _project_out(base: str, project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "domain_id": project.domain_id,
        "enabled": project.enabled,
        "is_domain": False,
        "parent_id": project.domain_id,
        "description": "",
        "links": {"self": f"{base}/identity/v3/projects/{project.id}"},
    }
