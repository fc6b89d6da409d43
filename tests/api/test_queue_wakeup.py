"""Idle embedded workers are woken by an enqueue, not by their next poll."""

from __future__ import annotations

import threading
import time

import pytest

from opencbr.jobs import queue
from tests.api.helpers import Env, create_vault, register_dir


@pytest.fixture(autouse=True)
def no_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    # Autouse, so it applies before `env` starts the workers. An idle worker now waits an
    # hour before it polls again: only a wake-up can start a task within the test.
    monkeypatch.setattr(queue, "IDLE_POLL_SECONDS", 3600.0)


def wait_until_idle(env: Env, timeout: float = 60.0) -> None:
    """Return once every worker sleeps on the queue's condition, so that a task reaching
    them afterwards can only come from a wake-up, never from a dequeue they were about to
    make anyway. (Condition keeps its sleepers in `_waiters`.)"""
    ready: threading.Condition = env.client.app.state.jobs.huey.storage._ready
    deadline = time.monotonic() + timeout
    while len(ready._waiters) < env.settings.worker_threads:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the workers never went idle"
        time.sleep(0.01)


def test_a_request_wakes_idle_workers_at_once(env: Env) -> None:
    source = env.roots["region1"] / "small"
    source.mkdir()
    (source / "file.txt").write_bytes(b"hello")
    resource = register_dir(env, name="small")
    vault = create_vault(env, resources=[{"id": resource["id"], "type": "OS::Sfs::Turbo"}])
    wait_until_idle(env)
    response = env.post(
        "region1", "/checkpoints", {"checkpoint": {"vault_id": vault["id"], "parameters": {}}}
    )
    assert response.status_code == 200, response.text
    checkpoint_id = response.json()["checkpoint"]["id"]
    done = env.wait_for(
        "region1",
        f"/checkpoints/{checkpoint_id}",
        lambda body: body["checkpoint"]["status"] != "protecting",
        timeout=60.0,
    )
    assert done["checkpoint"]["status"] == "available"
