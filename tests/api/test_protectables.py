"""Protectables over HTTP: registration confined to configured roots, list, show, delete."""

from __future__ import annotations

import os

from tests.api.helpers import Env, assert_error, create_vault, register_dir


def test_register_list_show_and_unregister_a_tree(env: Env) -> None:
    instance = register_dir(env, name="projects")
    assert instance["type"] == "OS::Sfs::Turbo"
    assert instance["protectable"]["result"] is True
    listing = env.get("region1", "/protectables/turbo/instances").json()["instances"]
    assert [i["id"] for i in listing] == [instance["id"]]
    shown = env.get("region1", f"/protectables/turbo/instances/{instance['id']}").json()["instance"]
    assert shown["name"] == "projects"
    response = env.delete("region1", f"/protectables/turbo/instances/{instance['id']}")
    assert response.status_code == 204
    assert_error(
        env.get("region1", f"/protectables/turbo/instances/{instance['id']}"),
        404,
        "BackupService.6302",
    )


def test_register_server_with_volumes(env: Env) -> None:
    root = env.roots["region1"]
    (root / "sys").mkdir()
    (root / "data.img").write_bytes(b"\0" * 4096)
    body = {
        "instance": {
            "name": "web-1",
            "volumes": [
                {"name": "system", "path": str(root / "sys")},
                {"name": "data", "path": str(root / "data.img")},
            ],
        }
    }
    response = env.post("region1", "/protectables/server/instances", body)
    assert response.status_code == 200, response.text
    server = response.json()["instance"]
    assert server["type"] == "OS::Nova::Server"
    assert [c["name"] for c in server["children"]] == ["system", "data"]


def test_paths_outside_the_roots_are_refused(env: Env, tmp_path: object) -> None:
    root = env.roots["region1"]
    os.symlink("/etc", root / "sneaky")
    for path in (
        "/etc",
        str(root / ".." / "region2"),
        str(root / "sneaky"),
        "relative/path",
        str(root / "missing"),
    ):
        response = env.post(
            "region1", "/protectables/turbo/instances", {"instance": {"name": "x", "path": path}}
        )
        assert_error(response, 400, "BackupService.9900")
    region2_root = env.roots["region2"]
    response = env.post(
        "region1",
        "/protectables/turbo/instances",
        {"instance": {"name": "x", "path": str(region2_root)}},
    )
    assert_error(response, 400, "BackupService.9900")


def test_type_must_match_the_path(env: Env) -> None:
    root = env.roots["region1"]
    (root / "file.img").write_bytes(b"x")
    assert_error(
        env.post(
            "region1",
            "/protectables/turbo/instances",
            {"instance": {"name": "x", "path": str(root / "file.img")}},
        ),
        400,
        "BackupService.9900",
    )
    assert_error(
        env.post(
            "region1",
            "/protectables/disk/instances",
            {"instance": {"name": "x", "path": str(root)}},
        ),
        400,
        "BackupService.9900",
    )
    assert_error(env.get("region1", "/protectables/tape/instances"), 400, "BackupService.9900")


def test_bound_resource_shows_its_vault_and_cannot_be_unregistered(env: Env) -> None:
    instance = register_dir(env)
    vault = create_vault(env, resources=[{"id": instance["id"], "type": "OS::Sfs::Turbo"}])
    shown = env.get("region1", f"/protectables/turbo/instances/{instance['id']}").json()["instance"]
    assert shown["protectable"]["result"] is False
    assert shown["protectable"]["vault"]["id"] == vault["id"]
    assert_error(
        env.delete("region1", f"/protectables/turbo/instances/{instance['id']}"),
        400,
        "BackupService.9900",
    )


def test_other_projects_resources_are_invisible(env: Env) -> None:
    instance = register_dir(env, "region2")
    assert_error(
        env.get("region1", f"/protectables/turbo/instances/{instance['id']}"),
        404,
        "BackupService.6302",
    )
    assert env.get("region1", "/protectables/turbo/instances").json()["instances"] == []
