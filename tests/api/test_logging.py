"""What the log says when a request fails unexpectedly: one short report, never a secret.

The failures are real: tables the requests need are renamed under the running app, so
token checks, token issuing and signed requests fail inside the database layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from opencbr.db.session import Database
from tests.api.helpers import PASSWORD, Env, Key, create_key, sign

MAX_LOG_PER_FAILURE = 20 * 1024


@contextmanager
def tables_missing(db: Database, *names: str) -> Iterator[None]:
    """Rename `names` away for the block (and back: the test database outlives it)."""
    with db.engine.begin() as connection:
        for name in names:
            connection.execute(text(f"ALTER TABLE {name} RENAME TO {name}_gone"))
    try:
        yield
    finally:
        with db.engine.begin() as connection:
            for name in names:
                connection.execute(text(f"ALTER TABLE {name}_gone RENAME TO {name}"))


def token_body(env: Env) -> dict[str, object]:
    return {
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


def captured(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    return out + err


def test_a_failed_request_logs_one_short_report_without_secrets(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    token = env.token()
    key: Key = create_key(env)
    client = TestClient(env.client.app, raise_server_exceptions=False)
    vaults = env.url("region1", "/vaults")
    signed = sign(key, "GET", vaults, env.projects["region1"])
    requests = {
        "token issue": lambda: client.post("/identity/v3/auth/tokens", json=token_body(env)),
        "token check": lambda: client.get(vaults, headers={"X-Auth-Token": token}),
        "token validate": lambda: client.get(
            "/identity/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
        ),
        "signed": lambda: client.get(vaults, headers=signed.headers),
    }
    captured(capsys)
    with tables_missing(env.db, "tokens", "vaults"):
        for name, request in requests.items():
            response = request()
            assert response.status_code == 500, (name, response.text)
            log = captured(capsys)
            assert log.count("unexpected error") == 1, (name, log[:2000])
            assert len(log.encode()) < MAX_LOG_PER_FAILURE, (name, len(log))
            for secret in (PASSWORD, token, key.secret, signed.headers["Authorization"]):
                assert secret not in log, (name, secret)
            assert "Traceback" in log, log  # what failed stays visible to the operator
