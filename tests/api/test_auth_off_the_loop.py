"""A token check that waits on the database does not hold up other requests: it runs in
the thread pool, not on the event loop every request shares."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from tests.api.helpers import Env


@pytest.mark.parametrize(
    "path",
    ["/v3/{project}/vaults", "/identity/v3/projects"],
    ids=["cbr-route", "keystone-projects"],
)
def test_a_token_check_blocked_in_the_database_does_not_block_other_requests(
    env: Env, path: str
) -> None:
    if env.db.is_sqlite:
        pytest.skip("SQLite readers never wait for a writer (WAL): nothing can stall them")
    headers = env.headers()  # issue the token before its table is locked
    url = path.format(project=env.projects["region1"])
    answers: dict[str, Any] = {}

    def checked_request() -> None:
        answers["checked"] = env.client.get(url, headers=headers)

    def other_request() -> None:
        answers["other"] = env.client.get("/identity/v3")

    blocked = threading.Thread(target=checked_request)
    other = threading.Thread(target=other_request)
    with env.db.engine.connect() as holder:
        # A long write elsewhere holds the tokens table: the token check waits on it.
        holder.execute(text("LOCK TABLE tokens IN ACCESS EXCLUSIVE MODE"))
        try:
            blocked.start()
            blocked.join(timeout=1.0)
            check_waited = blocked.is_alive()
            other.start()
            other.join(timeout=5.0)
            other_answered_meanwhile = not other.is_alive()
        finally:
            holder.rollback()  # releases the lock whatever happened
    blocked.join(timeout=10.0)
    other.join(timeout=10.0)
    assert check_waited, "the token check did not wait on the lock"
    assert other_answered_meanwhile, "another request waited for the token check"
    assert answers["other"].status_code == 200
    assert answers["checked"].status_code == 200, answers["checked"].text
