"""POST /vaults/{vault_id}/migrateresources over HTTP: resources and their backups move to
another vault of the project, chunks and manifests included, restorable there; the source
keeps nothing of them once garbage collection ran; bad requests change nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import (
    Env,
    assert_error,
    backup_now,
    chunk_names,
    create_vault,
    outsider,
    register_dir,
    restore,
)


def _bound(env: Env, vault_id: str) -> list[str]:
    vault = env.get("region1", f"/vaults/{vault_id}").json()["vault"]
    return [resource["id"] for resource in vault["resources"]]


def _backups_in(env: Env, vault_id: str) -> set[str]:
    body = env.get("region1", "/backups", params={"vault_id": vault_id}).json()
    return {backup["id"] for backup in body["backups"]}


def _fill(env: Env, name: str, files: dict[str, bytes]) -> Path:
    root = env.roots["region1"] / name
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return root


def _migrate(env: Env, source: str, body: dict[str, Any]) -> Any:
    return env.post("region1", f"/vaults/{source}/migrateresources", body)


@pytest.mark.slow
def test_resources_move_with_their_backups_and_chunks(env: Env) -> None:
    moving = register_dir(env, name="moving")
    staying = register_dir(env, name="staying")
    resources = [{"id": r["id"], "type": r["type"]} for r in (moving, staying)]
    source = create_vault(env, name="source", resources=resources)
    dest = create_vault(env, name="dest")
    root = _fill(env, "moving", {"a.bin": bytes(range(256)) * 4096, "b.txt": b"first\n"})
    _fill(env, "staying", {"c.bin": b"\x07" * 300_000})
    first = backup_now(env, source["id"], resources=[moving["id"]])
    (root / "b.txt").write_bytes(b"second\n")
    second = backup_now(env, source["id"], resources=[moving["id"]])
    kept = backup_now(env, source["id"], resources=[staying["id"]])
    before = chunk_names(env, "region1", source["id"])

    response = _migrate(
        env, source["id"], {"destination_vault_id": dest["id"], "resource_ids": [moving["id"]]}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"migrated_resources": [moving["id"]]}
    env.wait_for("region1", f"/vaults/{dest['id']}", lambda b: _bound_in(b, moving["id"]))

    assert _bound(env, source["id"]) == [staying["id"]]
    assert _backups_in(env, dest["id"]) == {first["id"], second["id"]}
    assert _backups_in(env, source["id"]) == {kept["id"]}
    assert chunk_names(env, "region1", dest["id"])  # the chunks were copied over
    used = env.get("region1", f"/vaults/{dest['id']}").json()["vault"]["billing"]["used"]
    assert used > 0
    # the source keeps the staying backup's chunks only, once its garbage is collected
    env.wait_for(
        "region1",
        f"/vaults/{source['id']}",
        lambda _b: chunk_names(env, "region1", source["id"]) < before,
    )
    # restorable from the destination alone, byte for byte
    (root / "a.bin").unlink()
    log = restore(env, first["id"], {})
    assert log["status"] == "success" and log["vault_id"] == dest["id"]
    assert (root / "a.bin").read_bytes() == bytes(range(256)) * 4096
    assert (root / "b.txt").read_bytes() == b"first\n"
    assert restore(env, kept["id"], {})["status"] == "success"
    # and a new backup of the moved resource goes to the destination
    third = backup_now(env, dest["id"])
    assert third["vault_id"] == dest["id"] and third["resource_id"] == moving["id"]


def _bound_in(body: dict[str, Any], resource_id: str) -> bool:
    return resource_id in [r["id"] for r in body["vault"]["resources"]]


def _one_backed_up_resource(env: Env, name: str) -> tuple[dict[str, Any], ...]:
    """(resource, its vault `s` holding one backup of it, an empty vault `d`, the backup)."""
    resource = register_dir(env, name=name)
    _fill(env, name, {"x": b"x" * 70_000})
    source = create_vault(
        env, name="s", resources=[{"id": resource["id"], "type": resource["type"]}]
    )
    dest = create_vault(env, name="d")
    return resource, source, dest, backup_now(env, source["id"])


def test_without_resource_ids_every_resource_moves(env: Env) -> None:
    resource, source, dest, backup = _one_backed_up_resource(env, "all")
    response = _migrate(env, source["id"], {"destination_vault_id": dest["id"]})
    assert response.json() == {"migrated_resources": [resource["id"]]}
    env.wait_for("region1", f"/vaults/{dest['id']}", lambda b: _bound_in(b, resource["id"]))
    assert _backups_in(env, dest["id"]) == {backup["id"]}
    assert _bound(env, source["id"]) == [] and _backups_in(env, source["id"]) == set()


def test_bad_migrations_are_refused_and_change_nothing(env: Env) -> None:
    resource = register_dir(env, name="r")
    other = register_dir(env, name="elsewhere")
    source = create_vault(
        env, name="s", resources=[{"id": resource["id"], "type": resource["type"]}]
    )
    dest = create_vault(env, name="d")
    disk = create_vault(env, name="disk", object_type="disk")
    replication = create_vault(env, name="repl", protect_type="replication")
    foreign = create_vault(env, "region2", name="foreign")
    refusals = [
        ({"destination_vault_id": "nope"}, 400, "BackupService.6120"),
        ({"destination_vault_id": foreign["id"]}, 400, "BackupService.6120"),
        ({"destination_vault_id": source["id"]}, 400, "BackupService.9900"),
        ({"destination_vault_id": disk["id"]}, 400, "BackupService.6102"),
        ({"destination_vault_id": replication["id"]}, 400, "BackupService.6102"),
        (
            {"destination_vault_id": dest["id"], "resource_ids": [other["id"]]},
            400,
            "BackupService.6135",
        ),
        (
            {"destination_vault_id": dest["id"], "resource_ids": [resource["id"]] * 2},
            400,
            "BackupService.6104",
        ),
        ({"destination_vault_id": dest["id"], "resource_ids": []}, 400, "BackupService.9900"),
        ({"resource_ids": [resource["id"]]}, 400, "BackupService.9900"),
        ({}, 400, "BackupService.9900"),
    ]
    for body, status, code in refusals:
        assert_error(_migrate(env, source["id"], body), status, code)
    assert_error(
        _migrate(env, "nope", {"destination_vault_id": dest["id"]}), 404, "BackupService.6105"
    )
    empty = _migrate(env, dest["id"], {"destination_vault_id": source["id"]})
    assert_error(empty, 400, "BackupService.9900")  # nothing in it to move
    viewer = env.client.post(
        env.url("region1", f"/vaults/{source['id']}/migrateresources"),
        json={"destination_vault_id": dest["id"]},
        headers=env.headers("region1", "viewer"),
    )
    assert_error(viewer, 403, "APIGW.0302")
    stranger_project, stranger_token = outsider(env)
    stranger = env.client.post(
        f"/v3/{stranger_project}/vaults/{source['id']}/migrateresources",
        json={"destination_vault_id": dest["id"]},
        headers={"X-Auth-Token": stranger_token},
    )
    assert_error(stranger, 404, "BackupService.6105")
    assert _bound(env, source["id"]) == [resource["id"]] and _bound(env, dest["id"]) == []


def test_neither_vault_of_a_running_migration_can_be_deleted(env: Env) -> None:
    """Deleting the destination (or the source) while a migration moves resources between
    them once crashed the migration (its chunk rows lost their vault) after the call had
    answered that the resources moved: both deletes are refused until it ends."""
    resource, source, dest, backup = _one_backed_up_resource(env, "m")
    jobs = env.client.app.state.jobs  # type: ignore[attr-defined]
    jobs.stop()  # the migration stays waiting
    response = _migrate(env, source["id"], {"destination_vault_id": dest["id"]})
    assert response.status_code == 200, response.text
    for vault in (dest, source):
        assert_error(env.delete("region1", f"/vaults/{vault['id']}"), 400, "BackupService.6203")
    jobs.start(workers=1)
    env.wait_for("region1", f"/vaults/{dest['id']}", lambda b: _bound_in(b, resource["id"]))
    assert _backups_in(env, dest["id"]) == {backup["id"]}
    # Once it has ended (after its last step, the source's side), the source may go.
    env.wait_for(
        "region1",
        f"/vaults/{source['id']}",
        lambda _b: env.delete("region1", f"/vaults/{source['id']}").status_code == 204,
    )
