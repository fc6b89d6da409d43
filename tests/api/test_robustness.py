"""No input produces a 500: random JSON bodies, query strings and ids on every route, and
valid bodies with one value swapped for a hostile one (huge integers, NUL inside strings,
datetimes at the calendar's ends with zone offsets)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.helpers import (
    FULL_DEFINITION,
    PASSWORD,
    Env,
    assert_error,
    backup_now,
    create_policy,
    create_vault,
    policy_body,
    register_dir,
    vault_body,
)

# Integers around the databases' limits (signed 64- and 32-bit) and far past them.
EDGE_INTEGERS = [2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, -(2**31), 10**30]
INTEGERS = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from(EDGE_INTEGERS)
# Strings, and often strings with NUL inside (PostgreSQL and the file system refuse it).
STRINGS = st.text(max_size=40) | st.builds(
    lambda head, tail: f"{head}\x00{tail}", st.text(max_size=8), st.text(max_size=8)
)
# Datetimes, often at the calendar's ends, with a zone offset that can carry them past it.
OFFSETS = st.sampled_from(["Z", "", "+00:00"]) | st.builds(
    lambda sign, minutes: f"{sign}{minutes // 60:02d}:{minutes % 60:02d}",
    st.sampled_from("+-"),
    st.integers(min_value=0, max_value=23 * 60 + 59),
)
DATETIMES = st.builds(
    lambda moment, offset: moment.isoformat(timespec="seconds") + offset,
    st.datetimes()
    | st.sampled_from([datetime.min, datetime.max])
    | st.integers(min_value=0, max_value=86399).map(
        lambda seconds: datetime.min + timedelta(seconds=seconds)
    )
    | st.integers(min_value=0, max_value=86399).map(
        lambda seconds: datetime.max - timedelta(seconds=seconds)
    ),
    OFFSETS,
)
SCALARS = (
    st.none()
    | st.booleans()
    | INTEGERS
    | st.floats(allow_nan=False, allow_infinity=False)
    | STRINGS
    | DATETIMES
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(STRINGS, inner, max_size=4),
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
            "policy",
            "policy_id",
            "add_policy_ids",
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
    ("POST", "/vaults/{vault}/associatepolicy"),
    ("POST", "/vaults/{vault}/dissociatepolicy"),
    ("POST", "/policies"),
    ("PUT", "/policies/{vault}"),
    ("POST", "/checkpoints"),
    ("POST", "/checkpoints/replicate"),
    ("POST", "/backups/{vault}/replicate"),
    ("POST", "/backups/{vault}/restore"),
    ("PUT", "/backups/{vault}"),
    ("POST", "/protectables/turbo/instances"),
    ("POST", "/protectables/server/instances"),
    ("POST", "/identity/v3/auth/tokens"),
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
    url = path.format(vault=vault["id"])
    url = url if url.startswith("/identity") else env.url("region1", url)
    headers = env.headers()

    @SETTINGS
    @given(body=BODIES)
    def send(body: Any) -> None:
        _check(env.client.request(method, url, json=body, headers=headers))

    send()


def test_random_query_strings_and_ids_never_cause_a_server_error(env: Env) -> None:
    headers = env.headers()
    paths = ["/vaults", "/backups", "/operation-logs", "/protectables/turbo/instances", "/policies"]

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


LISTS = [
    "/vaults",
    "/policies",
    "/backups",
    "/operation-logs",
    "/protectables/turbo/instances",
    "/protectables/disk/instances",
    "/protectables/server/instances",
]
NUMBERS = INTEGERS.map(str)


# Typed values, not random text: text rarely makes a number past 2**63 or a time that its
# offset carries out of the calendar, and both answered 500.
@settings(SETTINGS, max_examples=100)
@given(path=st.sampled_from(LISTS), limit=st.none() | NUMBERS, offset=st.none() | NUMBERS)
def test_random_paging_numbers_never_cause_a_server_error(
    env: Env, path: str, limit: str | None, offset: str | None
) -> None:
    params = {"limit": limit, "offset": offset}
    _check(env.get("region1", path, params={k: v for k, v in params.items() if v is not None}))


@settings(SETTINGS, max_examples=100)
@given(
    path=st.sampled_from(["/backups", "/operation-logs"]),
    start_time=st.none() | DATETIMES,
    end_time=st.none() | DATETIMES,
)
def test_random_times_never_cause_a_server_error(
    env: Env, path: str, start_time: str | None, end_time: str | None
) -> None:
    params = {"start_time": start_time, "end_time": end_time}
    _check(env.get("region1", path, params={k: v for k, v in params.items() if v is not None}))


def _leaf_paths(body: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(body, dict):
        return [p for key, value in body.items() for p in _leaf_paths(value, (*prefix, key))]
    if isinstance(body, list):
        return [p for index, value in enumerate(body) for p in _leaf_paths(value, (*prefix, index))]
    return [prefix]


def _replaced(body: Any, path: tuple[Any, ...], leaf: Any) -> Any:
    if not path:
        return leaf
    if isinstance(body, dict):
        return {**body, path[0]: _replaced(body[path[0]], path[1:], leaf)}
    return [
        _replaced(item, path[1:], leaf) if i == path[0] else item for i, item in enumerate(body)
    ]


def mutations(body: Any) -> Any:
    """`body` with one of its values replaced by a random one: the shape gets the request
    past the wire checks to the code (and database) behind them."""
    return st.sampled_from(_leaf_paths(body)).flatmap(
        lambda path: SCALARS.map(lambda leaf: _replaced(body, path, leaf))
    )


def _valid_bodies(env: Env) -> list[tuple[str, str, Any]]:
    """One valid request for each route taking a body, against real objects."""
    resource = register_dir(env)
    (env.roots["region1"] / "data" / "file").write_text("x")
    turbo = {"id": resource["id"], "type": "OS::Sfs::Turbo", "name": "data"}
    vault = create_vault(env, resources=[turbo])
    backup = backup_now(env, vault["id"])
    empty = create_vault(env, name="empty")
    replicas = create_vault(env, region="region2", name="replicas", protect_type="replication")
    definition = {**FULL_DEFINITION, "destination_region": "region2"}
    definition["destination_project_id"] = env.projects["region2"]
    backup_policy = create_policy(env, definition=FULL_DEFINITION, window=120)
    replication_policy = create_policy(
        env, name="repl", operation_type="replication", definition=definition
    )
    destination = {
        "destination_project_id": env.projects["region2"],
        "destination_region": "region2",
        "destination_vault_id": "nowhere",
    }
    token = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "admin", "domain": {"name": "Default"}, "password": PASSWORD}
                },
            },
            "scope": {"project": {"id": env.projects["region1"]}},
        }
    }
    project = f"/v3/{env.projects['region1']}"
    return [
        ("POST", f"{project}/vaults", vault_body("fresh", description="d", threshold=80)),
        ("POST", f"{project}/vaults", vault_body("bound", backup_policy_id=backup_policy["id"])),
        ("POST", f"{project}/policies", policy_body(definition=FULL_DEFINITION, window=60)),
        ("PUT", f"{project}/policies/{backup_policy['id']}", policy_body(window=480)),
        (
            "POST",
            f"{project}/vaults/{empty['id']}/associatepolicy",
            {"add_policy_ids": [replication_policy["id"]], "destination_vault_id": replicas["id"]},
        ),
        (
            "POST",
            f"{project}/vaults/{empty['id']}/dissociatepolicy",
            {"policy_id": backup_policy["id"]},
        ),
        ("PUT", f"{project}/vaults/{empty['id']}", {"vault": {"name": "e", "threshold": 90}}),
        ("PUT", f"{project}/vaults/{empty['id']}", {"vault": {"billing": {"size": 200}}}),
        ("POST", f"{project}/vaults/{empty['id']}/addresources", {"resources": [turbo]}),
        (
            "POST",
            f"{project}/checkpoints",
            {
                "checkpoint": {
                    "vault_id": empty["id"],
                    "parameters": {"name": "n", "description": "d", "resources": ["x"]},
                }
            },
        ),
        (
            "POST",
            f"{project}/checkpoints/replicate",
            {"replicate": {"vault_id": vault["id"], "auto_trigger": False, **destination}},
        ),
        ("POST", f"{project}/backups/{backup['id']}/replicate", {"replicate": destination}),
        (
            "POST",
            f"{project}/backups/{backup['id']}/restore",
            {"restore": {"details": {"destination_path": "restored"}}},
        ),
        ("PUT", f"{project}/backups/{backup['id']}", {"backup": {"name": "n", "description": "d"}}),
        (
            "POST",
            f"{project}/protectables/turbo/instances",
            {"instance": {"name": "n", "path": str(env.roots["region1"] / "data")}},
        ),
        ("POST", "/identity/v3/auth/tokens", token),
    ]


def test_valid_bodies_with_one_hostile_value_never_cause_a_server_error(env: Env) -> None:
    headers = env.headers()
    failures: dict[str, str] = {}
    for method, url, body in _valid_bodies(env):
        try:
            _send_mutations(env, method, url, body, headers)
        except Exception as error:  # every route is tried; all that fail are named below
            failures[f"{method} {url}"] = f"{type(error).__name__}: {str(error)[:300]}"
    assert not failures, failures


def _send_mutations(env: Env, method: str, url: str, body: Any, headers: dict[str, str]) -> None:
    @SETTINGS
    @given(mutated=mutations(body))
    def send(mutated: Any) -> None:
        _check(env.client.request(method, url, json=mutated, headers=headers))

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
    for path in ("/vaults", "/checkpoints", "/checkpoints/replicate", "/policies"):
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
