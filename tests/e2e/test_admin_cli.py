"""`opencbr admin` as the operator runs it: a real process, started from another working
directory than the configuration's, against a real data directory; the effect of each
command checked over HTTP on a real `opencbr serve`."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from huaweicloudsdkcore.auth.credentials import BasicCredentials  # type: ignore[import-untyped]
from huaweicloudsdkcore.sdk_request import SdkRequest  # type: ignore[import-untyped]
from huaweicloudsdkcore.signer.signer import Signer  # type: ignore[import-untyped]
from sqlalchemy import create_engine, inspect

from tests.e2e.flows import OPENCBR, Server, free_port, token_for, write_config

pytestmark = pytest.mark.slow  # real `opencbr` processes: seconds a test

USER_PASSWORD = "correct horse battery"


def run_admin(
    *args: str,
    cwd: Path,
    config: Path | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    command = [*OPENCBR, "admin", *args]
    if config is not None:
        command += ["--config", str(config)]
    environment = {key: value for key, value in os.environ.items() if key != "OPENCBR_CONFIG"}
    return subprocess.run(
        command,
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
        env={**environment, **(env or {})},
    )


def ok(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def refused(done: subprocess.CompletedProcess[str], starts: str) -> str:
    """The one `error:` line of a failed command (after the line naming the database)."""
    assert done.returncode != 0
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"error: {starts}"), done.stderr
    assert "Traceback" not in done.stderr
    return errors[0]


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory that is neither the data directory nor the config's."""
    directory = tmp_path / "somewhere-else"
    directory.mkdir()
    return directory


@pytest.fixture
def bootstrapped(tmp_path: Path, elsewhere: Path) -> Path:
    """A configuration whose data directory `admin bootstrap` created (no server)."""
    config = write_config(tmp_path / "site", free_port())
    ok(
        run_admin(
            "bootstrap",
            "--user",
            "admin",
            "--password-stdin",
            cwd=elsewhere,
            config=config,
            stdin="pw\n",
        )
    )
    return config


# --- the right database, or a clear refusal ---------------------------------------------


def test_without_configuration_admin_refuses_instead_of_creating_a_new_database(
    elsewhere: Path,
) -> None:
    done = run_admin("project", "create", "--name", "p", "--region", "region1", cwd=elsewhere)
    line = refused(done, "no data directory at ")
    assert "--config or OPENCBR_CONFIG" in line
    assert done.stderr.splitlines()[0].startswith("database: sqlite:///")
    assert list(elsewhere.iterdir()) == []  # no .opencbr left behind


def test_admin_from_another_directory_uses_the_configured_database(
    bootstrapped: Path, elsewhere: Path, tmp_path: Path
) -> None:
    data = tmp_path / "site" / "data"
    created = ok(
        run_admin(
            "project",
            "create",
            "--name",
            "team-a",
            "--region",
            "region2",
            cwd=elsewhere,
            config=bootstrapped,
        )
    )
    other = tmp_path / "other"
    other.mkdir()
    by_variable = run_admin("project", "list", cwd=other, env={"OPENCBR_CONFIG": str(bootstrapped)})
    names = {project["name"]: project["id"] for project in ok(by_variable)["projects"]}
    assert names["team-a"] == created["project"]["id"]
    assert by_variable.stderr.splitlines()[0] == (
        f"database: sqlite:///{data / 'opencbr.db'} (data_dir {data}, configuration {bootstrapped})"
    )
    assert list(other.iterdir()) == []


