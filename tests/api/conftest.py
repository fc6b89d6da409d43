"""The app over HTTP (Starlette's TestClient) with a bootstrapped admin in two regions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from opencbr.app import create_app
from opencbr.db.session import Database
from opencbr.services import identity
from opencbr.settings import ProtectableRoot, Settings

PASSWORD = "correct horse battery"


@dataclass
class Env:
    client: TestClient
    settings: Settings
    db: Database
    projects: dict[str, str]  # region -> project id
    roots: dict[str, Path]  # region -> protectable root
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, region: str = "region1", user: str = "admin") -> str:
        key = (region, user)
        if key not in self._tokens:
            self._tokens[key] = issue(self.client, user, PASSWORD, self.projects[region])
        return self._tokens[key]

    def headers(self, region: str = "region1", user: str = "admin") -> dict[str, str]:
        return {"X-Auth-Token": self.token(region, user)}

    def url(self, region: str, path: str) -> str:
        return f"/v3/{self.projects[region]}{path}"

    def get(self, region: str, path: str, **kwargs: Any) -> Any:
        return self.client.get(self.url(region, path), headers=self.headers(region), **kwargs)

    def post(self, region: str, path: str, body: Any, **kwargs: Any) -> Any:
        return self.client.post(
            self.url(region, path), json=body, headers=self.headers(region), **kwargs
        )

    def put(self, region: str, path: str, body: Any) -> Any:
        return self.client.put(self.url(region, path), json=body, headers=self.headers(region))

    def delete(self, region: str, path: str) -> Any:
        return self.client.delete(self.url(region, path), headers=self.headers(region))

    def wait_for(
        self, region: str, path: str, done: Callable[[Any], bool], timeout: float = 120.0
    ) -> Any:
        """Poll GET `path` until `done(json)` holds; return the last body."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(region, path).json()
            if done(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting on {path}: {body}")
            time.sleep(0.1)


def issue(client: TestClient, user: str, password: str, project_id: str) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": "Default"}, "password": password}
                },
            },
            "scope": {"project": {"id": project_id}},
        }
    }
    response = client.post("/identity/v3/auth/tokens", json=body)
    assert response.status_code == 201, response.text
    return str(response.headers["X-Subject-Token"])


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    roots = [
        ProtectableRoot(project=region, path=tmp_path / "roots" / region)
        for region in ("region1", "region2")
    ]
    for root in roots:
        root.path.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "protectable_roots": roots,
        "reconcile_interval_seconds": 0.5,
        "lease_seconds": 5.0,
        "gc_safety_margin_seconds": 0.0,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def env(settings: Settings, database: Database) -> Iterator[Env]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    result = identity.bootstrap(database, settings, "admin", PASSWORD)
    for name, role in (("viewer", "viewer"), ("member", "member")):
        identity.create_user(database, name, PASSWORD)
        for region in result.projects.values():
            identity.grant_role(database, name, region, role)
    app = create_app(settings, database, migrate=False)
    with TestClient(app) as client:
        roots = {root.project: root.path for root in settings.protectable_roots}
        yield Env(client, settings, database, result.projects, roots)
