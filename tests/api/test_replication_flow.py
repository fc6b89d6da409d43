"""How replication flows into a region, over HTTP: the rate limit of a destination region
(a token bucket in the database, shared by every copy), its replication windows (with the
injected clock), and one source backup copied to two regions at once reading each source
chunk once."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from opencbr import clock
from opencbr.db.backups import OperationLog, ReplicationRecord
from opencbr.db.session import Database
from opencbr.db.vaults import GB, Vault
from opencbr.services.throttle import MiB, Throttle
from opencbr.settings import RegionSettings
from opencbr.storage.faulty import FaultyChunkStore
from tests.api.helpers import (
    Env,
    backup_now,
    chunk_names,
    create_vault,
    make_settings,
    records,
    register_dir,
    restore,
    serving,
)
from tests.polling import pauses
from tests.unit.archive_support import assert_same_tree

pytestmark = pytest.mark.slow  # each copies megabytes at a limited rate, or waits on windows
TURBO = "OS::Sfs::Turbo"
NIGHT = ["22:00-06:00"]
NOON = datetime(2026, 11, 27, 12, 0)  # outside NIGHT
EVENING = datetime(2026, 11, 27, 23, 0)  # inside
MORNING = datetime(2026, 11, 27, 7, 0)  # outside again (earlier: no lease looks expired)


class Clock:
    """The injected clock, standing still at a moment the test moves."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment
        clock.set_clock(lambda: self.moment)

    def move(self, moment: datetime) -> None:
        self.moment = moment


@pytest.fixture
def frozen() -> Iterator[Clock]:
    yield Clock(NOON)
    clock.reset_clock()


def regions(tmp_path: Path, **extra: dict[str, Any]) -> list[RegionSettings]:
    """region1 (its store wrapped to count every call), region2 and region3, each with the
    settings `extra` gives it by name."""
    store = tmp_path / "data" / "store"
    return [
        RegionSettings(name="region1", storage=f"faulty+{store / 'region1'}?seed=1"),
        RegionSettings(name="region2", storage=str(store / "region2"), **extra.get("region2", {})),
        RegionSettings(name="region3", storage=str(store / "region3"), **extra.get("region3", {})),
    ]


def app(tmp_path: Path, database: Database, **extra: dict[str, Any]) -> Any:
    settings = make_settings(tmp_path, ("region3",), regions=regions(tmp_path, **extra))
    return serving(settings, database)


def counting_store(env: Env, region: str, vault_id: str) -> FaultyChunkStore:
    """The FaultyChunkStore (it counts every call) under the wrappers the opener adds."""
    store: Any = env.client.app.state.runtime.stores.vault(region, vault_id)
    while not isinstance(store, FaultyChunkStore):
        store = store.inner
    return store


