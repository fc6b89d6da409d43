"""`opencbr worker` as a process: it refuses, in one line, a secret key that is not the
database's and a queue that does not answer (never showing the queue's password), and it
stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.e2e.flows import OPENCBR, Worker, free_port, write_config

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
