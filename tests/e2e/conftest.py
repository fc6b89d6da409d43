"""Real `opencbr` processes: a served instance per test module, with its own data dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

OPENCBR = [sys.executable, "-m", "opencbr"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One `opencbr serve` process; `restart()` SIGKILLs and starts it again on the same port."""

    config: Path
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.data_dir / "serve.log", "ab") as log:
            self.process = subprocess.Popen(
                [*OPENCBR, "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/identity/v3", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("opencbr serve did not come up:\n" + self.log())

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        path = self.data_dir / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def password(self) -> str:
        return (self.data_dir / "admin-password").read_text().strip()

    def root(self, region: str) -> Path:
        """The protectable root `write_config` gave the project named after `region`."""
        return self.data_dir.parent / "roots" / region

    def admin(self, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            [*OPENCBR, "admin", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        result: dict[str, Any] = json.loads(done.stdout)
        return result


def write_config(tmp: Path, port: int, extra: str = "") -> Path:
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    roots = "".join(
        f'[[protectable_roots]]\nproject = "{region}"\npath = "{tmp / "roots" / region}"\n'
        for region in ("region1", "region2")
    )
    for region in ("region1", "region2"):
        (tmp / "roots" / region).mkdir(parents=True, exist_ok=True)
    config = tmp / "opencbr.toml"
    config.write_text(
        f'data_dir = "{data}"\nlisten = "127.0.0.1:{port}"\n'
        f"reconcile_interval_seconds = 1.0\n{extra}\n{roots}"
    )
    return config


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    config = write_config(tmp_path, port)
    instance = Server(config, tmp_path / "data", port)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server shared by a module's tests (for slower flows that keep their own names)."""
    tmp = tmp_path_factory.mktemp("served")
    port = free_port()
    instance = Server(write_config(tmp, port), tmp / "data", port)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def token_for(
    server: Server, project_id: str, user: str = "admin", password: str | None = None
) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": user,
                        "domain": {"name": "Default"},
                        "password": password or server.password(),
                    }
                },
            },
            "scope": {"project": {"id": project_id}},
        }
    }
    response = httpx.post(f"{server.url}/identity/v3/auth/tokens", json=body, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.headers["X-Subject-Token"])


os.environ.setdefault("PYTHONUNBUFFERED", "1")
