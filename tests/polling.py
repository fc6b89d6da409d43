"""Polling for a condition, shared by the API and end-to-end helpers."""

from __future__ import annotations

import time
from collections.abc import Iterator


def pauses(timeout: float, first: float = 0.01, longest: float = 0.1) -> Iterator[float]:
    """The pauses after each poll of a condition: from `first`, doubling up to `longest`
    (most work the tests wait for ends within tens of milliseconds), until `timeout`
    seconds have passed; then a last 0, so the caller looks once more and gives up."""
    deadline = time.monotonic() + timeout
    pause = first
    while time.monotonic() < deadline:
        yield pause
        pause = min(pause * 2, longest)
    yield 0.0
