"""Make sure the machine's PostgreSQL (and Redis) servers are up for the tests that need them.

With CI=true a service that cannot be reached is a failure, never a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_ADMIN_URL = os.environ.get(
    "OPENCBR_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def xdist_worker_index() -> int:
    """This pytest process's number among pytest-xdist's workers (gw0 -> 0, gw1 -> 1), 0
    without xdist: what a per-worker copy of a shared service resource is numbered by."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw"))


def _redis_url_of_this_worker(base: str) -> str:
    """`base` with its database number moved up by the xdist worker's index: the tests
    empty opencbr's queue keys in their database, and two workers sharing one would take
    (or flush) each other's tasks. (Redis has 16 databases by default: 13, 14, 15.)"""
    parts = urlsplit(base)
    number = int(parts.path.strip("/") or 0) + xdist_worker_index()
    return urlunsplit(parts._replace(path=f"/{number}"))


# A database number of its own (one per xdist worker): the tests flush only opencbr's keys
# in it, never others'.
REDIS_URL = _redis_url_of_this_worker(
    os.environ.get("OPENCBR_TEST_REDIS", "redis://127.0.0.1:6379/13")
)


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _start_postgres() -> None:
    versions = sorted(os.path.basename(p) for p in glob.glob("/etc/postgresql/*"))
    if versions:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
            check=False,
            capture_output=True,
            timeout=60,
        )


def require_postgres() -> bool:
    """True when PostgreSQL answers on 127.0.0.1:5432 (starting it if needed)."""
    if _port_open(5432):
        return True
    _start_postgres()
    for _ in range(40):
        if _port_open(5432):
            return True
        time.sleep(0.25)
    if IN_CI:
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 and could not be started")
    return False


def _start_redis() -> None:
    """Start the machine's Redis on 127.0.0.1:6379 (its own configuration when Debian's
    is there), daemonized; nothing when redis-server is not installed."""
    if shutil.which("redis-server") is None:
        return  # not installed: the ping fails (a failure with CI=true)
    config = ["/etc/redis/redis.conf"] if os.path.exists("/etc/redis/redis.conf") else []
    subprocess.run(
        ["redis-server", *config, "--bind", "127.0.0.1", "--port", "6379", "--daemonize", "yes"],
        check=False,
        capture_output=True,
        timeout=30,
    )


def require_redis() -> bool:
    """True when Redis answers at REDIS_URL (a service of the machine, like PostgreSQL:
    started here when its port is closed)."""
    import redis  # the `redis` extra; part of the test extra

    if not _port_open(6379):
        _start_redis()
        for _ in range(40):
            if _port_open(6379):
                break
            time.sleep(0.25)
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
        return True
    except redis.RedisError:
        if IN_CI:
            pytest.fail(f"Redis is not reachable at {REDIS_URL}")
        return False
    finally:
        client.close()
