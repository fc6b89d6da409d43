"""The CBR calls the benchmark makes, over HTTP against the served process.

`Api` holds one keep-alive connection and a token per project. Polls sleep `POLL` between
requests: short enough that a 1 s operation is timed to within 10%, long enough that the
polling itself costs the server a few percent of one core.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

POLL = 0.05
POLL_TIMEOUT = 3600.0
VAULT_SIZE_GB = 10000  # never the limit: capacity checks must not fail a run


class ApiError(RuntimeError):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:500]}"
        )
        self.status = response.status_code
        self.code = _error_code(response)


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error_code", ""))
    except ValueError:
        return ""


class Api:
    def __init__(self, url: str, password: str, projects: dict[str, str]) -> None:
        self.url = url
        self.password = password
        self.projects = projects  # region -> project id
        self._http = httpx.Client(base_url=url, timeout=60)
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self._http.close()

    def token(self, region: str) -> str:
        if region not in self._tokens:
            self._tokens[region] = self._issue_token(self.projects[region])
        return self._tokens[region]

    def _issue_token(self, project_id: str) -> str:
        user = {"name": "admin", "domain": {"name": "Default"}, "password": self.password}
        body = {
            "auth": {
                "identity": {"methods": ["password"], "password": {"user": user}},
                "scope": {"project": {"id": project_id}},
            }
        }
        response = self._http.post("/identity/v3/auth/tokens", json=body)
        if response.status_code != 201:
            raise ApiError(response)
        return str(response.headers["X-Subject-Token"])

    def call(self, method: str, region: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """`method` /v3/<the region's project><path>; the JSON body, {} for an empty one."""
        headers = {"X-Auth-Token": self.token(region)}
        url = f"/v3/{self.projects[region]}{path}"
        response = self._http.request(method, url, headers=headers, **kwargs)
        if response.status_code >= 300:
            raise ApiError(response)
        return response.json() if response.content else {}

    def poll(
        self, region: str, path: str, done: Callable[[dict[str, Any]], bool], **params: Any
    ) -> dict[str, Any]:
        deadline = time.monotonic() + POLL_TIMEOUT
        while time.monotonic() < deadline:
            body = self.call("GET", region, path, params=params)
            if done(body):
                return body
            time.sleep(POLL)
        raise TimeoutError(f"GET {path} did not reach the expected state")

    # --- the resources the benchmark creates -----------------------------------------

    def register_directory(self, region: str, name: str, path: str) -> str:
        body = {"instance": {"name": name, "path": path}}
        return str(
            self.call("POST", region, "/protectables/turbo/instances", json=body)["instance"]["id"]
        )

    def create_vault(
        self, region: str, name: str, resource_ids: list[str], protect_type: str = "backup"
    ) -> str:
        billing = {
            "consistent_level": "crash_consistent",
            "object_type": "turbo",
            "protect_type": protect_type,
            "size": VAULT_SIZE_GB,
        }
        resources = [{"id": rid, "type": "OS::Sfs::Turbo"} for rid in resource_ids]
        body = {"vault": {"name": name, "billing": billing, "resources": resources}}
        return str(self.call("POST", region, "/vaults", json=body)["vault"]["id"])
