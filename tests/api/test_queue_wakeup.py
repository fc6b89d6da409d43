"""Idle embedded workers are woken by an enqueue, not by their next poll."""

from __future__ import annotations

import time

import pytest

from opencbr.jobs import queue
from tests.api.helpers import Env, create_vault, register_dir


@pytest.fixture(autouse=True)
def slow_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    # Autouse, so it applies before `env` starts the workers. Polling alone would now
    # take 30 s to find a task: only a wake-up can start it sooner.
    monkeypatch.setattr(queue, "IDLE_POLL_SECONDS", 30.0)


def test_a_request_wakes_idle_workers_at_once(env: Env) -> None:
    source = env.roots["region1"] / "small"
    source.mkdir()
    (source / "file.txt").write_bytes(b"hello")
    resource = register_dir(env, name="small")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    time.sleep(1.0)  # every worker is idle now, waiting in dequeue
    started = time.monotonic()
    response = env.post(
        "region1", "/checkpoints", {"checkpoint": {"vault_id": vault["id"], "parameters": {}}}
    )
    assert response.status_code == 200, response.text
    checkpoint_id = response.json()["checkpoint"]["id"]
    done = env.wait_for(
        "region1",
        f"/checkpoints/{checkpoint_id}",
        lambda body: body["checkpoint"]["status"] != "protecting",
    )
    assert done["checkpoint"]["status"] == "available"
    # The reconciler would enqueue the checkpoint again only after the 5 s lease grace.
    assert time.monotonic() - started < 3.0
