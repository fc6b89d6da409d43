"""Verify and repair over HTTP (`POST /vaults/{vault_id}/verify`), with real files: chunks
whose stored bytes were flipped are found, marked damaged and reported; repair copies a
good copy from the related vault (a replica's source, or a backup's replica), proven by
a byte-identical restore; what cannot be repaired is reported. And the scheduled verify
of housekeeping, its share per pass and its claim."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from opencbr import clock
from opencbr.db.backups import VaultChunk, VaultVerifyState
from opencbr.db.session import Database
from opencbr.services import verify
from opencbr.services.runtime import Runtime
from opencbr.settings import Settings
from tests.api.helpers import (
    Env,
    assert_error,
    backup_now,
    chunk_intact,
    create_vault,
    flip_byte,
    largest_chunk,
    make_settings,
    neighbour,
    register_dir,
    replicate_backup,
    restore,
    serving,
    verify_vault,
)
from tests.unit.archive_support import assert_same_tree

MiB = 1 << 20


def _tree(env: Env) -> tuple[Path, dict[str, Any]]:
    source = env.roots["region1"] / "source"
    source.mkdir()
    rng = random.Random(31)
    (source / "large.bin").write_bytes(rng.randbytes(3 * MiB))
    for index in range(5):
        (source / f"small{index}.txt").write_bytes(rng.randbytes(rng.randrange(1, 3000)))
    resource = register_dir(env, name="source")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    return source, vault


def _flip_largest(env: Env, region: str, vault_id: str) -> Path:
    chunk = largest_chunk(env, region, vault_id)
    flip_byte(chunk)
    return chunk


def _backup(env: Env, backup_id: str, region: str) -> dict[str, Any]:
    body: dict[str, Any] = env.get(region, f"/backups/{backup_id}").json()["backup"]
    return body


def _replicated(env: Env) -> tuple[Path, dict[str, Any], dict[str, Any], dict[str, Any]]:
    source, vault = _tree(env)
    backup = backup_now(env, vault["id"])
    dest = create_vault(env, "region2", name="dest", protect_type="replication")
    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "success", record
    return source, vault, dest, _backup(env, record["destination_backup_id"], "region2")


def test_verify_finds_a_damaged_replica_chunk_and_repair_copies_it_from_the_source(
    env: Env,
) -> None:
    source, _vault, dest, replica = _replicated(env)
    clean = verify_vault(env, "region2", dest["id"])
    assert clean["chunks_checked"] == clean["chunks_total"] == clean["chunks_scanned"] > 1
    assert clean["damaged"] == 0 and clean["unrepaired_backups"] == []
    victim = _flip_largest(env, "region2", dest["id"])

    found = verify_vault(env, "region2", dest["id"])  # no repair: found, marked, reported
    assert (found["damaged"], found["repaired"], found["unrepaired"]) == (1, 0, 1)
    assert found["unrepaired_backups"] == [replica["id"]]
    reported = _backup(env, replica["id"], "region2")
    assert reported["damaged_chunks"] == 1 and "damaged" in reported["fail_reason"]
    assert not chunk_intact(env, victim)

    fixed = verify_vault(env, "region2", dest["id"], repair=True)
    assert (fixed["damaged"], fixed["repaired"], fixed["unrepaired"]) == (1, 1, 0)
    assert chunk_intact(env, victim)
    healed = _backup(env, replica["id"], "region2")
    assert healed["damaged_chunks"] == 0 and healed["fail_reason"] is None
    assert healed["content_root"] == replica["content_root"]
    target = register_dir(env, "region2", name="restored")
    log = restore(env, replica["id"], {"resource_id": target["id"]}, "region2")
    assert log["status"] == "success", log
    assert_same_tree(source, env.roots["region2"] / "restored")


def test_repair_of_a_backup_vault_copies_a_damaged_source_chunk_back_from_its_replica(
    env: Env,
) -> None:
    source, vault, _dest, _replica = _replicated(env)
    backup = env.get("region1", "/backups", params={"vault_id": vault["id"]}).json()["backups"][0]
    victim = _flip_largest(env, "region1", vault["id"])
    fixed = verify_vault(env, "region1", vault["id"], repair=True)
    assert (fixed["damaged"], fixed["repaired"]) == (1, 1)
    assert chunk_intact(env, victim)
    log = restore(env, backup["id"], {"resource_id": register_dir(env, name="back")["id"]})
    assert log["status"] == "success", log
    assert_same_tree(source, env.roots["region1"] / "back")


def test_a_damaged_chunk_with_no_good_copy_is_reported_not_available_plainly(env: Env) -> None:
    _source, vault = _tree(env)
    backup = backup_now(env, vault["id"])
    victim = _flip_largest(env, "region1", vault["id"])
    found = verify_vault(env, "region1", vault["id"], repair=True)
    assert (found["damaged"], found["repaired"], found["unrepaired"]) == (1, 0, 1)
    assert found["unrepaired_backups"] == [backup["id"]]
    assert not chunk_intact(env, victim)
    reported = _backup(env, backup["id"], "region1")
    assert reported["damaged_chunks"] == 1
    assert "damaged" in reported["fail_reason"]


def test_a_sampled_verify_walks_every_chunk_and_checks_a_share(env: Env) -> None:
    _source, vault = _tree(env)
    backup_now(env, vault["id"])
    sampled = verify_vault(env, "region1", vault["id"], sample_percent=1)
    assert sampled["chunks_scanned"] == sampled["chunks_total"] > 1
    assert 0 <= sampled["chunks_checked"] < sampled["chunks_total"]
    assert sampled["sample_percent"] == 1 and sampled["repair"] is False


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"verify": None},
        {"verify": {"sample_percent": 0}},
        {"verify": {"sample_percent": 101}},
        {"verify": {"sample_percent": "10"}},
        {"verify": {"sample_percent": 10.0}},
        {"verify": {"sample_percent": True}},
        {"verify": {"repair": "yes"}},
        {"verify": {"repair": 1}},
    ],
)
def test_bad_verify_bodies_are_refused_with_9900(env: Env, body: dict[str, Any]) -> None:
    vault = create_vault(env)
    assert_error(
        env.post("region1", f"/vaults/{vault['id']}/verify", body), 400, "BackupService.9900"
    )


def test_verify_of_an_unknown_or_foreign_vault_is_6105_and_viewers_may_not(env: Env) -> None:
    body = {"verify": {"sample_percent": 10}}
    missing = env.post("region1", "/vaults/00000000-0000-0000-0000-000000000000/verify", body)
    assert_error(missing, 404, "BackupService.6105")
    other = neighbour(env)
    foreign = create_vault(env)
    assert_error(other.post(f"/vaults/{foreign['id']}/verify", body), 404, "BackupService.6105")
    viewer = env.client.post(
        env.url("region1", f"/vaults/{foreign['id']}/verify"),
        json=body,
        headers=env.headers("region1", "viewer"),
    )
    assert viewer.status_code == 403, viewer.text


def test_a_second_verify_while_one_is_live_answers_with_the_live_log(env: Env) -> None:
    vault = create_vault(env)
    runtime = env.client.app.state.jobs.runtime  # type: ignore[attr-defined]
    runtime.stopping.set()  # no worker claims the first: it stays live
    try:
        body = {"verify": {"sample_percent": 50}}
        first = env.post("region1", f"/vaults/{vault['id']}/verify", body).json()["verify"]
        second = env.post("region1", f"/vaults/{vault['id']}/verify", body).json()["verify"]
    finally:
        runtime.stopping.clear()
    assert first["operation_log_id"] == second["operation_log_id"]


# --- the scheduled verify --------------------------------------------------------------


@pytest.fixture
def scheduled(tmp_path: Path, database: Database) -> Iterator[Env]:
    settings: Settings = make_settings(tmp_path, verify_percent_per_day=50.0)
    with serving(settings, database) as running:
        yield running


def test_scheduled_verify_checks_its_share_per_pass_once_and_finds_damage(
    scheduled: Env,
) -> None:
    env = scheduled
    _source, vault = _tree(env)
    backup = backup_now(env, vault["id"])
    runtime: Runtime = env.client.app.state.jobs.runtime  # type: ignore[attr-defined]
    with env.db.reading() as session:
        query = select(VaultChunk.digest).where(VaultChunk.vault_id == vault["id"])
        total = len(session.scalars(query).all())
    victim = _flip_largest(env, "region1", vault["id"])
    now = clock.now()
    # A first pass checks one interval's share (50 %/day over 1 h), at least a chunk.
    first = verify.scheduled_pass(runtime, now)
    assert first >= 1
    assert verify.scheduled_pass(runtime, now) == 0  # the same moment: nothing more due
    # A day later a whole day's share is due (50 %, capped at one day): after three days
    # every chunk was checked at least once, so the damaged one was found.
    checked = first
    for day in range(1, 4):
        checked += verify.scheduled_pass(runtime, now + timedelta(days=day))
    assert checked >= total
    with env.db.reading() as session:
        state = session.get(VaultVerifyState, vault["id"])
        assert state is not None and state.checked_at == now + timedelta(days=3)
    assert _backup(env, backup["id"], "region1")["damaged_chunks"] == 1
    assert not chunk_intact(env, victim)  # no good copy anywhere: reported, not repaired


def test_scheduled_verify_passes_of_two_workers_at_once_check_each_slice_once(
    scheduled: Env,
) -> None:
    env = scheduled
    _source, vault = _tree(env)
    backup_now(env, vault["id"])
    runtime: Runtime = env.client.app.state.jobs.runtime  # type: ignore[attr-defined]
    now = clock.now()
    verify.scheduled_pass(runtime, now - timedelta(days=1))  # the vault's first slice
    with env.db.reading() as session:
        query = select(VaultChunk.digest).where(VaultChunk.vault_id == vault["id"])
        total = len(session.scalars(query).all())
    due = -(-total // 2)  # a whole day's share of 50 %, rounded up
    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(lambda _w: verify.scheduled_pass(runtime, now), range(2)))
    assert sorted(counts) == [0, due]
