"""Replication over HTTP: the replicate APIs, records, validation codes, dedup, faults."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from opencbr.api.schemas.replication import CheckpointReplicateResponse
from opencbr.db import chunks
from opencbr.db.backups import ReplicationPlan, ReplicationRecord
from opencbr.db.session import Database
from opencbr.db.vaults import Vault
from opencbr.errors import CbrError
from opencbr.jobs import tasks
from opencbr.services import identity, planned_records, replication, replication_runs
from opencbr.services.replicas import create_replicas
from opencbr.settings import RegionSettings
from opencbr.storage.faulty import FaultyChunkStore
from tests.api.helpers import (
    PASSWORD,
    Env,
    assert_error,
    backup_now,
    chunk_names,
    chunks_dir,
    create_vault,
    issue,
    make_settings,
    records,
    register_dir,
    register_web_server,
    replicate_backup,
    restore,
    serving,
    wait_records,
)
from tests.polling import pauses
from tests.unit.archive_support import assert_same_tree, build_tree, mutate_in_place

MiB = 1 << 20


def seed_body(env: Env, vault_id: str, dest_vault_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "replicate": {
            "auto_trigger": False,
            "destination_project_id": env.projects["region2"],
            "destination_region": "region2",
            "destination_vault_id": dest_vault_id,
            "vault_id": vault_id,
            **extra,
        }
    }


def assert_restores_in_region2(env: Env, backup_id: str, expected: Path) -> None:
    target = register_dir(env, "region2", name="restored")
    log = restore(env, backup_id, {"resource_id": target["id"]}, "region2")
    assert log["status"] == "success", log
    assert_same_tree(expected, env.roots["region2"] / "restored")


@pytest.fixture
def source(env: Env) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    tree = env.roots["region1"] / "source"
    build_tree(tree, big_files=3, big_size=6 * MiB)
    resource = register_dir(env, name="source")
    vault = create_vault(
        env, name="vault-src", resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}]
    )
    return tree, resource, vault


def test_vault_replication_end_to_end(
    env: Env, source: tuple[Path, dict[str, Any], dict[str, Any]]
) -> None:
    tree, _resource, vault = source
    first = backup_now(env, vault["id"], name="first")
    expected_first = env.roots["region1"] / "expected-first"
    subprocess.run(["cp", "-a", str(tree), str(expected_first)], check=True)
    mutate_in_place(tree, 0.02)
    second = backup_now(env, vault["id"], name="second")
    dest = create_vault(
        env, "region2", name="vault-dst", object_type="turbo", protect_type="replication"
    )
    response = env.post(
        "region1", "/checkpoints/replicate", seed_body(env, vault["id"], dest["id"])
    )
    assert response.status_code == 200, response.text
    # Serialized by the route itself: the very bytes FastAPI makes of the response model.
    assert response.headers["content-type"] == "application/json"
    model = CheckpointReplicateResponse.model_validate_json(response.content)
    assert response.content == model.model_dump_json().encode()
    replication = response.json()["replication"]
    assert (
        replication["source_region"] == "region1" and replication["destination_region"] == "region2"
    )
    assert replication["project_id"] == env.projects["region1"]
    assert (
        replication["provider_id"] == vault["provider_id"]
        and replication["vault_id"] == vault["id"]
    )
    assert {b["backup_id"] for b in replication["backups"]} == {first["id"], second["id"]}
    done = wait_records(env, vault["id"], 2)
    assert {r["status"] for r in done} == {"success"}, done
    for record in done:
        assert record["extra_info"]["progress"] == 100 and record["extra_info"]["fail_code"] == ""
        assert record["destination_vault_id"] == dest["id"] and record["source_region"] == "region1"
    replicas = env.get(
        "region2", "/backups", params={"vault_id": dest["id"], "image_type": "replication"}
    ).json()
    assert replicas["count"] == 2
    by_source = {b["source_backup_id"]: b for b in replicas["backups"]}
    assert all(b["status"] == "available" for b in replicas["backups"])
    assert by_source[first["id"]]["resource_id"] == first["resource_id"]
    logs = env.get("region1", "/operation-logs", params={"operation_type": "replication"}).json()
    assert {entry["status"] for entry in logs["operation_logs"]} == {"success"}
    assert logs["operation_logs"][0]["extra_info"]["replication"]["destination_region"] == "region2"
    # Each log reports its record's bytes (opencbr's extension fields in `common`).
    copied = sorted(r["extra_info"]["bytes_copied"] for r in done)
    moved = [entry["extra_info"]["common"] for entry in logs["operation_logs"]]
    assert sorted(common["bytes_done"] for common in moved) == copied
    assert all(common["bytes_done"] == common["bytes_total"] for common in moved)

    for name, backup_id, expected in (
        ("r1", by_source[first["id"]]["id"], expected_first),
        ("r2", by_source[second["id"]]["id"], tree),
    ):
        target = register_dir(env, "region2", name=name)
        log = restore(env, backup_id, {"resource_id": target["id"]}, region="region2")
        assert log["status"] == "success", log
        assert_same_tree(expected, env.roots["region2"] / name)

    again = env.post("region1", "/checkpoints/replicate", seed_body(env, vault["id"], dest["id"]))
    assert_error(again, 400, "BackupService.0001")
    single = env.post(
        "region1",
        f"/backups/{first['id']}/replicate",
        {
            "replicate": {
                "destination_project_id": env.projects["region2"],
                "destination_region": "region2",
                "destination_vault_id": dest["id"],
            }
        },
    )
    assert_error(single, 400, "BackupService.1009")
    assert env.get("region2", "/backups", params={"vault_id": dest["id"]}).json()["count"] == 2


def test_incremental_replication_moves_only_new_chunks(
    env: Env, source: tuple[Path, dict[str, Any], dict[str, Any]]
) -> None:
    tree, _resource, vault = source
    first = backup_now(env, vault["id"])
    mutate_in_place(tree, 0.02)
    second = backup_now(env, vault["id"])
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    body = {
        "replicate": {
            "destination_project_id": env.projects["region2"],
            "destination_region": "region2",
            "destination_vault_id": dest["id"],
            "name": "copy-one",
            "description": "first",
        }
    }
    response = env.post("region1", f"/backups/{first['id']}/replicate", body)
    assert response.status_code == 200, response.text
    single = response.json()["replication"]
    assert single["backup_id"] == first["id"] and single["replication_record_id"]
    wait_records(env, vault["id"], 1)
    response = env.post(
        "region1",
        f"/backups/{second['id']}/replicate",
        {**body, "replicate": {**body["replicate"], "name": "copy-two"}},
    )
    assert response.status_code == 200
    done = wait_records(env, vault["id"], 2)
    record = next(r for r in done if r["source_backup_id"] == second["id"])
    extra = record["extra_info"]
    assert record["status"] == "success"
    assert extra["bytes_copied"] <= 1.1 * second["stored_bytes"], (extra, second["stored_bytes"])
    assert extra["chunks_present"] > 0 and extra["chunks_copied"] < extra["chunks_total"]
    replica = env.get("region2", f"/backups/{record['destination_backup_id']}").json()["backup"]
    assert replica["name"] == "copy-two" and replica["image_type"] == "replication"


def test_batches_are_flushed_and_indexed_beside_the_copy(
    env: Env,
    source: tuple[Path, dict[str, Any], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree, _resource, vault = source
    backup = backup_now(env, vault["id"])
    monkeypatch.setattr(replication_runs, "INDEX_EVERY_BYTES", 2 * MiB)  # many batches
    indexed_on: list[str] = []
    real_index = replication_runs._index

    def index(*args: Any) -> None:
        indexed_on.append(threading.current_thread().name)
        real_index(*args)

    monkeypatch.setattr(replication_runs, "_index", index)
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "success", record
    assert sum(name.startswith("replicate-index") for name in indexed_on) >= 5, indexed_on
    with env.db.reading() as session:
        index_rows = chunks.missing_in_vault(session, record["destination_backup_id"], dest["id"])
        stored = sum(s for _d, _p, s in chunks.missing_in_vault(session, backup["id"], "none"))
        used = session.get(Vault, dest["id"]).used_bytes
    assert index_rows == []  # every chunk the replica references is indexed there
    assert used == stored == record["extra_info"]["bytes_copied"]
    assert_restores_in_region2(env, record["destination_backup_id"], tree)


def test_a_torn_chunk_file_left_in_the_destination_is_replaced_not_trusted(
    env: Env, source: tuple[Path, dict[str, Any], dict[str, Any]]
) -> None:
    """A machine that stops after a chunk is published but before it is flushed leaves a
    name without its data; replication must rewrite it, not index it as copied."""
    tree, _resource, vault = source
    backup = backup_now(env, vault["id"])
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    digests = sorted(chunk_names(env, "region1", vault["id"]))
    torn = [chunks_dir(env, "region2", dest["id"]) / d[:2] / d for d in digests[::2]]
    for path in torn:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")  # what delayed allocation leaves after a power cut
    record = replicate_backup(env, vault["id"], backup["id"], dest["id"])
    assert record["status"] == "success", record
    assert all(path.stat().st_size > 0 for path in torn)
    assert_restores_in_region2(env, record["destination_backup_id"], tree)


def test_replicate_validation_codes(
    env: Env, source: tuple[Path, dict[str, Any], dict[str, Any]]
) -> None:
    _tree, _resource, vault = source
    backup = backup_now(env, vault["id"])
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    backup_vault_r2 = create_vault(env, "region2", name="plain")
    server_repl = create_vault(
        env, "region2", name="srv", object_type="server", protect_type="replication"
    )
    repl_r1 = create_vault(env, "region1", name="repl-r1", protect_type="replication")
    cases = [
        (seed_body(env, "nope", dest["id"]), 404, "BackupService.6105"),
        (
            seed_body(env, vault["id"], dest["id"], destination_region="region9"),
            400,
            "BackupService.1005",
        ),
        (
            seed_body(env, vault["id"], dest["id"], destination_region="region1"),
            400,
            "BackupService.1005",
        ),
        (
            seed_body(env, vault["id"], dest["id"], destination_project_id=env.projects["region1"]),
            400,
            "BackupService.1011",
        ),
        (seed_body(env, vault["id"], "nope"), 400, "BackupService.6120"),
        (seed_body(env, vault["id"], backup_vault_r2["id"]), 400, "BackupService.6119"),
        (seed_body(env, vault["id"], server_repl["id"]), 400, "BackupService.6119"),
        (seed_body(env, repl_r1["id"], dest["id"]), 400, "BackupService.6128"),
        (
            seed_body(env, vault["id"], dest["id"], cross_account_urn="urn:x"),
            400,
            "BackupService.9900",
        ),
        (seed_body(env, vault["id"], dest["id"], auto_trigger="yes"), 400, "BackupService.9900"),
        ({"replicate": {"vault_id": vault["id"]}}, 400, "BackupService.9900"),
    ]
    for body, status, code in cases:
        assert_error(env.post("region1", "/checkpoints/replicate", body), status, code)
    empty = create_vault(env, name="empty")
    assert_error(
        env.post("region1", "/checkpoints/replicate", seed_body(env, empty["id"], dest["id"])),
        400,
        "BackupService.0001",
    )
    # a viewer in the destination project may not write there
    identity.create_user(env.db, env.settings, "writer-r1", PASSWORD)
    identity.grant_role(env.db, "writer-r1", "region1", "member")
    identity.grant_role(env.db, "writer-r1", "region2", "viewer")
    token = issue(env.client, "writer-r1", PASSWORD, env.projects["region1"])
    response = env.client.post(
        env.url("region1", "/checkpoints/replicate"),
        json=seed_body(env, vault["id"], dest["id"]),
        headers={"X-Auth-Token": token},
    )
    assert_error(response, 400, "BackupService.1011")
    # full destination
    tiny = create_vault(env, "region2", name="tiny", protect_type="replication", size=1)
    with env.db.transaction() as session:
        from opencbr.db.vaults import Vault

        row = session.get(Vault, tiny["id"])
        assert row is not None
        row.used_bytes = 1 << 30
    assert_error(
        env.post("region1", "/checkpoints/replicate", seed_body(env, vault["id"], tiny["id"])),
        400,
        "BackupService.6129",
    )
    single = f"/backups/{backup['id']}/replicate"
    body = {
        "replicate": {
            "destination_project_id": env.projects["region2"],
            "destination_region": "region2",
            "destination_vault_id": dest["id"],
        }
    }
    assert_error(env.post("region1", "/backups/nope/replicate", body), 404, "BackupService.6200")
    assert env.post("region1", single, body).status_code == 200
    assert_error(env.post("region1", single, body), 400, "BackupService.1009")
    done = wait_records(env, vault["id"], 1)
    replica_id = done[0]["destination_backup_id"]
    r2_body = {
        "replicate": {
            "destination_project_id": env.projects["region1"],
            "destination_region": "region1",
            "destination_vault_id": repl_r1["id"],
        }
    }
    assert_error(
        env.post("region2", f"/backups/{replica_id}/replicate", r2_body), 400, "BackupService.1002"
    )
    other_project = env.post("region2", single, body)
    assert_error(other_project, 404, "BackupService.6200")


@pytest.fixture
def faulty_env(tmp_path: Path, database: Database) -> Iterator[Env]:
    """Like `env`, but region2's store fails 10% of chunk writes (transiently)."""
    store2 = tmp_path / "data" / "store" / "region2"
    regions = [
        RegionSettings(name="region1", storage=str(tmp_path / "data" / "store" / "region1")),
        RegionSettings(name="region2", storage=f"faulty+{store2}?fail_put=0.1&seed=7"),
    ]
    with serving(make_settings(tmp_path, regions=regions), database) as running:
        yield running


