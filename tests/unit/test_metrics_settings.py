"""`metrics_listen`: HOST:PORT like `listen`, on by default, empty turns it off."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from opencbr.settings import Settings


def test_metrics_listen_defaults_to_the_loopback_port_9464(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).metrics_listen == "127.0.0.1:9464"


def test_an_empty_metrics_listen_is_accepted_and_means_off(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, metrics_listen="").metrics_listen == ""


@pytest.mark.parametrize("bad", ["nope", "9464", ":9464", "host:port"])
def test_a_metrics_listen_without_host_and_port_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValidationError, match="metrics_listen must be HOST:PORT"):
        Settings(data_dir=tmp_path, metrics_listen=bad)
