"""Vaults over HTTP: every route, its success and its error paths."""

from __future__ import annotations

import pytest

from tests.api.helpers import (
    Env,
    assert_error,
    create_vault,
    register_dir,
    register_disk,
    vault_body,
)


def test_create_vault_answers_every_documented_field(env: Env) -> None:
    resource = register_dir(env)
    vault = create_vault(
        env,
        resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}],
        description="nightly",
        tags=[{"key": "env", "value": "prod"}],
    )
    assert vault["project_id"] == env.projects["region1"]
    assert vault["provider_id"] == "3f3c3220-245c-4805-b811-758870015881"
    billing = vault["billing"]
    assert billing["spec_code"] == "vault.backup.turbo.normal"
    assert (billing["size"], billing["used"], billing["status"]) == (100, 0, "available")
    assert billing["protect_type"] == "backup" and billing["object_type"] == "turbo"
    assert vault["resources"][0]["id"] == resource["id"]
    assert vault["resources"][0]["protect_status"] == "available"
    assert vault["tags"] == [{"key": "env", "value": "prod"}]
    assert len(vault["created_at"]) == 26  # 2020-02-05T10:38:34.209782


def test_replication_vault_spec_code_and_no_resources(env: Env) -> None:
    vault = create_vault(env, "region2", object_type="server", protect_type="replication")
    assert vault["billing"]["spec_code"] == "vault.replication.server.normal"
    assert vault["provider_id"] == "0daac4c5-6707-4851-97ba-169e36266b66"


def test_otcextensions_operation_type_alias_for_protect_type(env: Env) -> None:
    body = vault_body()
    billing = body["vault"]["billing"]
    billing["operation_type"] = billing.pop("protect_type")
    response = env.post("region1", "/vaults", body)
    assert response.status_code == 200
    assert response.json()["vault"]["billing"]["protect_type"] == "backup"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda b: b["vault"]["billing"].update(size="100"), "BackupService.9900"),
        (lambda b: b["vault"]["billing"].pop("object_type"), "BackupService.9900"),
        (lambda b: b["vault"].update(name="bad name!"), "BackupService.9900"),
        (lambda b: b["vault"]["billing"].update(object_type="tape"), "BackupService.9900"),
        (lambda b: b["vault"]["billing"].update(charging_mode="pre_paid"), "BackupService.9900"),
        (lambda b: b["vault"].update(description="<script>"), "BackupService.9900"),
        (lambda b: b["vault"].update(resources="none"), "BackupService.9900"),
        (lambda b: b["vault"]["billing"].update(size=0), "BackupService.6101"),
        (lambda b: b["vault"]["billing"].update(size=10485761), "BackupService.6101"),
    ],
)
def test_create_vault_rejects_bad_bodies(env: Env, mutate: object, code: str) -> None:
    body = vault_body()
    mutate(body)  # type: ignore[operator]
    assert_error(env.post("region1", "/vaults", body), 400, code)
    assert env.get("region1", "/vaults").json()["count"] == 0


def test_create_vault_rejects_non_object_body(env: Env) -> None:
    for raw in (b"[]", b"{", b'{"vault": 3}', b""):
        response = env.client.post(
            env.url("region1", "/vaults"),
            content=raw,
            headers={**env.headers(), "content-type": "application/json"},
        )
        assert_error(response, 400, "BackupService.9900")


def test_resource_rules_on_create_and_add(env: Env) -> None:
    tree = register_dir(env)
    disk = register_disk(env)
    bind = [{"id": tree["id"], "type": "OS::Sfs::Turbo"}]
    assert_error(
        env.post("region1", "/vaults", vault_body(resources=bind * 2)), 400, "BackupService.6104"
    )
    assert_error(
        env.post(
            "region1",
            "/vaults",
            vault_body(resources=[{"id": disk["id"], "type": "OS::Cinder::Volume"}]),
        ),
        400,
        "BackupService.6102",
    )
    assert_error(
        env.post(
            "region1",
            "/vaults",
            vault_body(
                resources=[{"id": "00000000-0000-0000-0000-000000000000", "type": "OS::Sfs::Turbo"}]
            ),
        ),
        404,
        "BackupService.6302",
    )
    first = create_vault(env, resources=bind)
    assert_error(
        env.post("region1", "/vaults", vault_body(name="v2", resources=bind)),
        400,
        "BackupService.6103",
    )
    second = create_vault(env, name="v2")
    response = env.post("region1", f"/vaults/{second['id']}/addresources", {"resources": bind})
    assert_error(response, 400, "BackupService.6103")
    response = env.post("region1", f"/vaults/{first['id']}/addresources", {"resources": bind})
    assert_error(response, 400, "BackupService.6104")
    replication = create_vault(env, name="repl", protect_type="replication")
    other = register_dir(env, name="other")
    response = env.post(
        "region1",
        f"/vaults/{replication['id']}/addresources",
        {"resources": [{"id": other["id"], "type": "OS::Sfs::Turbo"}]},
    )
    assert_error(response, 400, "BackupService.6108")


