"""`opencbr worker` as a process: it refuses, in one line, a secret key that is not the
database's and a queue that does not answer (never showing the queue's password), it
stops on SIGTERM, and with --metrics-listen it serves the event metrics of the work it
ran (the database's state gauges stay with `serve`)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.e2e.flows import (
    OPENCBR,
    Client,
    Server,
    Worker,
    eventually,
    free_port,
    value,
    write_config,
)

pytestmark = pytest.mark.slow  # real processes


def run_worker(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OPENCBR, "worker", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A SQLite installation whose database has recorded its key (a key was minted)."""
    path = write_config(tmp_path, free_port())
    for args in (
        ["bootstrap", "--user", "admin", "--password-stdin"],
        ["credential", "create", "--user", "admin"],
    ):
        subprocess.run(
            [*OPENCBR, "admin", *args, "--config", str(path)],
            input="a-password\n",
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
    return path


def test_another_or_a_missing_key_file_is_refused_in_one_line(config: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    other.write_bytes(Fernet.generate_key() + b"\n")
    done = run_worker(config, OPENCBR_SECRET_KEY_FILE=str(other))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"error: the secret key file {other} is not the key this database's access-key "
        "secrets were sealed with: give every process of this database the same secret_key_file"
    )
    missing = tmp_path / "nowhere.key"
    done = run_worker(config, OPENCBR_SECRET_KEY_FILE=str(missing))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith(f"error: no secret key file at {missing}")
    assert not missing.exists()  # no new key was made up


def test_a_queue_that_does_not_answer_is_refused_without_its_password(config: Path) -> None:
    done = run_worker(config, OPENCBR_QUEUE_URL="redis://:s3cret-pw@127.0.0.1:1/13")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith(
        "error: cannot use the queue redis://:***@127.0.0.1:1/13: "
    )
    assert "s3cret-pw" not in done.stderr + done.stdout


def test_the_worker_stops_on_sigterm(config: Path, tmp_path: Path) -> None:
    worker = Worker(config, tmp_path / "worker.log", ("--threads", "1"))
    worker.launch()
    worker.wait_ready()
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=30) == 0
    log = worker.log()
    assert "opencbr worker: 1 threads, queue sqlite:///" in log
    assert "worker stopping" in log


def test_a_worker_serves_the_event_metrics_of_the_work_it_ran(tmp_path: Path) -> None:
    port, api_metrics, worker_metrics = free_port(), free_port(), free_port()
    config = write_config(tmp_path, port, f'metrics_listen = "127.0.0.1:{api_metrics}"')
    api = Server(config, tmp_path / "data", port, args=("--no-worker",))
    worker = Worker(
        config, tmp_path / "worker.log", ("--metrics-listen", f"127.0.0.1:{worker_metrics}")
    )
    api.start()
    client: Client | None = None
    try:
        worker.launch()
        worker.wait_ready()
        assert f"metrics:   http://127.0.0.1:{worker_metrics}/metrics" in worker.log()
        client = Client(api, api.projects()["region1"])
        source = api.root("region1") / "data"
        source.mkdir()
        (source / "a.bin").write_bytes(os.urandom(3 * 1024 * 1024))
        vault = client.vault("v", resources=[client.register_dir("data", str(source))])
        backup = client.finished_backup(client.start_backup(vault, "by-the-worker"))
        assert backup["status"] == "available", backup

        # The worker ran it: its counters say so, with the bytes the backup stored.
        url = f"http://127.0.0.1:{worker_metrics}/metrics"
        ran = {"task": "backup", "outcome": "success"}
        samples = eventually(url, lambda s: value(s, "opencbr_tasks_total", **ran) == 1)
        assert value(samples, "opencbr_task_duration_seconds_count", **ran) == 1
        stored = value(samples, "opencbr_backup_stored_bytes_total", region="region1")
        assert stored == backup["stored_bytes"] > 0
        # State gauges come from one endpoint only (serve's), or every process repeats them.
        assert "opencbr_vault_used_bytes" not in samples
        used = {"vault_id": vault}
        served = eventually(
            f"http://127.0.0.1:{api_metrics}/metrics",
            lambda s: value(s, "opencbr_vault_used_bytes", **used) == backup["stored_bytes"],
        )
        assert value(served, "opencbr_tasks_total", **ran) is None  # --no-worker ran nothing
    finally:
        if client is not None:
            client.http.close()
        worker.stop()
        api.stop()
