"""HTTP flows against a real server, shared by the end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.e2e.conftest import Server, token_for


class Client:
    """A token-authenticated client of one project on a running server."""

    def __init__(self, server: Server, project_id: str) -> None:
        self.server = server
        self.project_id = project_id
        self.http = httpx.Client(
            base_url=f"{server.url}/v3/{project_id}",
            timeout=60,
            headers={"X-Auth-Token": token_for(server, project_id)},
        )

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.http.request(method, path, json=body, params=params or None)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def wait(
        self, path: str, done: Callable[[Any], bool], timeout: float = 300, **params: Any
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                body = self.call("GET", path, **params)
                if done(body):
                    return body
            except httpx.TransportError:
                pass  # the server is restarting
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out on {path}")
            time.sleep(0.2)

    def register_dir(self, name: str, path: str) -> str:
        body = {"instance": {"name": name, "path": path}}
        return str(self.call("POST", "/protectables/turbo/instances", body)["instance"]["id"])

    def vault(
        self, name: str, protect_type: str = "backup", resources: list[str] | None = None
    ) -> str:
        body = {
            "vault": {
                "name": name,
                "billing": {
                    "consistent_level": "crash_consistent",
                    "object_type": "turbo",
                    "protect_type": protect_type,
                    "size": 1000,
                },
                "resources": [{"id": r, "type": "OS::Sfs::Turbo"} for r in resources or []],
            }
        }
        return str(self.call("POST", "/vaults", body)["vault"]["id"])

    def start_backup(self, vault_id: str, name: str) -> str:
        body = {"checkpoint": {"vault_id": vault_id, "parameters": {"name": name}}}
        return str(self.call("POST", "/checkpoints", body)["checkpoint"]["id"])

    def finished_backup(self, checkpoint_id: str) -> dict[str, Any]:
        self.wait(
            f"/checkpoints/{checkpoint_id}", lambda b: b["checkpoint"]["status"] != "protecting"
        )
        backups = self.call("GET", "/backups", checkpoint_id=checkpoint_id)["backups"]
        assert len(backups) == 1
        backup: dict[str, Any] = backups[0]
        return backup

    def restore(self, backup_id: str, resource_id: str) -> dict[str, Any]:
        self.call(
            "POST", f"/backups/{backup_id}/restore", {"restore": {"resource_id": resource_id}}
        )

        def ended(body: Any) -> bool:
            return any(
                log["extra_info"].get("restore", {}).get("backup_id") == backup_id
                and log["status"] in ("success", "failed")
                for log in body["operation_logs"]
            )

        logs = self.wait("/operation-logs", ended, operation_type="restore")["operation_logs"]
        log: dict[str, Any] = next(
            x for x in logs if x["extra_info"]["restore"]["backup_id"] == backup_id
        )
        return log
