"""Fixtures of the API tests: the app over HTTP (Starlette's TestClient) with a bootstrapped
admin in two regions. What tests call lives in helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opencbr.db.session import Database
from opencbr.settings import Settings
from tests.api.helpers import Env, make_settings, serving


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The settings of `env`; a module overrides this fixture to change them."""
    return make_settings(tmp_path)


@pytest.fixture
def env(settings: Settings, database: Database) -> Iterator[Env]:
    with serving(settings, database) as running:
        yield running
