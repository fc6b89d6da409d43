"""When and how fast copies may flow into a region: replication windows and rate limits.

Windows (`replication_windows`, UTC ranges such as "22:00-06:00", validated by
settings.parse_window) are read with `opencbr.clock`, so tests move the time. Outside
them a record waits in `waiting_replicate` and a running copy pauses at its next safe
point (services/replication_runs.py).

The rate limit (`replication_rate_limit_mib`) is one token bucket per destination region
shared by every record and every process of the database: the row
`replication_throttles(region, paid_until)` holds the moment by which every byte taken so
far is paid for at the region's rate (the generic cell rate algorithm, a token bucket
with no burst). A copy takes a slab (a quarter of a second's worth, 256 KiB to 4 MiB)
with one locked read and write of that row and spends it chunk by chunk, each chunk once
its bytes are paid for. Copies into a region therefore never run faster than the limit
over any stretch of time, however many workers share it; a copy that ends leaves at most
one slab unspent (the next taker waits for it: at most a quarter second of the rate).
The bucket runs on the wall clock (`time.time()`), which every machine of a deployment is
assumed to keep in step (NTP): a rate is a real-time quantity, and the injected clock may
stand still in tests.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

from opencbr import clock
from opencbr.db.service_state import ReplicationThrottle, insert_if_absent
from opencbr.db.session import Database
from opencbr.settings import Settings, parse_window

MiB = 1024 * 1024
SLAB_SECONDS = 0.25  # a slab is this much of the rate: one row update per quarter second
# What an idle bucket saves up: the moments a copy spends on its own work between two takes
# (reading, verifying, writing a slab; longer on a busy CPU) are made up, so the copy runs
# at its limit, not below it by its work time; a longer pause is not paid back with a burst.
CATCH_UP_SECONDS = 0.1
MIN_SLAB = 256 * 1024
MAX_SLAB = 4 * MiB


def window_open(windows: list[str], now: datetime) -> bool:
    """Is `now` (naive UTC) inside one of the windows? No windows: always."""
    if not windows:
        return True
    minute = now.hour * 60 + now.minute
    for window in windows:
        start, end = parse_window(window)
        inside = start <= minute < end if start < end else minute >= start or minute < end
        if inside:
            return True
    return False


def copies_may_run(settings: Settings, region: str) -> bool:
    """May copies into `region` run now (its replication windows)?"""
    config = settings.region(region)
    return config is None or window_open(config.replication_windows, clock.now())


class Throttle:
    """What one copy pass takes from a region's shared bucket. Used by the thread that
    submits the copies; `take` blocks until the bytes are paid for, or the service stops.

    A slab reserved at the bucket is paid for byte by byte from the moment the bytes
    before it are (`paid_from`): each take waits only until its own bytes are paid, so a
    copy never waits for the part of a slab it does not spend."""

    def __init__(self, db: Database, region: str, mib_per_second: float, stopping: threading.Event):
        self.db = db
        self.region = region
        self.rate = mib_per_second * MiB
        self.slab = int(min(MAX_SLAB, max(MIN_SLAB, self.rate * SLAB_SECONDS)))
        self.stopping = stopping
        self.paid_from = 0.0  # when the current slab's first byte is paid for (Unix time)
        self.reserved = 0  # bytes of the current slab
        self.spent = 0  # of them, taken

    def take(self, size: int) -> None:
        while size > 0 and not self.stopping.is_set():
            if self.spent == self.reserved:
                self.reserved, self.spent = max(self.slab, size), 0
                paid_until = reserve(self.db, self.region, self.reserved, self.rate)
                self.paid_from = paid_until - self.reserved / self.rate
            part = min(size, self.reserved - self.spent)
            self.spent += part
            size -= part
            self.stopping.wait(max(0.0, self.paid_from + self.spent / self.rate - time.time()))


def throttle_for(
    db: Database, settings: Settings, region: str, stopping: threading.Event
) -> Throttle | None:
    """The throttle of a copy into `region`; None when the region has no rate limit."""
    config = settings.region(region)
    if config is None or config.replication_rate_limit_mib <= 0:
        return None
    return Throttle(db, region, config.replication_rate_limit_mib, stopping)


def reserve(db: Database, region: str, size: int, rate: float) -> float:
    """Take `size` bytes from the region's bucket: the Unix time at which they are paid
    for (the row is locked for the read and the write, so concurrent takers queue up)."""
    now = time.time()
    with db.transaction() as session:
        row = session.get(ReplicationThrottle, region, with_for_update=True)
        if row is None:
            insert_if_absent(session, ReplicationThrottle, region=region, paid_until=now)
            row = session.get(ReplicationThrottle, region, with_for_update=True)
            assert row is not None
        row.paid_until = max(row.paid_until, now - CATCH_UP_SECONDS) + size / rate
        return row.paid_until
