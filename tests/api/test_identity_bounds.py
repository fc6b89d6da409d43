"""Keys and tokens stay within the bounds they were issued under (issue 11, §3 and §4).

Signed requests are built as in tests/api/test_credentials.py, with the Huawei SDK's own
``Signer``.
"""

from __future__ import annotations

from typing import Any

from opencbr.services import credentials, identity
from tests.api.conftest import PASSWORD, Env, issue
from tests.api.helpers import assert_error
from tests.api.test_credentials import CREDENTIALS, Key, send, sign

UNKNOWN_KEY = "Incorrect IAM authentication information: verify aksk signature fail: unknown"


def vaults_with(env: Env, key: Key, project_id: str) -> Any:
    return send(env, sign(key, "GET", f"/v3/{project_id}/vaults", project_id))


def assert_refused_like_an_unknown_key(response: Any) -> None:
    assert_error(response, 401, "APIGW.0301")
    assert response.json()["error_msg"].startswith(UNKNOWN_KEY), response.text


def team_admin(env: Env) -> tuple[str, dict[str, str]]:
    """A project "team-a" in region1 and its admin "alice": (project id, alice's headers)."""
    team = identity.create_project(env.db, env.settings, "team-a", "region1")
    identity.create_user(env.db, "alice", PASSWORD)
    identity.grant_role(env.db, "alice", "team-a", "admin")
    return team.id, {"X-Auth-Token": issue(env.client, "alice", PASSWORD, team.id)}


def mint(env: Env, headers: dict[str, str], owner: str) -> Key:
    body = {"credential": {"user_id": owner, "description": "minted for someone"}}
    response = env.client.post(CREDENTIALS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    credential = response.json()["credential"]
    return Key(credential["access"], credential["secret"])


# --- §3: a key minted by a project admin acts only where that admin was admin ---------------


def test_key_minted_for_a_user_without_roles_never_acts_outside_the_minters_projects(
    env: Env,
) -> None:
    team, alice = team_admin(env)
    bob = identity.create_user(env.db, "bob", PASSWORD)
    key = mint(env, alice, bob.id)  # bob holds no role anywhere yet
    elsewhere = env.projects["region1"]
    identity.grant_role(env.db, "bob", elsewhere, "member")  # the operator, later

    assert_refused_like_an_unknown_key(vaults_with(env, key, elsewhere))
    # Where alice was admin, the key acts once bob holds a role there.
    assert_error(vaults_with(env, key, team), 403, "BackupService.8600")
    identity.grant_role(env.db, "bob", team, "member")
    assert vaults_with(env, key, team).status_code == 200
    assert_refused_like_an_unknown_key(vaults_with(env, key, elsewhere))


def test_key_minted_for_a_team_member_does_not_follow_a_later_grant(env: Env) -> None:
    team, alice = team_admin(env)
    bob = identity.create_user(env.db, "bob", PASSWORD)
    identity.grant_role(env.db, "bob", team, "member")
    key = mint(env, alice, bob.id)
    elsewhere = env.projects["region2"]
    identity.grant_role(env.db, "bob", elsewhere, "admin")  # the operator, later

    assert vaults_with(env, key, team).status_code == 200
    assert_refused_like_an_unknown_key(vaults_with(env, key, elsewhere))
    # The project lookup of a bounded key names only the projects it may act in.
    lookup = send(env, sign(key, "GET", "/identity/v3/projects", None))
    assert lookup.status_code == 200, lookup.text
    assert [p["id"] for p in lookup.json()["projects"]] == [team]


def test_keys_minted_by_their_user_or_the_operator_follow_the_users_roles(env: Env) -> None:
    team, _alice = team_admin(env)
    bob = identity.create_user(env.db, "bob", PASSWORD)
    identity.grant_role(env.db, "bob", team, "member")
    own_key = mint(env, {"X-Auth-Token": issue(env.client, "bob", PASSWORD, team)}, bob.id)
    box = credentials.secret_box(env.settings)
    by_operator = credentials.create(env.db, box, None, "bob", "operator")
    operator_key = Key(by_operator.credential.access, by_operator.secret)
    elsewhere = env.projects["region2"]
    identity.grant_role(env.db, "bob", elsewhere, "member")

    for key in (own_key, operator_key):
        assert vaults_with(env, key, team).status_code == 200
        assert vaults_with(env, key, elsewhere).status_code == 200
