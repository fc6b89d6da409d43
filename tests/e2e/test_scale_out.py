"""Scale-out as real processes: PostgreSQL metadata, a PostgreSQL (or Redis) queue,
SeaweedFS (S3) storage for both regions, two `serve --no-worker` API processes and two
`opencbr worker` processes on one config.

Backups are asked of both APIs; a policy slot fires once with both workers ticking; a
vault of 20 backups is replicated by both workers, one of them SIGKILLed in the middle of
a copy; the other finishes every record; each replica restores byte-identical."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.e2e.flows import Client, Server, Worker, free_port, write_config
from tests.s3servers import S3Server
from tests.unit.archive_support import assert_same_tree

pytestmark = [pytest.mark.slow, pytest.mark.s3]

RESOURCES = 4
ROUNDS = 5  # RESOURCES x ROUNDS backups in the source vault
FILE_BYTES = 96 * 1024
# Recovery within seconds: a killed worker's lease expires after 3 s, and the survivor's
# reconciler looks every second; each chunk written to region2 (S3 through a faulty
# wrapper) waits 0.15 s, so a copy lasts long enough to be interrupted.
CONFIG = """
lease_seconds = 3.0
schedule_tick_seconds = 1.0
worker_threads = 2
metrics_listen = ""
"""


@dataclass
class Cluster:
    apis: list[Server]
    workers: list[Worker]
    database_url: str
    s3: S3Server
    storages: list[str]  # each region's s3:// URL

    def stop(self) -> None:
        for process in [*self.workers, *self.apis]:
            process.stop()


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(params=["postgres", pytest.param("redis", marks=pytest.mark.redis)])
def queue_url(request: pytest.FixtureRequest, empty_postgres_url: str) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_queue_url"))
    return libpq(empty_postgres_url)  # the queue's tables beside opencbr's


def s3_region(name: str, s3: S3Server, storage: str, storage_wrapper: str = "") -> str:
    """A region whose chunks live under `storage` (an s3:// URL of the SeaweedFS bucket);
    `storage_wrapper` (e.g. "faulty+") wraps the S3 store, and its options follow it."""
    settings = s3.region(name)
    del settings["storage"]
    prefix, _, options = storage_wrapper.partition("?")
    lines = [f'{key} = "{value}"' for key, value in settings.items()]
    query = f"?{options}" if options else ""
    return "[[regions]]\n" + "\n".join(lines) + f'\nstorage = "{prefix}{storage}{query}"\n'


@pytest.fixture
def cluster(
    tmp_path: Path, empty_postgres_url: str, queue_url: str, seaweedfs: S3Server
) -> Iterator[Cluster]:
    storages = [seaweedfs.fresh_url(), seaweedfs.fresh_url()]
    extra = (
        f'database_url = "{empty_postgres_url}"\nqueue_url = "{queue_url}"\n{CONFIG}'
        + s3_region("region1", seaweedfs, storages[0])
        + s3_region("region2", seaweedfs, storages[1], "faulty+?delay=0.15")
    )
    ports = [free_port(), free_port()]
    config = write_config(tmp_path, ports[0], extra)
    data = tmp_path / "data"
    apis = [
        Server(
            config, data, port, args=("--no-worker", "--port", str(port)), log_name=f"api{n}.log"
        )
        for n, port in enumerate(ports)
    ]
    workers = [
        Worker(config, data / "worker0.log", ("--metrics-listen", f"127.0.0.1:{free_port()}")),
        Worker(config, data / "worker1.log", ("--threads", "2")),
    ]
    everything = [*apis, *workers]
    instance = Cluster(apis, workers, empty_postgres_url, seaweedfs, storages)
    try:
        for process in everything:  # all at once: they migrate and bootstrap in turn
            process.launch()
        for process in everything:
            process.wait_ready()
        yield instance
    finally:
        instance.stop()


def test_two_apis_and_two_workers_share_the_work(cluster: Cluster, tmp_path: Path) -> None:
    api0, api1 = cluster.apis
    projects = api0.projects()
    clients = [Client(api, projects["region1"]) for api in cluster.apis]
    region2 = Client(api1, projects["region2"])
    try:
        policy_slot_fires_once(cluster, clients[0], api0.root("region1"))
        source_vault, expected = twenty_backups(clients, api0.root("region1"), tmp_path)
        replicas = replicate_while_a_worker_dies(
            cluster, clients[1], region2, projects, source_vault
        )
        restore_every_replica(region2, api1.root("region2"), replicas, expected)
        chunks_are_in_s3(cluster)
        survivor_metrics(cluster)
    finally:
        for client in [*clients, region2]:
            client.http.close()
    for api in cluster.apis:  # --no-worker: no work and no housekeeping in the APIs
        log = api.log()
        assert "logger=opencbr.services.leases" not in log, log
        assert "logger=opencbr.jobs" not in log, log


def policy_slot_fires_once(cluster: Cluster, client: Client, root: Path) -> None:
    """Move a daily policy's slot two minutes into the past through the database: both
    workers' ticks see it due; exactly one run and one backup come of it."""
    data = root / "scheduled"
    data.mkdir()
    (data / "notes.txt").write_text("scheduled\n" * 100)
    vault_id = client.vault("scheduled", resources=[client.register_dir("scheduled", str(data))])
    now = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
    slot = now - timedelta(minutes=2)
    pattern = f"FREQ=DAILY;INTERVAL=1;BYHOUR={slot.hour};BYMINUTE={slot.minute}"
    body = {
        "policy": {
            "name": "daily",
            "operation_type": "backup",
            "operation_definition": {"max_backups": 5},
            "trigger": {"properties": {"pattern": [pattern]}},
        }
    }
    policy_id = client.call("POST", "/policies", body)["policy"]["id"]
    client.call("POST", f"/vaults/{vault_id}/associatepolicy", {"policy_id": policy_id})
    engine = create_engine(cluster.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE policies SET start_time = :start, next_run_at = :slot WHERE id = :id"),
                {"start": slot - timedelta(days=1), "slot": slot, "id": policy_id},
            )
        backups = client.wait(
            "/backups",
            lambda b: any(x["status"] == "available" for x in b["backups"]),
            timeout=60,
            vault_id=vault_id,
        )["backups"]
        time.sleep(3)  # three more ticks of each worker
        with engine.connect() as connection:
            runs = connection.execute(
                text("SELECT slot_at FROM policy_runs WHERE policy_id = :id"), {"id": policy_id}
            ).all()
            next_run = connection.scalar(
                text("SELECT next_run_at FROM policies WHERE id = :id"), {"id": policy_id}
            )
    finally:
        engine.dispose()
    assert [run.slot_at for run in runs] == [slot]
    assert next_run == slot + timedelta(days=1)
    backups = client.call("GET", "/backups", vault_id=vault_id)["backups"]
    assert len(backups) == 1 and backups[0]["extend_info"]["auto_trigger"] is True


def twenty_backups(
    clients: list[Client], root: Path, tmp_path: Path
) -> tuple[str, dict[str, Path]]:
    """RESOURCES directories backed up ROUNDS times (checkpoints asked of both APIs in
    turn), new data each round; backup id -> a copy of what it holds."""
    folders = [root / f"res{r}" for r in range(RESOURCES)]
    for folder in folders:
        folder.mkdir()
    client = clients[0]
    ids = [client.register_dir(folder.name, str(folder)) for folder in folders]
    vault_id = client.vault("source", resources=ids)
    expected: dict[str, Path] = {}
    for round_ in range(ROUNDS):
        for folder in folders:
            (folder / f"round{round_}.bin").write_bytes(_random(FILE_BYTES))
            (folder / "log.txt").write_text(f"{folder.name} round {round_}\n")
        asked = clients[round_ % 2]
        checkpoint_id = asked.start_backup(vault_id, f"round{round_}")
        asked.wait(
            f"/checkpoints/{checkpoint_id}", lambda b: b["checkpoint"]["status"] != "protecting"
        )
        made = asked.call("GET", "/backups", checkpoint_id=checkpoint_id)["backups"]
        assert sorted(b["status"] for b in made) == ["available"] * RESOURCES, made
        for backup in made:
            copy = tmp_path / "expected" / backup["id"]
            shutil.copytree(root / backup["resource_name"], copy)
            expected[backup["id"]] = copy
    assert len(expected) == RESOURCES * ROUNDS
    return vault_id, expected


def _random(size: int) -> bytes:
    with open("/dev/urandom", "rb") as source:
        return source.read(size)


FINISHED = re.compile(r'event="leased work finished" kind=replication id=(\S+)')
STARTED = re.compile(r'event="leased work (?:started|resumed)" kind=replication id=(\S+)')
RESUMED = re.compile(r'event="leased work resumed" kind=replication id=(\S+)')


def replicate_while_a_worker_dies(
    cluster: Cluster,
    client: Client,
    region2: Client,
    projects: dict[str, str],
    source_vault: str,
) -> dict[str, str]:
    """Replicate the vault; once a worker has copied three records, SIGKILL it in the
    middle of its next copy. Returns source backup id -> replica id."""
    destination = region2.vault("replicas", protect_type="replication")
    body = {
        "replicate": {
            "auto_trigger": False,
            "destination_project_id": projects["region2"],
            "destination_region": "region2",
            "destination_vault_id": destination,
            "vault_id": source_vault,
        }
    }
    client.call("POST", "/checkpoints/replicate", body)
    victim = _kill_mid_copy(cluster.workers)
    survivor = next(w for w in cluster.workers if w is not victim)

    def all_ended(listing: Any) -> bool:
        records = [r for b in listing["backups"] for r in b["replication_records"]]
        return len(records) == RESOURCES * ROUNDS and all(
            r["status"] in ("success", "fail") for r in records
        )

    listing = client.wait(
        "/backups", all_ended, timeout=120, vault_id=source_vault, show_replication="true"
    )
    records = {r["id"]: r for b in listing["backups"] for r in b["replication_records"]}
    assert {r["status"] for r in records.values()} == {"success"}, records

    by_victim = set(FINISHED.findall(victim.log()))
    by_survivor = set(FINISHED.findall(survivor.log()))
    assert by_victim and by_survivor, "one worker copied everything"
    assert by_victim | by_survivor == set(records) and not by_victim & by_survivor
    interrupted = set(STARTED.findall(victim.log())) - by_victim
    assert interrupted and interrupted <= set(RESUMED.findall(survivor.log())) & by_survivor

    replicas = region2.call("GET", "/backups", vault_id=destination, limit=100)["backups"]
    assert len(replicas) == RESOURCES * ROUNDS, "exactly one replica per backup"
    assert {b["status"] for b in replicas} == {"available"}
    by_source = {b["source_backup_id"]: b["id"] for b in replicas}
    assert len(by_source) == RESOURCES * ROUNDS
    return by_source


def _kill_mid_copy(workers: list[Worker]) -> Worker:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for worker in workers:
            log = worker.log()
            done = set(FINISHED.findall(log))
            if len(done) >= 3 and set(STARTED.findall(log)) - done:
                worker.kill()
                return worker
        time.sleep(0.02)
    raise AssertionError("no worker was ever in the middle of a copy after three")


def restore_every_replica(
    region2: Client, root: Path, replicas: dict[str, str], expected: dict[str, Path]
) -> None:
    """Restore every replica into a directory of its own (all asked at once), then
    compare each with what its source backup held."""
    targets: dict[str, Path] = {}
    for source_id, replica_id in replicas.items():
        target = root / f"restore-{source_id[:8]}"
        target.mkdir()
        resource = region2.register_dir(target.name, str(target))
        region2.call(
            "POST", f"/backups/{replica_id}/restore", {"restore": {"resource_id": resource}}
        )
        targets[replica_id] = target

    def all_restored(body: Any) -> bool:
        logs = body["operation_logs"]
        return len(logs) == len(replicas) and all(x["status"] == "success" for x in logs)

    region2.wait("/operation-logs", all_restored, timeout=120, operation_type="restore", limit=100)
    for source_id, replica_id in replicas.items():
        assert_same_tree(expected[source_id], targets[replica_id])


def chunks_are_in_s3(cluster: Cluster) -> None:
    """Both regions' chunks and manifests are objects in SeaweedFS."""
    for storage in cluster.storages:
        keys = cluster.s3.keys(storage)
        assert any("/chunks/" in key for key in keys), keys
        assert any("/manifests/backup-" in key for key in keys), keys


def survivor_metrics(cluster: Cluster) -> None:
    """The worker started with --metrics-listen serves its task counters (if it lived)."""
    worker = cluster.workers[0]
    if worker.process is None or worker.process.poll() is not None:
        return
    port = worker.args[1].rpartition(":")[2]
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'opencbr_tasks_total{outcome="success",task="replicate"}' in body, body
