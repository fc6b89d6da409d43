"""PROVISIONAL stand-in for branch `logic`'s schedule module (same interface); replaced by
the merge of that branch."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from dateutil import rrule


class PatternError(ValueError):
    pass


class TimezoneError(ValueError):
    pass


def anchor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def parse_timezone(text: str) -> timezone:
    if text == "UTC":
        return UTC
    found = re.fullmatch(r"UTC([+-])([0-9]{2}):([0-9]{2})", text)
    if found is None:
        raise TimezoneError(f"timezone {text!r} is not of the form UTC+HH:MM")
    sign = -1 if found[1] == "-" else 1
    offset = sign * timedelta(hours=int(found[2]), minutes=int(found[3]))
    if int(found[3]) > 59 or not timedelta(hours=-12) <= offset <= timedelta(hours=14):
        raise TimezoneError(f"timezone {text!r} is not an offset from UTC-12:00 to UTC+14:00")
    return timezone(offset)


def validate(patterns: Sequence[str]) -> None:
    if not patterns:
        raise PatternError("at least one pattern is required")
    if len(patterns) > 24:
        raise PatternError("at most 24 patterns are allowed")
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise PatternError("a pattern is a non-empty string")
        keys = [part.partition("=")[0] for part in pattern.split(";")]
        if any(key not in ("FREQ", "BYDAY", "BYHOUR", "BYMINUTE", "INTERVAL") for key in keys):
            raise PatternError(f"pattern {pattern!r}: key not allowed")
        if "FREQ=DAILY" not in pattern and "FREQ=WEEKLY" not in pattern:
            raise PatternError(f"pattern {pattern!r}: FREQ must be DAILY or WEEKLY")
        for part in pattern.split(";"):
            key, _, value = part.partition("=")
            items = value.split(",")
            if len(set(items)) != len(items):
                raise PatternError(f"pattern {pattern!r}: {key} lists a value twice")
        try:
            rrule.rrulestr(pattern, dtstart=datetime(2020, 1, 1))
        except (ValueError, TypeError) as exc:
            raise PatternError(f"pattern {pattern!r}: {exc}") from None
    # One week of runs (a stand-in's approximation): runs at least one hour apart.
    week = Schedule(tuple(patterns), datetime(2020, 1, 6))
    runs = sorted(
        {
            slot
            for p in patterns
            for slot in rrule.rrulestr(p + ";BYSECOND=0", dtstart=week.start).between(
                week.start, week.start + timedelta(days=8)
            )
        }
    )
    if any(b - a < timedelta(hours=1) for a, b in itertools.pairwise(runs)):
        raise PatternError("runs must be at least one hour apart")


@dataclass(frozen=True)
class Schedule:
    patterns: tuple[str, ...]
    start: datetime

    def next_after(self, moment: datetime) -> datetime | None:
        found = [
            rrule.rrulestr(p + ";BYSECOND=0", dtstart=self.start).after(moment)
            for p in self.patterns
        ]
        return min((slot for slot in found if slot is not None), default=None)
