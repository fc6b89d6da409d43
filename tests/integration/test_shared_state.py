"""What several processes of one database share: the secret-key check, the claims of the
cluster-wide housekeeping steps, and queues that wake a worker of another process at once."""

from __future__ import annotations

import pickle
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from opencbr import clock
from opencbr.db.session import Database
from opencbr.jobs import queue
from opencbr.services import credentials, housekeeping, identity
from opencbr.services.runtime import Runtime
from tests.api.helpers import make_settings


def test_a_shared_step_runs_in_one_process_per_interval(database: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    one, two = Runtime(database, settings), Runtime(database, settings)
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    try:
        clock.set_clock(lambda: start)
        assert housekeeping.claim(one, "collect_all_garbage", 600.0)
        assert not housekeeping.claim(two, "collect_all_garbage", 600.0)
        assert not housekeeping.claim(one, "collect_all_garbage", 600.0)
        assert housekeeping.claim(two, "sweep_retention", 600.0)  # each step its own claim
        clock.set_clock(lambda: start + timedelta(seconds=600))  # the next interval
        assert housekeeping.claim(two, "collect_all_garbage", 600.0)
        assert not housekeeping.claim(one, "collect_all_garbage", 600.0)
    finally:
        clock.reset_clock()
        one.close()
        two.close()


def test_the_first_process_records_its_key_and_another_key_is_refused(
    database: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    assert credentials.key_problem(database, settings) is None  # records the check
    assert settings.key_file.exists()
    assert credentials.key_problem(database, settings) is None  # the same key passes
    other = tmp_path / "other.key"
    other.write_bytes(Fernet.generate_key())
    problem = credentials.key_problem(database, make_settings(tmp_path, secret_key_file=other))
    assert problem is not None and problem.startswith(f"the secret key file {other} is not")
    missing = tmp_path / "missing.key"
    problem = credentials.key_problem(database, make_settings(tmp_path, secret_key_file=missing))
    assert problem is not None and problem.startswith(f"no secret key file at {missing}")
    assert not missing.exists()


def test_a_database_from_before_the_check_compares_a_stored_secret(
    database: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    identity.bootstrap(database, settings, "admin", "a-password")
    credentials.create(database, credentials.secret_box(settings), None, "admin", "old key")
    other = tmp_path / "other.key"
    other.write_bytes(Fernet.generate_key())
    other_settings = make_settings(tmp_path, secret_key_file=other)
    assert credentials.key_problem(database, other_settings) is not None
    assert credentials.key_problem(database, settings) is None  # the key that sealed it


def _wake_latency(url: str) -> float:
    """Seconds from an enqueue through one storage (one process) until a worker blocked in
    another storage's dequeue (another process) has the task."""
    consumer, producer = queue.open_huey(url).storage, queue.open_huey(url).storage
    consumer.flush_queue()
    received: list[float] = []
    reader = threading.Thread(target=lambda: received.append(_dequeue(consumer)), daemon=True)
    reader.start()
    time.sleep(0.5)  # the reader is blocked in its read by now
    producer.enqueue(pickle.dumps(time.monotonic()))
    reader.join(20)
    consumer.close()
    producer.close()
    assert received, "the blocked worker never got the task"
    return received[0]


def _dequeue(storage: Any) -> float:
    while (data := storage.dequeue()) is None:
        pass
    return float(time.monotonic() - pickle.loads(data))


@pytest.mark.postgres
def test_postgresql_queue_wakes_a_worker_of_another_process_at_once(
    empty_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A blocked read now lasts a minute: only NOTIFY can hand the task over within it.
    monkeypatch.setattr(queue, "BLOCKING_READ_SECONDS", 60.0)
    assert _wake_latency(queue.libpq_url(empty_postgres_url)) < 5.0


@pytest.mark.redis
def test_redis_queue_wakes_a_worker_of_another_process_at_once(
    redis_queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue, "BLOCKING_READ_SECONDS", 60.0)  # only BRPOP's wake-up counts
    assert _wake_latency(redis_queue_url) < 5.0
