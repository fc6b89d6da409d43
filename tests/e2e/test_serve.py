"""`opencbr serve` and `opencbr admin` as real processes, driven over real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.flows import OPENCBR, Client, Server, free_port, token_for, write_config

pytestmark = pytest.mark.slow  # real `opencbr` processes: seconds a test


@pytest.fixture(scope="module")
def server(module_server: Server) -> Server:
    """One server for the module's tests that need one running: each uses its own names."""
    return module_server


def test_first_start_bootstraps_an_admin_and_prints_how_to_log_in(server: Server) -> None:
    log = server.log()
    assert f"{server.url}/identity/v3" in log
    assert "admin-password" in log
    assert (server.data_dir / "admin-password").stat().st_mode & 0o077 == 0


def test_curl_style_vault_lifecycle_in_both_regions(server: Server) -> None:
    for region, project_id in server.projects().items():
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
    assert done.stderr.splitlines()[-1].startswith("error: no user")


# --- start-up: the port first, one line per error, private files --------------------


def run_serve(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`opencbr serve` that is expected to stop by itself (a start-up error)."""
    return subprocess.run(
        [*OPENCBR, "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_error_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode != 0
    assert done.stderr.splitlines() == [expected], done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_busy_port_ends_serve_before_it_announces_or_starts_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port)
        shutil.rmtree(tmp_path / "data")
        done = run_serve(config)
    assert_one_error_line(done, f"error: cannot listen on 127.0.0.1:{port}: address already in use")
    assert "listening" not in done.stdout
    assert not (tmp_path / "data").exists()  # no database, no queue, no worker


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        (
            'listen = "nowhere"\n',
            "error: configuration error: listen: Value error, listen must be HOST:PORT",
        ),
        (
            'log_format = "xml"\n',
            "error: configuration error: log_format: Value error, log_format must be one of plain, json",
        ),
        (
            "worker_threads = 0\n",
            "error: configuration error: worker_threads: Input should be greater than or equal to 1",
        ),
        ("listen = \n", "error: configuration error: Invalid value (at line 1, column 10)"),
        (
            'database_url = "postgresql+psycopg://opencbr:hunter2@127.0.0.1:1/opencbr"\n',
            "error: cannot use the database postgresql+psycopg://opencbr:***@127.0.0.1:1/opencbr: connection failed: ",
        ),
    ],
    ids=["bad listen", "bad log_format", "bad number", "bad TOML", "database unreachable"],
)
def test_a_start_up_error_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, config_text: str, expected: str
) -> None:
    config = tmp_path / "opencbr.toml"
    if "listen" not in config_text:
        config_text += f'listen = "127.0.0.1:{free_port()}"\n'
    config.write_text(f'{config_text}data_dir = "{tmp_path / "data"}"\n')
    done = run_serve(config)
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert line.startswith(expected), line
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr
    assert "listening" not in done.stdout


def test_a_list_variable_that_is_not_json_is_named_in_one_line(tmp_path: Path) -> None:
    """OPENCBR_REGIONS=eu,us: the line names the variable and what it must be (pydantic's
    own text named neither)."""
    config = write_config(tmp_path, free_port())
    done = subprocess.run(
        [*OPENCBR, "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPENCBR_REGIONS": "eu,us"},
    )
    assert_one_error_line(
        done, "error: configuration error: OPENCBR_REGIONS must be JSON (a list or a table)"
    )


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    done = run_serve(tmp_path / "absent.toml")
    assert_one_error_line(
        done,
        f"error: configuration error: [Errno 2] No such file or directory: '{tmp_path / 'absent.toml'}'",
    )


def modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_serve_keeps_the_data_dir_and_every_file_in_it_private(tmp_path: Path) -> None:
    """A fresh data dir (default regions and resource roots inside it), used once."""
    port = free_port()
    config = tmp_path / "opencbr.toml"
    # Defaults but the ports: the metrics' 9464 may be another test's or process's.
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nlisten = "127.0.0.1:{port}"\n'
        f'metrics_listen = "127.0.0.1:{free_port()}"\n'
    )
    instance = Server(config, tmp_path / "data", port)
    (tmp_path / "data").mkdir(mode=0o700)  # the harness writes serve.log into it
    instance.start()
    try:
        client = Client(instance, instance.projects()["region1"])
        with client.http:
            client.vault("v")  # it serves
    finally:
        instance.stop()
    found = modes(tmp_path / "data")
    assert found["."] == 0o700
    for name in ("opencbr.db", "queue.db", "admin-password", "secret.key", "master.key"):
        assert found.get(name, 0o600) == 0o600, name
    assert {
        "master.key",  # made at the first start: wraps the data keys of encryption at rest
        "opencbr.db",
        "queue.db",
        "admin-password",
        "store/region1",
        "resources/region1",
    } <= set(found)
    loose = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
    assert loose == {}


def test_serve_takes_group_and_other_access_off_an_existing_data_dir(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    data = tmp_path / "data"
    data.chmod(0o755)
    with sqlite3.connect(data / "opencbr.db") as connection:  # as an older version left it
        connection.execute("PRAGMA user_version = 0")
    (data / "opencbr.db").chmod(0o644)
    (data / "admin-password").write_text("from-before\n")
    (data / "admin-password").chmod(0o644)
    instance = Server(config, data, port)
    instance.start()
    try:
        assert instance.password() == "from-before"
    finally:
        instance.stop()
    found = modes(data)
    assert found["."] == 0o700
    loose = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
    assert loose == {}


def test_an_unusable_region_storage_is_one_error_line_and_the_others_work(
    tmp_path: Path,
) -> None:
    port = free_port()
    (tmp_path / "a-file").write_text("not a directory\n")
    regions = (
        f'[[regions]]\nname = "region1"\nstorage = "{tmp_path / "store1"}"\n'
        f'[[regions]]\nname = "region2"\nstorage = "{tmp_path / "a-file" / "store2"}"\n'
    )
    instance = Server(write_config(tmp_path, port, regions), tmp_path / "data", port)
    instance.start()
    try:
        lines = [line for line in instance.log().splitlines() if "level=error" in line]
        assert lines == [
            lines[0].split(" level=")[0]
            + ' level=error logger=opencbr.cli event="region storage unusable" region=region2'
            + f' reason="Not a directory: {tmp_path / "a-file" / "store2"}"'
        ]
        client = Client(instance, instance.projects()["region1"])
        with client.http:
            client.vault("v")  # it serves
    finally:
        instance.stop()
    assert "Traceback" not in instance.log()


# --- the log of an unexpected error -------------------------------------------------


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_an_unexpected_error_is_logged_once_short_and_without_secrets(
    tmp_path: Path, log_format: str
) -> None:
    """A real failure: the tokens table disappears under the running server."""
    port = free_port()
    instance = Server(
        write_config(tmp_path, port, f'log_format = "{log_format}"'), tmp_path / "data", port
    )
    instance.start()
    try:
        project_id = instance.projects()["region1"]
        token = token_for(instance, project_id)
        with sqlite3.connect(instance.data_dir / "opencbr.db") as connection:
            connection.execute("ALTER TABLE tokens RENAME TO tokens_gone")
        before = len(instance.log().encode())
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": "admin",
                            "domain": {"name": "Default"},
                            "password": instance.password(),
                        }
                    },
                },
                "scope": {"project": {"id": project_id}},
            }
        }
        failed = httpx.post(
            f"{instance.url}/identity/v3/auth/tokens",
            json=body,
            headers={"X-Auth-Token": token, "Authorization": f"Bearer {token}"},
        )
        assert failed.status_code == 500
        time.sleep(0.5)  # the server writes its log after the answer
        log = instance.log().encode()[before:].decode()
    finally:
        instance.stop()
    assert len(log.encode()) < 20 * 1024, len(log)
    assert instance.password() not in log and token not in log
    errors = [line for line in log.splitlines() if "error" in line]
    assert len(errors) == 1, log  # ours; uvicorn's "Exception in ASGI application" is dropped
    if log_format == "json":
        (record,) = (json.loads(line) for line in errors)
        assert record["event"] == "unexpected error"
        assert record["exception"][-1]["exc_type"] == "OperationalError"
    else:
        assert 'event="unexpected error"' in errors[0] and "no such table: tokens" in errors[0]


def test_port_0_takes_a_free_port_and_announces_and_advertises_that_one(tmp_path: Path) -> None:
    """`listen = "127.0.0.1:0"`: the banner's auth URL and the token catalog name the port
    taken, not :0 (a client following either could reach nothing)."""
    config = write_config(tmp_path, 0)
    process = subprocess.Popen(
        [*OPENCBR, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("  auth URL:") for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        auth_url = lines[-1].split()[-1]
        port = int(auth_url.split(":")[2].split("/")[0])
        assert port != 0 and f"listening on http://127.0.0.1:{port}" in lines[0]
        while not any(line.startswith("  project:   region1") for line in lines):
            lines.append(process.stdout.readline())
        project = next(line for line in lines if line.startswith("  project:   region1")).split()[3]
        served = Server(config, tmp_path / "data", port)  # the running one, by its port
        token = token_for(served, project)
        answer = httpx.get(
            f"{auth_url}/auth/tokens",
            headers={"X-Auth-Token": token, "X-Subject-Token": token},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        [cbr] = [s for s in answer.json()["token"]["catalog"] if s["type"] == "cbr"]
        assert all(f"127.0.0.1:{port}/v3/" in e["url"] for e in cbr["endpoints"])
    finally:
        process.terminate()
        process.wait(timeout=60)
        assert process.stdout is not None
        process.stdout.close()
