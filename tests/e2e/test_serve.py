"""`opencbr serve` and `opencbr admin` as real processes, driven over real HTTP."""

from __future__ import annotations

import subprocess

import httpx

from tests.e2e.conftest import OPENCBR, Server, token_for


def test_first_start_bootstraps_an_admin_and_prints_how_to_log_in(server: Server) -> None:
    log = server.log()
    assert f"{server.url}/identity/v3" in log
    assert "admin-password" in log
    assert (server.data_dir / "admin-password").stat().st_mode & 0o077 == 0


def test_curl_style_vault_lifecycle_in_both_regions(server: Server) -> None:
    projects = {
        p["name"]: p["id"]
        for p in server.admin("bootstrap", "--user", "admin", "--password", server.password())[
            "projects"
        ]
    }
    for region, project_id in projects.items():
        headers = {"X-Auth-Token": token_for(server, project_id)}
        base = f"{server.url}/v3/{project_id}/vaults"
        body = {
            "vault": {
                "name": f"v-{region}",
                "billing": {
                    "consistent_level": "crash_consistent",
                    "object_type": "server",
                    "protect_type": "backup",
                    "size": 40,
                },
                "resources": [],
            }
        }
        created = httpx.post(base, json=body, headers=headers).json()["vault"]
        assert httpx.get(base, headers=headers).json()["count"] == 1
        updated = httpx.put(
            f"{base}/{created['id']}", json={"vault": {"name": "renamed"}}, headers=headers
        )
        assert updated.json()["vault"]["name"] == "renamed"
        assert httpx.delete(f"{base}/{created['id']}", headers=headers).status_code == 204
        assert httpx.get(base, headers=headers).json()["count"] == 0


def test_admin_commands_create_users_projects_and_grants(server: Server) -> None:
    project = server.admin("project", "create", "--name", "team-a", "--region", "region2")[
        "project"
    ]
    assert project["region"] == "region2"
    user = server.admin("user", "create", "--name", "alice", "--password", "s3cret-pw")["user"]
    grant = server.admin(
        "role", "grant", "--user", "alice", "--project", "team-a", "--role", "viewer"
    )
    assert grant["role_assignment"] == {
        "user_id": user["id"],
        "project_id": project["id"],
        "role": "viewer",
    }
    token = token_for(server, project["id"], "alice", "s3cret-pw")
    headers = {"X-Auth-Token": token}
    assert httpx.get(f"{server.url}/v3/{project['id']}/vaults", headers=headers).status_code == 200
    again = server.admin("bootstrap", "--user", "admin", "--password", "ignored")
    assert again["user"]["created"] is False


def test_admin_errors_exit_non_zero_with_one_line(server: Server) -> None:
    done = subprocess.run(
        [
            *OPENCBR,
            "admin",
            "role",
            "grant",
            "--user",
            "ghost",
            "--project",
            "region1",
            "--role",
            "admin",
            "--config",
            str(server.config),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert done.stderr.strip().startswith("error: no user")