def injected_put_faults(env: Env, region: str, vault_id: str) -> int:
    """How many chunk writes the vault's FaultyChunkStore failed on purpose so far."""
    store = env.client.app.state.runtime.stores.vault(region, vault_id)
    while not isinstance(store, FaultyChunkStore):
        store = store.inner  # through the wrappers the opener puts around it
    return store.failed_puts


def test_failing_writes_are_retried_then_a_corrupt_source_chunk_fails_the_record(
    faulty_env: Env,
) -> None:
    env = faulty_env
    tree = env.roots["region1"] / "data"
    tree.mkdir()
    rng = random.Random(4)
    for index in range(12):
        (tree / f"f{index}").write_bytes(rng.randbytes(2 * MiB))
    resource = register_dir(env, name="data")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    first = backup_now(env, vault["id"])
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    body = {
        "replicate": {
            "destination_project_id": env.projects["region2"],
            "destination_region": "region2",
            "destination_vault_id": dest["id"],
        }
    }
    assert env.post("region1", f"/backups/{first['id']}/replicate", body).status_code == 200
    done = wait_records(env, vault["id"], 1)
    assert done[0]["status"] == "success", done
    assert injected_put_faults(env, "region2", dest["id"]) > 0  # the retries were exercised

    (tree / "new").write_bytes(rng.randbytes(3 * MiB))
    second = backup_now(env, vault["id"])
    shared = {d for d in chunk_names(env, "region1", vault["id"])}
    replicated = {d for d in chunk_names(env, "region2", dest["id"])}
    new_only = sorted(shared - replicated)
    assert new_only
    victim = (
        env.settings.data_dir
        / "store"
        / "region1"
        / "vaults"
        / vault["id"]
        / "chunks"
        / new_only[0][:2]
        / new_only[0]
    )
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0x55
    victim.write_bytes(bytes(data))
    assert env.post("region1", f"/backups/{second['id']}/replicate", body).status_code == 200
    done = wait_records(env, vault["id"], 2)
    record = next(r for r in done if r["source_backup_id"] == second["id"])
    assert record["status"] == "fail"
    assert record["extra_info"]["fail_code"] == "BackupService.1006"
    assert (
        "corrupt" in record["extra_info"]["fail_reason"]
        and new_only[0] in record["extra_info"]["fail_reason"]
    )
    replicas = env.get("region2", "/backups", params={"vault_id": dest["id"]}).json()["backups"]
    assert [b["source_backup_id"] for b in replicas] == [first["id"]]
    assert new_only[0] not in chunk_names(env, "region2", dest["id"])


