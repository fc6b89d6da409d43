"""The `opencbr` client commands against a real `opencbr serve`: vaults, resources,
backups, restores, replication, records and status; `-f json` parsed; `--wait` progress
as bars (OPENCBR_PROGRESS=bar) and as plain lines; a failing restore; credentials from
the environment, an access key and clouds.yaml.

Most commands run in this process through the `opencbr` typer app (an HTTP client of the
served process, as the installed command is); the flows where the installed command's own
process matters (terminal bars, exit codes, clouds.yaml discovery) run `python -m opencbr`.
The region `slow` stores through a store that waits 0.4 s per chunk (two in flight), so a
20 MiB backup and its restore take seconds each and their progress can be watched.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from opencbr.cli import app
from tests.e2e.flows import OPENCBR, Server, serving, token_for

pytestmark = pytest.mark.slow  # a real server; seconds a test

MiB = 1024 * 1024
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "roots" / "slow").mkdir(parents=True)
    store = tmp / "store"
    extra = (
        "io_threads = 1\nmax_chunks_in_flight = 2\n"
        f'[[regions]]\nname = "region1"\nstorage = "{store}/region1"\n'
        f'[[regions]]\nname = "region2"\nstorage = "{store}/region2"\n'
        f'[[regions]]\nname = "slow"\nstorage = "faulty+file://{store}/slow?delay=0.4"\n'
        f"replication_destinations = []\n"
        f'[[protectable_roots]]\nproject = "slow"\npath = "{tmp / "roots" / "slow"}"\n'
    )
    with serving(tmp, extra) as server:
        yield server


@pytest.fixture(scope="module")
def projects(served: Server) -> dict[str, str]:
    """Project name (= region) -> id: a token scoped by name lists the admin's projects."""
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": "admin",
                        "domain": {"name": "Default"},
                        "password": served.password(),
                    }
                },
            },
            "scope": {"project": {"name": "region1", "domain": {"name": "Default"}}},
        }
    }
    issued = httpx.post(f"{served.url}/identity/v3/auth/tokens", json=body, timeout=30)
    token = issued.headers["X-Subject-Token"]
    listed = httpx.get(
        f"{served.url}/v3/region-projects", headers={"X-Auth-Token": token}, timeout=30
    ).json()
    return {project["name"]: project["id"] for project in listed["projects"]}


