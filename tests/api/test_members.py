"""Backup sharing over HTTP: members added by the owner, answered by the member project,
the shared backup listed, shown and restored by a member that accepted it, every write of
it refused, and nothing of it visible to a third project (issue 16)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from opencbr.settings import Settings
from tests.api.helpers import (
    Env,
    Tenant,
    assert_error,
    backup_now,
    create_vault,
    make_settings,
    neighbour,
    outsider,
    register_dir,
    register_disk,
    register_web_server,
    restore,
    vault_body,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, extra_projects=("partner", "third"))


def _shared_backup(env: Env, files: dict[str, bytes] | None = None) -> dict[str, Any]:
    """An available backup of a directory in the admin's region1 project."""
    resource = register_dir(env, name="shared-src")
    for name, data in (files or {"a.txt": b"alpha\n", "sub/b.bin": b"\x00\x01" * 5000}).items():
        path = env.roots["region1"] / "shared-src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    vault = create_vault(
        env, name="owner-vault", resources=[{"id": resource["id"], "type": resource["type"]}]
    )
    return backup_now(env, vault["id"])


def _share(env: Env, backup_id: str, *projects: str) -> list[dict[str, Any]]:
    response = env.post("region1", f"/backups/{backup_id}/members", {"members": list(projects)})
    assert response.status_code == 200, response.text
    added: list[dict[str, Any]] = response.json()["members"]
    return added


def _tenant_dir(tenant: Tenant, name: str) -> dict[str, Any]:
    path = tenant.env.roots[tenant.name] / name
    path.mkdir(parents=True, exist_ok=True)
    response = tenant.post(
        "/protectables/turbo/instances", {"instance": {"name": name, "path": str(path)}}
    )
    assert response.status_code == 200, response.text
    instance: dict[str, Any] = response.json()["instance"]
    return instance


def _listed(caller: Env | Tenant, **params: Any) -> list[str]:
    if isinstance(caller, Env):
        response = caller.get("region1", "/backups", params=params)
    else:
        response = caller.get("/backups", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["backups"]) or "limit" in params
    return [b["id"] for b in body["backups"]]


@pytest.mark.slow
def test_a_member_sees_accepts_and_restores_a_shared_backup(env: Env) -> None:
    backup = _shared_backup(env)
    partner = neighbour(env, "partner")
    (member,) = _share(env, backup["id"], partner.project_id)
    assert (member["status"], member["dest_project_id"], member["backup_id"]) == (
        "pending",
        partner.project_id,
        backup["id"],
    )
    assert member["image_id"] is None and member["vault_id"] is None

    # pending: listed among what is shared with it, shown, not yet restorable
    assert _listed(partner) == []  # private (the default): its own backups only
    assert _listed(partner, own_type="shared") == [backup["id"]]
    assert _listed(partner, own_type="shared", member_status="pending") == [backup["id"]]
    assert _listed(partner, own_type="shared", member_status="accepted") == []
    assert _listed(partner, own_type="all_granted") == []
    shown = partner.get(f"/backups/{backup['id']}")
    assert (
        shown.status_code == 200 and shown.json()["backup"]["project_id"] == env.projects["region1"]
    )
    target = _tenant_dir(partner, "landing")
    body = {"restore": {"resource_id": target["id"]}}
    assert_error(partner.post(f"/backups/{backup['id']}/restore", body), 400, "BackupService.9900")

    vault = partner.post("/vaults", vault_body(name="partner-vault")).json()["vault"]
    answer = {"status": "accepted", "vault_id": vault["id"]}
    accepted = partner.put(f"/backups/{backup['id']}/members/{partner.project_id}", answer)
    assert accepted.status_code == 200, accepted.text
    assert (accepted.json()["member"]["status"], accepted.json()["member"]["vault_id"]) == (
        "accepted",
        vault["id"],
    )
    assert _listed(partner, own_type="all_granted") == [backup["id"]]
    assert _listed(partner, own_type="shared", vault_id=vault["id"]) == [backup["id"]]
    assert _listed(partner, own_type="shared", member_status="pending") == []
    # the owner finds which of its backups a member accepted
    assert _listed(env, member_status="accepted") == [backup["id"]]
    assert _listed(env, member_status="rejected") == []

    # restore into the member's own registered resource; the owner's is not its to name
    log = _restore_as(partner, backup["id"], {"resource_id": target["id"]})
    assert log["status"] == "success", log
    assert log["vault_id"] is None and log["project_id"] == partner.project_id
    landed = env.roots["partner"] / "landing"
    assert (landed / "a.txt").read_bytes() == b"alpha\n"
    assert (landed / "sub" / "b.bin").read_bytes() == b"\x00\x01" * 5000
    own_target = partner.post(f"/backups/{backup['id']}/restore", {"restore": {}})
    assert_error(own_target, 404, "BackupService.6302")


