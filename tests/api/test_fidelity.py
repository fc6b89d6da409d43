"""Project-wide vault calls, storage usage, feature flags, identity lookups and the operations
opencbr refuses, over HTTP: values, filters, paging, and the same answers for other tenants'
ids as for unknown ones (issue 16)."""

from __future__ import annotations

import os
import re
from typing import Any

import huaweicloudsdkcbr.v1 as cbr  # type: ignore[import-untyped]
import pytest

from opencbr.api.routes.unsupported import UNSUPPORTED
from tests.api.helpers import (
    Env,
    assert_error,
    backup_now,
    create_vault,
    outsider,
    register_dir,
    register_disk,
)

MiB = 1 << 20


# --- /vaults/summary, /vaults/batch-update, /vaults/external ------------------------------


def test_collection_names_are_not_taken_for_vault_ids(env: Env) -> None:
    assert env.get("region1", "/vaults/summary").status_code == 200
    response = env.put("region1", "/vaults/batch-update", {"vault": {"threshold": 70}})
    assert response.status_code == 200, response.text
    # external needs its two query parameters: a parameter error, not "vault not found"
    assert_error(env.get("region1", "/vaults/external"), 400, "BackupService.9900")


def test_summary_adds_capacity_and_use_of_the_projects_vaults(env: Env) -> None:
    assert env.get("region1", "/vaults/summary").json() == {"size": 0, "used_size": 0}
    resource = register_dir(env, name="summed")
    (env.roots["region1"] / "summed" / "blob").write_bytes(b"x" * MiB)
    vault = create_vault(
        env, name="big", size=100, resources=[{"id": resource["id"], "type": resource["type"]}]
    )
    create_vault(env, name="small", size=50)
    create_vault(env, "region2", name="elsewhere", size=7)
    backup_now(env, vault["id"])
    # 150 GB of capacity; a little over 0 bytes used counts as 1 GB (rounded up, never 0)
    assert env.get("region1", "/vaults/summary").json() == {"size": 150, "used_size": 1}
    assert env.get("region2", "/vaults/summary").json() == {"size": 7, "used_size": 0}


def test_batch_update_changes_every_vault_of_the_project_only(env: Env) -> None:
    first = create_vault(env, name="first")
    second = create_vault(env, name="second")
    other = create_vault(env, "region2", name="other")
    response = env.put(
        "region1", "/vaults/batch-update", {"vault": {"smn_notify": False, "threshold": 55}}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"updated_vaults_id": [first["id"], second["id"]]}
    for vault in (first, second):
        shown = env.get("region1", f"/vaults/{vault['id']}").json()["vault"]
        assert (shown["smn_notify"], shown["threshold"]) == (False, 55)
    untouched = env.get("region2", f"/vaults/{other['id']}").json()["vault"]
    assert (untouched["smn_notify"], untouched["threshold"]) == (True, 80)
    only_threshold = env.put("region1", "/vaults/batch-update", {"vault": {"threshold": 90}})
    assert only_threshold.status_code == 200
    shown = env.get("region1", f"/vaults/{first['id']}").json()["vault"]
    assert (shown["smn_notify"], shown["threshold"]) == (False, 90)


@pytest.mark.parametrize(
    "body",
    [
        {"vault": {}},
        {"vault": {"threshold": 0}},
        {"vault": {"threshold": 101}},
        {"vault": {"smn_notify": "yes"}},
        {},
    ],
)
def test_batch_update_refuses_bad_bodies(env: Env, body: dict[str, Any]) -> None:
    vault = create_vault(env, name="kept")
    assert_error(env.put("region1", "/vaults/batch-update", body), 400, "BackupService.9900")
    shown = env.get("region1", f"/vaults/{vault['id']}").json()["vault"]
    assert shown["threshold"] == 80


def test_batch_update_needs_a_writer(env: Env) -> None:
    response = env.client.put(
        env.url("region1", "/vaults/batch-update"),
        json={"vault": {"threshold": 60}},
        headers=env.headers("region1", "viewer"),
    )
    assert_error(response, 403, "APIGW.0302")