def source_backup(env: Env, megabytes: int) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A vault of region1 backing up `megabytes` MiB of incompressible data; its backup."""
    tree = env.roots["region1"] / "data"
    tree.mkdir()
    rng = random.Random(17)
    for n in range(megabytes // 4):
        (tree / f"part{n}.bin").write_bytes(rng.randbytes(4 * MiB))
    resource = register_dir(env, name="data")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": TURBO}])
    return tree, vault, backup_now(env, vault["id"])


def replicate(env: Env, backup_id: str, region: str, dest_id: str) -> None:
    body = {
        "replicate": {
            "destination_project_id": env.projects[region],
            "destination_region": region,
            "destination_vault_id": dest_id,
        }
    }
    response = env.post("region1", f"/backups/{backup_id}/replicate", body)
    assert response.status_code == 200, response.text


def record_to(env: Env, vault_id: str, dest_id: str) -> dict[str, Any]:
    return next(r for r in records(env, vault_id) if r["destination_vault_id"] == dest_id)


def wait_record(env: Env, vault_id: str, dest_id: str, status: str) -> dict[str, Any]:
    for pause in pauses(60, longest=0.1):
        record = record_to(env, vault_id, dest_id)
        if record["status"] == status:
            return record
        assert record["status"] != "fail", record
        time.sleep(pause)
    raise AssertionError(f"never {status}: {record_to(env, vault_id, dest_id)}")


def assert_restores(env: Env, region: str, replica_id: str, expected: Path) -> None:
    target = register_dir(env, region, name=f"restored-{region}")
    log = restore(env, replica_id, {"resource_id": target["id"]}, region)
    assert log["status"] == "success", log
    assert_same_tree(expected, env.roots[region] / f"restored-{region}")


# --- rate limit ----------------------------------------------------------------------------


def test_a_replication_runs_at_the_rate_limit_of_its_destination_region(
    tmp_path: Path, database: Database
) -> None:
    # 3 MiB/s: a copy on a machine busy with other work still runs well above it, so what
    # is measured is the limit, not the machine (8 MiB/s was reached only on a quiet one;
    # 4 MiB/s came out at 3.46 once, in a whole-suite run on a slow day).
    limit = 3.0
    with (
        app(tmp_path, database, region2={"replication_rate_limit_mib": limit}) as env,
        structlog.testing.capture_logs() as events,
    ):
        _tree, vault, backup = source_backup(env, 16)
        dest = create_vault(env, "region2", name="dst", protect_type="replication")
        replicate(env, backup["id"], "region2", dest["id"])
        record = wait_record(env, vault["id"], dest["id"], "success")
        with env.db.reading() as session:
            row = session.get(ReplicationRecord, record["id"])
            assert row is not None
            log = session.get(OperationLog, row.operation_log_id)
            assert log is not None and log.ended_at is not None
            seconds = (log.ended_at - log.started_at).total_seconds()
    copied = record["extra_info"]["bytes_copied"] / MiB
    assert copied >= 16  # incompressible: what was measured is the data's size
    finished = next(e for e in events if e["event"] == "replication record finished")
    rate = copied / finished["copy_s"]  # the copy, which the limit paces
    assert 0.9 * limit <= rate <= 1.1 * limit, (copied, finished, rate)
    assert copied / seconds <= limit  # from the request to the commit: never faster


def test_copies_into_one_region_share_its_bucket_across_throttles(database: Database) -> None:
    """Two copies (two throttles, as two worker processes would hold) into one region
    together stay at the region's rate: the bucket is the database row, not the process."""
    limit, each = 16.0, 8 * MiB
    stopping = threading.Event()

    def copy() -> None:
        throttle = Throttle(database, "shared", limit, stopping)
        for _ in range(each // MiB):
            throttle.take(MiB)

    started = time.monotonic()
    copies = [threading.Thread(target=copy) for _ in range(2)]
    for thread in copies:
        thread.start()
    for thread in copies:
        thread.join()
    seconds = time.monotonic() - started
    rate = 2 * each / MiB / seconds
    assert 0.9 * limit <= rate <= limit * 1.05, (seconds, rate)


# --- windows -------------------------------------------------------------------------------


def test_outside_its_window_a_copy_waits_pauses_and_resumes_without_copying_twice(
    tmp_path: Path, database: Database, frozen: Clock
) -> None:
    night = {"replication_windows": NIGHT, "replication_rate_limit_mib": 4.0}  # 4 s of copy
    with app(tmp_path, database, region2=night) as env:
        tree, vault, backup = source_backup(env, 16)
        total = len(chunk_names(env, "region1", vault["id"]))
        dest = create_vault(env, "region2", name="dst", protect_type="replication")
        reads = counting_store(env, "region1", vault["id"])
        read_before = reads.calls["get_chunk"]
        replicate(env, backup["id"], "region2", dest["id"])

        time.sleep(1.5)  # three reconciler passes (every 0.5 s in tests): none starts it
        assert record_to(env, vault["id"], dest["id"])["status"] == "waiting_replicate"
        assert chunk_names(env, "region2", dest["id"]) == set()

        frozen.move(EVENING)  # the window opens: the next reconciler pass starts it
        for pause in pauses(30, longest=0.05):
            if len(chunk_names(env, "region2", dest["id"])) >= 2:
                break
            time.sleep(pause)
        frozen.move(MORNING)  # it closes: the copy stops after the chunks under way
        paused = wait_record(env, vault["id"], dest["id"], "waiting_replicate")
        assert operation_log_of(env, paused)["status"] == "waiting"
        copied = chunk_names(env, "region2", dest["id"])
        assert 2 <= len(copied) < total, (len(copied), total)
        time.sleep(1.0)
        assert chunk_names(env, "region2", dest["id"]) == copied  # paused, not retried
        assert record_to(env, vault["id"], dest["id"])["status"] == "waiting_replicate"

        frozen.move(EVENING)  # open again: resumed, copying only what is missing
        done = wait_record(env, vault["id"], dest["id"], "success")
        assert operation_log_of(env, done)["status"] == "success"
        assert done["extra_info"]["chunks_copied"] == total - len(copied), (done, paused)
        assert reads.calls["get_chunk"] - read_before == total  # none read (or copied) twice
        assert_restores(env, "region2", done["destination_backup_id"], tree)


def operation_log_of(env: Env, record: dict[str, Any]) -> dict[str, Any]:
    """The operation log a replication record reports its progress on."""
    with env.db.reading() as session:
        row = session.get(ReplicationRecord, record["id"])
        assert row is not None and row.operation_log_id is not None
        log_id = row.operation_log_id
    log: dict[str, Any] = env.get("region1", f"/operation-logs/{log_id}").json()["operation_log"]
    return log


# --- read once, send to many ---------------------------------------------------------------


def test_one_backup_replicated_to_two_regions_at_once_reads_each_chunk_once(
    tmp_path: Path, database: Database, frozen: Clock
) -> None:
    """Both records become due when the destinations' windows open: one pass claims both,
    reads each source chunk once and writes it into both regions."""
    night = {"replication_windows": NIGHT}
    with app(tmp_path, database, region2=night, region3=night) as env:
        tree, vault, backup = source_backup(env, 12)
        total = len(chunk_names(env, "region1", vault["id"]))
        dest2 = create_vault(env, "region2", name="dst2", protect_type="replication")
        dest3 = create_vault(env, "region3", name="dst3", protect_type="replication")
        reads = counting_store(env, "region1", vault["id"])
        replicate(env, backup["id"], "region2", dest2["id"])
        replicate(env, backup["id"], "region3", dest3["id"])
        time.sleep(1.0)
        read_before = reads.calls["get_chunk"]

        frozen.move(EVENING)
        two = wait_record(env, vault["id"], dest2["id"], "success")
        three = wait_record(env, vault["id"], dest3["id"], "success")
        assert reads.calls["get_chunk"] - read_before == total  # each chunk read once
        for record in (two, three):
            assert record["extra_info"]["chunks_copied"] == total, record
        assert chunk_names(env, "region2", dest2["id"]) == chunk_names(env, "region1", vault["id"])
        assert chunk_names(env, "region3", dest3["id"]) == chunk_names(env, "region1", vault["id"])
        assert_restores(env, "region2", two["destination_backup_id"], tree)
        assert_restores(env, "region3", three["destination_backup_id"], tree)


def test_a_destination_that_fails_its_plan_fails_alone_in_a_shared_pass(
    tmp_path: Path, database: Database, frozen: Clock
) -> None:
    """Each record of a pass is settled on its own: region3's vault fills up while both
    wait, so its record fails (6129) and region2's is copied and committed."""
    night = {"replication_windows": NIGHT}
    with app(tmp_path, database, region2=night, region3=night) as env:
        _tree, vault, backup = source_backup(env, 8)
        total = len(chunk_names(env, "region1", vault["id"]))
        dest2 = create_vault(env, "region2", name="dst2", protect_type="replication")
        dest3 = create_vault(env, "region3", name="dst3", protect_type="replication")
        replicate(env, backup["id"], "region2", dest2["id"])
        replicate(env, backup["id"], "region3", dest3["id"])
        with env.db.transaction() as session:
            full = session.get(Vault, dest3["id"])
            assert full is not None
            full.used_bytes = full.size_gb * GB - MiB  # room for less than the backup

        frozen.move(EVENING)
        two = wait_record(env, vault["id"], dest2["id"], "success")
        for pause in pauses(60, longest=0.1):
            three = record_to(env, vault["id"], dest3["id"])
            if three["status"] == "fail":
                break
            time.sleep(pause)
        assert three["extra_info"]["fail_code"] == "BackupService.6129", three
        assert two["extra_info"]["chunks_copied"] == total
        assert chunk_names(env, "region3", dest3["id"]) == set()
        assert (
            env.get("region3", "/backups", params={"vault_id": dest3["id"]}).json()["backups"] == []
        )


def test_a_record_started_while_its_backup_is_being_copied_joins_that_copy(
    tmp_path: Path, database: Database
) -> None:
    """The second region's record starts while the first one copies (slowed by its rate
    limit): it joins that pass, so only the chunks read before it joined are read twice."""
    slow = {"replication_rate_limit_mib": 4.0}  # 16 MiB: 4 s
    with app(tmp_path, database, region2=slow) as env, structlog.testing.capture_logs() as events:
        tree, vault, backup = source_backup(env, 16)
        total = len(chunk_names(env, "region1", vault["id"]))
        dest2 = create_vault(env, "region2", name="dst2", protect_type="replication")
        dest3 = create_vault(env, "region3", name="dst3", protect_type="replication")
        reads = counting_store(env, "region1", vault["id"])
        read_before = reads.calls["get_chunk"]
        replicate(env, backup["id"], "region2", dest2["id"])
        for pause in pauses(30, longest=0.05):
            if len(chunk_names(env, "region2", dest2["id"])) >= 2:
                break
            time.sleep(pause)
        replicate(env, backup["id"], "region3", dest3["id"])
        two = wait_record(env, vault["id"], dest2["id"], "success")
        three = wait_record(env, vault["id"], dest3["id"], "success")
        read = reads.calls["get_chunk"] - read_before
        joined = [e["id"] for e in events if e["event"] == "replication joined a running pass"]
        assert joined == [three["id"]]
        assert total + 2 <= read < 2 * total, (read, total)  # alone: 2 * total
        for record in (two, three):
            assert record["extra_info"]["chunks_copied"] == total, record
        assert chunk_names(env, "region3", dest3["id"]) == chunk_names(env, "region1", vault["id"])
        assert_restores(env, "region3", three["destination_backup_id"], tree)
