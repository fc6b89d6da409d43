"""Policy schedules: CBR's trigger patterns (an iCalendar RRULE subset) checked and expanded.

Pure: no database and no clock; every time is a parameter and a naive UTC datetime, as the
database stores it. Imports only the standard library and python-dateutil.

A pattern is ``KEY=VALUE`` pairs joined by ``;`` with the keys ``FREQ`` (``DAILY`` or
``WEEKLY``), ``BYDAY`` (``MO``…``SU``), ``BYHOUR`` (0-23), ``BYMINUTE`` (0-59) and
``INTERVAL`` (1-1000), e.g. ``FREQ=DAILY;INTERVAL=1;BYHOUR=6;BYMINUTE=00``. A policy has
1-24 patterns; together they run at least one hour apart (hence at most 24 times a UTC day).
What the iCalendar rules would take from the start time is required instead (``BYHOUR``,
``BYMINUTE``, and ``BYDAY`` for ``WEEKLY``), so a slot never depends on when the policy was
made, except for which day or week an ``INTERVAL`` counts from.

A schedule counts from its ``start`` (the policy's creation time with seconds zeroed, see
``anchor``), which the policy keeps forever: ``INTERVAL=2`` means every other day or week
counted from that day or week (ISO weeks, Monday first), and a start with seconds would give
slots with seconds (dateutil takes the missing ``BYSECOND`` from it).
"""

from __future__ import annotations

import functools
import json
import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone

from dateutil import rrule

MAX_PATTERNS = 24
MAX_INTERVAL = 1000
MAX_RUNS_PER_DAY = 24
# Longer than any pattern without repeated values (all 24 hours and 7 days fit in ~110).
MAX_PATTERN_LENGTH = 512
MIN_GAP_MINUTES = 60
MINUTES_PER_DAY = 24 * 60

KEYS = ("FREQ", "BYDAY", "BYHOUR", "BYMINUTE", "INTERVAL")
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
FREQUENCIES = ("DAILY", "WEEKLY")
_NUMBER = re.compile(r"[0-9]{1,4}")

# Builds the error of one pattern from the rule it broke (the parsers' ``fail``).
_Fail = Callable[[str], "PatternError"]


class PatternError(ValueError):
    """A trigger pattern outside CBR's subset; the message names the pattern and the rule."""


class TimezoneError(ValueError):
    """A policy timezone not of the form ``UTC``, ``UTC+HH:MM`` or ``UTC-HH:MM``."""


@dataclass(frozen=True)
class Rule:
    """One checked pattern. ``days`` are weekdays (0 = Monday); empty: every day."""

    frequency: str
    interval: int
    days: tuple[int, ...]
    hours: tuple[int, ...]
    minutes: tuple[int, ...]

    @property
    def period_days(self) -> int:
        """Days after which the rule's days repeat (counted from its start day or week)."""
        if self.frequency == "WEEKLY":
            return 7 * self.interval
        return 7 * self.interval if self.days else self.interval

    @property
    def times_of_day(self) -> tuple[int, ...]:
        """Minutes after midnight UTC of the runs on a day the rule runs, ascending."""
        return tuple(sorted(h * 60 + m for h in self.hours for m in self.minutes))

    def residues(self, start_weekday: int) -> tuple[int, ...]:
        """Days the rule runs, as day offsets from the start day modulo ``period_days``."""
        period = self.period_days
        if self.frequency == "WEEKLY":  # weeks begin on the Monday of the start's week
            return tuple(sorted((day - start_weekday) % period for day in self.days))
        every = range(0, period, self.interval)
        return tuple(r for r in every if not self.days or (start_weekday + r) % 7 in self.days)


def anchor(moment: datetime) -> datetime:
    """The schedule's dtstart from a policy's creation time: seconds and microseconds zeroed."""
    return _naive_utc(moment).replace(second=0, microsecond=0)


