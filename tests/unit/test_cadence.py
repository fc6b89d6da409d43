"""A housekeeping cadence brought forward to the moment its step needs it (the scheduler's
next policy slot): never later than its interval, never in the past, whatever the wall
clock says."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from opencbr import clock
from opencbr.jobs.queue import Cadence, Jobs

NOW = datetime(2026, 11, 30, 5, 59, 58)
INTERVAL = 60.0


def step(jobs: Jobs) -> None:
    """Never run: these tests only move the cadence's due time."""


@pytest.fixture(autouse=True)
def frozen_clock() -> Iterator[None]:
    clock.set_clock(lambda: NOW)
    yield
    clock.reset_clock()


def fresh_cadence() -> tuple[Cadence, float]:
    """A cadence whose step just ran (due an interval from now), and that moment."""
    start = time.monotonic()
    return Cadence(step, INTERVAL, start + INTERVAL), start


def test_a_moment_before_the_interval_ends_brings_the_cadence_forward_to_it() -> None:
    cadence, start = fresh_cadence()
    cadence.due_by(NOW + timedelta(seconds=2))
    assert start + 2 <= cadence.due <= time.monotonic() + 2


def test_a_moment_after_the_interval_ends_leaves_the_interval() -> None:
    cadence, start = fresh_cadence()
    cadence.due_by(NOW + timedelta(hours=1))
    assert cadence.due == start + INTERVAL


def test_a_moment_already_past_makes_the_cadence_due_now_not_in_the_past() -> None:
    cadence, start = fresh_cadence()
    cadence.due_by(NOW - timedelta(hours=1))
    assert start <= cadence.due <= time.monotonic()
    assert cadence.take() is step
