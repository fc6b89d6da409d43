"""GET /replication-status: per (source vault, destination vault) pair the lag (with a
moved clock), the pending bytes (the dry run's count), how the copies ended (the failure
streak) and the pairs a replication policy names; the lag gauge reads the same figures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from opencbr import clock
from opencbr.db.backups import BackupChunk
from opencbr.db.session import Database
from opencbr.services.monitoring import StateCollector
from opencbr.settings import RegionSettings
from tests.api.helpers import (
    Env,
    associate,
    backup_now,
    create_policy,
    create_vault,
    make_settings,
    neighbour,
    records,
    replication_definition,
    serving,
)
from tests.api.test_replication_dry_run import (
    DRY,
    MiB,
    backup_body,
    source_vault,
    vault_body,
    write,
)


@pytest.fixture
def frozen() -> Iterator[Any]:
    """`freeze(at)` stops the clock at `at` (naive UTC); the real clock comes back after."""

    def freeze(at: datetime) -> None:
        clock.set_clock(lambda: at.replace(tzinfo=UTC))

    yield freeze
    clock.reset_clock()


def at(wire: str) -> datetime:
    return datetime.fromisoformat(wire)


def the_pair(env: Env, **params: Any) -> dict[str, Any]:
    response = env.get("region1", "/replication-status", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["replication_pairs"]) == 1, body
    pair: dict[str, Any] = body["replication_pairs"][0]
    return pair


def only_in(env: Env, backup_id: str, others: list[str]) -> str:
    """A chunk `backup_id` references and none of `others` does."""
    with env.db.reading() as session:

        def digests(of: str) -> set[str]:
            query = select(BackupChunk.digest).where(BackupChunk.backup_id == of)
            return set(session.scalars(query))

        return sorted(digests(backup_id) - set().union(*(digests(o) for o in others)))[0]


def corrupt(env: Env, vault_id: str, digest: str) -> None:
    path = env.settings.data_dir / "store" / "region1" / "vaults" / vault_id / "chunks"
    victim = path / digest[:2] / digest
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0x55
    victim.write_bytes(bytes(data))


def replicated(env: Env, vault_id: str, backup_id: str, dest_id: str) -> str:
    """Replicate one backup; the status its record ended in."""
    path = f"/backups/{backup_id}/replicate"
    response = env.post("region1", path, backup_body(env, dest_id))
    assert response.status_code == 200, response.text
    record_id = response.json()["replication"]["replication_record_id"]
    for _poll in range(600):
        found = {r["id"]: r["status"] for r in records(env, vault_id)}
        if found[record_id] in ("success", "fail"):
            return found[record_id]
        time.sleep(0.05)
    raise AssertionError(f"record {record_id} did not end")


def lag_gauge(env: Env, vault_id: str, dest_id: str) -> float:
    for family in StateCollector(env.db, cache_seconds=0).collect():
        if family.name == "opencbr_replication_lag_seconds":
            for sample in family.samples:
                if sample.labels["destination_vault_id"] == dest_id:
                    assert sample.labels["vault_id"] == vault_id
                    return float(sample.value)
    raise AssertionError("no lag gauge for the pair")


@pytest.mark.slow
def test_lag_pending_bytes_and_failure_streak_of_a_pair(env: Env, frozen: Any) -> None:
    tree, vault = source_vault(env)
    first = backup_now(env, vault["id"])
    write(tree / "c.bin", 2 * MiB, 3)
    second = backup_now(env, vault["id"])
    (tree / "c.bin").unlink()
    write(tree / "d.bin", 1 * MiB, 4)
    third = backup_now(env, vault["id"])
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    assert env.get("region1", "/replication-status").json() == {
        "replication_pairs": [],
        "count": 0,
    }
    assert replicated(env, vault["id"], first["id"], dest["id"]) == "success"

    later = at(third["created_at"]) + timedelta(hours=2)
    frozen(later)
    pair = the_pair(env)
    assert (pair["vault_id"], pair["vault_name"]) == (vault["id"], vault["name"])
    assert (pair["destination_vault_id"], pair["destination_vault_name"]) == (dest["id"], "dst")
    assert pair["destination_region"] == "region2" and pair["source_region"] == "region1"
    assert pair["destination_project_id"] == env.projects["region2"]
    assert pair["newest_backup_at"] == third["created_at"]
    assert pair["newest_replicated_backup_at"] == first["created_at"]
    lag = int((later - at(second["created_at"])).total_seconds())
    assert pair["lag_seconds"] == lag and pair["backups_behind"] == 2
    assert lag_gauge(env, vault["id"], dest["id"]) == pytest.approx(
        (later - at(second["created_at"])).total_seconds()
    )
    dry = env.post(
        "region1", "/checkpoints/replicate", vault_body(env, vault["id"], dest["id"]), params=DRY
    ).json()["replication"]
    assert (pair["pending_bytes"], pair["pending_chunks"]) == (
        dry["missing_bytes"],
        dry["missing_chunks"],
    )
    assert pair["pending_bytes"] > 0
    assert pair["last_success_at"] is not None and pair["last_failure"] is None
    assert pair["failure_streak"] == 0 and pair["running"] == [] and pair["waiting_records"] == 0
    clock.reset_clock()

    # The second backup's own chunk is corrupt: replicating it fails, twice.
    corrupt(env, vault["id"], only_in(env, second["id"], [first["id"], third["id"]]))
    for _attempt in range(2):
        assert replicated(env, vault["id"], second["id"], dest["id"]) == "fail"
    pair = the_pair(env, vault_id=vault["id"])
    assert pair["failure_streak"] == 2
    failure = pair["last_failure"]
    assert failure["error_code"] == "BackupService.1006" and "damaged" in failure["reason"]
    # A success ends the streak; the last failure stays visible.
    assert replicated(env, vault["id"], third["id"], dest["id"]) == "success"
    frozen(later)
    pair = the_pair(env, vault_id=dest["id"])
    assert pair["failure_streak"] == 0 and pair["last_failure"] == failure
    assert pair["newest_replicated_backup_at"] == third["created_at"]
    assert pair["lag_seconds"] == lag and pair["backups_behind"] == 1  # the second is behind
    clock.reset_clock()

    # Another tenant sees no pair, even naming this vault.
    other = neighbour(env)
    assert other.get("/replication-status").json()["count"] == 0
    named = other.get("/replication-status", params={"vault_id": vault["id"]})
    assert named.status_code == 200 and named.json()["count"] == 0


def test_a_replication_policy_names_a_pair_before_any_copy(env: Env, frozen: Any) -> None:
    _tree, vault = source_vault(env)
    backup = backup_now(env, vault["id"])
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    policy = create_policy(
        env, name="copy", operation_type="replication", definition=replication_definition(env)
    )
    assert associate(env, vault["id"], policy["id"], dest["id"]).status_code == 200
    other = create_vault(env, name="other")
    later = at(backup["created_at"]) + timedelta(minutes=5)
    frozen(later)
    pair = the_pair(env)
    assert pair["policy_ids"] == [policy["id"]] and pair["destination_vault_id"] == dest["id"]
    assert pair["lag_seconds"] == 300 and pair["newest_replicated_backup_at"] is None
    assert pair["last_success_at"] is None and pair["failure_streak"] == 0
    single = env.post(
        "region1", f"/backups/{backup['id']}/replicate", backup_body(env, dest["id"]), params=DRY
    ).json()["replication"]
    assert pair["pending_bytes"] == single["missing_bytes"] > 0
    assert lag_gauge(env, vault["id"], dest["id"]) == 300.0
    filtered = env.get("region1", "/replication-status", params={"vault_id": other["id"]})
    assert filtered.json()["count"] == 0


def test_a_backup_copied_into_another_vault_of_the_region_is_no_backlog(
    env: Env, frozen: Any
) -> None:
    """A backup is replicated once per region: copied into one replication vault of
    region2, it is not behind for a second one there (a policy bound to it would never
    copy it: the planner refuses), so that pair shows no lag the alert could never see
    clear, and the dry run agrees."""
    _tree, vault = source_vault(env)
    backup = backup_now(env, vault["id"])
    first = create_vault(env, "region2", name="dst", protect_type="replication")
    second = create_vault(env, "region2", name="dst2", protect_type="replication")
    assert replicated(env, vault["id"], backup["id"], first["id"]) == "success"
    policy = create_policy(
        env, name="copy", operation_type="replication", definition=replication_definition(env)
    )
    assert associate(env, vault["id"], policy["id"], second["id"]).status_code == 200
    frozen(at(backup["created_at"]) + timedelta(minutes=5))
    pair = the_pair(env, vault_id=second["id"])
    assert pair["destination_vault_id"] == second["id"]
    assert pair["lag_seconds"] == 0 and pair["backups_behind"] == 0
    assert pair["pending_bytes"] == 0
    assert pair["newest_replicated_backup_at"] == backup["created_at"]
    assert lag_gauge(env, vault["id"], second["id"]) == 0.0
    body = vault_body(env, vault["id"], second["id"])
    dry = env.post("region1", "/checkpoints/replicate", body, params=DRY)
    assert dry.json()["error_code"] == "BackupService.0001"


@pytest.fixture
def slow_env(tmp_path: Path, database: Database) -> Iterator[Env]:
    """Like `env`, but region2's store takes 0.3 s per chunk: a copy is seen running."""
    store = tmp_path / "data" / "store"
    regions = [
        RegionSettings(name="region1", storage=str(store / "region1")),
        RegionSettings(name="region2", storage=f"faulty+{store / 'region2'}?delay=0.3"),
    ]
    with serving(make_settings(tmp_path, regions=regions), database) as running:
        yield running


@pytest.mark.slow
def test_a_running_copy_is_listed_with_its_progress(slow_env: Env) -> None:
    env = slow_env
    _tree, vault = source_vault(env)
    backup = backup_now(env, vault["id"])
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    response = env.post(
        "region1", f"/backups/{backup['id']}/replicate", backup_body(env, dest["id"])
    )
    record_id = response.json()["replication"]["replication_record_id"]
    seen = env.wait_for(
        "region1",
        "/replication-status",
        # Planned (its bytes to copy known) and not finished.
        lambda body: any(r["bytes_total"] for p in body["replication_pairs"] for r in p["running"]),
        timeout=30,
    )
    [running] = seen["replication_pairs"][0]["running"]
    assert running["replication_record_id"] == record_id and running["backup_id"] == backup["id"]
    assert running["bytes_total"] > 0 and 0 <= running["progress"] < 100
    done = env.wait_for(
        "region1",
        "/replication-status",
        lambda body: body["replication_pairs"][0]["last_success_at"] is not None,
        timeout=60,
    )
    pair = done["replication_pairs"][0]
    assert pair["running"] == [] and pair["lag_seconds"] == 0 and pair["pending_bytes"] == 0
