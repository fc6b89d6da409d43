"""Real `opencbr` processes: a served instance per test module, with its own data dir."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.flows import Server, Site, free_port, write_config


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


@pytest.fixture(scope="module")
def site(module_server: Server) -> Iterator[Site]:
    bootstrap = module_server.admin("bootstrap", "--user", "admin", "--password", "unused")
    projects = {p["name"]: p["id"] for p in bootstrap["projects"]}
    key = module_server.admin("credential", "create", "--user", "admin", "--description", "e2e")
    instance = Site(module_server, projects, key["access"], key["secret"])
    try:
        yield instance
    finally:
        instance.close()


os.environ.setdefault("PYTHONUNBUFFERED", "1")
