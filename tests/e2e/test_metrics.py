"""Prometheus metrics of a real `opencbr serve`, scraped over HTTP after real work and parsed
with prometheus_client's own parser."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.e2e.flows import (
    OPENCBR,
    Client,
    Server,
    eventually,
    free_port,
    scrape,
    value,
    write_config,
)

MB = 1024 * 1024


@pytest.fixture
def metered(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """A server whose metrics listen on a port we know; yields it and the metrics URL."""
    port, metrics_port = free_port(), free_port()
    config = write_config(tmp_path, port, f'metrics_listen = "127.0.0.1:{metrics_port}"')
    server = Server(config, tmp_path / "data", port)
    server.start()
    try:
        yield server, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        server.stop()


@pytest.fixture
def connect(metered: tuple[Server, str]) -> Iterator[Callable[[str], Client]]:
    """Clients for projects of the metered server, closed at the end of the test."""
    opened: list[Client] = []

    def open_client(project_id: str) -> Client:
        opened.append(Client(metered[0], project_id))
        return opened[-1]

    yield open_client
    for client in opened:
        client.http.close()


def wire_time(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def replicate_vault(client: Client, vault: str, project: str, destination: str) -> None:
    body = {
        "replicate": {
            "auto_trigger": False,
            "destination_project_id": project,
            "destination_region": "region2",
            "destination_vault_id": destination,
            "vault_id": vault,
        }
    }
    client.call("POST", "/checkpoints/replicate", body)

    def ended(listing: dict[str, list[dict[str, list[dict[str, str]]]]]) -> bool:
        records = [r for b in listing["backups"] for r in b["replication_records"]]
        return bool(records) and all(r["status"] in ("success", "fail") for r in records)

    client.wait("/backups", ended, vault_id=vault, show_replication="true")


def test_metrics_after_backups_and_replications(
    metered: tuple[Server, str], connect: Callable[[str], Client], tmp_path: Path
) -> None:
    server, url = metered
    ids = server.projects()
    r1, r2 = connect(ids["region1"]), connect(ids["region2"])
    source = server.root("region1") / "data"
    source.mkdir()
    (source / "a.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    vault = r1.vault("src", resources=[r1.register_dir("data", str(source))])
    first = r1.finished_backup(r1.start_backup(vault, "first"))
    assert first["status"] == "available"

    # Vault state: used bytes and the last backup's time, for the right labels.
    billing = r1.call("GET", f"/vaults/{vault}")["vault"]["billing"]
    labels = {"region": "region1", "project_id": ids["region1"], "vault_id": vault}
    samples = eventually(
        url, lambda s: value(s, "opencbr_vault_used_bytes", vault_id=vault) not in (None, 0)
    )
    used = value(samples, "opencbr_vault_used_bytes", **labels)
    assert used == first["stored_bytes"]
    assert -(-int(used) // MB) == billing["used"]
    last = value(samples, "opencbr_vault_last_successful_backup_timestamp_seconds", **labels)
    assert last == pytest.approx(wire_time(first["created_at"]), abs=1e-3)

    # Replication of the vault: the pair appears caught up.
    destination = r2.vault("dst", protect_type="replication")
    replicate_vault(r1, vault, ids["region2"], destination)
    pair = {"vault_id": vault, "destination_vault_id": destination}
    eventually(url, lambda s: value(s, "opencbr_replication_lag_seconds", **pair) == 0)

    # A new backup not replicated yet: the pair lags by (at least) its age.
    (source / "b.bin").write_bytes(bytes(reversed(range(256))) * 4096)
    second = r1.finished_backup(r1.start_backup(vault, "second"))
    assert second["status"] == "available"
    time.sleep(1)
    samples = eventually(
        url, lambda s: (value(s, "opencbr_replication_lag_seconds", **pair) or 0) > 0
    )
    lag = value(samples, "opencbr_replication_lag_seconds", **pair)
    assert lag is not None
    assert lag <= time.time() - wire_time(second["created_at"]) + 1
    assert value(
        samples, "opencbr_vault_last_successful_backup_timestamp_seconds", **labels
    ) == pytest.approx(wire_time(second["created_at"]), abs=1e-3)

    replicate_vault(r1, vault, ids["region2"], destination)
    samples = eventually(url, lambda s: value(s, "opencbr_replication_lag_seconds", **pair) == 0)

    # Events of this process: tasks, bytes, HTTP requests by route template.
    assert value(samples, "opencbr_tasks_total", task="backup", outcome="success") == 2
    assert value(samples, "opencbr_tasks_total", task="replicate", outcome="success") == 2
    assert (
        value(samples, "opencbr_task_duration_seconds_count", task="backup", outcome="success") == 2
    )
    stored = value(samples, "opencbr_backup_stored_bytes_total", region="region1")
    assert stored == first["stored_bytes"] + second["stored_bytes"]
    copied = value(
        samples,
        "opencbr_replication_copied_bytes_total",
        source_region="region1",
        destination_region="region2",
    )
    assert copied is not None and copied > 0
    assert value(samples, "opencbr_replication_records", status="success") == 2
    checkpoints_route = {"method": "POST", "route": "/v3/{project_id}/checkpoints"}
    assert value(samples, "opencbr_http_requests_total", status="200", **checkpoints_route) == 2
    before = scrape(url)
    r1.call("GET", f"/vaults/{vault}")
    after = scrape(url)
    vault_route = {"method": "GET", "route": "/v3/{project_id}/vaults/{vault_id}", "status": "200"}
    assert (value(after, "opencbr_http_requests_total", **vault_route) or 0) - (
        value(before, "opencbr_http_requests_total", **vault_route) or 0
    ) == 1
    assert value(
        after,
        "opencbr_http_request_duration_seconds_count",
        method="GET",
        route=vault_route["route"],
    )

    # Labels name no backup, no path of the store or of the data, no raw request path.
    backup_ids = {first["id"], second["id"]}
    backup_ids |= {b["id"] for b in r2.call("GET", "/backups", vault_id=destination)["backups"]}
    for sample in (s for group in after.values() for s in group):
        for label in sample.labels.values():
            assert not any(backup_id in label for backup_id in backup_ids), sample
            assert str(tmp_path) not in label, sample
            assert f"/v3/{ids['region1']}" not in label, sample


def test_an_unmatched_path_is_counted_under_one_label(metered: tuple[Server, str]) -> None:
    server, url = metered
    for secret in ("a", "b"):
        assert httpx.get(f"{server.url}/no/such/{secret}").status_code == 404
    samples = scrape(url)
    unmatched = value(
        samples, "opencbr_http_requests_total", method="GET", route="unmatched", status="404"
    )
    assert unmatched == 2
    assert not any(
        "/no/such" in s.labels.get("route", "") for s in samples["opencbr_http_requests_total"]
    )


def test_a_failed_backup_counts_as_failed(
    metered: tuple[Server, str], connect: Callable[[str], Client]
) -> None:
    server, url = metered
    ids = server.projects()
    client = connect(ids["region1"])
    source = server.root("region1") / "gone"
    source.mkdir()
    vault = client.vault("v", resources=[client.register_dir("gone", str(source))])
    source.rmdir()
    backup = client.finished_backup(client.start_backup(vault, "fails"))
    assert backup["status"] == "error"
    samples = scrape(url)
    assert value(samples, "opencbr_tasks_total", task="backup", outcome="failed") == 1
    assert value(samples, "opencbr_tasks_total", task="backup", outcome="success") is None
    assert (
        value(samples, "opencbr_vault_last_successful_backup_timestamp_seconds", vault_id=vault)
        is None
    )


def test_a_busy_metrics_port_ends_serve_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        config = write_config(tmp_path, free_port(), f'metrics_listen = "127.0.0.1:{busy}"')
        done = subprocess.run(
            [*OPENCBR, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{busy} (metrics_listen): address already in use"
    ]


def test_an_empty_metrics_listen_turns_the_listener_off(tmp_path: Path) -> None:
    port = free_port()
    server = Server(write_config(tmp_path, port, 'metrics_listen = ""'), tmp_path / "data", port)
    server.start()
    try:
        assert "metrics:" not in server.log()
    finally:
        server.stop()


def test_serve_metrics_listen_option_moves_the_listener(tmp_path: Path) -> None:
    """A second API process on one machine (README, Scaling out): the configured metrics
    port is taken by the first, `--metrics-listen` gives this one its own."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy, own, port = taken.getsockname()[1], free_port(), free_port()
        config = write_config(tmp_path, port, f'metrics_listen = "127.0.0.1:{busy}"')
        args = ("--no-worker", "--metrics-listen", f"127.0.0.1:{own}")
        server = Server(config, tmp_path / "data", port, args=args)
        server.start()
        try:
            assert f"metrics:   http://127.0.0.1:{own}/metrics" in server.log()
            assert "process_resident_memory_bytes" in scrape(f"http://127.0.0.1:{own}/metrics")
        finally:
            server.stop()


def test_serve_metrics_listen_option_empty_turns_the_listener_off(tmp_path: Path) -> None:
    port = free_port()
    server = Server(
        write_config(tmp_path, port), tmp_path / "data", port, args=("--metrics-listen", "")
    )
    server.start()
    try:
        assert "metrics:" not in server.log()
    finally:
        server.stop()
