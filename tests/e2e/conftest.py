"""Real `opencbr` processes: a served instance per test module, with its own data dir."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.flows import Server, Site, create_key, serving


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving(tmp_path) as instance:
        yield instance


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server shared by a module's tests (for slower flows that keep their own names)."""
    with serving(tmp_path_factory.mktemp("served")) as instance:
        yield instance


@pytest.fixture(scope="module")
def site(module_server: Server) -> Iterator[Site]:
    projects = module_server.projects()
    key = create_key(module_server, projects["region1"])
    instance = Site(module_server, projects, key["access"], key["secret"])
    try:
        yield instance
    finally:
        instance.close()


os.environ.setdefault("PYTHONUNBUFFERED", "1")
