"""Backup expiration of a vault, backup metadata, a checkpoint's per-resource backup
figures and the protectable's full vault, over HTTP (issue 16)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from opencbr import clock
from tests.api.helpers import (
    Env,
    assert_error,
    backup_now,
    create_vault,
    outsider,
    register_dir,
    register_web_server,
)

NOW = datetime(2026, 3, 10, 20, 30, tzinfo=UTC)  # 04:30 on March 11 at UTC+08:00


@pytest.fixture
def fixed_clock() -> Iterator[datetime]:
    clock.set_clock(lambda: NOW)
    try:
        yield NOW
    finally:
        clock.reset_clock()


def expire(env: Env, vault_id: str, body: dict[str, Any], region: str = "region1") -> Any:
    return env.put(region, f"/vaults/{vault_id}/update-backup-expiration-time", body)


def tree_vault(env: Env, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    resource = register_dir(env, name=f"{name}-dir")
    (env.roots["region1"] / f"{name}-dir" / "file").write_text("content\n")
    vault = create_vault(
        env, name=name, resources=[{"id": resource["id"], "type": resource["type"]}]
    )
    return vault, resource


# --- update-backup-expiration-time --------------------------------------------------------


def test_expiration_is_set_on_the_vaults_kept_backups(env: Env, fixed_clock: datetime) -> None:
    vault, _ = tree_vault(env, "expiring")
    first, second = backup_now(env, vault["id"]), backup_now(env, vault["id"])
    other, _ = tree_vault(env, "untouched")
    untouched = backup_now(env, other["id"])
    response = expire(
        env, vault["id"], {"expect_expiration_date": "2026-04-01", "time_zone": "UTC+08:00"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["affected_backups_count"], body["new_expiration_day"]) == (2, "2026-04-01")
    # the start of April 1st at UTC+08:00 is 16:00 UTC the day before
    for backup in (first, second):
        shown = env.get("region1", f"/backups/{backup['id']}").json()["backup"]
        assert shown["expired_at"] == "2026-03-31T16:00:00.000000"
    assert env.get("region1", f"/backups/{untouched['id']}").json()["backup"]["expired_at"] is None
    log = env.get("region1", f"/operation-logs/{body['operation_log_id']}").json()["operation_log"]
    assert (log["operation_type"], log["status"], log["vault_id"]) == (
        "update_expiration_time",
        "success",
        vault["id"],
    )
    assert log["extra_info"]["update_expiration_time"] == {
        "affected_backups_count": 2,
        "expiration_day": "2026-04-01",
    }
    assert log["extra_info"]["common"]["progress"] == 100
    filtered = env.get(
        "region1", "/operation-logs", params={"operation_type": "update_expiration_time"}
    ).json()
    assert [entry["id"] for entry in filtered["operation_logs"]] == [body["operation_log_id"]]

    # no date: the backups never expire
    cleared = expire(env, vault["id"], {"time_zone": "UTC"})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["new_expiration_day"] is None
    shown = env.get("region1", f"/backups/{first['id']}").json()["backup"]
    assert shown["expired_at"] is None


def test_expiration_of_a_server_backup_covers_its_volumes(env: Env, fixed_clock: datetime) -> None:
    server = register_web_server(env, b"disk bytes" * 100)
    vault = create_vault(
        env,
        name="servers",
        object_type="server",
        resources=[{"id": server["id"], "type": server["type"]}],
    )
    backup = backup_now(env, vault["id"])
    response = expire(
        env, vault["id"], {"expect_expiration_date": "2026-03-12", "time_zone": "UTC-05:30"}
    )
    assert response.json()["affected_backups_count"] == 1
    volumes = env.get("region1", "/backups", params={"parent_id": backup["id"]}).json()["backups"]
    assert len(volumes) == 2
    assert {v["expired_at"] for v in volumes} == {"2026-03-12T05:30:00.000000"}


def test_an_empty_vault_answers_zero(env: Env, fixed_clock: datetime) -> None:
    vault = create_vault(env, name="empty")
    response = expire(
        env, vault["id"], {"expect_expiration_date": "2027-01-01", "time_zone": "UTC"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["affected_backups_count"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {},  # time_zone is required
        {"expect_expiration_date": "2026-04-01"},
        {"expect_expiration_date": "2026-04-01", "time_zone": "CET"},
        {"expect_expiration_date": "2026-04-01", "time_zone": "UTC+8"},
        {"expect_expiration_date": "2026-04-01", "time_zone": "UTC+15:00"},
        {"expect_expiration_date": "2026-04-01", "time_zone": "UTC+08:60"},
        {"expect_expiration_date": "2026-04-31", "time_zone": "UTC"},
        {"expect_expiration_date": "01.04.2026", "time_zone": "UTC"},
        {"expect_expiration_date": "2026-4-1", "time_zone": "UTC"},
        # full-width digits: not ASCII ones
        {"expect_expiration_date": "\uff12\uff10\uff12\uff16-04-01", "time_zone": "UTC"},
        {"expect_expiration_date": "2026-03-10", "time_zone": "UTC"},  # today: past at once
        {"expect_expiration_date": "2026-03-11", "time_zone": "UTC+08:00"},  # today there
        {"expect_expiration_date": "2020-01-01", "time_zone": "UTC"},
        {"expect_expiration_date": 20260401, "time_zone": "UTC"},
        {"expect_expiration_date": "2026-04-01", "time_zone": "UTC+08:00\u0000"},
    ],
)
def test_bad_expiration_bodies_change_nothing(
    env: Env, fixed_clock: datetime, body: dict[str, Any]
) -> None:
    vault, _ = tree_vault(env, "guarded")
    backup = backup_now(env, vault["id"])
    assert_error(expire(env, vault["id"], body), 400, "BackupService.9900")
    assert env.get("region1", f"/backups/{backup['id']}").json()["backup"]["expired_at"] is None
    logs = env.get(
        "region1", "/operation-logs", params={"operation_type": "update_expiration_time"}
    )
    assert logs.json()["operation_logs"] == []


def test_tomorrow_in_the_callers_zone_is_accepted(env: Env, fixed_clock: datetime) -> None:
    vault = create_vault(env, name="tomorrow")
    # 20:30 UTC on March 10 is already March 11 at UTC+08:00: March 12 is tomorrow there
    ok = expire(
        env, vault["id"], {"expect_expiration_date": "2026-03-12", "time_zone": "UTC+08:00"}
    )
    assert ok.status_code == 200, ok.text
    west = expire(
        env, vault["id"], {"expect_expiration_date": "2026-03-11", "time_zone": "UTC-03:00"}
    )
    assert west.status_code == 200, west.text


def test_expiration_of_other_tenants_vaults_is_not_found(env: Env, fixed_clock: datetime) -> None:
    foreign_project, foreign_token = outsider(env)
    theirs = env.client.post(
        f"/v3/{foreign_project}/vaults",
        json={
            "vault": {
                "name": "theirs",
                "billing": {"object_type": "turbo", "protect_type": "backup", "size": 10},
                "resources": [],
            }
        },
        headers={"X-Auth-Token": foreign_token},
    ).json()["vault"]["id"]
    mine_elsewhere = create_vault(env, "region2", name="other-project")["id"]
    body = {"expect_expiration_date": "2026-04-01", "time_zone": "UTC"}
    for vault_id in (theirs, mine_elsewhere, "no-such-vault"):
        assert_error(expire(env, vault_id, body), 404, "BackupService.6105")
    viewer = env.client.put(
        env.url("region1", f"/vaults/{mine_elsewhere}/update-backup-expiration-time"),
        json=body,
        headers=env.headers("region1", "viewer"),
    )
    assert_error(viewer, 403, "APIGW.0302")


# --- backup metadata ----------------------------------------------------------------------


def test_metadata_of_a_server_backup_describes_its_server_and_volumes(env: Env) -> None:
    server = register_web_server(env, b"\x01" * 5000)
    vault = create_vault(
        env,
        name="meta",
        object_type="server",
        resources=[{"id": server["id"], "type": server["type"]}],
    )
    backup = backup_now(env, vault["id"])
    response = env.get("region1", f"/backups/{backup['id']}/metadata")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backup_id"] == backup["id"]
    shown = env.get("region1", f"/backups/{backup['id']}").json()["backup"]
    assert json.loads(body["backups"]) == shown
    described = json.loads(body["server"])["server"]
    assert (described["id"], described["name"]) == (server["id"], "web")
    volumes = [json.loads(text)["volume"] for text in body["volumes"]]
    by_name = {volume["name"]: volume for volume in volumes}
    assert set(by_name) == {"sys", "data"}
    children = {child["resource_name"]: child for child in shown["children"]}
    assert by_name["data"]["kind"] == "disk" and by_name["data"]["size_bytes"] == 5000
    assert by_name["sys"]["kind"] == "tree"
    for name, volume in by_name.items():
        assert volume["backup_id"] == children[name]["id"]
        assert volume["id"] == children[name]["resource_id"]
    assert [v["id"] for v in described["volumes_attached"]] == [v["id"] for v in volumes]
    for unknown in ("flavor", "floatingips", "interface", "ports", "workspace"):
        assert body[unknown] is None


def test_metadata_is_for_kept_server_backups_of_the_project_only(env: Env) -> None:
    vault, _ = tree_vault(env, "not-a-server")
    tree_backup = backup_now(env, vault["id"])
    refused = env.get("region1", f"/backups/{tree_backup['id']}/metadata")
    assert_error(refused, 400, "BackupService.9900")
    assert "server backups" in refused.json()["error_msg"]
    assert_error(
        env.get("region2", f"/backups/{tree_backup['id']}/metadata"), 404, "BackupService.6200"
    )
    assert_error(env.get("region1", "/backups/no-such-backup/metadata"), 404, "BackupService.6200")


def test_metadata_of_a_failed_server_backup_is_refused(env: Env) -> None:
    server = register_web_server(env, b"\x02" * 100)
    vault = create_vault(
        env,
        name="failing",
        object_type="server",
        resources=[{"id": server["id"], "type": server["type"]}],
    )
    (env.roots["region1"] / "web" / "data.img").unlink()  # the backup cannot read it
    response = env.post(
        "region1", "/checkpoints", {"checkpoint": {"vault_id": vault["id"], "parameters": {}}}
    )
    checkpoint = response.json()["checkpoint"]["id"]
    env.wait_for(
        "region1", f"/checkpoints/{checkpoint}", lambda b: b["checkpoint"]["status"] == "error"
    )
    (failed,) = env.get("region1", "/backups", params={"checkpoint_id": checkpoint}).json()[
        "backups"
    ]
    assert failed["status"] == "error"
    assert_error(env.get("region1", f"/backups/{failed['id']}/metadata"), 400, "BackupService.6206")


# --- checkpoint figures and the protectable's vault ---------------------------------------


def test_a_checkpoint_reports_each_resources_backup_count_and_size(env: Env) -> None:
    vault, resource = tree_vault(env, "counted")
    (env.roots["region1"] / "counted-dir" / "big").write_bytes(b"\x07" * (3 << 20))
    backup_now(env, vault["id"])
    second = backup_now(env, vault["id"])
    shown = env.get("region1", f"/checkpoints/{second['checkpoint_id']}").json()["checkpoint"]
    (item,) = shown["vault"]["resources"]
    vault_resource = env.get("region1", f"/vaults/{vault['id']}").json()["vault"]["resources"][0]
    assert item["id"] == resource["id"]
    assert item["backup_count"] == "2" == str(vault_resource["backup_count"])
    assert item["backup_size"] == str(vault_resource["backup_size"])
    assert int(item["backup_size"]) >= 1


def test_the_protectables_vault_is_the_whole_vault(env: Env) -> None:
    vault, resource = tree_vault(env, "whole")
    backup_now(env, vault["id"])
    shown_vault = env.get("region1", f"/vaults/{vault['id']}").json()["vault"]
    instance = env.get("region1", f"/protectables/turbo/instances/{resource['id']}").json()
    assert instance["instance"]["protectable"]["vault"] == shown_vault
    listed = env.get("region1", "/protectables/turbo/instances").json()["instances"]
    bound = [item for item in listed if item["id"] == resource["id"]]
    assert bound[0]["protectable"]["vault"] == shown_vault
    free = register_dir(env, name="free")
    assert (
        env.get("region1", f"/protectables/turbo/instances/{free['id']}").json()["instance"][
            "protectable"
        ]["vault"]
        is None
    )