def parse_timezone(text: str) -> timezone:
    """``UTC`` or ``UTC±HH:MM`` (two-digit hours and minutes, -12:00 to +14:00) as a tzinfo."""
    if text == "UTC":
        return UTC
    found = re.fullmatch(r"UTC([+-])([0-9]{2}):([0-9]{2})", text)
    if found is None:
        raise TimezoneError(
            f"timezone {_quoted(text)} is not of the form UTC, UTC+HH:MM or UTC-HH:MM"
            " (e.g. UTC+08:00)"
        )
    sign = -1 if found[1] == "-" else 1
    offset = sign * timedelta(hours=int(found[2]), minutes=int(found[3]))
    if int(found[3]) > 59 or not timedelta(hours=-12) <= offset <= timedelta(hours=14):
        raise TimezoneError(
            f"timezone {_quoted(text)} is not an offset from UTC-12:00 to UTC+14:00"
        )
    return timezone(offset)


def validate(patterns: Sequence[str]) -> None:
    """Raise ``PatternError`` unless ``patterns`` is a valid CBR trigger pattern list."""
    _rules(patterns)


@dataclass(frozen=True)
class Schedule:
    """The slots of a policy's patterns from its ``start`` on; immutable and thread-safe.

    ``start`` must be ``anchor()``ed. Building one validates the patterns (cached per list).
    Slots are naive UTC with zero seconds, ``start`` or later.
    """

    patterns: tuple[str, ...]
    start: datetime

    def __post_init__(self) -> None:
        if self.start != anchor(self.start) or self.start.tzinfo is not None:
            raise ValueError(f"schedule start {self.start} is not anchor()ed naive UTC")
        _rules(self.patterns)
        object.__setattr__(self, "patterns", tuple(self.patterns))  # a list would not hash

    def next_after(self, moment: datetime) -> datetime | None:
        """The first slot strictly after ``moment`` (never None: every valid rule recurs)."""
        moment = _naive_utc(moment)
        found = (_rule_near(rule, self.start, moment).after(moment) for rule in self._rules)
        return min((slot for slot in found if slot is not None), default=None)

    def slots(self, after: datetime, until: datetime) -> list[datetime]:
        """Every slot ``s`` with ``after < s <= until``, ascending and without repeats."""
        after, until = _naive_utc(after), _naive_utc(until)
        found: set[datetime] = set()
        for rule in self._rules:
            found.update(_rule_near(rule, self.start, after).between(after, until, inc=True))
        return sorted(slot for slot in found if slot > after)

    @property
    def _rules(self) -> tuple[Rule, ...]:
        return _checked(self.patterns)


# --- expansion --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _dateutil_rule(rule: Rule, dtstart: datetime) -> rrule.rrule:
    return rrule.rrule(
        rrule.WEEKLY if rule.frequency == "WEEKLY" else rrule.DAILY,
        dtstart=dtstart,
        interval=rule.interval,
        byweekday=rule.days or None,
        byhour=rule.hours,
        byminute=rule.minutes,
        bysecond=0,
    )


def _rule_near(rule: Rule, start: datetime, moment: datetime) -> rrule.rrule:
    """``rule`` from ``start``, restarted at the last whole period beginning on or before
    ``moment``'s day: the same slots from there on, but dateutil no longer walks every
    slot since ``start`` (16 ms for a three-year-old hourly rule; this takes microseconds).
    The restart day is shared by every policy whose start falls in the same phase, so the
    cached rules serve many policies."""
    first_day = start.date()
    if rule.frequency == "WEEKLY":
        first_day -= timedelta(days=start.weekday())
    periods = (moment.date() - first_day).days // rule.period_days
    if periods <= 0:
        return _dateutil_rule(rule, start)
    restart = first_day + timedelta(days=periods * rule.period_days)
    return _dateutil_rule(rule, datetime.combine(restart, time()))


# --- validation -------------------------------------------------------------------------


