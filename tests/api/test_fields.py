"""Fields and filters mean what they say (issue 16): keyset paging under every `sort`,
the backup list's filters, `incremental`, a replica's `stored_bytes`, operation logs."""

from __future__ import annotations

import random
import re
import shutil
from typing import Any

import pytest
import structlog
from sqlalchemy import text

from tests.api.helpers import (
    Env,
    assert_error,
    backup_now,
    create_vault,
    register_dir,
    register_disk,
    register_server,
    register_web_server,
    replicate_backup,
    wait_records,
)

MiB = 1 << 20

SORT_KEYS = ("created_at", "updated_at", "name", "status", "protected_at", "id")


def _checkpoint(env: Env, vault_id: str, **params: Any) -> str:
    """Back the vault up (every resource) and wait until the checkpoint settles."""
    body = {"checkpoint": {"vault_id": vault_id, "parameters": params}}
    response = env.post("region1", "/checkpoints", body)
    assert response.status_code == 200, response.text
    checkpoint_id: str = response.json()["checkpoint"]["id"]
    env.wait_for(
        "region1",
        f"/checkpoints/{checkpoint_id}",
        lambda done: done["checkpoint"]["status"] != "protecting",
    )
    return checkpoint_id


def _walk(env: Env, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every page, as openstacksdk asks for them: the same query plus `marker` = the id of
    the last item of the previous page, until a page comes back short."""
    found: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": limit, **params}
    while True:
        response = env.get("region1", "/backups", params=query)
        assert response.status_code == 200, response.text
        page = response.json()["backups"]
        found.extend(page)
        if len(page) < limit:
            return found
        query["marker"] = page[-1]["id"]


@pytest.fixture
def mixed_backups(env: Env) -> list[dict[str, Any]]:
    """Nine backups with ties in every key but the id: three checkpoints of a vault of
    three resources (one backup per resource, the checkpoint's name on each), one of the
    resources gone (its backups `error`, never protected: `protected_at` null)."""
    resources = [register_dir(env, name=name) for name in ("alpha", "beta", "gone")]
    for name in ("alpha", "beta"):
        (env.roots["region1"] / name / "file.txt").write_text(name)
    shutil.rmtree(env.roots["region1"] / "gone")
    bindings = [{"id": r["id"], "type": "OS::Sfs::Turbo"} for r in resources]
    vault = create_vault(env, resources=bindings)
    for name in ("same", "same", "other"):
        _checkpoint(env, vault["id"], name=name)
    listed = env.get("region1", "/backups").json()
    assert listed["count"] == 9
    statuses = sorted(b["status"] for b in listed["backups"])
    assert statuses == ["available"] * 6 + ["error"] * 3
    return list(listed["backups"])


def _wire_order(backups: list[dict[str, Any]], key: str, descending: bool) -> list[Any]:
    """The values of `key` as the list must order them (nulls last either way)."""
    values = [b[key] for b in backups]
    present = sorted((v for v in values if v is not None), reverse=descending)
    return present + [None] * values.count(None)


@pytest.mark.slow
@pytest.mark.parametrize("descending", [True, False])
def test_marker_pages_walk_every_sort_without_repeats_or_gaps(
    env: Env, mixed_backups: list[dict[str, Any]], descending: bool
) -> None:
    direction = "desc" if descending else "asc"
    sorts = [f"{key}:{direction}" for key in SORT_KEYS]
    sorts += [f"status:{direction},name", f"name:{direction},protected_at:asc", "protected_at"]
    for sort in sorts:
        whole = env.get("region1", "/backups", params={"sort": sort}).json()["backups"]
        first_key, _, first_direction = sort.split(",")[0].partition(":")
        expected = _wire_order(whole, first_key, first_direction != "asc")
        assert [b[first_key] for b in whole] == expected, sort
        for limit in (1, 2, 4):
            walked = _walk(env, limit, sort=sort)
            assert [b["id"] for b in walked] == [b["id"] for b in whole], (sort, limit)
    default = [b["id"] for b in env.get("region1", "/backups").json()["backups"]]
    assert [b["id"] for b in _walk(env, 2)] == default


def test_a_marker_with_sort_still_combines_with_filters_and_offset(
    env: Env, mixed_backups: list[dict[str, Any]]
) -> None:
    query = {"sort": "name:asc", "status": "available"}
    whole = env.get("region1", "/backups", params=query).json()["backups"]
    assert [b["name"] for b in whole] == sorted(b["name"] for b in whole)
    assert len(whole) == 6
    after_second = env.get(
        "region1", "/backups", params={**query, "marker": whole[1]["id"], "offset": 1}
    ).json()
    assert after_second["count"] == 6  # the total of matches, as without a marker
    assert [b["id"] for b in after_second["backups"]] == [b["id"] for b in whole[3:]]
    assert_error(
        env.get("region1", "/backups", params={**query, "marker": "not-a-backup"}),
        400,
        "BackupService.9900",
    )


def test_sort_and_marker_of_one_backup(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "f").write_text("x")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"])
    page = env.get(
        "region1", "/backups", params={"sort": "protected_at:asc", "marker": backup["id"]}
    ).json()
    assert (page["backups"], page["count"]) == ([], 1)


# --- incremental ------------------------------------------------------------------------


def _unit_written(events: list[dict[str, Any]]) -> dict[str, Any]:
    (written,) = [e for e in events if e["event"] == "backup unit written"]
    return written


def test_incremental_is_true_only_for_a_backup_that_built_on_a_previous_one(env: Env) -> None:
    resource = register_dir(env)
    data = env.roots["region1"] / "data"
    big = random.Random(7).randbytes(3 * MiB)
    (data / "big.bin").write_bytes(big)
    (data / "small.txt").write_text("small")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])

    first = backup_now(env, vault["id"], name="first")
    assert first["incremental"] is False  # nothing to build on
    assert first["extend_info"]["incremental"] is False  # where otcextensions reads it
    with structlog.testing.capture_logs() as events:
        second = backup_now(env, vault["id"], name="second")
    assert second["incremental"] is True
    assert _unit_written(events)["bytes_reused"] == len(big) + len("small")  # not read again

    with structlog.testing.capture_logs() as events:
        full = backup_now(env, vault["id"], name="full", incremental=False)
    assert full["incremental"] is False
    assert _unit_written(events)["bytes_reused"] == 0  # every byte read again...
    assert full["stored_bytes"] == 0  # ...and nothing stored twice
    assert full["size_bytes"] == second["size_bytes"]

    logs = env.get(
        "region1", "/operation-logs", params={"operation_type": "backup", "vault_id": vault["id"]}
    ).json()["operation_logs"]
    flags = {
        log["extra_info"]["backup"]["backup_name"]: log["extra_info"]["backup"] for log in logs
    }
    assert {name: block["incremental"] for name, block in flags.items()} == {
        "first": "false",
        "second": "true",
        "full": "false",
    }
    by_flag = {
        flag: [
            b["name"]
            for b in env.get("region1", "/backups", params={"incremental": flag}).json()["backups"]
        ]
        for flag in ("true", "false")
    }
    assert by_flag == {"true": ["second"], "false": ["full", "first"]}


def test_a_disk_backup_is_incremental_once_the_disk_has_a_backup(env: Env) -> None:
    disk = register_disk(env, name="sda", size=2 * MiB)
    vault = create_vault(
        env, object_type="disk", resources=[{"id": disk["id"], "type": "OS::Cinder::Volume"}]
    )
    assert backup_now(env, vault["id"])["incremental"] is False
    assert backup_now(env, vault["id"])["incremental"] is True
    assert backup_now(env, vault["id"], incremental=False)["incremental"] is False


# --- the backup list's other filters, protectables' server_id ---------------------------


def test_filters_with_a_meaning_here_filter(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "f.bin").write_bytes(random.Random(3).randbytes(16 * MiB))
    vault = create_vault(env, size=1, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"])
    assert backup["resource_az"] == "region1"  # each region is one zone, named after it

    def listed(**params: Any) -> list[str]:
        response = env.get("region1", "/backups", params=params)
        assert response.status_code == 200, response.text
        return [b["id"] for b in response.json()["backups"]]

    everything = [backup["id"]]
    assert listed(resource_az="region1") == everything
    assert listed(resource_az="region2") == []
    assert listed(own_type="private") == listed(own_type="all_granted") == everything
    assert listed(own_type="shared") == []  # nothing is shared with this project
    assert listed(enterprise_project_id="0") == everything
    assert listed(enterprise_project_id="all_granted_eps") == everything
    assert listed(enterprise_project_id="c0ffee") == []
    # About 16 MiB stored in a 1 GB vault: used at least 1 %, not 2 %.
    used = env.get("region1", f"/vaults/{vault['id']}").json()["vault"]["billing"]["used"]
    assert 1024 <= used * 100 < 1024 * 2
    assert listed(used_percent=1) == everything
    assert listed(used_percent=2) == []
    # Sharing: own backups shared with a member in that state (none here; test_members.py)
    assert listed(member_status="accepted") == []
    # Accepted and ignored: dedicated cloud.
    assert listed(dec="true") == everything


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"own_type": "mine"}, "own_type"),
        ({"member_status": "maybe"}, "member_status"),
        ({"used_percent": 0}, "used_percent"),
        ({"used_percent": 101}, "used_percent"),
        ({"incremental": "sometimes"}, "incremental"),
        ({"dec": "perhaps"}, "dec"),
    ],
)
def test_bad_filter_values_are_invalid_parameters(
    env: Env, params: dict[str, Any], named: str
) -> None:
    response = env.get("region1", "/backups", params=params)
    assert_error(response, 400, "BackupService.9900")
    assert named in response.json()["error_msg"]


def test_protectables_server_id_keeps_what_belongs_to_that_server(env: Env) -> None:
    web = register_web_server(env, b"disk image")
    (env.roots["region1"] / "db").mkdir()
    register_server(env, {"v": env.roots["region1"] / "db"}, name="db")
    register_disk(env, name="loose")
    register_dir(env, name="tree")

    def names(kind: str, server_id: str) -> list[str]:
        response = env.get(
            "region1", f"/protectables/{kind}/instances", params={"server_id": server_id}
        )
        assert response.status_code == 200, response.text
        return [i["name"] for i in response.json()["instances"]]

    assert names("server", web["id"]) == ["web"]
    # A server's volumes are its `children`; a registered disk or tree is nobody's volume.
    assert names("disk", web["id"]) == names("turbo", web["id"]) == []
    assert names("server", "unknown") == []
    assert len(env.get("region1", "/protectables/disk/instances").json()["instances"]) == 1


# --- a replica's stored_bytes ----------------------------------------------------------


def test_a_replica_stores_as_stored_bytes_what_it_added_to_its_vault(env: Env) -> None:
    resource = register_dir(env)
    tree = env.roots["region1"] / "data"
    rng = random.Random(11)
    for index in range(4):
        (tree / f"part{index}.bin").write_bytes(rng.randbytes(2 * MiB))
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    first = backup_now(env, vault["id"])
    (tree / "part0.bin").write_bytes(rng.randbytes(2 * MiB))  # one file of four changes
    second = backup_now(env, vault["id"])
    dest = create_vault(env, "region2", name="dst", protect_type="replication")

    replicas = []
    for count, backup in enumerate((first, second), start=1):
        replicate_backup(env, vault["id"], backup["id"], dest["id"])
        ended = wait_records(env, vault["id"], count)
        record = next(r for r in ended if r["source_backup_id"] == backup["id"])
        assert record["status"] == "success", record
        shown = env.get("region2", f"/backups/{record['destination_backup_id']}").json()
        replicas.append((record, shown["backup"]))

    (_first_record, first_replica), (second_record, second_replica) = replicas
    assert first_replica["stored_bytes"] == first["stored_bytes"]  # everything was new there
    assert second_replica["stored_bytes"] == second_record["extra_info"]["bytes_copied"]
    assert 0 < second_replica["stored_bytes"] < second_replica["size_bytes"] / 2
    assert second_replica["size_bytes"] == second["size_bytes"]
    used = env.get("region2", f"/vaults/{dest['id']}").json()["vault"]["billing"]["used"]
    assert used == -(-(first_replica["stored_bytes"] + second_replica["stored_bytes"]) // MiB)


# --- operation logs -----------------------------------------------------------------------

WIRE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")  # as every CBR timestamp


def _logs(env: Env, **params: Any) -> list[dict[str, Any]]:
    response = env.get("region1", "/operation-logs", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["operation_logs"]
    return found


def test_operation_logs_carry_their_task_id_and_cbr_timestamps(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "f").write_text("x")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"])
    assert WIRE_TIME.match(backup["created_at"])
    (log,) = _logs(env, operation_type="backup")
    assert log["extra_info"]["common"]["task_id"] == log["id"]
    for field in ("created_at", "started_at", "ended_at", "updated_at"):
        assert WIRE_TIME.match(log[field]), (field, log[field])
    assert log["started_at"] <= log["ended_at"]
    shown = env.get("region1", f"/operation-logs/{log['id']}").json()["operation_log"]
    assert shown["extra_info"]["common"]["task_id"] == log["id"]


def test_removing_resources_and_deleting_a_vault_write_their_operation_logs(env: Env) -> None:
    kept, removed = register_dir(env, name="kept"), register_dir(env, name="removed")
    (env.roots["region1"] / "kept" / "f").write_text("x")
    bindings = [{"id": r["id"], "type": "OS::Sfs::Turbo"} for r in (kept, removed)]
    vault = create_vault(env, name="doomed", resources=bindings)
    backup_now(env, vault["id"], resources=[kept["id"]])
    backup_now(env, vault["id"], resources=[kept["id"]])

    response = env.post(
        "region1", f"/vaults/{vault['id']}/removeresources", {"resource_ids": [removed["id"]]}
    )
    assert response.status_code == 200, response.text
    (removal,) = _logs(env, operation_type="remove_resource")
    assert (removal["status"], removal["vault_id"], removal["vault_name"]) == (
        "success",
        vault["id"],
        "doomed",
    )
    assert removal["extra_info"]["common"]["request_id"] == response.headers["X-Request-Id"]
    assert removal["extra_info"]["remove_resources"] == {
        "fail_count": 0,
        "total_count": 0,  # the resource's backups stay in the vault
        "resources": [{"id": removed["id"], "type": "OS::Sfs::Turbo", "name": "removed"}],
    }
    assert removal["extra_info"]["resource"]["id"] == vault["id"]
    assert WIRE_TIME.match(removal["ended_at"])

    assert env.delete("region1", f"/vaults/{vault['id']}").status_code == 204
    (deletion,) = _logs(env, operation_type="vault_delete")
    assert deletion["status"] == "success"
    assert deletion["extra_info"]["vault_delete"] == {"fail_count": 0, "total_count": 2}
    assert deletion["extra_info"]["common"]["progress"] == 100
    # The vault is gone; its tasks are still found by its id.
    kinds = sorted(log["operation_type"] for log in _logs(env, vault_id=vault["id"]))
    assert kinds == ["backup", "backup", "remove_resource", "vault_delete"]


# --- checkpoint parameters, skipped resources --------------------------------------------


@pytest.mark.parametrize("days", [-1, 7])
def test_a_policy_run_names_no_retention_of_its_own(env: Env, days: int) -> None:
    resource = register_dir(env)
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    parameters = {"auto_trigger": True, "retention_duration_days": days}
    response = env.post(
        "region1",
        "/checkpoints",
        {"checkpoint": {"vault_id": vault["id"], "parameters": parameters}},
    )
    assert_error(response, 400, "BackupService.9900")
    assert "retention_duration_days" in response.json()["error_msg"]
    assert env.get("region1", "/backups").json()["count"] == 0  # nothing half-written
    manual = backup_now(env, vault["id"], retention_duration_days=days)
    assert (manual["expired_at"] is None) == (days == -1)
    auto = backup_now(env, vault["id"], auto_trigger=True)
    assert auto["extend_info"]["auto_trigger"] is True


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_a_resource_being_backed_up_is_skipped_with_cbr_code_0002(env: Env) -> None:
    """The test holds the vault's row (as a writer's claim would), so the first backup
    waits in its claim with its resource `protecting` while the next checkpoints come."""
    busy, idle = register_dir(env, name="busy"), register_dir(env, name="idle")
    bindings = [{"id": r["id"], "type": "OS::Sfs::Turbo"} for r in (busy, idle)]
    vault = create_vault(env, resources=bindings)

    def checkpoint(resources: list[str]) -> Any:
        parameters = {"resources": resources}
        body = {"checkpoint": {"vault_id": vault["id"], "parameters": parameters}}
        return env.post("region1", "/checkpoints", body)

    lock = text("SELECT id FROM vaults WHERE id = :id FOR NO KEY UPDATE")
    with env.db.engine.connect() as holder, holder.begin():
        holder.execute(lock, {"id": vault["id"]})
        first = checkpoint([busy["id"]])
        assert first.status_code == 200, first.text
        assert_error(checkpoint([busy["id"]]), 400, "BackupService.1001")  # nothing left
        second = checkpoint([busy["id"], idle["id"]])
        assert second.status_code == 200, second.text
    skipped = second.json()["checkpoint"]["vault"]["skipped_resources"]
    assert skipped == [
        {
            "id": busy["id"],
            "type": "OS::Sfs::Turbo",
            "name": "busy",
            "code": "BackupService.0002",
            "reason": "Resources are being backed up.",
        }
    ]
    for made in (first, second):
        checkpoint_id = made.json()["checkpoint"]["id"]
        done = env.wait_for(
            "region1",
            f"/checkpoints/{checkpoint_id}",
            lambda body: body["checkpoint"]["status"] != "protecting",
        )
        assert done["checkpoint"]["status"] == "available"


# --- restore mode, sizes of directories ---------------------------------------------------


def test_every_restorable_backup_says_so_and_directories_have_their_size(env: Env) -> None:
    data = env.roots["region1"] / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(random.Random(5).randbytes(3 * MiB))
    tree = register_dir(env)
    shown = env.get("region1", f"/protectables/turbo/instances/{tree['id']}").json()
    assert tree["size"] == shown["instance"]["size"] == 1  # GB, rounded up: not 0
    disk = register_disk(env, name="sda", size=2 * MiB)
    tree_vault = create_vault(env, resources=[{"id": tree["id"], "type": "OS::Sfs::Turbo"}])
    assert tree_vault["billing"]["allocated"] == 1
    disk_vault = create_vault(
        env,
        name="disks",
        object_type="disk",
        resources=[{"id": disk["id"], "type": "OS::Cinder::Volume"}],
    )
    for vault in (tree_vault, disk_vault):
        backup = backup_now(env, vault["id"])
        assert backup["resource_size"] == 1
        assert backup["extend_info"]["supported_restore_mode"] == "backup"

    # The size follows the data: a backup reads the tree whole and records what it found.
    empty = register_dir(env, name="later")
    assert empty["size"] == 0
    vault = create_vault(
        env, name="later", resources=[{"id": empty["id"], "type": "OS::Sfs::Turbo"}]
    )
    assert vault["billing"]["allocated"] == 0
    (env.roots["region1"] / "later" / "f.bin").write_bytes(b"x" * MiB)
    backup_now(env, vault["id"])
    grown = env.get("region1", f"/protectables/turbo/instances/{empty['id']}").json()
    assert grown["instance"]["size"] == 1
    vault = env.get("region1", f"/vaults/{vault['id']}").json()["vault"]
    assert vault["billing"]["allocated"] == 1 and vault["resources"][0]["size"] == 1
