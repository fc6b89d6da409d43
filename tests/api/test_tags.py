"""Vault tags over HTTP: one vault's tags, batch create/delete, the project's tags, the
query of vaults by tags (resource_instances), CBR's limits, and tenant isolation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from opencbr.db.migrate import alembic_config
from tests.api.helpers import Env, assert_error, create_vault, outsider, register_dir

Tags = list[dict[str, str]]


def tags_of(env: Env, vault_id: str, region: str = "region1") -> Tags:
    response = env.get(region, f"/vault/{vault_id}/tags")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sys_tags"] == []
    result: Tags = body["tags"]
    return result


def add_tag(env: Env, vault_id: str, key: str, value: str = "") -> Any:
    return env.post("region1", f"/vault/{vault_id}/tags", {"tag": {"key": key, "value": value}})


def batch(env: Env, vault_id: str, action: str, tags: list[dict[str, Any]]) -> Any:
    return env.post("region1", f"/vault/{vault_id}/tags/action", {"action": action, "tags": tags})


def instances(env: Env, region: str = "region1", **body: Any) -> dict[str, Any]:
    response = env.post(region, "/vault/resource_instances/action", {"action": "filter", **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def names(env: Env, **body: Any) -> list[str]:
    return [item["resource_name"] for item in instances(env, **body)["resources"]]


def test_tags_added_listed_overwritten_and_deleted(env: Env) -> None:
    vault = create_vault(env, name="tagged", tags=[{"key": "env", "value": "prod"}])
    assert tags_of(env, vault["id"]) == [{"key": "env", "value": "prod"}]
    response = add_tag(env, vault["id"], "owner", "ops-team")
    assert response.status_code == 204 and response.content == b""
    assert add_tag(env, vault["id"], "env", "test").status_code == 204  # overwrites
    expected = [{"key": "env", "value": "test"}, {"key": "owner", "value": "ops-team"}]
    assert tags_of(env, vault["id"]) == expected
    # the vault's own answers agree with the tag API
    assert env.get("region1", f"/vaults/{vault['id']}").json()["vault"]["tags"] == expected
    listed = env.get("region1", "/vaults").json()["vaults"]
    assert [v["tags"] for v in listed] == [expected]
    updated = env.put("region1", f"/vaults/{vault['id']}", {"vault": {"name": "renamed"}})
    assert updated.json()["vault"]["tags"] == expected

    deleted = env.delete("region1", f"/vault/{vault['id']}/tags/env")
    assert deleted.status_code == 204
    assert tags_of(env, vault["id"]) == [{"key": "owner", "value": "ops-team"}]
    assert_error(env.delete("region1", f"/vault/{vault['id']}/tags/env"), 404, "BackupService.6601")


def test_keys_and_values_are_trimmed_and_may_be_chinese(env: Env) -> None:
    vault = create_vault(env, name="trimmed")
    assert add_tag(env, vault["id"], "  team ", " a.b-c_1 ").status_code == 204
    assert add_tag(env, vault["id"], "环境", "生产").status_code == 204
    assert add_tag(env, vault["id"], "empty").status_code == 204
    assert tags_of(env, vault["id"]) == [
        {"key": "empty", "value": ""},
        {"key": "team", "value": "a.b-c_1"},
        {"key": "环境", "value": "生产"},
    ]


@pytest.mark.parametrize(
    "tag",
    [
        {"key": "k" * 37, "value": "v"},  # key over 36 characters
        {"key": "k", "value": "v" * 44},  # value over 43
        {"key": "", "value": "v"},
        {"key": "   ", "value": "v"},
        {"key": "a=b", "value": "v"},
        {"key": "a*b", "value": "v"},
        {"key": "k", "value": "a/b"},
        {"key": "k", "value": "a,b"},
        {"key": "k", "value": "a\nb"},
        {"key": "k\u0001", "value": "v"},
        {"key": "k.dot", "value": "v"},  # '.' is for values only
        {"value": "v"},
        {"key": 7, "value": "v"},
        {"key": "k", "value": 7},
    ],
)
def test_bad_keys_and_values_are_refused_and_nothing_is_written(
    env: Env, tag: dict[str, Any]
) -> None:
    vault = create_vault(env, name="strict")
    response = env.post("region1", f"/vault/{vault['id']}/tags", {"tag": tag})
    assert_error(response, 400, "BackupService.9900")
    batched = env.post(
        "region1", f"/vault/{vault['id']}/tags/action", {"action": "create", "tags": [tag]}
    )
    assert_error(batched, 400, "BackupService.9900")
    created = env.post(
        "region1",
        "/vaults",
        {
            "vault": {
                "name": "with-bad-tag",
                "billing": {"object_type": "turbo", "protect_type": "backup", "size": 10},
                "resources": [],
                "tags": [tag],
            }
        },
    )
    assert_error(created, 400, "BackupService.9900")
    assert tags_of(env, vault["id"]) == []
    assert [v["name"] for v in env.get("region1", "/vaults").json()["vaults"]] == ["strict"]


def test_nul_in_a_key_is_refused(env: Env) -> None:
    vault = create_vault(env, name="nul")
    assert_error(add_tag(env, vault["id"], "a\x00b", "v"), 400, "BackupService.9900")
    response = env.delete("region1", f"/vault/{vault['id']}/tags/a%00b")
    assert_error(response, 400, "BackupService.9900")
    assert tags_of(env, vault["id"]) == []


def test_a_vault_holds_at_most_ten_tags(env: Env) -> None:
    ten = [{"key": f"k{i}", "value": "v"} for i in range(10)]
    vault = create_vault(env, name="full", tags=ten)
    assert_error(add_tag(env, vault["id"], "eleventh", "v"), 400, "BackupService.6600")
    assert add_tag(env, vault["id"], "k3", "changed").status_code == 204  # overwrite fits
    assert_error(
        batch(env, vault["id"], "create", [{"key": "k0", "value": "x"}, {"key": "new"}]),
        400,
        "BackupService.6600",
    )
    shown = tags_of(env, vault["id"])
    assert len(shown) == 10 and {"key": "k0", "value": "v"} in shown  # all or nothing
    eleven = [*ten, {"key": "k10", "value": "v"}]
    assert_error(
        env.post("region1", "/vaults", {"vault": {**_body("over"), "tags": eleven}}),
        400,
        "BackupService.6600",
    )


def _body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "billing": {"object_type": "turbo", "protect_type": "backup", "size": 10},
        "resources": [],
    }


def test_repeated_keys_are_refused_on_create(env: Env) -> None:
    twice = [{"key": "k", "value": "a"}, {"key": "k", "value": "b"}]
    created = env.post("region1", "/vaults", {"vault": {**_body("twice"), "tags": twice}})
    assert_error(created, 400, "BackupService.9900")
    vault = create_vault(env, name="once")
    assert_error(batch(env, vault["id"], "create", twice), 400, "BackupService.9900")
    assert tags_of(env, vault["id"]) == []


def test_batch_create_and_delete(env: Env) -> None:
    vault = create_vault(env, name="batched", tags=[{"key": "keep", "value": "1"}])
    response = batch(
        env, vault["id"], "create", [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]
    )
    assert response.status_code == 204, response.text
    assert [t["key"] for t in tags_of(env, vault["id"])] == ["a", "b", "keep"]
    # delete: a missing key and a value that differs are no error and remove nothing;
    # keys may repeat; no charset check (a key that cannot exist is simply absent)
    response = batch(
        env,
        vault["id"],
        "delete",
        [
            {"key": "a"},
            {"key": "a"},
            {"key": "b", "value": "other"},
            {"key": "missing"},
            {"key": "no/such=key"},
        ],
    )
    assert response.status_code == 204, response.text
    assert tags_of(env, vault["id"]) == [{"key": "b", "value": "2"}, {"key": "keep", "value": "1"}]
    assert batch(env, vault["id"], "delete", [{"key": "b", "value": "2"}]).status_code == 204
    assert tags_of(env, vault["id"]) == [{"key": "keep", "value": "1"}]


@pytest.mark.parametrize(
    "body",
    [
        {"action": "create"},  # no tags
        {"action": "create", "tags": []},
        {"action": "update", "tags": [{"key": "k", "value": "v"}]},
        {"action": "create", "tags": [{"key": f"k{i}", "value": "v"} for i in range(11)]},
        {"action": "delete", "tags": [{"key": ""}]},
        {"action": "create", "sys_tags": [{"key": "_sys_enterprise_project_id", "value": "0"}]},
        {"tags": [{"key": "k", "value": "v"}]},
    ],
)
def test_bad_batch_bodies_are_refused(env: Env, body: dict[str, Any]) -> None:
    vault = create_vault(env, name="batch-bad", tags=[{"key": "k", "value": "v"}])
    response = env.post("region1", f"/vault/{vault['id']}/tags/action", body)
    assert_error(response, 400, "BackupService.9900")
    assert tags_of(env, vault["id"]) == [{"key": "k", "value": "v"}]


def test_other_tenants_vaults_are_unknown_to_every_tag_call(env: Env) -> None:
    foreign_project, foreign_token = outsider(env)
    foreign = env.client.post(
        f"/v3/{foreign_project}/vaults",
        json={"vault": {**_body("theirs"), "tags": [{"key": "secret", "value": "x"}]}},
        headers={"X-Auth-Token": foreign_token},
    )
    assert foreign.status_code == 200, foreign.text
    theirs = foreign.json()["vault"]["id"]
    mine_elsewhere = create_vault(env, "region2", name="other-project")["id"]
    for vault_id in (theirs, mine_elsewhere, "00000000-0000-4000-8000-000000000000"):
        for response in (
            env.get("region1", f"/vault/{vault_id}/tags"),
            add_tag(env, vault_id, "k", "v"),
            batch(env, vault_id, "create", [{"key": "k", "value": "v"}]),
            batch(env, vault_id, "delete", [{"key": "secret"}]),
            env.delete("region1", f"/vault/{vault_id}/tags/secret"),
        ):
            assert_error(response, 404, "BackupService.6105")
    shown = env.client.get(
        f"/v3/{foreign_project}/vault/{theirs}/tags", headers={"X-Auth-Token": foreign_token}
    )
    assert shown.json()["tags"] == [{"key": "secret", "value": "x"}]
    # the project's tag list and the tag query never show another project's vaults
    assert env.get("region1", "/vault/tags").json() == {"tags": []}
    assert instances(env, tags=[{"key": "secret", "values": []}]) == {
        "resources": [],
        "total_count": 0,
    }


def test_tag_calls_that_write_need_a_writer(env: Env) -> None:
    vault = create_vault(env, name="ro", tags=[{"key": "k", "value": "v"}])
    viewer = env.headers("region1", "viewer")
    for response in (
        env.client.post(
            env.url("region1", f"/vault/{vault['id']}/tags"),
            json={"tag": {"key": "x", "value": "y"}},
            headers=viewer,
        ),
        env.client.post(
            env.url("region1", f"/vault/{vault['id']}/tags/action"),
            json={"action": "delete", "tags": [{"key": "k"}]},
            headers=viewer,
        ),
        env.client.delete(env.url("region1", f"/vault/{vault['id']}/tags/k"), headers=viewer),
    ):
        assert_error(response, 403, "APIGW.0302")
    readable = env.client.get(env.url("region1", f"/vault/{vault['id']}/tags"), headers=viewer)
    assert readable.json()["tags"] == [{"key": "k", "value": "v"}]


def test_project_tags_list_each_key_with_its_values(env: Env) -> None:
    create_vault(
        env, name="a", tags=[{"key": "env", "value": "prod"}, {"key": "team", "value": ""}]
    )
    create_vault(env, name="b", tags=[{"key": "env", "value": "dev"}])
    create_vault(env, name="c", tags=[{"key": "env", "value": "prod"}])
    create_vault(env, "region2", name="elsewhere", tags=[{"key": "region", "value": "two"}])
    assert env.get("region1", "/vault/tags").json() == {
        "tags": [{"key": "env", "values": ["dev", "prod"]}, {"key": "team", "values": [""]}]
    }
    assert env.get("region2", "/vault/tags").json() == {
        "tags": [{"key": "region", "values": ["two"]}]
    }


def _tagged_vaults(env: Env) -> None:
    create_vault(
        env, name="web-prod", tags=[{"key": "env", "value": "prod"}, {"key": "app", "value": "web"}]
    )
    create_vault(
        env, name="db-prod", tags=[{"key": "env", "value": "prod"}, {"key": "app", "value": "db"}]
    )
    create_vault(
        env, name="web-dev", tags=[{"key": "env", "value": "dev"}, {"key": "app", "value": "web"}]
    )
    create_vault(env, name="plain", object_type="disk")


def test_resource_instances_filter_by_tags(env: Env) -> None:
    _tagged_vaults(env)
    everything = ["plain", "web-dev", "db-prod", "web-prod"]  # newest first
    assert names(env) == everything
    assert names(env, tags=[{"key": "env", "values": ["prod"]}]) == ["db-prod", "web-prod"]
    # keys AND, values OR; an empty value list is any value
    assert names(
        env, tags=[{"key": "env", "values": ["prod", "dev"]}, {"key": "app", "values": ["web"]}]
    ) == ["web-dev", "web-prod"]
    assert names(env, tags=[{"key": "app", "values": []}]) == ["web-dev", "db-prod", "web-prod"]
    # a value starting with * matches every value containing the rest
    assert names(env, tags=[{"key": "env", "values": ["*ro"]}]) == ["db-prod", "web-prod"]
    assert names(env, tags=[{"key": "env", "values": ["*%"]}]) == []  # no LIKE wildcard
    assert names(
        env, tags_any=[{"key": "app", "values": ["db"]}, {"key": "env", "values": ["dev"]}]
    ) == ["web-dev", "db-prod"]
    # not_tags: not carrying all of them; not_tags_any: carrying none of them
    assert names(
        env, not_tags=[{"key": "env", "values": ["prod"]}, {"key": "app", "values": ["web"]}]
    ) == ["plain", "web-dev", "db-prod"]
    assert names(
        env, not_tags_any=[{"key": "app", "values": ["db"]}, {"key": "env", "values": ["dev"]}]
    ) == ["plain", "web-prod"]
    # without_any_tag wins over the tag lists
    assert names(env, without_any_tag=True, tags=[{"key": "env", "values": []}]) == ["plain"]
    assert names(env, tags=[{"key": "ENV", "values": []}]) == []  # keys are case-sensitive
    assert names(env, matches=[{"key": "resource_name", "value": "web"}]) == ["web-dev", "web-prod"]
    assert names(env, matches=[{"key": "resource_name", "value": "_"}]) == []  # literal _
    assert names(env, matches=[{"key": "resource_name", "value": ""}]) == []  # exact ""
    assert names(env, object_type="disk") == ["plain"]
    assert names(env, cloud_type="hybrid") == []


def test_resource_instances_answer_the_sdk_shape_pages_and_counts(env: Env) -> None:
    _tagged_vaults(env)
    body = instances(env, tags=[{"key": "env", "values": ["prod"]}], limit="1", offset="1")
    assert body["total_count"] == 2
    (item,) = body["resources"]
    shown = env.get("region1", f"/vaults/{item['resource_id']}").json()["vault"]
    assert item == {
        "resource_id": shown["id"],
        "resource_name": "web-prod",
        "resource_detail": {"vault": shown},
        "tags": [{"key": "app", "value": "web"}, {"key": "env", "value": "prod"}],
        "sys_tags": [],
    }
    assert instances(env, limit=2)["total_count"] == 4
    assert len(instances(env, limit=2)["resources"]) == 2
    assert instances(env, offset="9") == {"resources": [], "total_count": 4}
    counted = env.post(
        "region1",
        "/vault/resource_instances/action",
        {"action": "count", "tags": [{"key": "app", "values": ["web"]}], "limit": "1"},
    )
    assert counted.status_code == 200, counted.text
    assert counted.json() == {"total_count": 2}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"action": "list"},
        {"action": "filter", "limit": "0"},
        {"action": "filter", "limit": "1001"},
        {"action": "filter", "limit": "ten"},
        {"action": "filter", "limit": "-1"},
        {"action": "filter", "offset": "-1"},
        {"action": "filter", "offset": "99999999999"},
        {"action": "filter", "limit": True},
        {"action": "filter", "tags": []},
        {"action": "filter", "tags": [{"key": "k"}, {"key": "k"}]},
        {"action": "filter", "tags": [{"key": "k", "values": ["a", "a"]}]},
        {"action": "filter", "tags": [{"key": "k", "values": ["*"]}]},
        {"action": "filter", "tags": [{"key": "k", "values": [str(i) for i in range(11)]}]},
        {"action": "filter", "tags_any": [{"key": f"k{i}"} for i in range(11)]},
        {"action": "filter", "not_tags": [{"key": "k" * 128}]},
        {"action": "filter", "not_tags_any": [{"key": ""}]},
        {"action": "filter", "matches": [{"key": "name", "value": "x"}]},
        {"action": "filter", "matches": [{"key": "resource_name", "value": "x"}] * 2},
        {"action": "filter", "sys_tags": [{"key": "_sys_enterprise_project_id", "values": ["0"]}]},
        {"action": "filter", "object_type": "vm"},
    ],
)
def test_resource_instances_refuse_bad_queries(env: Env, body: dict[str, Any]) -> None:
    response = env.post("region1", "/vault/resource_instances/action", body)
    assert_error(response, 400, "BackupService.9900")


# SQLite only: its column drop is the one that could take rows with it (a table rebuild
# with foreign keys on deletes what references the vault); PostgreSQL drops in place.
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_tags_and_bindings_survive_the_migration_both_ways(env: Env) -> None:
    resource = register_dir(env, name="bound")
    tagged = [{"key": "env", "value": "prod"}, {"key": "team", "value": ""}]
    vault = create_vault(
        env,
        name="migrated",
        tags=tagged,
        resources=[{"id": resource["id"], "type": resource["type"]}],
    )
    config = alembic_config(env.db)
    command.downgrade(config, "0010")
    try:
        with env.db.engine.connect() as connection:
            stored = connection.execute(
                text("SELECT tags FROM vaults WHERE id = :id"), {"id": vault["id"]}
            ).scalar_one()
        assert json.loads(stored) == tagged
    finally:
        command.upgrade(config, "head")
    shown = env.get("region1", f"/vaults/{vault['id']}").json()["vault"]
    assert shown["tags"] == tagged
    assert [r["id"] for r in shown["resources"]] == [resource["id"]]
