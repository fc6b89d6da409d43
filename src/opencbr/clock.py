"""The one place that reads the time, so tests can move it (kopia's internal/clock idea).

Imports nothing of opencbr.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def now() -> datetime:
    """The current time as a naive UTC datetime (how the database stores it)."""
    return _now().replace(tzinfo=None)


def set_clock(source: Callable[[], datetime]) -> None:
    """Replace the time source (tests only)."""
    global _now
    _now = source


def reset_clock() -> None:
    set_clock(lambda: datetime.now(UTC))