def _server_vault(env: Env) -> dict[str, Any]:
    """A server vault whose one server has a directory volume and a disk volume."""
    server = register_web_server(env, random.Random(3).randbytes(MiB))
    resources = [{"id": server["id"], "type": "OS::Nova::Server"}]
    return create_vault(env, name="servers", object_type="server", resources=resources)


def test_vault_replicate_answers_with_records_and_the_worker_adds_replicas_and_logs(
    env: Env,
) -> None:
    """The call inserts only the records; the fan-out task then creates each replica (with
    a child per volume) and operation log. What a client lists meanwhile is consistent."""
    vault = _server_vault(env)
    first = backup_now(env, vault["id"], name="first")
    second = backup_now(env, vault["id"], name="second")
    dest = create_vault(
        env, "region2", name="dst", object_type="server", protect_type="replication"
    )
    response = env.post(
        "region1", "/checkpoints/replicate", seed_body(env, vault["id"], dest["id"])
    )
    assert response.status_code == 200, response.text
    planned = {
        b["backup_id"]: b["replication_record_id"]
        for b in response.json()["replication"]["backups"]
    }
    assert set(planned) == {first["id"], second["id"]}
    listed = records(env, vault["id"])
    assert {r["id"]: r["source_backup_id"] for r in listed} == {
        record_id: backup_id for backup_id, record_id in planned.items()
    }
    for record in listed:  # a record names a replica only once the replica exists
        if record["destination_backup_id"] is not None:
            shown = env.get("region2", f"/backups/{record['destination_backup_id']}")
            assert shown.status_code == 200, shown.text
    for _ in range(2):  # alongside the fan-out task: whoever comes second adds nothing
        create_replicas(env.db, list(planned.values()))

    done = wait_records(env, vault["id"], 2)
    assert {r["status"] for r in done} == {"success"}, done
    copies = env.get("region2", "/backups", params={"vault_id": dest["id"]}).json()["backups"]
    assert {b["id"] for b in copies} == {r["destination_backup_id"] for r in done}
    assert len(copies) == 2
    by_source = {b["source_backup_id"]: b for b in copies}
    for backup in (first, second):
        replica = by_source[backup["id"]]
        assert replica["name"] == backup["name"] and replica["status"] == "available"
        assert sorted(c["resource_name"] for c in replica["children"]) == ["data", "sys"]
        assert {c["source_backup_id"] for c in replica["children"]} == {
            c["id"] for c in backup["children"]
        }
    logs = env.get("region1", "/operation-logs", params={"operation_type": "replication"}).json()[
        "operation_logs"
    ]
    assert sorted(log["extra_info"]["replication"]["destination_backup_id"] for log in logs) == (
        sorted(r["destination_backup_id"] for r in done)
    )
    assert {log["status"] for log in logs} == {"success"}
    assert {log["extra_info"]["common"]["request_id"] for log in logs} == {
        response.headers["x-request-id"]
    }


