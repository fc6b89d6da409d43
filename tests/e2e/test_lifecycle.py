"""The service's lifecycle as a real process: one access-log line per request (plain and
JSON, no credentials), the start-up announcement, and a SIGTERM during a backup that the
next start resumes at once."""

from __future__ import annotations

import json
import random
import re
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.flows import Client, Server, free_port, serving, token_for, write_config
from tests.unit.archive_support import assert_same_tree

pytestmark = pytest.mark.slow  # real `opencbr` processes: seconds a test

MiB = 1 << 20
_PLAIN_PAIR = re.compile(r'(\w+)=("(?:\\.|[^"\\])*"|\S+)')


def log_records(text: str, log_format: str) -> list[dict[str, Any]]:
    """The log lines of `text` as dicts (stdout's announcement lines are left out)."""
    records = []
    for line in text.splitlines():
        if log_format == "json":
            if line.startswith("{"):
                records.append(json.loads(line))
        elif line.startswith("timestamp="):
            records.append(
                {
                    key: json.loads(value) if value.startswith('"') else value
                    for key, value in _PLAIN_PAIR.findall(line)
                }
            )
    return records


def wait_for_lines(server: Server, needles: list[str], timeout: float = 30) -> str:
    """The server's log once every needle is in it (lines are written after the answer)."""
    deadline = time.monotonic() + timeout
    while not all(needle in (log := server.log()) for needle in needles):
        assert time.monotonic() < deadline, f"not logged: {needles}\n{log[-3000:]}"
        time.sleep(0.1)
    return log


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_every_request_is_one_access_line_without_credentials(
    tmp_path: Path, log_format: str
) -> None:
    public_url = "https://backup.example.com"
    extra = f'log_format = "{log_format}"\npublic_url = "{public_url}"\n'
    with serving(tmp_path, extra) as server:
        project = server.projects()["region1"]
        token = token_for(server, project)
        vaults = f"{server.url}/v3/{project}/vaults"
        answers = {
            "listed": httpx.get(vaults, headers={"X-Auth-Token": token}, params={"limit": 5}),
            "unknown vault": httpx.get(f"{vaults}/{uuid.uuid4()}", headers={"X-Auth-Token": token}),
            "bad token": httpx.get(vaults, headers={"X-Auth-Token": "not-a-real-token-value"}),
            "no route": httpx.get(f"{server.url}/no/such/route", params={"sk": "query-secret"}),
        }
        ids = {name: answer.headers["x-request-id"] for name, answer in answers.items()}
        log = wait_for_lines(server, list(ids.values()))
    assert [answers[name].status_code for name in answers] == [200, 404, 401, 404]
    for secret in (token, server.password(), "not-a-real-token-value", "query-secret"):
        assert secret not in log
    records = log_records(log, log_format)
    access = [r for r in records if r.get("logger") == "opencbr.access"]
    assert not [r for r in records if r.get("logger") == "uvicorn.access"]  # not doubled
    by_id = {name: [r for r in access if r["request_id"] == ids[name]] for name in ids}
    assert all(len(lines) == 1 for lines in by_id.values()), by_id
    expected = {
        "listed": ("/v3/{project_id}/vaults", 200, project),
        "unknown vault": ("/v3/{project_id}/vaults/{vault_id}", 404, project),
        "bad token": ("/v3/{project_id}/vaults", 401, project),
        "no route": ("unmatched", 404, None),
    }
    for name, (route, status, project_id) in expected.items():
        (line,) = by_id[name]
        assert (line["event"], line["level"], line["method"]) == ("request", "info", "GET")
        assert (line["route"], int(line["status"]), line.get("project_id")) == (
            route,
            status,
            project_id,
        )
        assert float(line["duration_ms"]) >= 0
        assert line["timestamp"].endswith("Z")  # UTC, with its zone
    # The token request itself (its body held the password) is one line like the others.
    issued = [r for r in access if r["route"] == "/identity/v3/auth/tokens"]
    assert issued and {int(r["status"]) for r in issued} == {201}
    # The announcement names the bound address and, separately, the public URL.
    assert f"opencbr listening on http://127.0.0.1:{server.port}\n" in log
    assert f"  public URL: {public_url} (advertised in the token catalog)\n" in log
    assert f"  auth URL:  {public_url}/identity/v3\n" in log


def backup_row(server: Server, checkpoint_id: str) -> tuple[str, str, int, str | None]:
    """(id, status, attempts, lease_until) of the checkpoint's backup, from the database."""
    with sqlite3.connect(server.data_dir / "opencbr.db") as connection:
        row = connection.execute(
            "SELECT id, status, attempts, lease_until FROM backups WHERE checkpoint_id = ?",
            (checkpoint_id,),
        ).fetchone()
    return row  # type: ignore[no-any-return]


def chunk_files(store: Path) -> int:
    return sum(1 for path in store.glob("chunks/*/*") if path.is_file())


def test_sigterm_during_a_backup_hands_it_back_and_the_next_start_resumes_it_at_once(
    tmp_path: Path,
) -> None:
    # zstd's level 19 stores incompressible data at ~5 MiB/s a thread, so the backup is
    # mid-work for seconds; the default 30 s lease shows the resume does not wait for it.
    port = free_port()
    server = Server(
        write_config(tmp_path, port, "compression_level = 19\n"), tmp_path / "data", port
    )
    server.start()
    clients: list[Client] = []
    try:
        client = Client(server, server.projects()["region1"])
        clients.append(client)
        source = server.root("region1") / "data"
        (source / "sub").mkdir(parents=True)
        (source / "random.bin").write_bytes(random.Random(7).randbytes(40 * MiB))
        (source / "sub" / "notes.txt").write_text("kept across a restart\n" * 1000)
        vault = client.vault("v", resources=[client.register_dir("data", str(source))])
        checkpoint = client.start_backup(vault, "interrupted")
        store = server.data_dir / "store" / "region1" / "vaults" / vault
        deadline = time.monotonic() + 60
        while chunk_files(store) < 4:
            assert time.monotonic() < deadline, "the backup never started storing"
            time.sleep(0.02)

        assert server.process is not None
        asked = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        # uvicorn ends by raising the signal again once shut down (systemd counts a
        # SIGTERM exit as clean).
        assert server.process.wait(timeout=20) in (0, -signal.SIGTERM)
        assert time.monotonic() - asked < 8, "SIGTERM took too long"
        backup_id, status, attempts, lease_until = backup_row(server, checkpoint)
        # Handed back: still live (not error), the lease ended, no attempt spent.
        assert (status, attempts) == ("protecting", 0)
        assert lease_until is not None
        stopped_log = server.log()
        assert "leased work interrupted: left for the next start" in stopped_log
        assert "leased work failed" not in stopped_log

        offset = len(stopped_log)
        server.start()
        up = time.monotonic()
        wait_for_lines(server, ["leased work resumed"], timeout=30)
        assert time.monotonic() - up < 5, "resumed only after the start-up's first 5 s"
        resumed = server.log()[offset:]
        assert re.search(rf"leased work resumed.*id={backup_id}", resumed), resumed

        client = Client(server, client.project_id)  # the old connection went with the process
        clients.append(client)
        backup = client.finished_backup(checkpoint)
        assert backup["status"] == "available", backup
        target = server.root("region1") / "restored"
        target.mkdir()
        restored = client.restore(backup["id"], client.register_dir("restored", str(target)))
        assert restored["status"] == "success", restored
        assert_same_tree(source, target)
    finally:
        for opened in clients:
            opened.http.close()
        server.stop()
