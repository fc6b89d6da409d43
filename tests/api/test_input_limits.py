"""Bad input is a 4xx with the documented code: integers past the database's range, dates
that leave the calendar in UTC, NUL inside a JSON body, chunked bodies over the limit,
markers of another project, and the one answer for a destination project one cannot use."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from opencbr.api.middleware import BodyLimitMiddleware
from opencbr.services import identity
from tests.api.helpers import (
    PASSWORD,
    Env,
    assert_error,
    backup_now,
    create_vault,
    issue,
    register_dir,
)

MiB = 1 << 20
LISTS = [
    "/vaults",
    "/backups",
    "/operation-logs",
    "/protectables/turbo/instances",
    "/protectables/disk/instances",
    "/protectables/server/instances",
]


OUT_OF_RANGE = [
    {"offset": str(2**63)},
    {"offset": str(2**63 - 1)},
    {"offset": str(2**31)},
    {"offset": "-1"},
    {"offset": "9" * 5000},
    {"limit": "-1"},
    {"limit": "0"},
    {"limit": str(2**64)},
    {"limit": "9" * 5000},
]


def test_paging_integers_out_of_range_are_400_on_every_list(env: Env) -> None:
    for path in LISTS:
        for params in OUT_OF_RANGE:
            response = env.get("region1", path, params=params)
            assert_error(response, 400, "BackupService.9900")


def test_the_largest_offset_allowed_answers_an_empty_page(env: Env) -> None:
    create_vault(env)
    for path in LISTS:
        response = env.get("region1", path, params={"offset": str(2**31 - 1), "limit": "1000"})
        assert response.status_code == 200, response.text
        items = next(value for value in response.json().values() if isinstance(value, list))
        assert items == []


def test_times_whose_offset_leaves_the_calendar_are_400(env: Env) -> None:
    for path in ("/backups", "/operation-logs"):
        for name in ("start_time", "end_time"):
            for value in (
                "0001-01-01T00:00:00+01:00",
                "0001-01-01T00:59:59+01:00",
                "9999-12-31T23:59:59-01:00",
                "9999-12-31T23:59:59.999999-00:00:01",
            ):
                response = env.get("region1", path, params={name: value})
                assert_error(response, 400, "BackupService.9900")
                assert name in response.json()["error_msg"]


def test_the_calendars_own_ends_are_valid_times(env: Env) -> None:
    for path in ("/backups", "/operation-logs"):
        for params in (
            {"start_time": "0001-01-01T00:00:00Z", "end_time": "9999-12-31T23:59:59Z"},
            {"start_time": "0001-01-01T01:00:00+01:00", "end_time": "9999-12-31T22:59:59-01:00"},
        ):
            response = env.get("region1", path, params=params)
            assert response.status_code == 200, response.text


def test_nul_in_a_restore_destination_path_is_400(env: Env) -> None:
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "file").write_text("x")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    backup = backup_now(env, vault["id"])
    for destination in ("restored\x00", "\x00", "a/\x00/b"):
        body = {"restore": {"details": {"destination_path": destination}}}
        response = env.post("region1", f"/backups/{backup['id']}/restore", body)
        assert_error(response, 400, "BackupService.9900")
    assert not (env.roots["region1"] / "restored").exists()


TOKEN_WITH_NUL = {
    "auth": {
        "identity": {
            "methods": ["password"],
            "password": {
                "user": {"name": "admin", "domain": {"name": "Default"}, "password": "x\x00y"}
            },
        }
    }
}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/identity/v3/auth/tokens", TOKEN_WITH_NUL),
        ("POST", "/v3/auth/tokens", TOKEN_WITH_NUL),
        ("POST", "{project}/vaults", {"vault": {"name": "v\x00"}}),
        ("POST", "{project}/vaults", {"vault\x00": {}}),
        ("POST", "{project}/checkpoints", {"checkpoint": {"vault_id": "a\x00b"}}),
        ("POST", "{project}/backups/x/restore", {"restore": {"resource_id": "\x00"}}),
        ("POST", "{project}/protectables/turbo/instances", {"instance": {"path": "/a\x00"}}),
        ("POST", "{project}/checkpoints/replicate", {"replicate": [[[{"k": ["\x00"]}]]]}),
        ("PUT", "{project}/vaults/x", {"vault": {"description": "\x00"}}),
    ],
)
def test_nul_in_any_json_string_is_400_on_every_route(
    env: Env, method: str, path: str, body: Any
) -> None:
    url = path.format(project=f"/v3/{env.projects['region1']}")
    headers = {**env.headers(), "content-type": "application/json"}
    for encoding in ("utf-8", "utf-16", "utf-32"):
        content = json.dumps(body).encode(encoding)
        response = env.client.request(method, url, content=content, headers=headers)
        assert_error(response, 400, "BackupService.9900")
        assert "NUL" in response.json()["error_msg"]
        if url.startswith("/identity"):  # Keystone's shape too, for keystoneauth
            assert response.json()["error"]["code"] == 400


def test_a_raw_nul_byte_in_a_body_is_400(env: Env) -> None:
    headers = {**env.headers(), "content-type": "application/json"}
    for content in (b'{"vault": "\x00"}', b"\x00", b'{"auth": 1}\x00'):
        response = env.client.post(env.url("region1", "/vaults"), content=content, headers=headers)
        assert_error(response, 400, "BackupService.9900")


def test_an_escaped_backslash_before_u0000_is_not_a_nul(env: Env) -> None:
    # The JSON text `"a\\u0000b"` is the six characters a, \, u, 0, 0, 0, 0, b: no NUL.
    description = "a\\u0000b"
    vault = create_vault(env, description=description)
    assert vault["description"] == description


def _chunks(total: int, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    async def generate() -> AsyncIterator[bytes]:
        sent = 0
        yield b'{"vault": {"description": "'
        while sent < total:
            yield b"a" * size
            sent += size
        yield b'"}}'

    return generate()


async def _post_chunked(env: Env, total: int) -> httpx.Response:
    transport = httpx.ASGITransport(app=env.client.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        request = client.build_request(
            "POST",
            env.url("region1", "/vaults"),
            content=_chunks(total),
            headers={**env.headers(), "content-type": "application/json"},
        )
        assert request.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in request.headers
        return await client.send(request)


def test_a_chunked_body_over_the_limit_is_413_like_a_declared_one(env: Env) -> None:
    limit = env.settings.max_body_bytes
    assert limit == 12 * MiB
    response = asyncio.run(_post_chunked(env, limit + MiB))
    assert_error(response, 413, "APIGW.0201")
    declared = env.client.post(
        env.url("region1", "/vaults"),
        content=b"a" * (limit + 1),
        headers={**env.headers(), "content-type": "application/json"},
    )
    assert_error(declared, 413, "APIGW.0201")
    # under the limit, a chunked body reaches the handler (its validation answers)
    small = asyncio.run(_post_chunked(env, MiB))
    assert_error(small, 400, "BackupService.9900")
    assert "vault" in small.json()["error_msg"]


def test_the_body_limit_answers_413_even_when_the_handler_reads_the_chunked_body() -> None:
    # The app above buffers the body in the NUL check; here the handler's own body read
    # (FastAPI's, which turns any error in it into a 400) is the one that passes the limit.
    app = FastAPI()

    @app.post("/echo")
    def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    limited = BodyLimitMiddleware(app, limit=4096)

    async def post(total: int) -> httpx.Response:
        transport = httpx.ASGITransport(app=limited)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {"content-type": "application/json"}
            return await client.post("/echo", content=_chunks(total, size=1024), headers=headers)

    assert_error(asyncio.run(post(8192)), 413, "APIGW.0201")
    small = asyncio.run(post(1024))
    assert small.status_code == 200, small.text


@pytest.fixture
def other_project(env: Env) -> dict[str, str]:
    """An item of each list in region2's project, which the region1 caller cannot see."""
    resource = register_dir(env, "region2")
    (env.roots["region2"] / "data" / "file").write_text("x")
    vault = create_vault(
        env, "region2", resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}]
    )
    backup = backup_now(env, vault["id"], "region2")
    logs = env.get("region2", "/operation-logs").json()["operation_logs"]
    return {
        "/vaults": vault["id"],
        "/backups": backup["id"],
        "/operation-logs": logs[0]["id"],
        "/protectables/turbo/instances": resource["id"],
    }