def test_an_empty_postgresql_database_is_refused_until_bootstrap(
    tmp_path: Path, elsewhere: Path, empty_postgres_url: str
) -> None:
    """A mistyped database name must not start an empty deployment: an admin command on a
    PostgreSQL database without opencbr's schema is refused and creates no table."""
    url = empty_postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    env = {"OPENCBR_DATABASE_URL": url, "OPENCBR_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "data").mkdir()
    line = refused(run_admin("user", "list", cwd=elsewhere, env=env), "no opencbr database at ")
    assert "admin bootstrap" in line
    engine = create_engine(empty_postgres_url)
    try:
        with engine.connect() as connection:
            assert inspect(connection).get_table_names() == []
    finally:
        engine.dispose()
    bootstrap = ("bootstrap", "--user", "admin", "--password-stdin")
    ok(run_admin(*bootstrap, cwd=elsewhere, env=env, stdin="pw\n"))
    assert ok(run_admin("user", "list", cwd=elsewhere, env=env))["users"]


def test_bootstrap_without_a_password_refuses_before_creating_anything(
    tmp_path: Path, elsewhere: Path
) -> None:
    """No --password, no --password-stdin and no terminal, for a user that cannot exist
    yet (a new deployment): one line, and no data directory or database left behind."""
    config = write_config(tmp_path / "site", free_port())
    shutil.rmtree(tmp_path / "site" / "data")
    done = run_admin("bootstrap", "--user", "admin", cwd=elsewhere, config=config)
    refused(done, "no password: use --password-stdin")
    assert not (tmp_path / "site" / "data").exists()


def test_an_existing_but_empty_data_dir_is_refused_until_bootstrap(
    tmp_path: Path, elsewhere: Path
) -> None:
    config = write_config(tmp_path / "site", free_port())  # creates an empty data dir
    refused(run_admin("user", "list", cwd=elsewhere, config=config), "no database at ")
    assert list((tmp_path / "site" / "data").iterdir()) == []
    ok(
        run_admin(
            "bootstrap",
            "--user",
            "admin",
            "--password-stdin",
            cwd=elsewhere,
            config=config,
            stdin="pw\n",
        )
    )
    assert [
        user["name"]
        for user in ok(run_admin("user", "list", cwd=elsewhere, config=config))["users"]
    ] == ["admin"]


def test_the_database_line_masks_the_password(tmp_path: Path, elsewhere: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "opencbr.toml"
    config.write_text(
        f'data_dir = "{data}"\n'
        'database_url = "postgresql+psycopg://opencbr:hunter2@127.0.0.1:1/opencbr"\n'
    )
    done = run_admin("user", "list", cwd=elsewhere, config=config)
    refused(done, "cannot use the database postgresql+psycopg://opencbr:***@127.0.0.1:1/opencbr")
    assert done.stderr.splitlines()[0].startswith(
        "database: postgresql+psycopg://opencbr:***@127.0.0.1:1/opencbr"
    )
    assert "hunter2" not in done.stderr


# --- passwords ---------------------------------------------------------------------------


def test_passwords_come_from_stdin_and_empty_ones_are_refused(
    bootstrapped: Path, elsewhere: Path
) -> None:
    def create(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return run_admin("user", "create", *args, cwd=elsewhere, config=bootstrapped, stdin=stdin)

    refused(create("--name", "a", "--password-stdin", stdin="\n"), "the password must not be empty")
    refused(create("--name", "a", "--password", ""), "the password must not be empty")
    refused(create("--name", "a"), "no password: use --password-stdin")  # no terminal, no flag
    refused(create("--name", "a", "--password", "x", "--password-stdin"), "give --password or")
    assert (
        ok(run_admin("user", "list", cwd=elsewhere, config=bootstrapped))["users"][0]["name"]
        == "admin"
    )
    created = create("--name", "a", "--password-stdin", stdin="s3cret pw\nignored\n")
    assert ok(created)["user"]["name"] == "a"
    assert "warning" not in created.stderr
    argv = create("--name", "b", "--password", "visible")
    assert ok(argv)["user"]["name"] == "b"
    assert "warning: --password is visible to other users" in argv.stderr


def run_on_a_terminal(args: list[str], answers: list[str], cwd: Path) -> tuple[int, str]:
    """Run `opencbr admin ...` with a pseudo-terminal as its controlling terminal, typing
    `answers` at its prompts; its exit status and everything the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal
        os.chdir(cwd)
        os.execvp(OPENCBR[0], [*OPENCBR, "admin", *args])
    shown = b""
    answered = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
        # One answer per prompt shown, never ahead: getpass flushes what was typed early.
        if answered < len(answers) and shown.lower().count(b"password:") > answered:
            os.write(fd, answers[answered].encode() + b"\n")
            answered += 1
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_on_a_terminal_the_password_is_asked_twice_without_echo(
    bootstrapped: Path, elsewhere: Path
) -> None:
    args = ["user", "create", "--name", "carol", "--config", str(bootstrapped)]
    code, shown = run_on_a_terminal(args, ["typed-secret", "typed-secret"], elsewhere)
    assert code == 0, shown
    assert "Password:" in shown and "Repeat the password:" in shown
    assert "typed-secret" not in shown
    code, shown = run_on_a_terminal(
        ["user", "create", "--name", "dave", "--config", str(bootstrapped)],
        ["one", "two"],
        elsewhere,
    )
    assert code != 0
    assert "error: the passwords do not match" in shown


# --- against a running server: the effect at once, over HTTP --------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("admin-served")
    port = free_port()
    instance = Server(write_config(tmp, port), tmp / "data", port)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


class Admin:
    """`opencbr admin ... --config <the server's>` from a directory of its own."""

    def __init__(self, server: Server, cwd: Path) -> None:
        self.server = server
        self.cwd = cwd

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_admin(*args, cwd=self.cwd, config=self.server.config, stdin=stdin)

    def __call__(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        return ok(self.run(*args, stdin=stdin))

    def project_id(self, name: str) -> str:
        projects = self("project", "list")["projects"]
        return str(next(project["id"] for project in projects if project["name"] == name))

    def user_with_role(self, name: str, project: str, role: str = "member") -> dict[str, Any]:
        user = self("user", "create", "--name", name, "--password-stdin", stdin=USER_PASSWORD)
        self("role", "grant", "--user", name, "--project", project, "--role", role)
        return dict(user["user"])


@pytest.fixture
def admin(served: Server, elsewhere: Path) -> Admin:
    return Admin(served, elsewhere)


def vaults(server: Server, project_id: str, token: str) -> int:
    url = f"{server.url}/v3/{project_id}/vaults"
    return httpx.get(url, headers={"X-Auth-Token": token}, timeout=30).status_code


def password_token_status(server: Server, project_id: str, user: str, password: str) -> int:
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
    url = f"{server.url}/identity/v3/auth/tokens"
    return httpx.post(url, json=body, timeout=30).status_code


def signed_vaults(server: Server, project_id: str, key: dict[str, Any]) -> int:
    """GET the project's vaults signed with the access key, as the Huawei SDK signs."""
    host = f"127.0.0.1:{server.port}"
    request = SdkRequest(
        method="GET",
        schema="http",
        host=host,
        resource_path=f"/v3/{project_id}/vaults",
        query_params=[],
        header_params={
            "Content-Type": "application/json",
            "X-Sdk-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "X-Project-Id": project_id,
        },
        body=None,
    )
    Signer(BasicCredentials(key["access"], key["secret"], project_id)).sign(request)
    return requests.get(request.url, headers=request.header_params, timeout=30).status_code


def test_disabling_a_user_refuses_its_tokens_and_keys_at_once(admin: Admin) -> None:
    project = admin.project_id("region1")
    admin.user_with_role("erin", "region1")
    token = token_for(admin.server, project, "erin", USER_PASSWORD)
    key = admin("credential", "create", "--user", "erin")
    assert vaults(admin.server, project, token) == 200
    assert signed_vaults(admin.server, project, key) == 200

    assert admin("user", "disable", "erin")["user"]["enabled"] is False
    assert vaults(admin.server, project, token) == 401
    assert signed_vaults(admin.server, project, key) == 401
    assert password_token_status(admin.server, project, "erin", USER_PASSWORD) == 401

    assert admin("user", "enable", "erin")["user"]["enabled"] is True
    assert vaults(admin.server, project, token) == 401  # revoked for good
    assert signed_vaults(admin.server, project, key) == 200
    fresh = token_for(admin.server, project, "erin", USER_PASSWORD)
    assert vaults(admin.server, project, fresh) == 200


def test_disabling_a_project_refuses_its_tokens_and_keys_at_once(admin: Admin) -> None:
    admin("project", "create", "--name", "team-off", "--region", "region2")
    project = admin.project_id("team-off")
    admin.user_with_role("frank", "team-off")
    token = token_for(admin.server, project, "frank", USER_PASSWORD)
    key = admin("credential", "create", "--user", "frank")

    assert admin("project", "disable", "team-off")["project"]["enabled"] is False
    assert vaults(admin.server, project, token) == 401
    assert signed_vaults(admin.server, project, key) == 401
    assert password_token_status(admin.server, project, "frank", USER_PASSWORD) == 401

    assert admin("project", "enable", project)["project"]["enabled"] is True
    assert vaults(admin.server, project, token) == 401
    assert signed_vaults(admin.server, project, key) == 200
    assert (
        vaults(admin.server, project, token_for(admin.server, project, "frank", USER_PASSWORD))
        == 200
    )


def test_deleting_a_user_removes_its_roles_tokens_and_keys(admin: Admin) -> None:
    project = admin.project_id("region1")
    user = admin.user_with_role("gina", "region1")
    token = token_for(admin.server, project, "gina", USER_PASSWORD)
    key = admin("credential", "create", "--user", "gina")

    deleted = admin("user", "delete", "gina")
    assert deleted["deleted"]["user"]["id"] == user["id"]
    assert vaults(admin.server, project, token) == 401
    assert signed_vaults(admin.server, project, key) == 401
    grants = admin("role", "list", "--project", "region1")["role_assignments"]
    assert user["id"] not in {grant["user_id"] for grant in grants}
    refused(admin.run("user", "show", "gina"), "no user 'gina'")
    refused(admin.run("user", "delete", "gina"), "no user 'gina'")
    # A new user of the same name starts with nothing of the old one's.
    admin("user", "create", "--name", "gina", "--password-stdin", stdin="another one")
    shown = admin("user", "show", "gina")["user"]
    assert (shown["roles"], shown["access_keys"], shown["live_tokens"]) == ([], [], 0)
    refused(admin.run("credential", "delete", "--access", key["access"]), "")


def test_user_list_and_show(admin: Admin) -> None:
    project = admin.project_id("region2")
    user = admin.user_with_role("hana", "region2", role="viewer")
    token_for(admin.server, project, "hana", USER_PASSWORD)
    key = admin("credential", "create", "--user", "hana")
    listed = {entry["name"]: entry for entry in admin("user", "list")["users"]}
    assert listed["hana"]["id"] == user["id"] and listed["hana"]["enabled"] is True
    assert "password_hash" not in json.dumps(listed)
    shown = admin("user", "show", user["id"])["user"]
    assert shown["name"] == "hana"
    assert shown["roles"] == [
        {
            "user_id": user["id"],
            "user_name": "hana",
            "project_id": project,
            "project_name": "region2",
            "role": "viewer",
        }
    ]
    assert shown["access_keys"] == [key["access"]]
    assert shown["live_tokens"] == 1
    refused(admin.run("user", "show", "nobody"), "no user 'nobody'")
    refused(admin.run("user", "disable", "nobody"), "no user 'nobody'")


def test_set_password_changes_it_and_revokes_the_users_tokens(admin: Admin) -> None:
    project = admin.project_id("region1")
    admin.user_with_role("ivan", "region1")
    token = token_for(admin.server, project, "ivan", USER_PASSWORD)
    changed = admin("user", "set-password", "ivan", "--password-stdin", stdin="brand new pw\n")
    assert changed["password_set"] is True
    assert vaults(admin.server, project, token) == 401
    assert password_token_status(admin.server, project, "ivan", USER_PASSWORD) == 401
    assert password_token_status(admin.server, project, "ivan", "brand new pw") == 201
    refused(
        admin.run("user", "set-password", "ivan", "--password-stdin", stdin="\n"),
        "the password must not be empty",
    )
    refused(
        admin.run("user", "set-password", "nobody", "--password-stdin", stdin="x\n"),
        "no user 'nobody'",
    )


def test_bootstrap_leaves_an_existing_admins_password_and_says_so(admin: Admin) -> None:
    project = admin.project_id("region1")
    done = admin.run("bootstrap", "--user", "admin", "--password-stdin", stdin="not applied\n")
    result = ok(done)
    assert result["user"]["created"] is False and result["user"]["password_set"] is False
    assert "its password was NOT changed" in done.stderr
    assert password_token_status(admin.server, project, "admin", "not applied") == 401
    assert password_token_status(admin.server, project, "admin", admin.server.password()) == 201


def test_role_list_and_revoke(admin: Admin) -> None:
    project = admin.project_id("region2")
    user = admin.user_with_role("judy", "region2")
    token = token_for(admin.server, project, "judy", USER_PASSWORD)
    mine = admin("role", "list", "--user", "judy")["role_assignments"]
    assert [(grant["project_name"], grant["role"]) for grant in mine] == [("region2", "member")]
    everyone = admin("role", "list")["role_assignments"]
    assert {"admin", "judy"} <= {grant["user_name"] for grant in everyone}

    revoked = admin("role", "revoke", "--user", "judy", "--project", "region2")
    assert revoked["revoked"]["user_id"] == user["id"]
    assert vaults(admin.server, project, token) == 401
    assert admin("role", "list", "--user", "judy")["role_assignments"] == []
    refused(
        admin.run("role", "revoke", "--user", "judy", "--project", "region2"),
        "user 'judy' has no role in project 'region2'",
    )
    refused(admin.run("role", "list", "--project", "nowhere"), "no project 'nowhere'")


def test_project_list_and_delete_refusing_a_project_with_vaults(admin: Admin) -> None:
    admin("project", "create", "--name", "team-del", "--region", "region1")
    project = admin.project_id("team-del")
    admin.user_with_role("kim", "team-del")
    token = token_for(admin.server, project, "kim", USER_PASSWORD)
    body = {
        "vault": {
            "name": "keep-me",
            "billing": {
                "consistent_level": "crash_consistent",
                "object_type": "turbo",
                "protect_type": "backup",
                "size": 1,
            },
            "resources": [],
        }
    }
    url = f"{admin.server.url}/v3/{project}/vaults"
    headers = {"X-Auth-Token": token}
    vault = httpx.post(url, json=body, headers=headers, timeout=30).json()["vault"]
    listed = {entry["name"]: entry for entry in admin("project", "list")["projects"]}
    assert listed["team-del"]["vaults"] == 1 and listed["team-del"]["region"] == "region1"

    refused(
        admin.run("project", "delete", "team-del"),
        "project 'team-del' still has 1 vault(s): delete them first",
    )
    assert vaults(admin.server, project, token) == 200  # nothing was touched
    deleted = httpx.delete(f"{url}/{vault['id']}", headers=headers, timeout=30)
    assert deleted.status_code == 204
    wait_until_gone(admin, "team-del")

    assert admin("project", "delete", "team-del")["deleted"]["project"]["id"] == project
    assert "team-del" not in {entry["name"] for entry in admin("project", "list")["projects"]}
    assert vaults(admin.server, project, token) == 401
    assert admin("role", "list", "--user", "kim")["role_assignments"] == []
    refused(admin.run("project", "delete", "team-del"), "no project 'team-del'")


def wait_until_gone(admin: Admin, project: str) -> None:
    """A deleted vault's row may outlive the DELETE answer until its cleanup ran."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = {entry["name"]: entry for entry in admin("project", "list")["projects"]}
        if listed[project]["vaults"] == 0:
            return
        time.sleep(0.5)
    raise AssertionError("the vault was not deleted")
