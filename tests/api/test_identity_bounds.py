"""Keys and tokens stay within the bounds they were issued under (issue 11, §3 and §4).

Signed requests are built as in tests/api/test_credentials.py, with the Huawei SDK's own
``Signer``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from opencbr import clock
from opencbr.db.identity import Project, User
from opencbr.services import credentials, identity
from tests.api.helpers import (
    CREDENTIALS,
    PASSWORD,
    Env,
    Key,
    assert_error,
    create_key,
    issue,
    send,
    sign,
    user_id,
)
from tests.api.helpers import password_body as keystone_password_body

UNKNOWN_KEY = "Incorrect IAM authentication information: verify aksk signature fail: unknown"


def vaults_with(env: Env, key: Key, project_id: str) -> Any:
    return send(env, sign(key, "GET", f"/v3/{project_id}/vaults", project_id))


def assert_refused_like_an_unknown_key(response: Any) -> None:
    assert_error(response, 401, "APIGW.0301")
    assert response.json()["error_msg"].startswith(UNKNOWN_KEY), response.text


def team_admin(env: Env) -> tuple[str, dict[str, str]]:
    """A project "team-a" in region1 and its admin "alice": (project id, alice's headers)."""
    team = identity.create_project(env.db, env.settings, "team-a", "region1")
    identity.create_user(env.db, env.settings, "alice", PASSWORD)
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
    bob = identity.create_user(env.db, env.settings, "bob", PASSWORD)
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
    bob = identity.create_user(env.db, env.settings, "bob", PASSWORD)
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
    bob = identity.create_user(env.db, env.settings, "bob", PASSWORD)
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


# --- §4: tokens expire with the token they were rescoped from and die with it ----------------

TOKENS = "/identity/v3/auth/tokens"


def rescope(env: Env, token: str, project_id: str) -> Any:
    body = {
        "auth": {
            "identity": {"methods": ["token"], "token": {"id": token}},
            "scope": {"project": {"id": project_id}},
        }
    }
    return env.client.post(TOKENS, json=body)


def password_body(user: str, project_id: str) -> dict[str, object]:
    return keystone_password_body(user, PASSWORD, {"project": {"id": project_id}})


def vaults_by_token(env: Env, region: str, token: str) -> Any:
    return env.client.get(env.url(region, "/vaults"), headers={"X-Auth-Token": token})


def at(moment: datetime) -> None:
    clock.set_clock(lambda: moment)


def test_rescoped_tokens_keep_their_parents_expiry(env: Env) -> None:
    start = datetime.now(UTC)
    region1, region2 = env.projects["region1"], env.projects["region2"]
    try:
        at(start)
        parent = env.client.post(TOKENS, json=password_body("admin", region1))
        parent_expiry = parent.json()["token"]["expires_at"]
        token = parent.headers["X-Subject-Token"]
        for hours in range(1, 5):  # a chain of rescopes, an hour apart
            at(start + timedelta(hours=hours))
            child = rescope(env, token, region2 if hours % 2 else region1)
            assert child.status_code == 201, child.text
            assert child.json()["token"]["expires_at"] == parent_expiry
            token = child.headers["X-Subject-Token"]
        at(start + timedelta(seconds=env.settings.token_ttl_seconds + 1))
        response = env.client.get(env.url("region1", "/vaults"), headers={"X-Auth-Token": token})
        assert_error(response, 401, "APIGW.0301")
        assert "token expires" in response.json()["error_msg"]
        assert rescope(env, token, region1).status_code == 401
    finally:
        clock.reset_clock()


def test_revoking_a_token_revokes_every_token_rescoped_from_it(env: Env) -> None:
    region1, region2 = env.projects["region1"], env.projects["region2"]
    parent = issue(env.client, "admin", PASSWORD, region1)
    child = rescope(env, parent, region2).headers["X-Subject-Token"]
    grandchild = rescope(env, child, region1).headers["X-Subject-Token"]
    sibling = issue(env.client, "admin", PASSWORD, region1)  # not rescoped from parent
    assert vaults_by_token(env, "region1", grandchild).status_code == 200

    headers = {"X-Auth-Token": sibling, "X-Subject-Token": parent}
    assert env.client.delete(TOKENS, headers=headers).status_code == 204
    for token, region in ((parent, "region1"), (child, "region2"), (grandchild, "region1")):
        response = env.client.get(env.url(region, "/vaults"), headers={"X-Auth-Token": token})
        assert_error(response, 401, "APIGW.0301")
    kept = env.client.get(env.url("region1", "/vaults"), headers={"X-Auth-Token": sibling})
    assert kept.status_code == 200


def test_revoking_a_rescoped_token_leaves_its_parent(env: Env) -> None:
    parent = issue(env.client, "admin", PASSWORD, env.projects["region1"])
    child = rescope(env, parent, env.projects["region2"]).headers["X-Subject-Token"]
    headers = {"X-Auth-Token": parent, "X-Subject-Token": child}
    assert env.client.delete(TOKENS, headers=headers).status_code == 204
    assert vaults_by_token(env, "region1", parent).status_code == 200
    assert_error(
        env.client.get(env.url("region2", "/vaults"), headers={"X-Auth-Token": child}),
        401,
        "APIGW.0301",
    )


# --- §4: a disabled user or project loses its tokens and keys -------------------------------


def set_enabled(env: Env, model: type[User] | type[Project], row_id: str, enabled: bool) -> None:
    with env.db.transaction() as session:
        row = session.get(model, row_id)
        assert row is not None
        row.enabled = enabled


def test_a_disabled_user_is_refused_by_token_and_by_key(env: Env) -> None:
    project = env.projects["region1"]
    token = env.token("region1", "member")
    key = create_key(env, user="member")
    member = user_id(env, "member")
    set_enabled(env, User, member, False)

    vaults = env.client.get(env.url("region1", "/vaults"), headers={"X-Auth-Token": token})
    assert_error(vaults, 401, "APIGW.0301")
    assert rescope(env, token, project).status_code == 401
    check = env.client.head(TOKENS, headers={"X-Auth-Token": env.token(), "X-Subject-Token": token})
    assert check.status_code == 404
    assert_refused_like_an_unknown_key(vaults_with(env, key, project))

    set_enabled(env, User, member, True)
    assert vaults_by_token(env, "region1", token).status_code == 200
    assert vaults_with(env, key, project).status_code == 200


def test_a_disabled_project_is_refused_by_token_and_by_key(env: Env) -> None:
    project = env.projects["region1"]
    token = env.token("region1")
    key = create_key(env)
    set_enabled(env, Project, project, False)

    vaults = env.client.get(env.url("region1", "/vaults"), headers={"X-Auth-Token": token})
    assert_error(vaults, 401, "APIGW.0301")
    assert rescope(env, env.token("region2"), project).status_code == 401
    assert_refused_like_an_unknown_key(vaults_with(env, key, project))
    # The user's other projects are not affected.
    assert vaults_with(env, key, env.projects["region2"]).status_code == 200


# --- §4: only a token's own user, or an admin of its project, may validate or revoke it ------


def test_others_tokens_can_be_neither_validated_nor_revoked(env: Env) -> None:
    admin = env.token("region1")
    member = env.token("region1", "member")
    viewer = env.token("region1", "viewer")
    for method in ("GET", "HEAD", "DELETE"):
        response = env.client.request(
            method, TOKENS, headers={"X-Auth-Token": member, "X-Subject-Token": viewer}
        )
        assert response.status_code == 403, (method, response.text)
        if method != "HEAD":
            assert response.json()["error_code"] == "APIGW.0302"
        # A subject that is not a valid token stays 404, as Keystone answers.
        unknown = env.client.request(
            method, TOKENS, headers={"X-Auth-Token": member, "X-Subject-Token": "nonsense"}
        )
        assert unknown.status_code == 404, method
    # Nor by an admin of another project: admin's region2 token, subject in region1.
    other_project = {"X-Auth-Token": env.token("region2"), "X-Subject-Token": viewer}
    assert env.client.get(TOKENS, headers=other_project).status_code == 403
    still = env.client.get(env.url("region1", "/vaults"), headers={"X-Auth-Token": viewer})
    assert still.status_code == 200
    by_admin = {"X-Auth-Token": admin, "X-Subject-Token": member}
    assert env.client.get(TOKENS, headers=by_admin).status_code == 200


def test_own_tokens_and_an_admins_projects_tokens_can_be_validated_and_revoked(
    env: Env,
) -> None:
    member = env.token("region1", "member")
    other_member = issue(env.client, "member", PASSWORD, env.projects["region2"])
    own = {"X-Auth-Token": member, "X-Subject-Token": other_member}
    shown = env.client.get(TOKENS, headers=own)
    assert shown.status_code == 200, shown.text
    assert shown.json()["token"]["user"]["name"] == "member"
    assert env.client.head(TOKENS, headers=own).status_code == 200
    assert env.client.delete(TOKENS, headers=own).status_code == 204

    by_admin = {"X-Auth-Token": env.token("region1"), "X-Subject-Token": member}
    assert env.client.get(TOKENS, headers=by_admin).status_code == 200
    assert env.client.delete(TOKENS, headers=by_admin).status_code == 204
    gone = env.client.get(env.url("region1", "/vaults"), headers={"X-Auth-Token": member})
    assert_error(gone, 401, "APIGW.0301")