def os_env(server: Server, project: str = "region1", **more: str) -> dict[str, str]:
    """OS_* variables of a password login to `project` (by name), nothing else of OS_*."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "OPENCBR_"))}
    return {
        **kept,
        "OS_AUTH_URL": f"{server.url}/identity/v3",
        "OS_USERNAME": "admin",
        "OS_PASSWORD": server.password(),
        "OS_PROJECT_NAME": project,
        "OS_USER_DOMAIN_NAME": "Default",
        "COLUMNS": "200",
        **more,
    }


def run(env: dict[str, str], *args: str, ok: bool = True) -> Result:
    """`opencbr ARGS` in this process, with exactly `env` as its OS_* environment."""
    unset = {key: None for key in os.environ if key.startswith(("OS_", "OPENCBR_"))}
    result = CliRunner().invoke(app, list(args), env={**unset, **env}, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def run_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(run(env, *args, "-f", "json").stdout)


def command(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """`python -m opencbr ARGS` as its own process."""
    return subprocess.Popen(
        [*OPENCBR, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr


def tree(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


# --- vaults, resources, backups, names --------------------------------------------------


def test_vault_resource_and_backup_commands(served: Server) -> None:
    env = os_env(served)
    data = tree(served.root("region1") / "docs", {"a.txt": b"alpha\n", "b.bin": os.urandom(9000)})

    vault = run_json(env, "vault", "create", "docs-vault", "--size", "5")
    assert vault["billing"]["size"] == 5 and vault["billing"]["protect_type"] == "backup"
    resource = run_json(env, "resource", "register", str(data), "--vault", "docs-vault")
    assert resource["name"] == "docs" and resource["detail"]["path"] == str(data)
    assert resource["protectable"]["vault"]["id"] == vault["id"]
    listed = run(env, "resource", "list").stdout
    assert re.search(
        rf"{resource['id']}\s+docs\s+turbo\s+{re.escape(str(data))}\s+docs-vault", listed
    )
    shown = run_json(env, "vault", "show", "docs-vault")  # by name
    assert shown["id"] == vault["id"] and [r["id"] for r in shown["resources"]] == [resource["id"]]
    assert vault["id"] in run(env, "vault", "list").stdout

    made = run_json(env, "backup", "now", "docs-vault", "--name", "first", "--wait")
    [backup] = made["backups"]
    assert made["checkpoint"]["status"] == "available"
    assert (backup["name"], backup["status"], backup["resource_id"]) == (
        "first",
        "available",
        resource["id"],
    )
    assert [b["id"] for b in run_json(env, "backup", "list", "--vault", vault["id"])] == [
        backup["id"]
    ]
    assert run_json(env, "backup", "show", "first")["id"] == backup["id"]  # by its name
    table = run(env, "backup", "show", backup["id"]).stdout
    assert re.search(r"status\s+available", table) and "docs-vault" in table

    # A name two vaults share is refused, naming both ids; an unknown name says so.
    twin = run_json(env, "vault", "create", "docs-vault")
    refused = run(env, "vault", "show", "docs-vault", ok=False)
    assert refused.exit_code == 1 and refused.stdout == ""
    assert refused.stderr.startswith("error: 2 vaults are named 'docs-vault'")
    assert vault["id"] in refused.stderr and twin["id"] in refused.stderr
    assert run(env, "vault", "delete", twin["id"], "-f", "json").stdout.count('"deleted": true')
    missing = run(env, "backup", "show", "no-such-backup", ok=False)
    assert missing.stderr == "error: no backup is named 'no-such-backup' or has that id\n"

    # A bound resource cannot be unregistered: the server's CBR error, one line, exit 1,
    # saying how to unbind it; unbound, then bound again, its backups staying in the vault.
    bound = run(env, "resource", "unregister", "docs", ok=False)
    assert bound.exit_code == 1 and bound.stderr.startswith("error: BackupService.")
    assert "opencbr vault remove-resource" in bound.stderr
    unbound = run_json(env, "vault", "remove-resource", "docs-vault", "docs")
    assert unbound["resources"] == []
    assert run_json(env, "backup", "show", backup["id"])["vault_id"] == vault["id"]
    rebound = run_json(env, "vault", "add-resource", "docs-vault", "docs")
    assert [r["id"] for r in rebound["resources"]] == [resource["id"]]
    assert run_json(env, "backup", "delete", backup["id"])["deleted"] is True
    # The delete runs in the background; the vault may go at once and takes it along.
    assert run_json(env, "vault", "delete", "docs-vault")["id"] == vault["id"]
    assert run_json(env, "resource", "unregister", "docs")["id"] == resource["id"]
    assert run_json(env, "resource", "list") == []
    assert run_json(env, "vault", "list") == []


# --- credentials ----------------------------------------------------------------------


def test_credentials_from_the_environment_an_access_key_and_clouds_yaml(
    served: Server, projects: dict[str, str], tmp_path: Path
) -> None:
    env = os_env(served, "region2")
    run(env, "vault", "create", "by-password")
    # OS_PROJECT_ID instead of a name, and an auth URL naming the server's root only.
    by_id = {**env, "OS_PROJECT_ID": projects["region2"], "OS_AUTH_URL": served.url}
    del by_id["OS_PROJECT_NAME"]
    assert [v["name"] for v in run_json(by_id, "vault", "list")] == ["by-password"]

    key = httpx.post(
        f"{served.url}/v3.0/OS-CREDENTIAL/credentials",
        json={"credential": {"description": "cli"}},
        headers={"X-Auth-Token": token_for(served, projects["region2"])},
        timeout=30,
    ).json()["credential"]
    signed = {
        k: v for k, v in env.items() if k not in ("OS_USERNAME", "OS_PASSWORD", "OS_AUTH_URL")
    }
    signed.update(OS_AUTH_URL=served.url, OS_ACCESS_KEY=key["access"], OS_SECRET_KEY=key["secret"])
    assert [v["name"] for v in run_json(signed, "vault", "list")] == ["by-password"]
    wrong = run({**signed, "OS_SECRET_KEY": "not-the-secret"}, "vault", "list", ok=False)
    assert wrong.exit_code == 1 and wrong.stderr.startswith("error: APIGW.0301:")

    # clouds.yaml in the working directory; the password in secure.yaml beside it.
    (tmp_path / "clouds.yaml").write_text(
        "clouds:\n"
        "  lab:\n"
        "    auth:\n"
        f"      auth_url: {served.url}/identity/v3\n"
        "      username: admin\n"
        "      project_name: region2\n"
        "      user_domain_name: Default\n"
        "    region_name: region2\n"
    )
    (tmp_path / "secure.yaml").write_text(
        f"clouds:\n  lab:\n    auth:\n      password: {served.password()}\n"
    )
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "OPENCBR_"))}
    code, stdout, stderr = finished(
        command(bare, "vault", "list", "--os-cloud", "lab", "-f", "json", cwd=tmp_path)
    )
    assert code == 0, stderr
    assert [v["name"] for v in json.loads(stdout)] == ["by-password"]
    named = {"OS_CLIENT_CONFIG_FILE": str(tmp_path / "clouds.yaml"), "OS_CLOUD": "x"}
    unknown = run(named, "vault", "list", ok=False)
    assert (unknown.exit_code, unknown.stdout) == (1, "")
    assert unknown.stderr.startswith("error: cloud 'x' is not in ")
    assert "clouds there: lab" in unknown.stderr

    bad = run({**env, "OS_PASSWORD": "wrong-password"}, "vault", "list", ok=False)
    assert bad.exit_code == 1 and bad.stderr.startswith("error: APIGW.0301:")
    assert "wrong-password" not in bad.stdout + bad.stderr
    nothing = run({"OS_AUTH_URL": served.url}, "vault", "list", ok=False)
    assert nothing.stderr.startswith("error: environment (OS_*): no project")
    run(env, "vault", "delete", "by-password")


# --- progress -------------------------------------------------------------------------


def test_wait_shows_real_progress_as_bars_and_as_plain_lines(
    served: Server, projects: dict[str, str]
) -> None:
    env = os_env(served, "slow")
    payload = os.urandom(20 * MiB)
    data = tree(served.root("region1").parent / "slow" / "big", {"big.bin": payload})
    run(env, "vault", "create", "slow-vault", "--size", "1")
    run(env, "resource", "register", str(data), "--vault", "slow-vault")

    # Bars: the backup's own process, forced to a terminal's display.
    backing_up = command(
        {**env, "OPENCBR_PROGRESS": "bar"}, "backup", "now", "slow-vault", "--wait", "-f", "json"
    )
    logs = httpx.Client(
        base_url=f"{served.url}/v3/{projects['slow']}",
        headers={"X-Auth-Token": token_for(served, projects["slow"])},
        timeout=30,
    )
    seen: list[dict[str, Any]] = []
    status_seen: list[dict[str, Any]] = []

    def sample() -> None:
        answer = logs.get("/operation-logs", params={"operation_type": "backup"}).json()
        seen.extend(entry["extra_info"]["common"] for entry in answer["operation_logs"])

    while backing_up.poll() is None:
        sample()
        if not status_seen:
            status_seen = run_json(env, "status")["work"]
        time.sleep(0.3)
    sample()  # once more after the command returned: the last sample may predate the end
    logs.close()
    code, stdout, stderr = finished(backing_up)
    assert code == 0, stderr
    [made] = json.loads(stdout)["backups"]
    assert made["status"] == "available"
    # The log's byte counts moved while the backup ran (heartbeats every 2 s): a count
    # strictly between nothing and everything was seen, and the counts never went back.
    done = [c["bytes_done"] for c in seen if "bytes_done" in c]
    assert any(0 < c["bytes_done"] < c["bytes_total"] for c in seen if "bytes_done" in c), seen
    assert done == sorted(done), seen
    assert all(c["bytes_total"] >= 20 * MiB for c in seen if "bytes_total" in c)
    assert seen[-1]["bytes_done"] == seen[-1]["bytes_total"] >= 20 * MiB
    # `status` listed the running backup with its progress.
    [work] = status_seen
    assert (work["operation_type"], work["resource_name"], work["vault_name"]) == (
        "backup",
        "big",
        "slow-vault",
    )
    # The bar: ANSI drawing, bytes done/total in MiB, a rate, and 100% at the end.
    assert "\x1b[" in stderr and "━" in stderr
    plain = ANSI.sub("", stderr)
    assert re.search(r"backup of big \(running\).*\d+\.\d/20\.\d MiB", plain), plain
    assert re.search(r"\d+\.\d [KM]iB/s", plain), plain
    # While it ran, a bar showed its rate and the time left (ETA: 7s, 1m05s, 1h02m).
    assert re.search(r"backup of big \(running\).*[KM]iB/s +\d+[smh]", plain), plain
    assert re.search(r"backup of big done.*100%\s+20\.\d/20\.\d MiB", plain), plain

    # Plain lines: stderr is not a terminal (auto mode); a line a second.
    target = tree(served.root("region1").parent / "slow" / "restored", {})
    run(env, "resource", "register", str(target))
    restoring = run(
        {**env, "OPENCBR_PROGRESS_INTERVAL": "1"},
        *("restore", made["id"], "--to", "restored", "--path", "here", "--wait"),
    )
    stdout, stderr = restoring.stdout, restoring.stderr
    assert "\x1b[" not in stderr
    lines = stderr.splitlines()
    assert all(line.split(" ", 1)[1].startswith(f"restore of {made['name']}: ") for line in lines)
    middle = [line for line in lines if re.search(r": running, ([1-9]|[1-9]\d)% ", line)]
    assert middle, stderr
    assert re.search(r"of 20\.\d MiB, \d+\.\d [KM]iB/s, ETA \d+s$", middle[-1]), middle
    assert lines[-1].endswith(": done, 20.0 MiB")
    assert re.search(r"status\s+success", stdout) and re.search(
        r"bytes\s+20\.0 MiB of 20\.0 MiB", stdout
    )
    assert (target / "here" / "big.bin").read_bytes() == payload


def test_a_failing_restore_exits_non_zero_with_the_reason(served: Server) -> None:
    env = os_env(served)
    data = tree(served.root("region1") / "kept", {"k.txt": b"keep\n"})
    run(env, "vault", "create", "kept-vault")
    run(env, "resource", "register", str(data), "--vault", "kept-vault")
    [backup] = run_json(env, "backup", "now", "kept-vault", "--wait")["backups"]
    # The target turns into a symlink after registration: the worker refuses it.
    real = tree(served.root("region1") / "elsewhere", {})
    target = served.root("region1") / "swapped"
    target.mkdir()
    run(env, "resource", "register", str(target))
    target.rmdir()
    target.symlink_to(real)

    code, stdout, stderr = finished(
        command(env, "restore", backup["id"], "--to", "swapped", "--wait", "-f", "json")
    )
    assert code == 1
    entry = json.loads(stdout)["operation_log"]
    assert entry["status"] == "failed"
    assert entry["error_info"]["code"] == "BackupService.6302"
    assert stderr.splitlines()[-1] == (
        f"error: restore of {backup['name']} failed: BackupService.6302: "
        f"{entry['error_info']['message']}"
    )
    assert "symbolic link" in entry["error_info"]["message"]
    assert list(real.iterdir()) == []


# --- replication, records, status -----------------------------------------------------


def test_replicate_records_and_status(served: Server, projects: dict[str, str]) -> None:
    env, env2 = os_env(served), os_env(served, "region2")
    data = tree(served.root("region1") / "repl", {"r.bin": os.urandom(300_000)})
    run(env, "vault", "create", "src-vault")
    run(env, "resource", "register", str(data), "--vault", "src-vault")
    first = run_json(env, "backup", "now", "src-vault", "--name", "one", "--wait")["backups"][0]
    (data / "r2.bin").write_bytes(os.urandom(200_000))
    second = run_json(env, "backup", "now", "src-vault", "--name", "two", "--wait")["backups"][0]
    dest = run_json(env2, "vault", "create", "dst-vault", "--replication")
    seed = ("replicate", "src-vault", "--to-project", "region2", "--to-vault", "dst-vault")

    # A dry run first: what the seed call will copy, nothing created.
    planned = run_json(env, *seed, "--dry-run")["replication"]
    assert [b["backup_id"] for b in planned["backups"]] == [first["id"], second["id"]]
    assert run_json(env, "records", "--vault", "src-vault") == []
    table = run(env, *seed, "--dry-run").stdout
    assert re.search(r"total\s+\d+\s+\S+.*unknown", table), table

    # The seed call, followed as bars: one per record, and a total.
    seeded = run({**env, "OPENCBR_PROGRESS": "bar"}, *seed, "--wait", "-f", "json")
    result = json.loads(seeded.stdout)
    assert result["replication"]["destination_region"] == "region2"
    assert {r["status"] for r in result["records"]} == {"success"}
    assert sum(r["bytes_done"] for r in result["records"]) == planned["missing_bytes"]
    assert {b["backup_id"] for b in result["replication"]["backups"]} == {first["id"], second["id"]}
    bars = ANSI.sub("", seeded.stderr)
    assert "replication of one" in bars and "replication of two" in bars
    assert "total (2/2 done)" in bars

    third = run_json(env, "backup", "now", "src-vault", "--name", "three", "--wait")["backups"][0]
    status = run_json(env, "status")
    [pair] = status["replication"]
    assert (pair["vault_name"], pair["destination_vault_id"], pair["backups_behind"]) == (
        "src-vault",
        dest["id"],
        1,
    )
    assert pair["lag_seconds"] >= 0 and pair["lag"].endswith("ago")
    [vault_state] = [v for v in status["vaults"] if v["name"] == "src-vault"]
    assert (vault_state["newest_backup_id"], vault_state["status"]) == (third["id"], "available")

    # One backup, by its name, into the vault named by its id; the project by its id.
    single = run_json(
        env,
        "replicate",
        "--backup",
        "three",
        "--to-project",
        projects["region2"],
        "--to-vault",
        dest["id"],
        "--wait",
    )
    [record] = single["records"]
    assert record["status"] == "success" and record["bytes_done"] == record["bytes_total"]
    assert single["replication"]["backup_id"] == third["id"]

    records = run_json(env, "records", "--vault", "src-vault")
    assert {r["source_backup_id"] for r in records} == {first["id"], second["id"], third["id"]}
    assert {r["status"] for r in records} == {"success"}
    caught_up = run_json(env, "status")["replication"][0]
    assert (caught_up["lag_seconds"], caught_up["lag"], caught_up["last_failure"]) == (
        0,
        "caught up",
        "",
    )
    screen = run(env, "status").stdout
    assert re.search(r"src-vault\s+three\s+available\s+\d+s ago", screen)
    # The destination by its name, as every vault on this screen.
    assert re.search(r"src-vault\s+region2\s+dst-vault\s+caught up", screen), screen
    replicas = run_json(env2, "backup", "list", "--vault", "dst-vault")
    assert {b["source_backup_id"] for b in replicas} == {first["id"], second["id"], third["id"]}
    again = run(env, *seed, ok=False)
    assert again.exit_code == 1 and again.stderr.startswith("error: BackupService.0001:")