def _restore_as(tenant: Tenant, backup_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Restore as `tenant` and follow the log its answer names until it ends."""
    response = tenant.post(f"/backups/{backup_id}/restore", {"restore": body})
    assert response.status_code == 202, response.text
    path = f"/operation-logs/{response.headers['X-Opencbr-Operation-Log']}"
    deadline = time.monotonic() + 120
    while True:
        log: dict[str, Any] = tenant.get(path).json()["operation_log"]
        if log["status"] in ("success", "failed"):
            return log
        assert time.monotonic() < deadline, f"restore did not end: {log}"
        time.sleep(0.1)


def test_a_member_cannot_write_a_shared_backup(env: Env) -> None:
    backup = _shared_backup(env)
    partner = neighbour(env, "partner")
    third = neighbour(env, "third")
    _share(env, backup["id"], partner.project_id)
    path = f"/backups/{backup['id']}"
    assert_error(partner.delete(path), 400, "BackupService.6711")
    assert_error(partner.put(path, {"backup": {"name": "mine"}}), 400, "BackupService.9900")
    replicate = {
        "replicate": {
            "destination_project_id": env.projects["region2"],
            "destination_region": "region2",
            "destination_vault_id": create_vault(env, "region2", protect_type="replication")["id"],
        }
    }
    assert_error(partner.post(f"{path}/replicate", replicate), 400, "BackupService.1002")
    reshare = partner.post(f"{path}/members", {"members": [third.project_id]})
    assert_error(reshare, 400, "BackupService.6707")
    # a member neither removes members nor answers for the owner
    assert_error(partner.delete(f"{path}/members/{partner.project_id}"), 400, "BackupService.6706")
    owner_answer = env.put(
        "region1", f"{path}/members/{partner.project_id}", {"status": "accepted"}
    )
    assert_error(owner_answer, 400, "BackupService.6706")
    # nothing changed
    shown = env.get("region1", path).json()["backup"]
    assert (shown["name"], shown["status"]) == (backup["name"], "available")
    members = env.get("region1", f"{path}/members").json()
    assert members["count"] == 1 and members["members"][0]["status"] == "pending"


def test_a_third_project_sees_nothing_of_a_share(env: Env) -> None:
    backup = _shared_backup(env)
    partner = neighbour(env, "partner")
    (member,) = _share(env, backup["id"], partner.project_id)
    partner.put(f"/backups/{backup['id']}/members/{member['id']}", {"status": "accepted"})
    third = neighbour(env, "third")
    stranger_id, stranger_token = outsider(env)
    stranger = Tenant(env, stranger_id, stranger_token)
    for caller in (third, stranger):
        for path in (
            f"/backups/{backup['id']}",
            f"/backups/{backup['id']}/members",
            f"/backups/{backup['id']}/members/{member['id']}",
            f"/backups/{backup['id']}/metadata",
        ):
            assert_error(caller.get(path), 404, "BackupService.6200")
        answer = caller.put(
            f"/backups/{backup['id']}/members/{member['id']}", {"status": "accepted"}
        )
        assert_error(answer, 404, "BackupService.6200")
        assert_error(caller.delete(f"/backups/{backup['id']}"), 404, "BackupService.6200")
        restored = caller.post(f"/backups/{backup['id']}/restore", {"restore": {}})
        assert_error(restored, 404, "BackupService.6200")
        for own_type in ("private", "shared", "all_granted"):
            assert _listed(caller, own_type=own_type) == []
        # a shared backup's id is no marker of another project's list
        marker = caller.get("/backups", params={"own_type": "shared", "marker": backup["id"]})
        assert_error(marker, 400, "BackupService.9900")
    # the member sees its own member row only; another member id is unknown to it
    other = neighbour(env, "other")
    (other_member,) = _share(env, backup["id"], other.project_id)
    seen = partner.get(f"/backups/{backup['id']}/members").json()
    assert (seen["count"], seen["members"][0]["id"]) == (1, member["id"])
    hidden = partner.get(f"/backups/{backup['id']}/members/{other_member['id']}")
    assert_error(hidden, 404, "BackupService.6705")


def test_sharing_refuses_projects_it_cannot_share_with(env: Env) -> None:
    backup = _shared_backup(env)
    partner = neighbour(env, "partner")
    remote = neighbour(env, "remote", region="region2")
    path = f"/backups/{backup['id']}/members"
    refusals = [
        ({"members": [env.projects["region1"]]}, "BackupService.6704"),  # its own project
        ({"members": [remote.project_id]}, "BackupService.6704"),  # another region's
        ({"members": ["f" * 32]}, "BackupService.6704"),  # no such project
        ({"members": [partner.project_id, partner.project_id]}, "BackupService.6714"),
        ({"members": [partner.project_id], "domains": ["d1"]}, "BackupService.9900"),
        ({"members": []}, "BackupService.9900"),
        ({"members": [7]}, "BackupService.9900"),
        ({}, "BackupService.9900"),
    ]
    for body, code in refusals:
        assert_error(env.post("region1", path, body), 400, code)
    assert env.get("region1", path).json() == {"members": [], "count": 0}  # nothing half-done
    _share(env, backup["id"], partner.project_id)
    again = env.post("region1", path, {"members": [partner.project_id]})
    assert_error(again, 400, "BackupService.6714")
    volume_less = env.post("region1", "/backups/nope/members", {"members": [partner.project_id]})
    assert_error(volume_less, 404, "BackupService.6200")


def test_a_member_answers_with_a_vault_of_its_own_of_the_backups_kind(env: Env) -> None:
    backup = _shared_backup(env)
    partner = neighbour(env, "partner")
    (member,) = _share(env, backup["id"], partner.project_id)
    path = f"/backups/{backup['id']}/members/{member['id']}"
    disk_vault = partner.post("/vaults", vault_body(name="d", object_type="disk")).json()["vault"]
    owners_vault = backup["vault_id"]
    refusals = [
        ({"status": "accepted", "vault_id": disk_vault["id"]}, 400, "BackupService.6713"),
        ({"status": "accepted", "vault_id": owners_vault}, 400, "BackupService.6120"),
        ({"status": "pending"}, 400, "BackupService.9900"),
        ({"status": "maybe"}, 400, "BackupService.9900"),
        ({}, 400, "BackupService.9900"),
    ]
    for body, status, code in refusals:
        assert_error(partner.put(path, body), status, code)
    assert partner.get(path).json()["member"]["status"] == "pending"
    assert_error(
        partner.put(f"/backups/{backup['id']}/members/nobody", {"status": "accepted"}),
        404,
        "BackupService.6705",
    )
    rejected = partner.put(path, {"status": "rejected"}).json()["member"]
    assert rejected["status"] == "rejected"
    assert _listed(partner, own_type="shared", member_status="rejected") == [backup["id"]]
    assert _listed(partner, own_type="all_granted") == []
    restored = partner.post(f"/backups/{backup['id']}/restore", {"restore": {}})
    assert_error(restored, 400, "BackupService.9900")
    # a member may change its mind
    assert partner.put(path, {"status": "accepted"}).json()["member"]["status"] == "accepted"


def test_members_are_listed_filtered_sorted_and_paged(env: Env) -> None:
    backup = _shared_backup(env)
    tenants = [neighbour(env, name) for name in ("partner", "third", "other")]
    _share(env, backup["id"], tenants[0].project_id)
    _share(env, backup["id"], tenants[1].project_id, tenants[2].project_id)
    tenants[1].put(
        f"/backups/{backup['id']}/members/{tenants[1].project_id}", {"status": "accepted"}
    )
    path = f"/backups/{backup['id']}/members"

    def dests(**params: Any) -> list[str]:
        response = env.get("region1", path, params=params)
        assert response.status_code == 200, response.text
        return [m["dest_project_id"] for m in response.json()["members"]]

    ids = [t.project_id for t in tenants]
    assert sorted(dests()) == sorted(ids)
    assert dests(status="accepted") == [ids[1]]
    assert dests(dest_project_id=ids[2]) == [ids[2]]
    assert dests(image_id="anything") == []
    assert dests(sort="dest_project_id:asc") == sorted(ids)
    assert dests(sort="dest_project_id") == sorted(ids, reverse=True)
    first = dests(sort="dest_project_id:asc", limit=2)
    members = env.get("region1", path, params={"sort": "dest_project_id:asc"}).json()["members"]
    after = dests(sort="dest_project_id:asc", marker=members[1]["id"])
    assert first + after == sorted(ids)
    page = env.get("region1", path, params={"limit": 1, "offset": 1}).json()
    assert page["count"] == 3 and len(page["members"]) == 1
    assert_error(env.get("region1", path, params={"sort": "vault"}), 400, "BackupService.9900")
    assert_error(env.get("region1", path, params={"status": "gone"}), 400, "BackupService.9900")


def test_deleting_a_shared_backup_ends_its_shares(env: Env) -> None:
    backup = _shared_backup(env)
    partner = neighbour(env, "partner")
    _share(env, backup["id"], partner.project_id)
    partner.put(f"/backups/{backup['id']}/members/{partner.project_id}", {"status": "accepted"})
    assert env.delete("region1", f"/backups/{backup['id']}").status_code == 204
    # at once, while the delete task runs: the member no longer sees it
    assert_error(partner.get(f"/backups/{backup['id']}"), 404, "BackupService.6200")
    assert _listed(partner, own_type="shared") == []
    env.wait_for(
        "region1",
        f"/backups/{backup['id']}",
        lambda body: body.get("error_code") == "BackupService.6200",
    )


def test_the_owner_removes_a_member(env: Env) -> None:
    backup = _shared_backup(env)
    partner = neighbour(env, "partner")
    (member,) = _share(env, backup["id"], partner.project_id)
    path = f"/backups/{backup['id']}/members/{member['id']}"
    assert env.delete("region1", path).status_code == 204
    assert_error(env.get("region1", path), 404, "BackupService.6705")
    assert_error(partner.get(f"/backups/{backup['id']}"), 404, "BackupService.6200")
    assert _listed(partner, own_type="shared") == []


@pytest.mark.slow
def test_disk_backups_are_shared_too(env: Env) -> None:
    disk = register_disk(env, name="shared-disk", size=1 << 20)
    image = env.roots["region1"] / "shared-disk.img"
    with open(image, "r+b") as f:
        f.write(b"disk bytes" * 100)
    vault = create_vault(
        env, name="disks", object_type="disk", resources=[{"id": disk["id"], "type": disk["type"]}]
    )
    backup = backup_now(env, vault["id"])
    partner = neighbour(env, "partner")
    _share(env, backup["id"], partner.project_id)
    partner.put(f"/backups/{backup['id']}/members/{partner.project_id}", {"status": "accepted"})
    target = env.roots["partner"] / "landing.img"
    target.write_bytes(b"\xff" * (1 << 20))
    registered = partner.post(
        "/protectables/disk/instances", {"instance": {"name": "landing", "path": str(target)}}
    ).json()["instance"]
    log = _restore_as(partner, backup["id"], {"volume_id": registered["id"]})
    assert log["status"] == "success", log
    assert target.read_bytes() == image.read_bytes()
    # the owner's own restore still works, and its log names its vault
    own = restore(env, backup["id"], {})
    assert own["status"] == "success" and own["vault_id"] == vault["id"]


def test_a_member_reads_a_shared_server_backups_metadata_without_the_owners_paths(
    env: Env,
) -> None:
    """show_metadata of a shared server backup: the member sees the volumes (to map them
    at restore) but not where they live on the owner's machines, nor the owner's
    replication records; the owner sees both."""
    server = register_web_server(env, b"\x01" * 70_000)
    vault = create_vault(
        env, object_type="server", resources=[{"id": server["id"], "type": "OS::Nova::Server"}]
    )
    backup = backup_now(env, vault["id"])
    partner = neighbour(env, "partner")
    (member,) = _share(env, backup["id"], partner.project_id)
    partner.put(f"/backups/{backup['id']}/members/{member['id']}", {"status": "accepted"})
    path = f"/backups/{backup['id']}/metadata"
    owner_view = env.get("region1", path).json()
    member_view = partner.get(path).json()
    owner_volumes = [json.loads(v)["volume"] for v in owner_view["volumes"]]
    member_volumes = [json.loads(v)["volume"] for v in member_view["volumes"]]
    assert {v["name"] for v in member_volumes} == {"sys", "data"}
    assert all("path" not in v for v in member_volumes)
    assert all(str(env.roots["region1"]) in v["path"] for v in owner_volumes)
    assert str(env.roots["region1"]) not in json.dumps(member_view)
    assert json.loads(member_view["backups"])["replication_records"] == []