def test_add_remove_and_set_resources(env: Env) -> None:
    vault = create_vault(env)
    tree = register_dir(env)
    response = env.post(
        "region1",
        f"/vaults/{vault['id']}/addresources",
        {"resources": [{"id": tree["id"], "type": "OS::Sfs::Turbo"}]},
    )
    assert response.status_code == 200
    assert response.json() == {"add_resource_ids": [tree["id"]]}
    response = env.put(
        "region1",
        f"/vaults/{vault['id']}/set-resources",
        {"resource_ids": [tree["id"]], "action": "suspend"},
    )
    assert response.json() == {"set_resource_ids": [tree["id"]]}
    shown = env.get("region1", f"/vaults/{vault['id']}").json()["vault"]
    assert shown["resources"][0]["auto_protect"] is False
    assert_error(
        env.put(
            "region1",
            f"/vaults/{vault['id']}/set-resources",
            {"resource_ids": ["x"], "action": "suspend"},
        ),
        400,
        "BackupService.6135",
    )
    assert_error(
        env.put(
            "region1",
            f"/vaults/{vault['id']}/set-resources",
            {"resource_ids": [tree["id"]], "action": "pause"},
        ),
        400,
        "BackupService.9900",
    )
    response = env.post(
        "region1", f"/vaults/{vault['id']}/removeresources", {"resource_ids": [tree["id"]]}
    )
    assert response.json() == {"remove_resource_ids": [tree["id"]]}
    assert_error(
        env.post(
            "region1", f"/vaults/{vault['id']}/removeresources", {"resource_ids": [tree["id"]]}
        ),
        400,
        "BackupService.6135",
    )
    assert env.get("region1", f"/vaults/{vault['id']}").json()["vault"]["resources"] == []


def test_list_filters_and_pagination(env: Env) -> None:
    made = [
        create_vault(env, name=f"v{i}", protect_type="replication" if i % 2 else "backup")
        for i in range(5)
    ]
    listing = env.get("region1", "/vaults").json()
    assert listing["count"] == 5
    assert [v["id"] for v in listing["vaults"]] == [v["id"] for v in reversed(made)]
    assert (
        env.get("region1", "/vaults", params={"name": "v3"}).json()["vaults"][0]["id"]
        == made[3]["id"]
    )
    assert (
        env.get("region1", "/vaults", params={"protect_type": "replication"}).json()["count"] == 2
    )
    ids = env.get(
        "region1", "/vaults", params=[("id", made[0]["id"]), ("id", made[1]["id"])]
    ).json()
    assert {v["id"] for v in ids["vaults"]} == {made[0]["id"], made[1]["id"]}
    page = env.get("region1", "/vaults", params={"limit": 2, "offset": 1}).json()
    assert [v["id"] for v in page["vaults"]] == [made[3]["id"], made[2]["id"]]
    assert (page["count"], page["limit"], page["offset"]) == (5, 2, 1)
    seen, marker = [], None
    while True:
        params = {"limit": 2, **({"marker": marker} if marker else {})}
        batch = env.get("region1", "/vaults", params=params).json()["vaults"]
        if not batch:
            break
        seen += [v["id"] for v in batch]
        marker = batch[-1]["id"]
    assert seen == [v["id"] for v in reversed(made)]
    assert_error(env.get("region1", "/vaults", params={"limit": 0}), 400, "BackupService.9900")
    assert_error(env.get("region1", "/vaults", params={"limit": "x"}), 400, "BackupService.9900")
    assert_error(
        env.get("region1", "/vaults", params={"marker": "nope"}), 400, "BackupService.9900"
    )


def test_list_by_resource_ids_accepts_otc_spelling(env: Env) -> None:
    tree = register_dir(env)
    vault = create_vault(env, resources=[{"id": tree["id"], "type": "OS::Sfs::Turbo"}])
    create_vault(env, name="empty")
    for key in ("resource_ids", "resources_ids"):
        listing = env.get("region1", "/vaults", params={key: f"{tree['id']},other"}).json()
        assert [v["id"] for v in listing["vaults"]] == [vault["id"]]


def test_update_vault(env: Env) -> None:
    vault = create_vault(env)
    response = env.put(
        "region1",
        f"/vaults/{vault['id']}",
        {"vault": {"name": "renamed", "billing": {"size": 200}, "threshold": 90}},
    )
    assert response.status_code == 200
    updated = response.json()["vault"]
    assert (updated["name"], updated["billing"]["size"], updated["threshold"]) == (
        "renamed",
        200,
        90,
    )
    assert_error(
        env.put("region1", f"/vaults/{vault['id']}", {"vault": {"threshold": 101}}),
        400,
        "BackupService.9900",
    )
    assert_error(
        env.put("region1", f"/vaults/{vault['id']}", {"vault": {"billing": {"size": 0}}}),
        400,
        "BackupService.6101",
    )
    assert_error(
        env.put("region1", "/vaults/unknown", {"vault": {"name": "x"}}), 404, "BackupService.6105"
    )


def test_delete_vault(env: Env) -> None:
    vault = create_vault(env)
    response = env.delete("region1", f"/vaults/{vault['id']}")
    assert response.status_code == 204 and response.content == b""
    assert_error(env.get("region1", f"/vaults/{vault['id']}"), 404, "BackupService.6105")
    assert_error(env.delete("region1", f"/vaults/{vault['id']}"), 404, "BackupService.6105")


def test_other_projects_vaults_look_unknown(env: Env) -> None:
    vault = create_vault(env, "region2")
    for call in (
        lambda: env.get("region1", f"/vaults/{vault['id']}"),
        lambda: env.put("region1", f"/vaults/{vault['id']}", {"vault": {"name": "x"}}),
        lambda: env.delete("region1", f"/vaults/{vault['id']}"),
    ):
        assert_error(call(), 404, "BackupService.6105")
    assert env.get("region1", "/vaults").json()["count"] == 0


def test_replication_capabilities_from_configuration(env: Env) -> None:
    response = env.get("region2", "/replication-capabilities")
    assert response.json() == {
        "regions": [{"name": "region2", "replication_destinations": ["region1"]}]
    }


def test_openapi_describes_the_wire_models(env: Env) -> None:
    spec = env.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"VaultCreate", "BillingCreate", "VaultOut", "Billing", "ResourceResp"} <= set(schemas)
    assert "billing" in schemas["VaultCreate"]["properties"]
    assert "/v3/{project_id}/vaults/{vault_id}/addresources" in spec["paths"]