def test_external_lists_vaults_of_the_callers_project_in_another_region(env: Env) -> None:
    backup = create_vault(env, "region2", name="remote-backup")
    replica = create_vault(env, "region2", name="remote-replica", protect_type="replication")
    disk = create_vault(env, "region2", name="remote-disk", object_type="disk")
    create_vault(env, name="local")
    base = {"external_project_id": env.projects["region2"], "region_id": "region2"}

    def names(**query: Any) -> list[str]:
        response = env.get("region1", "/vaults/external", params={**base, **query})
        assert response.status_code == 200, response.text
        return [vault["name"] for vault in response.json()["vaults"]]

    assert names() == ["remote-disk", "remote-replica", "remote-backup"]
    assert names(protect_type="replication") == ["remote-replica"]
    assert names(objcet_type="disk") == ["remote-disk"]  # the SDK's spelling
    assert names(object_type="turbo") == ["remote-replica", "remote-backup"]
    assert names(cloud_type="hybrid") == []
    # vault_id wins over every other filter, as in CBR
    assert names(vault_id=backup["id"], protect_type="replication") == ["remote-backup"]
    page = env.get("region1", "/vaults/external", params={**base, "limit": 1, "offset": 1}).json()
    assert (page["count"], page["limit"], page["offset"]) == (3, 1, 1)
    assert [vault["id"] for vault in page["vaults"]] == [replica["id"]]
    assert disk["id"] not in [vault["id"] for vault in page["vaults"]]


def test_external_refuses_projects_not_the_callers_alike(env: Env) -> None:
    foreign, _token = outsider(env)
    create_vault(env, "region2", name="mine")
    for project, region in (
        (foreign, "region2"),  # another tenant's project
        ("0" * 32, "region2"),  # no such project
        (env.projects["region2"], "region1"),  # mine, but not in that region
    ):
        response = env.get(
            "region1",
            "/vaults/external",
            params={"external_project_id": project, "region_id": region},
        )
        assert_error(response, 400, "BackupService.9900")
        assert response.json()["error_msg"] == (
            "external_project_id is not a project of yours in the region region_id"
        )


# --- /storage_usage ---------------------------------------------------------------------


def test_storage_usage_counts_kept_backups_per_resource(env: Env) -> None:
    tree = register_dir(env, name="tree")
    (env.roots["region1"] / "tree" / "blob").write_bytes(os.urandom(3 * MiB))
    disk = register_disk(env, name="image", size=2 * MiB)
    idle = register_dir(env, name="idle")
    tree_vault = create_vault(
        env,
        name="trees",
        resources=[
            {"id": tree["id"], "type": tree["type"]},
            {"id": idle["id"], "type": idle["type"]},
        ],
    )
    disk_vault = create_vault(
        env, name="disks", object_type="disk", resources=[{"id": disk["id"], "type": disk["type"]}]
    )
    first = env.post(
        "region1",
        "/checkpoints",
        {"checkpoint": {"vault_id": tree_vault["id"], "parameters": {"resources": [tree["id"]]}}},
    )
    assert first.status_code == 200, first.text
    env.wait_for(
        "region1",
        f"/checkpoints/{first.json()['checkpoint']['id']}",
        lambda b: b["checkpoint"]["status"] == "available",
    )
    second = env.post(
        "region1",
        "/checkpoints",
        {"checkpoint": {"vault_id": tree_vault["id"], "parameters": {"resources": [tree["id"]]}}},
    )
    env.wait_for(
        "region1",
        f"/checkpoints/{second.json()['checkpoint']['id']}",
        lambda b: b["checkpoint"]["status"] == "available",
    )
    backup_now(env, disk_vault["id"])

    body = env.get("region1", "/storage_usage").json()
    assert body["resource_count"] == 2  # the idle directory has no backup
    by_id = {item["resource_id"]: item for item in body["storage_usage"]}
    listed = env.get("region1", "/backups", params={"resource_id": tree["id"]}).json()["backups"]
    assert by_id[tree["id"]] == {
        "resource_id": tree["id"],
        "resource_name": "tree",
        "resource_type": "OS::Sfs::Turbo",
        "backup_count": 2,
        # what the vault's resource reports, in MB: the stored bytes the backups added
        "backup_size": env.get("region1", f"/vaults/{tree_vault['id']}").json()["vault"][
            "resources"
        ][0]["backup_size"],
        "backup_size_multiaz": 0,
    }
    assert len(listed) == 2
    assert by_id[tree["id"]]["backup_size"] >= 3
    assert by_id[disk["id"]]["backup_count"] == 1
    assert by_id[disk["id"]]["resource_type"] == "OS::Cinder::Volume"

    def usage(**query: Any) -> dict[str, Any]:
        response = env.get("region1", "/storage_usage", params=query)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    only_disk = usage(resource_type="OS::Cinder::Volume")
    assert [i["resource_id"] for i in only_disk["storage_usage"]] == [disk["id"]]
    assert usage(resource_id=tree["id"])["resource_count"] == 1
    ordered = sorted(by_id)
    page = usage(limit=1, offset=1)
    assert page["resource_count"] == 2
    assert [i["resource_id"] for i in page["storage_usage"]] == ordered[1:]
    assert usage(offset=5) == {"storage_usage": [], "resource_count": 2}
    # another project's resources are not this project's: the same answer as an unknown id
    assert env.get("region2", "/storage_usage", params={"resource_id": tree["id"]}).json() == {
        "storage_usage": [],
        "resource_count": 0,
    }
    assert usage(resource_id="no-such-resource") == {"storage_usage": [], "resource_count": 0}
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}):
        assert_error(env.get("region1", "/storage_usage", params=bad), 400, "BackupService.9900")


