"""AK/SK access keys: the IAM-style API and SDK-signed requests (the operator commands are
tested on a real process in tests/e2e/test_official_clients.py).

Signed requests are built by huaweicloudsdkcore's own ``Signer`` and sent as
``requests`` would put them on the wire, so the server sees what the Huawei SDK sends.
"""

from __future__ import annotations

import re
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opencbr.db.credentials import Credential
from opencbr.services import identity
from tests.api.helpers import (
    CREDENTIALS,
    PASSWORD,
    Env,
    Key,
    Signed,
    assert_error,
    create_key,
    issue,
    sdk_date,
    send,
    sign,
    user_id,
    vault_body,
)

SIGNATURE_FAILED = "Incorrect IAM authentication information: verify aksk signature fail"


def assert_refused(response: Any, reason: str) -> None:
    assert_error(response, 401, "APIGW.0301")
    message = response.json()["error_msg"]
    assert message.startswith(SIGNATURE_FAILED), message
    assert reason in message, message


# --- the IAM-style API ---------------------------------------------------------------------


def test_user_creates_lists_shows_updates_and_deletes_its_own_key(env: Env) -> None:
    admin_id = user_id(env, "admin")
    headers = env.headers()
    created = env.client.post(
        CREDENTIALS,
        json={"credential": {"user_id": admin_id, "description": "ci"}},
        headers=headers,
    )
    assert created.status_code == 201
    credential = created.json()["credential"]
    assert re.fullmatch(r"[A-Z0-9]{20}", credential["access"])
    assert re.fullmatch(r"[A-Za-z0-9]{40}", credential["secret"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", credential["create_time"])
    assert credential["status"] == "active"
    assert (credential["user_id"], credential["description"]) == (admin_id, "ci")
    access = credential["access"]
    url = f"{CREDENTIALS}/{access}"

    listed = env.client.get(CREDENTIALS, params={"user_id": admin_id}, headers=headers).json()
    assert [c["access"] for c in listed["credentials"]] == [access]
    assert "secret" not in listed["credentials"][0]
    shown = env.client.get(url, headers=headers).json()["credential"]
    assert shown == {k: v for k, v in credential.items() if k != "secret"}

    update = {"credential": {"status": "inactive", "description": "paused"}}
    updated = env.client.put(url, json=update, headers=headers).json()["credential"]
    assert (updated["status"], updated["description"]) == ("inactive", "paused")
    assert env.client.delete(url, headers=headers).status_code == 204
    assert_error(env.client.get(url, headers=headers), 404, "IAM.0004")
    assert env.client.get(CREDENTIALS, headers=headers).json() == {"credentials": []}


def test_secret_is_stored_encrypted_under_a_private_key_file(env: Env) -> None:
    key = create_key(env)
    with env.db.transaction() as session:
        row = session.get(Credential, key.access)
        assert row is not None
        assert key.secret not in row.secret_ciphertext
    key_file: Path = env.settings.data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_credential_api_needs_a_token_and_valid_input(env: Env) -> None:
    assert_error(env.client.get(CREDENTIALS), 401, "APIGW.0301")
    bad = env.client.put(
        f"{CREDENTIALS}/NOSUCHKEY",
        json={"credential": {"status": "sleeping"}},
        headers=env.headers(),
    )
    assert_error(bad, 400, "BackupService.9900")
    assert_error(
        env.client.delete(f"{CREDENTIALS}/NOSUCHKEY", headers=env.headers()), 404, "IAM.0004"
    )


def test_member_cannot_see_or_mint_another_users_keys(env: Env) -> None:
    admin_key = create_key(env)
    member = env.headers("region1", "member")
    body = {"credential": {"user_id": user_id(env, "admin")}}
    assert_error(env.client.post(CREDENTIALS, json=body, headers=member), 403, "APIGW.0302")
    hidden = env.client.get(f"{CREDENTIALS}/{admin_key.access}", headers=member)
    assert_error(hidden, 404, "IAM.0004")
    listing = env.client.get(CREDENTIALS, params={"user_id": user_id(env, "admin")}, headers=member)
    assert_error(listing, 403, "APIGW.0302")


def test_admin_manages_keys_of_users_in_projects_it_administers(env: Env) -> None:
    member_id = user_id(env, "member")
    key = create_key(env, member_id)
    own = env.client.get(CREDENTIALS, headers=env.headers("region1", "member")).json()
    assert [c["access"] for c in own["credentials"]] == [key.access]
    deleted = env.client.delete(f"{CREDENTIALS}/{key.access}", headers=env.headers())
    assert deleted.status_code == 204


def test_admin_of_one_project_cannot_mint_keys_for_a_wider_user(env: Env) -> None:
    identity.create_project(env.db, env.settings, "team-a", "region1")
    identity.create_user(env.db, env.settings, "alice", PASSWORD)
    grant = identity.grant_role(env.db, "alice", "team-a", "admin")
    alice = {"X-Auth-Token": issue(env.client, "alice", PASSWORD, grant.project_id)}
    body = {"credential": {"user_id": user_id(env, "admin")}}
    assert_error(env.client.post(CREDENTIALS, json=body, headers=alice), 403, "APIGW.0302")


# --- signed requests -----------------------------------------------------------------------


def test_signed_requests_act_as_the_keys_user_in_the_project(env: Env) -> None:
    key = create_key(env)
    project = env.projects["region1"]
    path = f"/v3/{project}/vaults"
    created = send(env, sign(key, "POST", path, project, body=vault_body("signed")))
    assert created.status_code == 200, created.text
    assert created.json()["vault"]["user_id"] == user_id(env, "admin")
    listed = send(env, sign(key, "GET", path, project, query=[("limit", 10), ("name", "signed")]))
    assert listed.json()["count"] == 1
    # The same key works in every project its user holds a role in.
    other = env.projects["region2"]
    assert send(env, sign(key, "GET", f"/v3/{other}/vaults", other)).status_code == 200


def test_viewer_key_reads_but_cannot_write(env: Env) -> None:
    key = create_key(env, user="viewer")
    project = env.projects["region1"]
    path = f"/v3/{project}/vaults"
    assert send(env, sign(key, "GET", path, project)).status_code == 200
    response = send(env, sign(key, "POST", path, project, body=vault_body()))
    assert_error(response, 403, "APIGW.0302")


def test_project_lookup_signed_without_a_project(env: Env) -> None:
    key = create_key(env)
    signed = sign(key, "GET", "/identity/v3/projects", None, query=[("name", "region2")])
    response = send(env, signed)
    assert response.status_code == 200, response.text
    assert [p["id"] for p in response.json()["projects"]] == [env.projects["region2"]]


def _tamper_path(signed: Signed) -> Signed:
    return replace(signed, url=signed.url.replace("/vaults", "/checkpoints"))


def _tamper_query(signed: Signed) -> Signed:
    return replace(signed, url=signed.url.replace("limit=10", "limit=11"))


def _tamper_body(signed: Signed) -> Signed:
    return replace(signed, body=signed.body.replace(b"tampered", b"tampere2"))


def _tamper_date(signed: Signed) -> Signed:
    later = datetime.strptime(signed.headers["X-Sdk-Date"], "%Y%m%dT%H%M%SZ") + timedelta(seconds=1)
    return replace(signed, headers={**signed.headers, "X-Sdk-Date": sdk_date(later)})


def _change_signed_header(signed: Signed) -> Signed:
    headers = {k: v for k, v in signed.headers.items() if k != "User-Agent"}
    return replace(signed, headers={**headers, "User-Agent": "curl/8"})


TAMPERINGS = {
    "path": _tamper_path,
    "query": _tamper_query,
    "body": _tamper_body,
    "date": _tamper_date,
    "signed header": _change_signed_header,
}


def test_tampered_requests_are_refused(env: Env) -> None:
    key = create_key(env)
    project = env.projects["region1"]
    path = f"/v3/{project}/vaults"
    for what, tamper in TAMPERINGS.items():
        signed = sign(
            key, "POST", path, project, query=[("limit", 10)], body=vault_body("tampered")
        )
        response = send(env, tamper(signed))
        assert response.status_code == 401, f"changed {what}: {response.text}"
        assert_refused(response, "signature does not match")
    untouched = sign(key, "POST", path, project, query=[("limit", 10)], body=vault_body("tampered"))
    assert send(env, untouched).status_code == 200


def test_wrong_secret_unknown_key_and_inactive_key_are_refused(env: Env) -> None:
    key = create_key(env)
    project = env.projects["region1"]
    path = f"/v3/{project}/vaults"
    wrong = Key(key.access, key.secret[:-1] + ("x" if key.secret[-1] != "x" else "y"))
    assert_refused(send(env, sign(wrong, "GET", path, project)), "signature does not match")
    unknown = Key("AAAAAAAAAAAAAAAAAAAA", key.secret)
    assert_refused(send(env, sign(unknown, "GET", path, project)), "unknown access key")
    update = {"credential": {"status": "inactive"}}
    env.client.put(f"{CREDENTIALS}/{key.access}", json=update, headers=env.headers())
    assert_refused(send(env, sign(key, "GET", path, project)), "unknown access key")


def test_stale_or_future_dates_are_refused(env: Env) -> None:
    key = create_key(env)
    project = env.projects["region1"]
    path = f"/v3/{project}/vaults"
    for skew in (timedelta(minutes=-16), timedelta(minutes=16)):
        date = sdk_date(datetime.now(UTC) + skew)
        assert_refused(
            send(env, sign(key, "GET", path, project, date=date)), "away from server time"
        )
    within = sdk_date(datetime.now(UTC) - timedelta(minutes=14))
    assert send(env, sign(key, "GET", path, project, date=within)).status_code == 200


def test_other_projects_are_refused_with_403(env: Env) -> None:
    key = create_key(env)
    region1, region2 = env.projects["region1"], env.projects["region2"]
    # Signed for one project, sent to another project's path.
    mismatched = send(env, sign(key, "GET", f"/v3/{region2}/vaults", region1))
    assert_error(mismatched, 403, "BackupService.8600")
    # A project the key's user holds no role in.
    project = identity.create_project(env.db, env.settings, "team-b", "region1")
    member_key = create_key(env, user="member")
    foreign = send(env, sign(member_key, "GET", f"/v3/{project.id}/vaults", project.id))
    assert_error(foreign, 403, "BackupService.8600")


def test_temporary_keys_and_other_algorithms_are_refused(env: Env) -> None:
    key = create_key(env)
    project = env.projects["region1"]
    path = f"/v3/{project}/vaults"
    temporary = sign(key, "GET", path, project, extra={"X-Security-Token": "session"})
    assert_refused(send(env, temporary), "X-Security-Token")
    signed = sign(key, "GET", path, project)
    other = signed.headers["Authorization"].replace("SDK-HMAC-SHA256", "SDK-HMAC-SM3")
    assert_refused(
        send(env, replace(signed, headers={**signed.headers, "Authorization": other})),
        "unsupported",
    )
