"""Replication windows and rate limits of a destination region: how they are configured,
checked at load, and when a window is open."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from opencbr.services.throttle import window_open
from opencbr.settings import load_settings, parse_window

DAY = datetime(2026, 11, 27)


def at(hour: int, minute: int = 0) -> datetime:
    return DAY.replace(hour=hour, minute=minute)


def test_windows_and_a_rate_limit_load_from_the_region_table(tmp_path: Path) -> None:
    config = tmp_path / "opencbr.toml"
    config.write_text(
        f'data_dir = "{tmp_path}"\n'
        '[[regions]]\nname = "eu"\nstorage = "/srv/eu"\n'
        '[[regions]]\nname = "us"\nstorage = "/srv/us"\n'
        'replication_rate_limit_mib = 50\nreplication_windows = ["22:00-06:00", "12:00-13:30"]\n'
    )
    settings = load_settings(config)
    us = settings.region("us")
    eu = settings.region("eu")
    assert us is not None and eu is not None
    assert us.replication_rate_limit_mib == 50
    assert us.replication_windows == ["22:00-06:00", "12:00-13:30"]
    assert (eu.replication_rate_limit_mib, eu.replication_windows) == (0, [])  # no limits


@pytest.mark.parametrize(
    ("window", "says"),
    [
        ("22:00", "is not a range HH:MM-HH:MM"),
        ("10-12", "is not a range HH:MM-HH:MM"),
        ("25:00-06:00", "names a time that does not exist"),
        ("22:60-06:00", "names a time that does not exist"),
        ("08:00-08:00", "is empty"),
        ("22:00-6:0", "is not a range HH:MM-HH:MM"),
    ],
)
def test_a_malformed_window_is_refused_at_load_naming_it(
    tmp_path: Path, window: str, says: str
) -> None:
    config = tmp_path / "opencbr.toml"
    config.write_text(
        f'[[regions]]\nname = "eu"\nstorage = "/srv/eu"\nreplication_windows = ["{window}"]\n'
    )
    with pytest.raises(ValidationError) as refused:
        load_settings(config)
    assert f"replication window {window!r} {says}" in str(refused.value)


def test_a_negative_rate_limit_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "opencbr.toml"
    config.write_text(
        '[[regions]]\nname = "eu"\nstorage = "/srv/eu"\nreplication_rate_limit_mib = -1\n'
    )
    with pytest.raises(ValidationError):
        load_settings(config)


def test_a_window_past_midnight_is_open_from_its_start_to_its_end() -> None:
    night = ["22:00-06:00"]
    assert parse_window("22:00-06:00") == (22 * 60, 6 * 60)
    assert [window_open(night, at(h)) for h in (21, 22, 23, 0, 5)] == [
        False,
        True,
        True,
        True,
        True,
    ]
    assert not window_open(night, at(6))  # the end is not in the window
    assert window_open(night, at(5, 59))


def test_several_windows_the_whole_day_and_none() -> None:
    windows = ["01:00-02:00", "12:30-13:00"]
    assert [window_open(windows, at(h, m)) for h, m in ((1, 0), (2, 0), (12, 45), (13, 0))] == [
        True,
        False,
        True,
        False,
    ]
    assert all(window_open(["00:00-24:00"], at(h)) for h in range(24))
    assert all(window_open([], at(h)) for h in range(24))  # no windows: always
