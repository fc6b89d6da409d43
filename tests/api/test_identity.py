"""Identity over HTTP: discovery, tokens, validation, revocation, expiry, roles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opencbr import clock
from opencbr.services import identity
from tests.api.helpers import PASSWORD, Env, issue, password_body


def stored_password_hash(env: Env, name: str) -> str:
    with env.db.reading() as session:
        user = identity.find_user(session, name)
        assert user is not None
        return user.password_hash


def test_passwords_are_hashed_at_production_strength_by_default(env: Env) -> None:
    production = env.settings.model_copy(update={"password_hash_cost": "production"})
    identity.create_user(env.db, production, "strong", PASSWORD)
    identity.grant_role(env.db, "strong", env.projects["region1"], "member")
    assert stored_password_hash(env, "strong").startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    # the suite's own users are argon2id too, only cheaper; both kinds log in
    assert stored_password_hash(env, "admin").startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert issue(env.client, "strong", PASSWORD, env.projects["region1"])
    wrong = password_body("strong", "wrong", {"project": {"id": env.projects["region1"]}})
    assert env.client.post("/identity/v3/auth/tokens", json=wrong).status_code == 401


def test_version_discovery_points_at_v3(env: Env) -> None:
    root = env.client.get("/identity")
    assert root.status_code == 300
    assert root.json()["versions"]["values"][0]["id"] == "v3.14"
    v3 = env.client.get("/identity/v3")
    assert v3.status_code == 200
    assert v3.json()["version"]["links"][0]["href"].endswith("/identity/v3/")


def test_token_scoped_by_project_id_has_cbr_in_its_projects_region_only(env: Env) -> None:
    """A project belongs to one region (as on OTC): its token's catalog has its CBR endpoint
    there only, so a client set up for another region finds none instead of silently
    working on this one; identity answers in every region."""
    body = password_body("admin", PASSWORD, {"project": {"id": env.projects["region1"]}})
    response = env.client.post("/identity/v3/auth/tokens", json=body)
    assert response.status_code == 201
    assert len(response.headers["X-Subject-Token"]) >= 40
    token = response.json()["token"]
    assert token["project"]["id"] == env.projects["region1"]
    assert token["roles"][0]["name"] == "admin"
    assert token["expires_at"].endswith("Z")
    cbr = next(service for service in token["catalog"] if service["type"] == "cbr")
    regions = {endpoint["region_id"]: endpoint["url"] for endpoint in cbr["endpoints"]}
    assert set(regions) == {"region1"}
    assert regions["region1"].endswith(f"/v3/{env.projects['region1']}")
    identity = next(service for service in token["catalog"] if service["type"] == "identity")
    assert {endpoint["region_id"] for endpoint in identity["endpoints"]} == {"region1", "region2"}


def test_token_scoped_by_project_name_and_domain(env: Env) -> None:
    scope = {"project": {"name": "region2", "domain": {"name": "Default"}}}
    response = env.client.post(
        "/identity/v3/auth/tokens", json=password_body("admin", PASSWORD, scope)
    )
    assert response.status_code == 201
    assert response.json()["token"]["project"]["id"] == env.projects["region2"]


@pytest.mark.parametrize(
    ("user", "password", "scope_project"),
    [("admin", "wrong", "region1"), ("nobody", PASSWORD, "region1"), ("admin", PASSWORD, "nope")],
)
def test_bad_credentials_or_scope_get_401(
    env: Env, user: str, password: str, scope_project: str
) -> None:
    scope = {"project": {"name": scope_project, "domain": {"name": "Default"}}}
    response = env.client.post(
        "/identity/v3/auth/tokens", json=password_body(user, password, scope)
    )
    assert response.status_code == 401
    assert response.json()["error_code"] == "APIGW.0301"
    assert response.json()["error"]["code"] == 401


def test_malformed_token_request_is_400(env: Env) -> None:
    response = env.client.post(
        "/identity/v3/auth/tokens",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error_code"] == "BackupService.9900"


def test_validate_and_revoke_token(env: Env) -> None:
    token = env.token("region1")
    other = issue(env.client, "admin", PASSWORD, env.projects["region1"])
    check = env.client.get(
        "/identity/v3/auth/tokens", headers={"X-Auth-Token": other, "X-Subject-Token": token}
    )
    assert check.status_code == 200
    assert check.json()["token"]["user"]["name"] == "admin"
    head = env.client.head(
        "/identity/v3/auth/tokens", headers={"X-Auth-Token": other, "X-Subject-Token": token}
    )
    assert head.status_code == 200
    revoke = env.client.delete(
        "/identity/v3/auth/tokens", headers={"X-Auth-Token": other, "X-Subject-Token": token}
    )
    assert revoke.status_code == 204
    after = env.client.get(env.url("region1", "/vaults"), headers={"X-Auth-Token": token})
    assert after.status_code == 401
    assert after.json()["error_code"] == "APIGW.0301"
    gone = env.client.head(
        "/identity/v3/auth/tokens", headers={"X-Auth-Token": other, "X-Subject-Token": token}
    )
    assert gone.status_code == 404


def test_expired_token_is_refused(env: Env) -> None:
    token = env.token("region1")
    later = datetime.now(UTC) + timedelta(seconds=env.settings.token_ttl_seconds + 5)
    clock.set_clock(lambda: later)
    try:
        response = env.client.get(env.url("region1", "/vaults"), headers={"X-Auth-Token": token})
    finally:
        clock.reset_clock()
    assert response.status_code == 401
    assert "token expires" in response.json()["error_msg"]


def test_missing_and_garbage_tokens_are_401(env: Env) -> None:
    for headers in ({}, {"X-Auth-Token": "garbage"}):
        response = env.client.get(env.url("region1", "/vaults"), headers=headers)
        assert response.status_code == 401
        assert response.json()["error_code"] == "APIGW.0301"
        assert response.headers["X-Request-Id"].startswith("req-")


def test_token_of_one_project_cannot_use_another(env: Env) -> None:
    response = env.client.get(env.url("region2", "/vaults"), headers=env.headers("region1"))
    assert response.status_code == 403
    assert response.json()["error_code"] == "BackupService.8600"


def test_viewer_reads_but_cannot_write(env: Env) -> None:
    headers = env.headers("region1", "viewer")
    assert env.client.get(env.url("region1", "/vaults"), headers=headers).status_code == 200
    body = {
        "vault": {
            "name": "v",
            "billing": {
                "object_type": "server",
                "protect_type": "backup",
                "size": 10,
                "consistent_level": "crash_consistent",
            },
            "resources": [],
        }
    }
    response = env.client.post(env.url("region1", "/vaults"), json=body, headers=headers)
    assert response.status_code == 403
    assert response.json()["error_code"] == "APIGW.0302"
    member = env.client.post(
        env.url("region1", "/vaults"), json=body, headers=env.headers("region1", "member")
    )
    assert member.status_code == 200


def test_project_lookup_by_name(env: Env) -> None:
    response = env.client.get(
        "/identity/v3/projects",
        params={"name": "region2"},
        headers={"X-Auth-Token": env.token("region1")},
    )
    assert response.status_code == 200
    assert [p["id"] for p in response.json()["projects"]] == [env.projects["region2"]]


def test_project_lookup_also_at_the_root_for_the_huawei_sdk(env: Env) -> None:
    response = env.client.get(
        "/v3/projects", params={"name": "region1"}, headers={"X-Auth-Token": env.token("region1")}
    )
    assert response.status_code == 200
    assert [p["name"] for p in response.json()["projects"]] == ["region1"]
    assert env.client.get("/v3/projects").status_code == 401


def test_unknown_route_is_apigw_404(env: Env) -> None:
    response = env.client.get("/v4/nothing")
    assert response.status_code == 404
    assert response.json()["error_code"] == "APIGW.0101"


def test_oversized_body_is_413(env: Env) -> None:
    big = b"{" + b" " * (env.settings.max_body_bytes + 10) + b"}"
    response = env.client.post(
        env.url("region1", "/vaults"),
        content=big,
        headers={**env.headers(), "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error_code"] == "APIGW.0201"
