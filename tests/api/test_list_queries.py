"""The list routes' query filters (query models): each filter still filters, repeated
parameters still mean "any of", and a bad value is still 400 BackupService.9900 naming it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from tests.api.helpers import Env, assert_error, backup_now, create_vault, register_dir


def names(body: dict[str, Any], key: str) -> list[str]:
    return sorted(item["name"] for item in body[key])


def test_vault_filters(env: Env) -> None:
    resource = register_dir(env, name="data")
    first = create_vault(
        env, name="first", resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}]
    )
    second = create_vault(env, name="second")
    create_vault(env, name="third")
    listed = env.get("region1", "/vaults", params={"id": [first["id"], second["id"]]}).json()
    assert names(listed, "vaults") == ["first", "second"]
    assert names(env.get("region1", "/vaults", params={"name": "third"}).json(), "vaults") == [
        "third"
    ]
    for spelling in ("resource_ids", "resources_ids"):
        body = env.get("region1", "/vaults", params={spelling: f"{resource['id']},other"}).json()
        assert names(body, "vaults") == ["first"]
    paged = env.get("region1", "/vaults", params={"limit": 1, "name": "first"}).json()
    assert paged["count"] == 1 and paged["limit"] == 1


def test_protectable_filters(env: Env) -> None:
    one, two = register_dir(env, name="one"), register_dir(env, name="two")
    register_dir(env, name="three")
    path = "/protectables/turbo/instances"
    body = env.get("region1", path, params={"id": [one["id"], two["id"]]}).json()
    assert names(body, "instances") == ["one", "two"]
    assert names(env.get("region1", path, params={"name": "three"}).json(), "instances") == [
        "three"
    ]


def test_backup_and_operation_log_filters(env: Env) -> None:
    resource = register_dir(env, name="data")
    (env.roots["region1"] / "data" / "f").write_text("x")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"], name="kept")
    found = env.get(
        "region1",
        "/backups",
        params={
            "vault_id": vault["id"],
            "status": ["error", "available"],
            "start_time": "2000-01-01T00:00:00Z",
            "sort": "created_at:asc",
            "show_replication": "true",
        },
    ).json()["backups"]
    assert [b["id"] for b in found] == [backup["id"]]
    assert found[0]["replication_records"] == []
    hidden = env.get("region1", "/backups", params={"vault_id": vault["id"]}).json()["backups"]
    assert "replication_records" not in hidden[0] or hidden[0]["replication_records"] is None
    none = env.get("region1", "/backups", params={"end_time": "2000-01-01T00:00:00Z"}).json()
    assert none["backups"] == [] and none["count"] == 0
    logs = env.get(
        "region1",
        "/operation-logs",
        params={"operation_type": "backup", "vault_id": vault["id"], "status": "success"},
    ).json()["operation_logs"]
    assert len(logs) == 1
    assert (
        env.get("region1", "/operation-logs", params={"vault_id": "other"}).json()["operation_logs"]
        == []
    )


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/backups", {"show_replication": "maybe"}, "show_replication"),
        ("/backups", {"sort": "x" * 256}, "sort"),
        ("/backups", {"sort": "size:up"}, "sort"),
        ("/backups", {"start_time": "yesterday"}, "start_time"),
        ("/operation-logs", {"end_time": "2018-13-01T00:00:00Z"}, "end_time"),
        ("/vaults", {"limit": 0}, "limit"),
        ("/protectables/turbo/instances", {"offset": -1}, "offset"),
    ],
)
def test_bad_query_values_are_invalid_parameters(
    env: Env, path: str, params: dict[str, Any], named: str
) -> None:
    response = env.get("region1", path, params=params)
    assert_error(response, 400, "BackupService.9900")
    assert named in response.json()["error_msg"]


def _plans_of_list_statements(env: Env, params: dict[str, Any]) -> dict[str, str]:
    """GET /backups with `params`: the SQLite query plan of its count and of its page."""
    statements: list[tuple[str, Any]] = []

    def record(*args: Any) -> None:
        statements.append((args[2], args[3]))

    event.listen(env.db.engine, "before_cursor_execute", record)
    try:
        assert env.get("region1", "/backups", params=params).status_code == 200
    finally:
        event.remove(env.db.engine, "before_cursor_execute", record)
    plans: dict[str, str] = {}
    with env.db.engine.connect() as connection:
        for statement, parameters in statements:
            if statement.startswith("SELECT count(*)"):
                kind = "count"
            elif "ORDER BY backups.created_at" in statement and "LIMIT" in statement:
                kind = "page"
            else:
                continue  # the caller's lookups, the volumes of the page's backups
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plans.setdefault(kind, " | ".join(row[3] for row in rows))
    return plans


# SQLite only: query plans are the backend's own.
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_project_list_counts_from_its_index_alone(env: Env) -> None:
    """The count of a project's top-level backups reads one index (no table lookup per
    backup to test parent_id), and the page walks the same index in order (no sort)."""
    plans = _plans_of_list_statements(env, {"limit": 10})
    assert "COVERING INDEX ix_backups_project_parent_created" in plans["count"], plans
    assert "ix_backups_project_parent_created" in plans["page"], plans
    assert "TEMP B-TREE" not in plans["page"], plans
