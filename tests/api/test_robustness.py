"""No input produces a 500: random JSON bodies, query strings and ids on every route."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import Env
from tests.api.helpers import assert_error, create_vault

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
WRAPPED = st.builds(
    lambda key, value: {key: value},
    st.sampled_from(
        [
            "vault",
            "checkpoint",
            "replicate",
            "restore",
            "backup",
            "instance",
            "resources",
            "resource_ids",
            "auth",
        ]
    ),
    JSON,
)
BODIES = JSON | WRAPPED

ROUTES = [
    ("POST", "/vaults"),
    ("PUT", "/vaults/{vault}"),
    ("POST", "/vaults/{vault}/addresources"),
    ("POST", "/vaults/{vault}/removeresources"),
    ("PUT", "/vaults/{vault}/set-resources"),
    ("POST", "/checkpoints"),
    ("POST", "/checkpoints/replicate"),
    ("POST", "/backups/{vault}/replicate"),
    ("POST", "/backups/{vault}/restore"),
    ("PUT", "/backups/{vault}"),
    ("POST", "/protectables/turbo/instances"),
    ("POST", "/protectables/server/instances"),
]
SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["error_code"], str) and isinstance(body["error_msg"], str)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_random_bodies_never_cause_a_server_error(env: Env, method: str, path: str) -> None:
    vault = create_vault(env)
    url = env.url("region1", path.format(vault=vault["id"]))
    headers = env.headers()

    @SETTINGS
    @given(body=BODIES)
    def send(body: Any) -> None:
        _check(env.client.request(method, url, json=body, headers=headers))

    send()


def test_random_query_strings_and_ids_never_cause_a_server_error(env: Env) -> None:
    headers = env.headers()
    paths = ["/vaults", "/backups", "/operation-logs", "/protectables/turbo/instances"]

    @SETTINGS
    @given(
        path=st.sampled_from(paths),
        params=st.dictionaries(
            st.sampled_from(
                [
                    "limit",
                    "offset",
                    "marker",
                    "name",
                    "status",
                    "sort",
                    "start_time",
                    "end_time",
                    "vault_id",
                    "id",
                    "show_replication",
                    "operation_type",
                    "resource_ids",
                    "image_type",
                ]
            ),
            st.text(max_size=30),
            max_size=4,
        ),
        ident=st.text(min_size=1, max_size=80).map(lambda s: quote(s, safe="")),
    )
    def send(path: str, params: dict[str, str], ident: str) -> None:
        _check(env.client.get(env.url("region1", path), params=params, headers=headers))
        _check(env.client.get(env.url("region1", f"{path}/{ident}"), headers=headers))
        _check(env.client.delete(env.url("region1", f"/vaults/{ident}"), headers=headers))

    send()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"{",
        b"\xff\xfe",
        b"[1,2]",
        b'{"vault": null}',
        b'{"auth": {"identity": "x"}}',
        b"1e999999",
        b'"' + b"a" * 5000 + b'"',
    ],
)
def test_malformed_raw_bodies_are_400(env: Env, raw: bytes) -> None:
    headers = {**env.headers(), "content-type": "application/json"}
    for path in ("/vaults", "/checkpoints", "/checkpoints/replicate"):
        response = env.client.post(env.url("region1", path), content=raw, headers=headers)
        assert response.status_code == 400, (path, raw, response.text)
    response = env.client.post(
        "/identity/v3/auth/tokens", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code in (400, 401), response.text


@pytest.mark.parametrize(
    "path", ["/vaults/%00", "/backups/a%00b", "/backups?name=%00", "/operation-logs?vault_id=x%00"]
)
def test_nul_in_a_path_or_query_is_400_on_every_backend(env: Env, path: str) -> None:
    # PostgreSQL refuses NUL in text parameters; the lookup answered 500 there.
    response = env.client.get(env.url("region1", path), headers=env.headers())
    assert_error(response, 400, "BackupService.9900")
    delete = env.client.delete(env.url("region1", "/vaults/%00"), headers=env.headers())
    assert_error(delete, 400, "BackupService.9900")
