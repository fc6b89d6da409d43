"""Leases on work rows: the worker running a task holds the row's lease and renews it while
it works; an expired lease means the worker died, so the reconciler runs the work again."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Protocol

from opencbr import clock


class Leased(Protocol):
    lease_until: datetime | None
    attempts: int


def is_held(row: Leased) -> bool:
    return row.lease_until is not None and row.lease_until > clock.now()


def take(row: Leased, seconds: float) -> None:
    row.lease_until = clock.now() + timedelta(seconds=seconds)
    row.attempts += 1


def renewal(seconds: float) -> datetime:
    return clock.now() + timedelta(seconds=seconds)


@contextmanager
def heartbeat(beat: Callable[[], None], interval: float) -> Iterator[None]:
    """Call `beat` every `interval` seconds on a thread while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                beat()
            except Exception:
                continue

    thread = threading.Thread(target=loop, name="lease-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
