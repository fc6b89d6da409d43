"""Policies over HTTP: create, list, show, update, delete; binding them to vaults
(associatepolicy, dissociatepolicy, backup_policy_id on vault create, GET /vaults?policy_id=);
every error code of the policy API; and the schedule's next slot (`next_run_at`) as the
scheduler will read it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opencbr.db.policies import Policy
from opencbr.services import identity
from tests.api.helpers import (
    DAILY_AT_SIX,
    FULL_DEFINITION,
    PASSWORD,
    Env,
    assert_error,
    associate,
    create_policy,
    create_vault,
    issue,
    policy_body,
    register_dir,
    replication_definition,
    vault_body,
)


def next_run_at(env: Env, policy_id: str) -> datetime | None:
    """The slot the scheduler claims next, as stored."""
    with env.db.reading() as session:
        policy = session.get(Policy, policy_id)
        assert policy is not None
        return policy.next_run_at


def daily_at(moment: datetime) -> str:
    return f"FREQ=DAILY;INTERVAL=1;BYHOUR={moment.hour};BYMINUTE={moment.minute:02d}"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def stranger(env: Env, region: str = "region1") -> tuple[str, dict[str, str]]:
    """Another tenant's project in `region`: (its id, its admin's headers)."""
    project = identity.create_project(env.db, env.settings, "elsewhere", region)
    identity.create_user(env.db, env.settings, "stranger", PASSWORD)
    identity.grant_role(env.db, "stranger", "elsewhere", "admin")
    return project.id, {"X-Auth-Token": issue(env.client, "stranger", PASSWORD, project.id)}


# --- create, show, list, update, delete ------------------------------------------------


def test_a_policy_is_created_shown_listed_updated_and_deleted(env: Env) -> None:
    before = utcnow().replace(second=0, microsecond=0)
    body = policy_body(
        "nightly",
        patterns=[DAILY_AT_SIX, "FREQ=WEEKLY;BYDAY=SA,SU;BYHOUR=14;BYMINUTE=30"],
        definition=FULL_DEFINITION,
        enabled=False,
    )
    response = env.post("region1", "/policies", body)
    assert response.status_code == 200, response.text
    policy = response.json()["policy"]
    start_time = datetime.strptime(
        policy["trigger"]["properties"]["start_time"], "%Y-%m-%d %H:%M:%S"
    )
    assert before <= start_time <= utcnow()
    assert start_time.second == 0
    assert policy == {
        "id": policy["id"],
        "name": "nightly",
        "enabled": False,
        "operation_type": "backup",
        "operation_definition": {
            **FULL_DEFINITION,
            "destination_region": None,
            "destination_project_id": None,
        },
        "trigger": {
            "id": policy["trigger"]["id"],
            "name": "default",
            "type": "time",
            "properties": {
                "pattern": [DAILY_AT_SIX, "FREQ=WEEKLY;BYDAY=SA,SU;BYHOUR=14;BYMINUTE=30"],
                "start_time": policy["trigger"]["properties"]["start_time"],
                "start_window_minutes": None,
            },
        },
        "associated_vaults": [],
        "policy_type": "custom_policy",
    }
    assert policy["trigger"]["id"] != policy["id"]
    assert env.get("region1", f"/policies/{policy['id']}").json() == {"policy": policy}

    other = create_policy(env, name="other")
    listed = env.get("region1", "/policies").json()
    assert listed == {"policies": [other, policy], "count": 2}  # newest first

    renamed = env.put("region1", f"/policies/{policy['id']}", {"policy": {"name": "renamed"}})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["policy"] == {**policy, "name": "renamed"}

    deleted = env.delete("region1", f"/policies/{policy['id']}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert_error(env.get("region1", f"/policies/{policy['id']}"), 404, "BackupService.6000")
    assert_error(env.delete("region1", f"/policies/{policy['id']}"), 404, "BackupService.6000")
    assert env.get("region1", "/policies").json() == {"policies": [other], "count": 1}


def test_unset_retention_counts_answer_as_cbr_does_and_nothing_else_is_invented(env: Env) -> None:
    policy = create_policy(env, definition={})
    assert policy["operation_definition"] == {
        "max_backups": -1,
        "retention_duration_days": -1,
        "day_backups": 0,
        "week_backups": 0,
        "month_backups": 0,
        "year_backups": 0,
        "timezone": None,
        "full_backup_interval": None,
        "destination_region": None,
        "destination_project_id": None,
        "enable_acceleration": None,
        "advanced_retention_rules": None,
    }
    replication = create_policy(
        env,
        name="to-region2",
        operation_type="replication",
        definition=replication_definition(env, enable_acceleration=True),
    )
    definition = replication["operation_definition"]
    assert (definition["destination_region"], definition["destination_project_id"]) == (
        "region2",
        env.projects["region2"],
    )
    assert definition["enable_acceleration"] is True


def test_next_run_at_follows_creation_enabling_and_new_patterns(env: Env) -> None:
    now = utcnow()
    soon, later = now + timedelta(hours=2), now + timedelta(hours=3)
    minute = timedelta(minutes=1)

    def slot(moment: datetime) -> datetime:
        return moment.replace(second=0, microsecond=0)

    policy = create_policy(env, patterns=[daily_at(soon)])
    assert next_run_at(env, policy["id"]) == slot(soon)
    disabled = create_policy(env, name="off", patterns=[daily_at(soon)], enabled=False)
    assert next_run_at(env, disabled["id"]) is None

    path = f"/policies/{policy['id']}"
    assert env.put("region1", path, {"policy": {"enabled": False}}).status_code == 200
    assert next_run_at(env, policy["id"]) is None
    assert env.put("region1", path, {"policy": {"enabled": True}}).status_code == 200
    assert next_run_at(env, policy["id"]) == slot(soon)
    trigger = {"properties": {"pattern": [daily_at(later)]}}
    assert env.put("region1", path, {"policy": {"trigger": trigger}}).status_code == 200
    assert next_run_at(env, policy["id"]) == slot(later)
    # Other changes leave the next slot alone (a due slot must not be skipped by a rename).
    with env.db.transaction() as session:
        stored = session.get(Policy, policy["id"])
        assert stored is not None
        stored.next_run_at = slot(now) - minute
    assert env.put("region1", path, {"policy": {"name": "renamed"}}).status_code == 200
    assert env.put("region1", path, {"policy": {"enabled": True}}).status_code == 200
    assert next_run_at(env, policy["id"]) == slot(now) - minute
    trigger = {"properties": {"pattern": [daily_at(later)], "start_window_minutes": 120}}
    assert env.put("region1", path, {"policy": {"trigger": trigger}}).status_code == 200
    assert next_run_at(env, policy["id"]) == slot(now) - minute  # same patterns: same slots


def test_updates_merge_into_the_stored_policy(env: Env) -> None:
    policy = create_policy(
        env,
        definition={"max_backups": 5, "day_backups": 3, "timezone": "UTC-05:30"},
        window=90,
    )
    path = f"/policies/{policy['id']}"

    def put(body: dict[str, Any]) -> dict[str, Any]:
        response = env.put("region1", path, {"policy": body})
        assert response.status_code == 200, response.text
        updated: dict[str, Any] = response.json()["policy"]
        return updated

    merged = put({"operation_definition": {"max_backups": 9}})["operation_definition"]
    assert (merged["max_backups"], merged["day_backups"], merged["timezone"]) == (9, 3, "UTC-05:30")
    # null removes a field; then timezone may go too, as no calendar count needs it
    cleared = put({"operation_definition": {"day_backups": None}})["operation_definition"]
    assert cleared["day_backups"] == 0 and cleared["timezone"] == "UTC-05:30"
    response = env.put("region1", path, {"policy": {"operation_definition": {"day_backups": 1}}})
    assert response.status_code == 200
    refused = env.put("region1", path, {"policy": {"operation_definition": {"timezone": None}}})
    assert_error(refused, 400, "BackupService.9900")
    assert "timezone" in refused.json()["error_msg"]

    same_type = put(
        {
            "operation_type": "backup",
            "trigger": {"properties": {"pattern": ["FREQ=DAILY;BYHOUR=1;BYMINUTE=0"]}},
        }
    )
    assert same_type["trigger"]["properties"] == {
        "pattern": ["FREQ=DAILY;BYHOUR=1;BYMINUTE=0"],
        "start_time": policy["trigger"]["properties"]["start_time"],  # the anchor never moves
        "start_window_minutes": 90,  # absent: kept
    }
    window = {"pattern": [DAILY_AT_SIX], "start_window_minutes": None}
    assert (
        put({"trigger": {"properties": window}})["trigger"]["properties"]["start_window_minutes"]
        is None
    )
    assert_error(
        env.put("region1", path, {"policy": {"operation_type": "replication"}}),
        400,
        "BackupService.9900",
    )
    assert env.get("region1", path).json()["policy"]["operation_type"] == "backup"
    assert_error(
        env.put("region1", "/policies/no-such-policy", {"policy": {"name": "x"}}),
        404,
        "BackupService.6000",
    )


# --- validation -------------------------------------------------------------------------


def _definition(**fields: Any) -> dict[str, Any]:
    return policy_body(definition=fields)


INVALID_CREATES: list[tuple[str, dict[str, Any], str]] = [
    ("empty name", policy_body(""), "BackupService.9900"),
    ("long name", policy_body("n" * 65), "BackupService.9900"),
    ("name with a space", policy_body("a b"), "BackupService.9900"),
    ("name with markup", policy_body("<b>"), "BackupService.9900"),
    ("NUL in the name", policy_body("a\x00b"), "BackupService.9900"),
    (
        "NUL in a pattern",
        policy_body(patterns=["FREQ=DAILY;BYHOUR=1\x00;BYMINUTE=0"]),
        "BackupService.9900",
    ),
    ("NUL in the timezone", _definition(timezone="UTC\x00"), "BackupService.9900"),
    ("name not a string", {"policy": {**policy_body()["policy"], "name": 5}}, "BackupService.9900"),
    ("unknown type", policy_body(operation_type="archive"), "BackupService.6117"),
    ("type not a string", policy_body(operation_type=1), "BackupService.9900"),  # type: ignore[arg-type]
    (
        "no type",
        {"policy": {"name": "x", "trigger": {"properties": {"pattern": [DAILY_AT_SIX]}}}},
        "BackupService.9900",
    ),
    ("no trigger", {"policy": {"name": "x", "operation_type": "backup"}}, "BackupService.9900"),
    ("no pattern list", policy_body(trigger={"properties": {}}), "BackupService.9900"),
    (
        "pattern not a list",
        {
            "policy": {
                **policy_body()["policy"],
                "trigger": {"properties": {"pattern": DAILY_AT_SIX}},
            }
        },
        "BackupService.9900",
    ),
    ("enabled as text", policy_body(enabled="true"), "BackupService.9900"),
    (
        "window too short",
        policy_body(
            **{"trigger": {"properties": {"pattern": [DAILY_AT_SIX], "start_window_minutes": 59}}}
        ),
        "BackupService.9900",
    ),
    (
        "window too long",
        policy_body(
            **{"trigger": {"properties": {"pattern": [DAILY_AT_SIX], "start_window_minutes": 481}}}
        ),
        "BackupService.9900",
    ),
    ("max_backups too many", _definition(max_backups=100000), "BackupService.9900"),
    ("max_backups below -1", _definition(max_backups=-2), "BackupService.9900"),
    ("max_backups as text", _definition(max_backups="5"), "BackupService.9900"),
    ("max_backups huge", _definition(max_backups=2**64), "BackupService.9900"),
    ("days too many", _definition(retention_duration_days=100000), "BackupService.9900"),
    (
        "day_backups too many",
        _definition(day_backups=101, timezone="UTC+00:00"),
        "BackupService.9900",
    ),
    (
        "week_backups negative",
        _definition(week_backups=-1, timezone="UTC+00:00"),
        "BackupService.9900",
    ),
    ("full interval", _definition(full_backup_interval=101), "BackupService.9900"),
    ("full interval low", _definition(full_backup_interval=-2), "BackupService.9900"),
    ("float count", _definition(max_backups=1.5), "BackupService.9900"),
    ("no timezone", _definition(month_backups=1), "BackupService.9900"),
    ("bad timezone", _definition(year_backups=1, timezone="GMT+8"), "BackupService.9900"),
    ("timezone out of range", _definition(timezone="UTC+15:00"), "BackupService.9900"),
    ("cross account", _definition(cross_account_urn="urn:x"), "BackupService.9900"),
    (
        "destination on a backup policy",
        _definition(destination_region="region2"),
        "BackupService.9900",
    ),
    (
        "rules: day 0",
        _definition(advanced_retention_rules={"monthly_retention_rules": {"days_of_month": [0]}}),
        "BackupService.9900",
    ),
    (
        "rules: day 29",
        _definition(advanced_retention_rules={"yearly_retention_rules": {"days_of_month": [29]}}),
        "BackupService.9900",
    ),
    (
        "rules: weeks 0",
        _definition(
            advanced_retention_rules={"weekly_retention_rules": {"retention_duration_periods": 0}}
        ),
        "BackupService.9900",
    ),
    (
        "rules: weeks 5201",
        _definition(
            advanced_retention_rules={
                "weekly_retention_rules": {"retention_duration_periods": 5201}
            }
        ),
        "BackupService.9900",
    ),
    (
        "rules: months",
        _definition(
            advanced_retention_rules={
                "monthly_retention_rules": {"retention_duration_periods": 1201}
            }
        ),
        "BackupService.9900",
    ),
    (
        "rules: years",
        _definition(
            advanced_retention_rules={"yearly_retention_rules": {"retention_duration_periods": 101}}
        ),
        "BackupService.9900",
    ),
    (
        "rules: weekday",
        _definition(advanced_retention_rules={"weekly_retention_rules": {"days_of_week": ["XX"]}}),
        "BackupService.9900",
    ),
    ("rules: not an object", _definition(advanced_retention_rules=[1]), "BackupService.9900"),
]


@pytest.mark.parametrize(
    ("case", "body", "code"), INVALID_CREATES, ids=[c[0] for c in INVALID_CREATES]
)
def test_invalid_policies_are_refused_with_their_code(
    env: Env, case: str, body: dict[str, Any], code: str
) -> None:
    assert_error(env.post("region1", "/policies", body), 400, code)
    assert env.get("region1", "/policies").json() == {"policies": [], "count": 0}


PATTERN_RULES = [
    (["FREQ=HOURLY;BYHOUR=1;BYMINUTE=0"], "FREQ"),
    (["FREQ=MONTHLY;BYMONTHDAY=1"], "FREQ"),
    (["FREQ=DAILY;BYHOUR=1;BYMINUTE=0;BYSECOND=5"], "BYSECOND"),
    (["FREQ=DAILY;BYHOUR=25;BYMINUTE=0"], "BYHOUR"),
    (["FREQ=DAILY;BYHOUR=1,1;BYMINUTE=0"], "BYHOUR"),
    (["FREQ=DAILY;BYHOUR=1;BYMINUTE=0,30"], "hour"),
    (["FREQ=DAILY;BYHOUR=1;BYMINUTE=0", "FREQ=DAILY;BYHOUR=1;BYMINUTE=45"], "hour"),
    (
        [f"FREQ=DAILY;BYHOUR={h};BYMINUTE=0" for h in range(24)]
        + ["FREQ=WEEKLY;BYDAY=MO;BYHOUR=0;BYMINUTE=0"],
        "24",
    ),
    ([], "pattern"),
    ([""], "pattern"),
]


@pytest.mark.parametrize(("patterns", "named"), PATTERN_RULES)
def test_patterns_outside_cbrs_subset_are_refused_naming_the_rule(
    env: Env, patterns: list[str], named: str
) -> None:
    response = env.post("region1", "/policies", policy_body(patterns=patterns))
    assert_error(response, 400, "BackupService.9900")
    assert named in response.json()["error_msg"]
    trigger = {"properties": {"pattern": patterns}}
    policy = create_policy(env)
    response = env.put("region1", f"/policies/{policy['id']}", {"policy": {"trigger": trigger}})
    assert_error(response, 400, "BackupService.9900")
    assert env.get("region1", f"/policies/{policy['id']}").json()["policy"] == policy


def test_a_replication_policy_needs_a_destination_this_region_replicates_to(env: Env) -> None:
    for missing in ("destination_region", "destination_project_id"):
        definition = replication_definition(env)
        del definition[missing]
        response = env.post(
            "region1", "/policies", policy_body(operation_type="replication", definition=definition)
        )
        assert_error(response, 400, "BackupService.9900")
        assert missing in response.json()["error_msg"]
    for region in ("region1", "region9"):
        definition = replication_definition(env, destination_region=region)
        response = env.post(
            "region1", "/policies", policy_body(operation_type="replication", definition=definition)
        )
        assert_error(response, 400, "BackupService.1005")
    definition = replication_definition(env, destination_region="bad region")
    response = env.post(
        "region1", "/policies", policy_body(operation_type="replication", definition=definition)
    )
    assert_error(response, 400, "BackupService.9900")
    assert env.get("region1", "/policies").json()["count"] == 0


def test_a_project_has_at_most_32_policies_of_each_type(env: Env) -> None:
    made = [create_policy(env, name=f"p{n}") for n in range(32)]
    assert_error(env.post("region1", "/policies", policy_body("p32")), 400, "BackupService.6001")
    replication = create_policy(
        env, name="r", operation_type="replication", definition=replication_definition(env)
    )
    assert replication["operation_type"] == "replication"
    assert create_policy(env, region="region2", name="elsewhere")["name"] == "elsewhere"
    assert env.delete("region1", f"/policies/{made[0]['id']}").status_code == 204
    assert create_policy(env, name="p32")["name"] == "p32"
    assert_error(env.post("region1", "/policies", policy_body("p33")), 400, "BackupService.6001")


def test_concurrent_creations_never_pass_the_quota(env: Env) -> None:
    for n in range(28):
        create_policy(env, name=f"p{n}")
    headers = env.headers()
    answers: list[int] = []

    def create(n: int) -> None:
        response = env.client.post(
            env.url("region1", "/policies"), json=policy_body(f"c{n}"), headers=headers
        )
        answers.append(response.status_code)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200] * 4 + [400] * 4
    assert env.get("region1", "/policies").json()["count"] == 32


# --- listing ----------------------------------------------------------------------------


def test_lists_filter_by_type_and_vault_and_page_with_marker(env: Env) -> None:
    backups = [create_policy(env, name=f"b{n}") for n in range(3)]
    replication = create_policy(
        env, name="r", operation_type="replication", definition=replication_definition(env)
    )
    vault = create_vault(env)
    assert associate(env, vault["id"], backups[1]["id"]).status_code == 200

    def ids(**query: Any) -> list[str]:
        response = env.get("region1", "/policies", params=query)
        assert response.status_code == 200, response.text
        return [policy["id"] for policy in response.json()["policies"]]

    newest_first = [replication["id"]] + [p["id"] for p in reversed(backups)]
    assert ids() == newest_first
    assert ids(operation_type="replication") == [replication["id"]]
    assert ids(operation_type="backup") == newest_first[1:]
    assert ids(vault_id=vault["id"]) == [backups[1]["id"]]
    assert ids(vault_id="no-such-vault") == []
    paged, marker = [], None
    while True:
        page = ids(limit=1, **({"marker": marker} if marker else {}))
        if not page:
            break
        paged += page
        marker = page[-1]
    assert paged == newest_first
    assert ids(limit=2, offset=1) == newest_first[1:3]
    counted = env.get("region1", "/policies", params={"limit": 1}).json()
    assert counted["count"] == 4 and len(counted["policies"]) == 1
    assert_error(
        env.get("region1", "/policies", params={"operation_type": "x"}), 400, "BackupService.6117"
    )
    for bad in ({"marker": "no-such-policy"}, {"limit": 0}, {"limit": 1001}, {"offset": -1}):
        assert_error(env.get("region1", "/policies", params=bad), 400, "BackupService.9900")


def test_other_projects_policies_and_vaults_look_unknown(env: Env) -> None:
    mine = create_policy(env)
    my_vault = create_vault(env)
    project, headers = stranger(env)
    theirs = env.client.post(f"/v3/{project}/policies", json=policy_body("theirs"), headers=headers)
    assert theirs.status_code == 200, theirs.text
    their_policy = theirs.json()["policy"]
    their_vault = env.client.post(
        f"/v3/{project}/vaults", json=vault_body("theirs"), headers=headers
    ).json()["vault"]

    for path in (f"/policies/{their_policy['id']}",):
        assert_error(env.get("region1", path), 404, "BackupService.6000")
        assert_error(env.put("region1", path, {"policy": {"name": "x"}}), 404, "BackupService.6000")
        assert_error(env.delete("region1", path), 404, "BackupService.6000")
    assert_error(associate(env, my_vault["id"], their_policy["id"]), 404, "BackupService.6000")
    assert_error(associate(env, their_vault["id"], mine["id"]), 404, "BackupService.6105")
    dissociate = env.post(
        "region1", f"/vaults/{their_vault['id']}/dissociatepolicy", {"policy_id": mine["id"]}
    )
    assert_error(dissociate, 404, "BackupService.6105")
    assert (
        env.get("region1", "/policies", params={"vault_id": their_vault["id"]}).json()["count"] == 0
    )
    assert (
        env.get("region1", "/vaults", params={"policy_id": their_policy["id"]}).json()["count"] == 0
    )
    listed = env.client.get(f"/v3/{project}/policies", headers=headers).json()
    assert [p["id"] for p in listed["policies"]] == [their_policy["id"]]
    # another project's path with my token: refused before anything is looked up
    assert_error(
        env.client.get(f"/v3/{project}/policies", headers=env.headers()), 403, "BackupService.8600"
    )


def test_viewers_read_policies_but_change_nothing(env: Env) -> None:
    policy = create_policy(env)
    vault = create_vault(env)
    viewer = env.headers(user="viewer")
    url = env.url("region1", "/policies")
    assert env.client.get(url, headers=viewer).json()["count"] == 1
    assert env.client.get(f"{url}/{policy['id']}", headers=viewer).status_code == 200
    for method, path, body in (
        ("POST", "/policies", policy_body("v")),
        ("PUT", f"/policies/{policy['id']}", {"policy": {"name": "v"}}),
        ("DELETE", f"/policies/{policy['id']}", None),
        ("POST", f"/vaults/{vault['id']}/associatepolicy", {"policy_id": policy["id"]}),
        ("POST", f"/vaults/{vault['id']}/dissociatepolicy", {"policy_id": policy["id"]}),
    ):
        response = env.client.request(method, env.url("region1", path), json=body, headers=viewer)
        assert_error(response, 403, "APIGW.0302")
    assert env.get("region1", f"/policies/{policy['id']}").json()["policy"] == policy


# --- binding ----------------------------------------------------------------------------


def test_a_backup_policy_binds_to_a_backup_vault_once(env: Env) -> None:
    policy = create_policy(env)
    vault = create_vault(env)
    response = associate(env, vault["id"], policy["id"])
    assert response.status_code == 200, response.text
    assert response.json() == {
        "associate_policy": {
            "vault_id": vault["id"],
            "policy_id": policy["id"],
            "destination_vault_id": None,
        }
    }
    shown = env.get("region1", f"/policies/{policy['id']}").json()["policy"]
    assert shown["associated_vaults"] == [{"vault_id": vault["id"], "destination_vault_id": None}]
    assert (
        env.get("region1", f"/vaults/{vault['id']}").json()["vault"]["backup_policy_id"]
        == policy["id"]
    )
    by_policy = env.get("region1", "/vaults", params={"policy_id": policy["id"]}).json()
    assert [v["id"] for v in by_policy["vaults"]] == [vault["id"]]
    assert by_policy["vaults"][0]["backup_policy_id"] == policy["id"]
    assert env.get("region1", "/vaults", params={"policy_id": "x"}).json()["count"] == 0

    # binding the same policy again changes nothing; a second backup policy is refused
    assert associate(env, vault["id"], policy["id"]).json() == response.json()
    second = create_policy(env, name="second")
    assert_error(associate(env, vault["id"], second["id"]), 400, "BackupService.6127")
    assert_error(
        associate(env, vault["id"], policy["id"], destination_vault_id=vault["id"]),
        400,
        "BackupService.9900",
    )
    replicas = create_vault(env, name="replicas", protect_type="replication")
    assert_error(associate(env, replicas["id"], second["id"]), 400, "BackupService.6127")
    assert_error(associate(env, vault["id"], "no-such-policy"), 404, "BackupService.6000")
    assert_error(associate(env, "no-such-vault", policy["id"]), 404, "BackupService.6105")
    assert (
        env.get("region1", f"/policies/{second['id']}").json()["policy"]["associated_vaults"] == []
    )


def test_a_replication_policy_binds_with_a_destination_checked_like_a_replicate_call(
    env: Env,
) -> None:
    policy = create_policy(
        env, name="repl", operation_type="replication", definition=replication_definition(env)
    )
    source = create_vault(env)
    replicas = create_vault(env, region="region2", name="replicas", protect_type="replication")

    assert_error(associate(env, source["id"], policy["id"]), 400, "BackupService.9900")
    for destination, code in (
        ("no-such-vault", "BackupService.6120"),
        (create_vault(env, region="region2", name="a-backup-vault")["id"], "BackupService.6119"),
        (
            create_vault(
                env, region="region2", name="disks", object_type="disk", protect_type="replication"
            )["id"],
            "BackupService.6119",
        ),
    ):
        assert_error(associate(env, source["id"], policy["id"], destination), 400, code)
    local_replicas = create_vault(env, name="local", protect_type="replication")
    assert_error(
        associate(env, local_replicas["id"], policy["id"], replicas["id"]),
        400,
        "BackupService.6128",
    )
    assert (
        env.get("region1", f"/policies/{policy['id']}").json()["policy"]["associated_vaults"] == []
    )

    response = associate(env, source["id"], policy["id"], replicas["id"])
    assert response.status_code == 200, response.text
    assert response.json()["associate_policy"] == {
        "vault_id": source["id"],
        "policy_id": policy["id"],
        "destination_vault_id": replicas["id"],
    }
    shown = env.get("region1", f"/policies/{policy['id']}").json()["policy"]
    assert shown["associated_vaults"] == [
        {"vault_id": source["id"], "destination_vault_id": replicas["id"]}
    ]
    # a replication policy is not a backup policy: the vault's backup_policy_id stays null
    assert env.get("region1", f"/vaults/{source['id']}").json()["vault"]["backup_policy_id"] is None
    other_replicas = create_vault(env, region="region2", name="other", protect_type="replication")
    assert_error(
        associate(env, source["id"], policy["id"], other_replicas["id"]), 400, "BackupService.6127"
    )
    assert associate(env, source["id"], policy["id"], replicas["id"]).status_code == 200

    # bound: the destination cannot move; other fields can
    path = f"/policies/{policy['id']}"
    for change in ({"destination_region": "region3"}, {"destination_project_id": "0" * 32}):
        response = env.put("region1", path, {"policy": {"operation_definition": change}})
        assert_error(response, 400, "BackupService.6003")
    response = env.put(
        "region1",
        path,
        {"policy": {"operation_definition": {"max_backups": 2, "destination_region": "region2"}}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["policy"]["operation_definition"]["max_backups"] == 2
    # unbound, it may move (to a region this one replicates to)
    assert (
        env.post(
            "region1", f"/vaults/{source['id']}/dissociatepolicy", {"policy_id": policy["id"]}
        ).status_code
        == 200
    )
    response = env.put(
        "region1", path, {"policy": {"operation_definition": {"destination_region": "region3"}}}
    )
    assert_error(response, 400, "BackupService.1005")
    project = {"destination_project_id": "0" * 32}
    assert (
        env.put("region1", path, {"policy": {"operation_definition": project}}).status_code == 200
    )


def test_a_destination_project_where_the_caller_cannot_write_is_refused(env: Env) -> None:
    project, headers = stranger(env, "region2")
    their_replicas = env.client.post(
        f"/v3/{project}/vaults", json=vault_body("r", protect_type="replication"), headers=headers
    ).json()["vault"]
    policy = create_policy(
        env,
        operation_type="replication",
        definition=replication_definition(env, destination_project_id=project),
    )
    source = create_vault(env)
    assert_error(
        associate(env, source["id"], policy["id"], their_replicas["id"]), 400, "BackupService.1011"
    )


def test_add_policy_ids_binds_several_policies_at_once_or_none(env: Env) -> None:
    backup = create_policy(env)
    replication = create_policy(
        env, name="repl", operation_type="replication", definition=replication_definition(env)
    )
    source = create_vault(env)
    replicas = create_vault(env, region="region2", name="replicas", protect_type="replication")
    url = f"/vaults/{source['id']}/associatepolicy"
    for body in (
        {},
        {"policy_id": backup["id"], "add_policy_ids": [backup["id"]]},
        {"add_policy_ids": []},
        {"add_policy_ids": [backup["id"], backup["id"]]},
        {"add_policy_ids": "x"},
        {"policy_id": 7},
        # the replication policy fails (no destination): the backup policy is not bound either
        {"add_policy_ids": [backup["id"], replication["id"]]},
    ):
        assert_error(env.post("region1", url, body), 400, "BackupService.9900")
    assert env.get("region1", "/policies", params={"vault_id": source["id"]}).json()["count"] == 0

    body = {
        "add_policy_ids": [backup["id"], replication["id"]],
        "destination_vault_id": replicas["id"],
    }
    response = env.post("region1", url, body)
    assert response.status_code == 200, response.text
    assert response.json()["associate_policy"]["policy_id"] == backup["id"]
    bound = env.get("region1", "/policies", params={"vault_id": source["id"]}).json()
    assert {p["id"] for p in bound["policies"]} == {backup["id"], replication["id"]}


def test_dissociation_unbinds_and_an_unbound_pair_is_6002(env: Env) -> None:
    policy = create_policy(env)
    vault = create_vault(env)
    url = f"/vaults/{vault['id']}/dissociatepolicy"
    assert_error(env.post("region1", url, {"policy_id": policy["id"]}), 404, "BackupService.6002")
    assert associate(env, vault["id"], policy["id"]).status_code == 200
    response = env.post("region1", url, {"policy_id": policy["id"]})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "dissociate_policy": {
            "vault_id": vault["id"],
            "policy_id": policy["id"],
            "destination_vault_id": None,
        }
    }
    assert (
        env.get("region1", f"/policies/{policy['id']}").json()["policy"]["associated_vaults"] == []
    )
    assert env.get("region1", f"/vaults/{vault['id']}").json()["vault"]["backup_policy_id"] is None
    assert_error(env.post("region1", url, {"policy_id": policy["id"]}), 404, "BackupService.6002")
    assert_error(env.post("region1", url, {"policy_id": "nope"}), 404, "BackupService.6000")
    assert_error(env.post("region1", url, {}), 400, "BackupService.9900")
    # another backup policy may bind now
    assert associate(env, vault["id"], create_policy(env, name="next")["id"]).status_code == 200


def test_concurrent_bindings_leave_one_backup_policy_per_vault(env: Env) -> None:
    made = [create_policy(env, name=f"p{n}") for n in range(6)]
    vault = create_vault(env)
    headers = env.headers()
    answers: list[int] = []

    def bind(policy_id: str) -> None:
        response = env.client.post(
            env.url("region1", f"/vaults/{vault['id']}/associatepolicy"),
            json={"policy_id": policy_id},
            headers=headers,
        )
        answers.append(response.status_code)

    threads = [threading.Thread(target=bind, args=(p["id"],)) for p in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200] + [400] * 5
    assert env.get("region1", "/policies", params={"vault_id": vault["id"]}).json()["count"] == 1


def test_backup_policy_id_on_vault_create_binds_in_the_same_transaction(env: Env) -> None:
    policy = create_policy(env)
    replication = create_policy(
        env, name="repl", operation_type="replication", definition=replication_definition(env)
    )
    vault = create_vault(env, backup_policy_id=policy["id"])
    assert vault["backup_policy_id"] == policy["id"]
    listed = env.get("region1", "/policies", params={"vault_id": vault["id"]}).json()
    assert [p["id"] for p in listed["policies"]] == [policy["id"]]
    assert create_vault(env, name="plain")["backup_policy_id"] is None

    for body, status, code in (
        (vault_body("v2", backup_policy_id="no-such-policy"), 404, "BackupService.6000"),
        (vault_body("v3", backup_policy_id=replication["id"]), 400, "BackupService.6127"),
        (
            vault_body("v4", protect_type="replication", backup_policy_id=policy["id"]),
            400,
            "BackupService.6127",
        ),
        (vault_body("v5", backup_policy_id=5), 400, "BackupService.9900"),
    ):
        assert_error(env.post("region1", "/vaults", body), status, code)
    assert sorted(v["name"] for v in env.get("region1", "/vaults").json()["vaults"]) == [
        "plain",
        "vault-1",
    ]


def test_deleting_a_bound_policy_or_vault_unbinds_it(env: Env) -> None:
    policy = create_policy(env)
    replication = create_policy(
        env, name="repl", operation_type="replication", definition=replication_definition(env)
    )
    kept, dropped = create_vault(env, name="kept"), create_vault(env, name="dropped")
    replicas = create_vault(env, region="region2", name="replicas", protect_type="replication")
    for vault in (kept, dropped):
        assert associate(env, vault["id"], policy["id"]).status_code == 200
    assert associate(env, kept["id"], replication["id"], replicas["id"]).status_code == 200

    assert env.delete("region1", f"/vaults/{dropped['id']}").status_code == 204
    shown = env.get("region1", f"/policies/{policy['id']}").json()["policy"]
    assert shown["associated_vaults"] == [{"vault_id": kept["id"], "destination_vault_id": None}]
    # the destination vault goes: the binding replicating into it goes too
    assert env.delete("region2", f"/vaults/{replicas['id']}").status_code == 204
    shown = env.get("region1", f"/policies/{replication['id']}").json()["policy"]
    assert shown["associated_vaults"] == []

    assert env.delete("region1", f"/policies/{policy['id']}").status_code == 204
    assert env.get("region1", f"/vaults/{kept['id']}").json()["vault"]["backup_policy_id"] is None
    assert env.get("region1", "/vaults", params={"policy_id": policy["id"]}).json()["count"] == 0
    assert associate(env, kept["id"], create_policy(env, name="new")["id"]).status_code == 200


# --- suspending resources ---------------------------------------------------------------


def test_set_resources_suspends_and_unsuspends_automatic_protection(env: Env) -> None:
    tree, other = register_dir(env), register_dir(env, name="other")
    resources = [{"id": r["id"], "type": "OS::Sfs::Turbo"} for r in (tree, other)]
    vault = create_vault(env, resources=resources)
    url = f"/vaults/{vault['id']}/set-resources"

    def protected() -> dict[str, bool]:
        shown = env.get("region1", f"/vaults/{vault['id']}").json()["vault"]
        return {r["id"]: r["auto_protect"] for r in shown["resources"]}

    assert protected() == {tree["id"]: True, other["id"]: True}
    response = env.put("region1", url, {"resource_ids": [tree["id"]], "action": "suspend"})
    assert response.json() == {"set_resource_ids": [tree["id"]]}
    assert protected() == {tree["id"]: False, other["id"]: True}
    response = env.put("region1", url, {"resource_ids": [tree["id"]], "action": "unsuspend"})
    assert response.json() == {"set_resource_ids": [tree["id"]]}
    assert protected() == {tree["id"]: True, other["id"]: True}
    for body in ({"resource_ids": [tree["id"]]}, {"resource_ids": [], "action": "suspend"}):
        assert_error(env.put("region1", url, body), 400, "BackupService.9900")
    assert protected() == {tree["id"]: True, other["id"]: True}