def test_records_whose_fan_out_never_ran_get_their_replicas_from_the_reconciler(
    env: Env, source: tuple[Path, dict[str, Any], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree, _resource, vault = source
    backups = [backup_now(env, vault["id"]) for _ in range(2)]
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    # The process dies between the plan's commit and the enqueue of its fan-out task.
    jobs = env.client.app.state.jobs  # type: ignore[attr-defined]
    enqueue = jobs.enqueue

    def enqueue_all_but_the_fan_out(task: Any, *args: Any) -> None:
        if task is not tasks.fan_out_plan:
            enqueue(task, *args)

    monkeypatch.setattr(jobs, "enqueue", enqueue_all_but_the_fan_out)
    response = env.post(
        "region1", "/checkpoints/replicate", seed_body(env, vault["id"], dest["id"])
    )
    assert response.status_code == 200, response.text
    done = wait_records(env, vault["id"], 2)
    assert {r["status"] for r in done} == {"success"}, done
    replicas = env.get("region2", "/backups", params={"vault_id": dest["id"]}).json()["backups"]
    assert sorted(b["source_backup_id"] for b in replicas) == sorted(b["id"] for b in backups)
    logs = env.get("region1", "/operation-logs", params={"operation_type": "replication"}).json()[
        "operation_logs"
    ]
    assert [log["status"] for log in logs] == ["success", "success"]


def test_a_plan_left_unexpanded_by_a_dead_api_process_is_expanded_by_the_reconciler(
    env: Env, source: tuple[Path, dict[str, Any], dict[str, Any]]
) -> None:
    """The call's plan row is committed, then its process dies: neither the expansion after
    the answer nor the fan-out task ran. The reconciler expands it and the copies run;
    nothing here reads the records through the API (a reader would expand it too)."""
    _tree, _resource, vault = source
    backups = [backup_now(env, vault["id"]) for _ in range(2)]
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    ctx = identity.context_for_token(env.db, env.token("region1"))
    target = replication.Destination("region2", env.projects["region2"], dest["id"])
    plan = replication.replicate_vault(env.db, env.settings, ctx, vault["id"], target, None)
    assert sorted(plan.backup_ids) == sorted(b["id"] for b in backups)
    for pause in pauses(60, longest=0.2):
        with env.db.reading() as session:
            done = dict(
                session.execute(
                    select(ReplicationRecord.id, ReplicationRecord.status).where(
                        ReplicationRecord.source_vault_id == vault["id"]
                    )
                ).all()
            )
        if sorted(done.values()) == ["success", "success"]:
            break
        time.sleep(pause)
    assert sorted(done) == sorted(plan.record_ids), done
    assert sorted(done.values()) == ["success", "success"], done


def test_records_of_a_just_answered_call_are_listed_and_block_deleting(
    env: Env, source: tuple[Path, dict[str, Any], dict[str, Any]]
) -> None:
    """Readers and writers of a vault's records expand its pending plan first: a plan made
    a moment ago lists its records and keeps its backups and vaults from being deleted."""
    _tree, _resource, vault = source
    [backup] = [backup_now(env, vault["id"])]
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    ctx = identity.context_for_token(env.db, env.token("region1"))
    target = replication.Destination("region2", env.projects["region2"], dest["id"])
    env.client.app.state.jobs.stop()  # type: ignore[attr-defined]  # nothing copies or expands

    def plan() -> list[str]:
        made = replication.replicate_vault(env.db, env.settings, ctx, vault["id"], target, None)
        assert pending() == 1
        return made.record_ids

    def pending() -> int:
        with env.db.reading() as session:
            return len(session.scalars(select(ReplicationPlan.id)).all())

    # Each refusal saw the plan as its record (a refused request's expansion is rolled back
    # with it: the plan stays pending for the next).
    first = plan()
    assert_error(env.delete("region2", f"/vaults/{dest['id']}"), 400, "BackupService.6203")
    assert [r["id"] for r in records(env, vault["id"])] == first
    assert pending() == 0
    with env.db.transaction() as session:  # the copy failed: the backup is free again
        session.execute(update(ReplicationRecord).values(status="fail"))
    second = plan()
    assert_error(env.delete("region1", f"/backups/{backup['id']}"), 400, "BackupService.6216")
    third_try = env.post(
        "region1", "/checkpoints/replicate", seed_body(env, vault["id"], dest["id"])
    )
    assert_error(third_try, 400, "BackupService.0001")  # the second plan's record is live
    assert [r["id"] for r in records(env, vault["id"])] == [*first, *second]


def _stopped_plan(
    env: Env, vault_id: str, count: int
) -> tuple[list[dict[str, Any]], replication.Plan]:
    """`count` backups of the vault and a vault plan of them that nothing expands yet (the
    worker and its reconciler stopped; no route ran)."""
    backups = [backup_now(env, vault_id) for _ in range(count)]
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    ctx = identity.context_for_token(env.db, env.token("region1"))
    target = replication.Destination("region2", env.projects["region2"], dest["id"])
    env.client.app.state.jobs.stop()  # type: ignore[attr-defined]
    plan = replication.replicate_vault(env.db, env.settings, ctx, vault_id, target, "req-7")
    return backups, plan


def _vault_records(env: Env, vault_id: str) -> dict[str, ReplicationRecord]:
    with env.db.reading() as session:
        rows = session.scalars(
            select(ReplicationRecord).where(ReplicationRecord.source_vault_id == vault_id)
        )
        return {record.id: record for record in rows}


def _plan_rows(env: Env) -> int:
    with env.db.reading() as session:
        return len(session.scalars(select(ReplicationPlan.id)).all())


def test_a_vault_plan_is_one_row_until_expanded_once_into_the_records_it_named(
    env: Env, source: tuple[Path, dict[str, Any], dict[str, Any]]
) -> None:
    _tree, _resource, vault = source
    backups, plan = _stopped_plan(env, vault["id"], 3)
    assert plan.backup_ids == [b["id"] for b in backups]  # oldest first
    assert (_plan_rows(env), _vault_records(env, vault["id"])) == (1, {})
    barrier = threading.Barrier(4)

    def expand(_: int) -> None:
        barrier.wait()
        assert plan.plan_id is not None
        planned_records.expand(env.db, plan.plan_id)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(expand, range(4)))
    found = _vault_records(env, vault["id"])
    assert _plan_rows(env) == 0 and sorted(found) == sorted(plan.record_ids)
    by_age = [found[record_id] for record_id in plan.record_ids]
    assert [r.source_backup_id for r in by_age] == plan.backup_ids
    assert [r.source_checkpoint_id for r in by_age] == [b["checkpoint_id"] for b in backups]
    assert [r.created_at for r in by_age] == sorted(r.created_at for r in by_age)
    assert {(r.status, r.request_id, r.destination_region) for r in by_age} == {
        ("waiting_replicate", "req-7", "region2")
    }
    assert plan.plan_id is not None
    assert planned_records.records_of_plan(env.db, plan.plan_id) == plan.record_ids


def test_a_backup_given_a_live_record_before_its_plan_expands_gets_a_failed_record(
    env: Env, source: tuple[Path, dict[str, Any], dict[str, Any]]
) -> None:
    """PostgreSQL lets a single-backup call commit between a plan and its expansion: the
    plan's record of that backup is then failed, never missing (the call named its id)."""
    _tree, _resource, vault = source
    backups, plan = _stopped_plan(env, vault["id"], 3)
    taken = backups[1]["id"]
    with env.db.transaction() as session:  # as that call would, without expanding first
        plan_row = session.scalars(select(ReplicationPlan)).one()
        of = planned_records.RecordsOf(
            "region1",
            vault["id"],
            plan_row.destination_project_id,
            "region2",
            plan_row.destination_vault_id,
            False,
            None,
        )
        rows = planned_records.chosen_rows(session, of, [taken])
        [other] = planned_records.insert_records(session, of, rows)
    assert plan.plan_id is not None
    planned_records.expand(env.db, plan.plan_id)
    found = _vault_records(env, vault["id"])
    assert {record_id: r.status for record_id, r in found.items()} == {
        other: "waiting_replicate",
        plan.record_ids[0]: "waiting_replicate",
        plan.record_ids[1]: "fail",
        plan.record_ids[2]: "waiting_replicate",
    }
    assert found[plan.record_ids[1]].fail_code == "BackupService.1009"


def test_concurrent_vault_plans_replicate_each_backup_once(
    env: Env, source: tuple[Path, dict[str, Any], dict[str, Any]]
) -> None:
    _tree, _resource, vault = source
    backups = [backup_now(env, vault["id"]) for _ in range(3)]
    dest = create_vault(env, "region2", name="dst", protect_type="replication")
    ctx = identity.context_for_token(env.db, env.token("region1"))
    target = replication.Destination("region2", env.projects["region2"], dest["id"])
    barrier = threading.Barrier(4)

    def plan(_: int) -> list[str] | str:
        barrier.wait()
        try:
            return replication.replicate_vault(
                env.db, env.settings, ctx, vault["id"], target, None
            ).backup_ids
        except CbrError as exc:
            return exc.error.code

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(plan, range(4)))
    won = [o for o in outcomes if isinstance(o, list)]
    assert len(won) == 1 and sorted(won[0]) == sorted(b["id"] for b in backups), outcomes
    assert [o for o in outcomes if isinstance(o, str)] == ["BackupService.0001"] * 3
    assert len(records(env, vault["id"])) == 3


def test_openapi_still_describes_the_vault_replication_answer(env: Env) -> None:
    # The route answers with bytes it serialized itself; its documented model is unchanged.
    spec = env.client.get("/openapi.json").json()
    answer = spec["paths"]["/v3/{project_id}/checkpoints/replicate"]["post"]["responses"]["200"]
    schema = json.dumps(answer["content"]["application/json"]["schema"])
    assert "CheckpointReplicateResponse" in schema and "ReplicationDryRunResponse" in schema
