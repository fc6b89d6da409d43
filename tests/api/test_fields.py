"""Fields and filters mean what they say (issue 16): keyset paging under every `sort`,
the backup list's filters, `incremental`, a replica's `stored_bytes`, operation logs."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests.api.helpers import Env, assert_error, backup_now, create_vault, register_dir

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