@pytest.mark.parametrize(
    "path", ["/vaults", "/backups", "/operation-logs", "/protectables/turbo/instances"]
)
def test_a_marker_of_another_project_is_as_unknown_as_a_made_up_one(
    env: Env, other_project: dict[str, str], path: str
) -> None:
    foreign = other_project[path]
    made_up = "f" * len(foreign)
    answers = []
    for marker in (foreign, made_up):
        response = env.get("region1", path, params={"marker": marker})
        assert_error(response, 400, "BackupService.9900")
        answers.append(response.json()["error_msg"].replace(marker, "<marker>"))
    assert answers[0] == answers[1]
    # the owner pages past its own item as before
    response = env.get("region2", path, params={"marker": foreign})
    assert response.status_code == 200, response.text


def _replicate_as(env: Env, token: str, vault_id: str, project_id: str) -> httpx.Response:
    body = {
        "replicate": {
            "destination_project_id": project_id,
            "destination_region": "region2",
            "destination_vault_id": "some-vault",
            "vault_id": vault_id,
        }
    }
    response: httpx.Response = env.client.post(
        env.url("region1", "/checkpoints/replicate"), json=body, headers={"X-Auth-Token": token}
    )
    return response


def test_a_destination_project_one_cannot_use_has_one_answer(env: Env) -> None:
    vault = create_vault(env)
    identity.create_user(env.db, env.settings, "prober", PASSWORD)
    identity.grant_role(env.db, "prober", "region1", "member")
    identity.grant_role(env.db, "prober", "region2", "viewer")
    token = issue(env.client, "prober", PASSWORD, env.projects["region1"])
    answers = []
    for project_id in (
        env.projects["region2"],  # exists in region2, where the caller only reads
        env.projects["region1"],  # exists, in another region
        "0" * 32,  # does not exist
    ):
        response = _replicate_as(env, token, vault["id"], project_id)
        assert_error(response, 400, "BackupService.1011")
        answers.append(response.content)
    assert answers[0] == answers[1] == answers[2], answers