# --- /cbr-features ----------------------------------------------------------------------


def test_features_answer_what_opencbr_does(env: Env) -> None:
    body = env.get("region1", "/cbr-features").json()
    assert body == {
        "features.backup_double_az": False,
        "replication.destination_dgw_regions": [],
        "replication.destination_regions": ["region2"],
        "replication.enable": True,
        "replication.source_region": "region1",
    }
    assert env.get("region1", "/cbr-features", params={"limit": 2, "offset": 1}).json() == {
        "replication.destination_dgw_regions": [],
        "replication.destination_regions": ["region2"],
    }
    shown = env.get("region2", "/cbr-features/replication.destination_regions").json()
    assert shown == {"replication.destination_regions": ["region1"]}
    assert_error(
        env.get("region1", "/cbr-features/features.bccrack_enable"), 400, "BackupService.9900"
    )


# --- identity lookups ---------------------------------------------------------------------


def test_region_projects_and_domain_projects_list_the_callers_projects(env: Env) -> None:
    outsider(env)
    headers = env.headers()
    listed = env.client.get("/v3/region-projects", headers=headers)
    assert listed.status_code == 200, listed.text
    names = {project["name"]: project["id"] for project in listed.json()["projects"]}
    assert names == {"region1": env.projects["region1"], "region2": env.projects["region2"]}
    in_domain = env.client.get("/v3/domain/Default/projects", headers=headers).json()
    assert sorted(p["project_name"] for p in in_domain["projects"]) == ["region1", "region2"]
    # an unknown tenant and one whose projects are not the caller's answer alike
    assert env.client.get("/v3/domain/nobody/projects", headers=headers).json() == {"projects": []}
    for path in ("/v3/region-projects", "/v3/domain/Default/projects"):
        assert_error(env.client.get(path), 401, "APIGW.0301")


# --- operations only a public cloud has ---------------------------------------------------


def _concrete(path: str, env: Env, project: str) -> str:
    return path.format(
        project_id=project,
        order_id="o1",
        organization_policy_id="p1",
        agent_id="a1",
        source_project_id=env.projects["region2"],
    )


@pytest.mark.parametrize("entry", UNSUPPORTED, ids=lambda entry: entry.operation)
def test_public_cloud_operations_are_refused_as_not_supported(env: Env, entry: Any) -> None:
    url = _concrete(entry.path, env, env.projects["region1"])
    response = env.client.request(entry.method, url, json={"any": "body"}, headers=env.headers())
    assert_error(response, 400, "BackupService.9900")
    assert response.json()["error_msg"] == (
        f"The operation {entry.operation} is not supported by opencbr."
    )
    assert_error(env.client.request(entry.method, url), 401, "APIGW.0301")
    if "{project_id}" in entry.path:  # another project's path: refused as for any call
        other = _concrete(entry.path, env, env.projects["region2"])
        response = env.client.request(entry.method, other, headers=env.headers())
        assert_error(response, 403, "BackupService.8600")


def _sdk_operations() -> list[tuple[str, str, str]]:
    """(operation, method, path) of every operation of the Huawei SDK's CbrClient."""
    found = []
    for name in dir(cbr.CbrClient):
        match = re.fullmatch(r"_(\w+)_http_info", name)
        if match is None:
            continue
        operation = match.group(1)
        request = getattr(cbr, "".join(p.capitalize() for p in operation.split("_")) + "Request")
        info = getattr(cbr.CbrClient, name)(request())
        found.append((operation, info["method"], info["resource_path"]))
    return sorted(found)


def test_every_sdk_operation_is_served_or_refused_with_a_cbr_error(env: Env) -> None:
    operations = _sdk_operations()
    assert len(operations) == 74
    unanswered = []
    for operation, method, path in operations:
        url = re.sub(r"{(\w+)}", "x1", path.replace("{project_id}", env.projects["region1"]))
        body = env.client.request(method, url, headers=env.headers()).json()
        if body.get("error_code") == "APIGW.0101":
            unanswered.append((operation, body))
    assert not unanswered