def _rules(patterns: Sequence[str]) -> tuple[Rule, ...]:
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise PatternError("patterns must be a list of strings")
    return _checked(tuple(patterns))


@functools.lru_cache(maxsize=1024)
def _checked(patterns: tuple[str, ...]) -> tuple[Rule, ...]:
    if not patterns:
        raise PatternError("at least one pattern is required")
    if len(patterns) > MAX_PATTERNS:
        raise PatternError(f"at most {MAX_PATTERNS} patterns are allowed, got {len(patterns)}")
    rules = tuple(_parse(pattern, number) for number, pattern in enumerate(patterns, 1))
    _check_gaps(patterns, rules)
    return rules


def _parse(pattern: str, number: int) -> Rule:
    def fail(reason: str) -> PatternError:
        return PatternError(f"pattern {number} {_quoted(pattern)}: {reason}")

    if not pattern:
        raise fail("a pattern is a non-empty string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise fail(f"longer than {MAX_PATTERN_LENGTH} characters")
    if not (pattern.isascii() and pattern.isprintable()) or " " in pattern:
        raise fail("whitespace, control and non-ASCII characters are not allowed")
    if pattern.startswith("RRULE:"):
        raise fail('write the rule without the "RRULE:" prefix')
    fields = _fields(pattern, fail)
    frequency = fields.get("FREQ")
    if frequency is None:
        raise fail("FREQ is required")
    if frequency not in FREQUENCIES:
        raise fail("FREQ must be DAILY or WEEKLY")
    for key in ("BYHOUR", "BYMINUTE") + (("BYDAY",) if frequency == "WEEKLY" else ()):
        if key not in fields:
            raise fail(f"{key} is required with FREQ={frequency}")
    rule = Rule(
        frequency=frequency,
        interval=_interval(fields.get("INTERVAL", "1"), fail),
        days=_weekdays(fields.get("BYDAY"), fail),
        hours=_numbers("BYHOUR", fields["BYHOUR"], 23, fail),
        minutes=_numbers("BYMINUTE", fields["BYMINUTE"], 59, fail),
    )
    _check_rule(rule, fail)
    return rule


def _fields(pattern: str, fail: _Fail) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in pattern.split(";"):
        key, equals, value = part.partition("=")
        if not equals or not key or not value:
            raise fail(f"{_quoted(part)} is not KEY=VALUE")
        if key not in KEYS:
            raise fail(f"key {_quoted(key)} is not allowed (allowed: {', '.join(KEYS)})")
        if key in fields:
            raise fail(f"key {key} appears twice")
        fields[key] = value
    return fields


def _interval(value: str, fail: _Fail) -> int:
    if not _NUMBER.fullmatch(value) or not 1 <= int(value) <= MAX_INTERVAL:
        raise fail(f"INTERVAL must be an integer from 1 to {MAX_INTERVAL}, not {_quoted(value)}")
    return int(value)


def _weekdays(value: str | None, fail: _Fail) -> tuple[int, ...]:
    if value is None:
        return ()
    days = []
    for item in value.split(","):
        if item not in WEEKDAYS:
            raise fail(f"BYDAY value {_quoted(item)} is not one of {','.join(WEEKDAYS)}")
        days.append(WEEKDAYS.index(item))
    return _unique("BYDAY", days, fail)


def _numbers(key: str, value: str, highest: int, fail: _Fail) -> tuple[int, ...]:
    numbers = []
    for item in value.split(","):
        if not _NUMBER.fullmatch(item) or int(item) > highest or len(item) > 2:
            raise fail(f"{key} value {_quoted(item)} is not an integer from 0 to {highest}")
        numbers.append(int(item))
    return _unique(key, numbers, fail)


def _unique(key: str, values: list[int], fail: _Fail) -> tuple[int, ...]:
    repeated = [value for value in values if values.count(value) > 1]
    if repeated:
        shown = WEEKDAYS[repeated[0]] if key == "BYDAY" else repeated[0]
        raise fail(f"{key} lists {shown} twice")
    return tuple(sorted(values))


def _check_rule(rule: Rule, fail: _Fail) -> None:
    runs = len(rule.hours) * len(rule.minutes)
    if runs > MAX_RUNS_PER_DAY:
        raise fail(f"runs {runs} times a day; at most {MAX_RUNS_PER_DAY} runs a day are allowed")
    if rule.frequency == "DAILY" and rule.days and rule.interval % 7 == 0:
        # Every 7th day is always the same weekday: whether BYDAY ever matches would depend
        # on the day the policy was made.
        raise fail("BYDAY with FREQ=DAILY needs an INTERVAL that is not a multiple of 7")


def _check_gaps(patterns: tuple[str, ...], rules: tuple[Rule, ...]) -> None:
    """Refuse two runs less than an hour apart, for any weekday the policy may start on.

    Each rule runs on the days ``d`` with ``d - start_day ≡ c (mod period)`` for its
    residues ``c``; rules i and j both run on a day (``shift`` 0) or on consecutive days
    (``shift`` ±1) iff some residues satisfy ``c_j - shift - c_i ≡ 0 (mod gcd)`` (Chinese
    remainder theorem). This is exact over every future day, however long the periods:
    expanding a week, or any fixed horizon, misses ``INTERVAL`` combinations.
    """
    for i, j in _pairs(len(rules)):
        for shift in (0, 1, -1) if i != j else (0, 1):
            close = _close_times(rules[i], rules[j], shift)
            if close is not None and _may_meet(rules[i], rules[j], shift):
                raise PatternError(_gap_message(patterns, i, j, shift, close))


def _pairs(count: int) -> Iterator[tuple[int, int]]:
    for i in range(count):
        for j in range(i, count):
            yield i, j


def _close_times(first: Rule, second: Rule, shift: int) -> tuple[int, int] | None:
    """Times of day (first's, second's) under an hour apart but not equal, with second's
    run ``shift`` days after first's day; equal times are one run (the slots merge)."""
    others = second.times_of_day
    for mine in first.times_of_day:
        low = bisect_left(others, mine - shift * MINUTES_PER_DAY - MIN_GAP_MINUTES + 1)
        for theirs in others[low:]:
            distance = theirs + shift * MINUTES_PER_DAY - mine
            if distance >= MIN_GAP_MINUTES:
                break
            if distance != 0:
                return mine, theirs
    return None


def _may_meet(first: Rule, second: Rule, shift: int) -> bool:
    """Whether ``second`` runs ``shift`` days after a day ``first`` runs, for some start."""
    modulus = math.gcd(first.period_days, second.period_days)
    for weekday in range(7):
        mine, theirs = first.residues(weekday), second.residues(weekday)
        if any((c_j - shift - c_i) % modulus == 0 for c_i in mine for c_j in theirs):
            return True
    return False


def _gap_message(
    patterns: tuple[str, ...], i: int, j: int, shift: int, close: tuple[int, int]
) -> str:
    first, second = _clock(close[0]), _clock(close[1])
    later = {0: "", 1: " the next day", -1: " the day before"}[shift]
    minutes = abs(close[1] + shift * MINUTES_PER_DAY - close[0])
    which = (
        f"pattern {i + 1} {_quoted(patterns[i])}"
        if i == j
        else f"patterns {i + 1} {_quoted(patterns[i])} and {j + 1} {_quoted(patterns[j])}"
    )
    return (
        f"{which}: runs at {first} UTC and {second} UTC{later} are {minutes} minutes apart; "
        "runs must be at least one hour apart"
    )


# --- small helpers ----------------------------------------------------------------------


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _quoted(text: str) -> str:
    """``text`` in double quotes, control characters escaped and long text cut, for messages."""
    shown = text if len(text) <= 80 else text[:80] + "..."
    return json.dumps(shown)


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
