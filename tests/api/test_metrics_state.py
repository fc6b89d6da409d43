"""The database-derived gauges on both backends: real backups and a real replication, the
state collector served by a real metrics listener and scraped over HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from opencbr import metrics
from opencbr.services.monitoring import StateCollector
from tests.api.conftest import Env
from tests.api.helpers import create_vault, register_dir
from tests.api.test_backups import backup_now
from tests.api.test_replication import replicate_backup


@pytest.fixture
def metrics_url(env: Env) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listener = metrics.start_listener(f"127.0.0.1:{port}", StateCollector(env.db, cache_seconds=0))
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        listener.stop()


def gauges(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[key] = sample.value
    return found


def test_vault_and_replication_gauges(env: Env, metrics_url: str) -> None:
    data = env.roots["region1"] / "data"
    data.mkdir()
    (data / "f.bin").write_bytes(b"opencbr " * 300_000)
    resource = register_dir(env, name="data")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    first = backup_now(env, vault["id"])
    replicate_backup(env, vault["id"], first["id"], dest["id"])
    (data / "g.bin").write_bytes(b"second " * 100_000)
    second = backup_now(env, vault["id"])

    found = gauges(metrics_url)
    vault_key = (
        ("project_id", env.projects["region1"]),
        ("region", "region1"),
        ("vault_id", vault["id"]),
    )
    used = env.get("region1", f"/vaults/{vault['id']}").json()["vault"]["billing"]["used"]
    assert (
        found["opencbr_vault_used_bytes"][vault_key]
        == first["stored_bytes"] + second["stored_bytes"]
    )
    assert -(-int(found["opencbr_vault_used_bytes"][vault_key]) // (1 << 20)) == used
    newest = datetime.fromisoformat(second["created_at"]).replace(tzinfo=UTC).timestamp()
    last = found["opencbr_vault_last_successful_backup_timestamp_seconds"][vault_key]
    assert last == pytest.approx(newest, abs=1e-3)
    pair = (
        ("destination_region", "region2"),
        ("destination_vault_id", dest["id"]),
        ("region", "region1"),
        ("vault_id", vault["id"]),
    )
    # The second backup was never replicated: the pair lags by its age.
    assert found["opencbr_replication_lag_seconds"][pair] > 0
    assert pair in found["opencbr_replication_last_success_timestamp_seconds"]
    records = found["opencbr_replication_records"]
    assert (
        records[(("destination_region", "region2"), ("region", "region1"), ("status", "success"))]
        == 1
    )

    replicate_backup(env, vault["id"], second["id"], dest["id"])  # returns once it is queued
    deadline = time.monotonic() + 60
    while gauges(metrics_url)["opencbr_replication_lag_seconds"][pair] != 0:
        assert time.monotonic() < deadline, "the pair never caught up"
        time.sleep(0.2)
    records = gauges(metrics_url)["opencbr_replication_records"]
    assert (
        records[(("destination_region", "region2"), ("region", "region1"), ("status", "success"))]
        == 2
    )
