"""Policy schedules: CBR's pattern subset, its messages, and slots against dateutil itself.

Times are explicit naive UTC datetimes (no clock). Expected slots are written out or built
by plain date arithmetic; the property tests compare the schedule (which restarts each rule
near the moment asked about) with dateutil walking every slot from the policy's start.
"""

from __future__ import annotations

import itertools
import math
import re
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import pytest
from dateutil import rrule
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

from opencbr.services.schedule import (
    WEEKDAYS,
    PatternError,
    Schedule,
    TimezoneError,
    anchor,
    parse_timezone,
    validate,
)

DAILY_6 = "FREQ=DAILY;INTERVAL=1;BYHOUR=6;BYMINUTE=00"
SATURDAY_22 = "FREQ=WEEKLY;BYDAY=SA;BYHOUR=22;BYMINUTE=00"
EVERY_OTHER_DAY = "FREQ=DAILY;INTERVAL=2;BYHOUR=3,15;BYMINUTE=30"
# Sat 2026-11-28 23:30 UTC, the moment of the reference notes' scratch script.
NOTES_NOW = datetime(2026, 11, 28, 23, 30)


def walk(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """The slots an engine fires from ``start`` to ``end``, asking only ``next_after``."""
    fired = []
    slot = schedule.next_after(start)
    while slot is not None and slot <= end:
        fired.append(slot)
        slot = schedule.next_after(slot)
    return fired


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute))


def days_of(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# --- slots ------------------------------------------------------------------------------


def test_reference_patterns_give_the_slots_of_the_notes() -> None:
    expectations = {
        "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=14;BYMINUTE=00": [
            datetime(2026, 11, 29, 14, 0),
            datetime(2026, 11, 30, 14, 0),
        ],
        DAILY_6: [datetime(2026, 11, 29, 6, 0), datetime(2026, 11, 30, 6, 0)],
        EVERY_OTHER_DAY: [
            datetime(2026, 11, 30, 3, 30),
            datetime(2026, 11, 30, 15, 30),
            datetime(2026, 12, 2, 3, 30),
        ],
        SATURDAY_22: [datetime(2026, 12, 5, 22, 0), datetime(2026, 12, 12, 22, 0)],
    }
    for pattern, expected in expectations.items():
        schedule = Schedule((pattern,), anchor(NOTES_NOW))
        assert walk(schedule, NOTES_NOW, expected[-1]) == expected, pattern


def test_a_month_of_a_daily_and_a_weekly_pattern_fires_each_slot_once_in_order() -> None:
    start = anchor(datetime(2026, 11, 30, 12, 0, 41))  # a Monday, after that day's 06:00
    schedule = Schedule((DAILY_6, SATURDAY_22), start)
    month = days_of(date(2026, 12, 1), date(2026, 12, 31))
    expected = sorted(
        [at(day, 6) for day in month] + [at(day, 22) for day in month if day.weekday() == 5]
    )
    assert walk(schedule, start, datetime(2026, 12, 31, 23, 59)) == expected
    assert len(expected) == 31 + 4


def test_a_month_of_every_third_day_and_every_other_week_counts_from_the_start() -> None:
    start = anchor(datetime(2026, 3, 4, 9, 15, 3))  # Wednesday; the 07:00 slot has passed
    patterns = (
        "FREQ=DAILY;INTERVAL=3;BYHOUR=7;BYMINUTE=5",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR;BYHOUR=20;BYMINUTE=45",
    )
    schedule = Schedule(patterns, start)
    every_third = [at(d, 7, 5) for d in days_of(date(2026, 3, 7), date(2026, 4, 3))[::3]]
    # The start's week (2 March) and every second week after it: 16 and 30 March.
    fortnightly = [
        at(d, 20, 45)
        for d in days_of(date(2026, 3, 4), date(2026, 4, 3))
        if d.weekday() in (0, 4) and (d - date(2026, 3, 2)).days // 7 % 2 == 0
    ]
    assert fortnightly[0] == datetime(2026, 3, 6, 20, 45)
    expected = sorted(every_third + fortnightly)
    assert walk(schedule, start, datetime(2026, 4, 3, 23, 59)) == expected


def test_slots_are_those_after_the_first_moment_up_to_and_including_the_second() -> None:
    schedule = Schedule((DAILY_6, SATURDAY_22), anchor(datetime(2026, 1, 1)))
    # An outage from Friday 06:00 (that slot ran) to Monday 06:00 (that slot is due now).
    missed = schedule.slots(datetime(2026, 12, 4, 6, 0), datetime(2026, 12, 7, 6, 0))
    assert missed == [
        datetime(2026, 12, 5, 6, 0),
        datetime(2026, 12, 5, 22, 0),
        datetime(2026, 12, 6, 6, 0),
        datetime(2026, 12, 7, 6, 0),
    ]
    assert schedule.slots(datetime(2026, 12, 7, 6, 0), datetime(2026, 12, 7, 6, 0)) == []
    assert schedule.slots(datetime(2026, 12, 7, 6, 1), datetime(2026, 12, 8, 5, 59)) == []


def test_a_long_outage_lists_every_missed_slot_of_a_three_year_old_policy() -> None:
    schedule = Schedule((EVERY_OTHER_DAY,), anchor(datetime(2023, 5, 1, 1, 2, 3)))
    missed = schedule.slots(datetime(2026, 6, 1), datetime(2026, 7, 1))
    slot_days = [d for d in days_of(date(2026, 6, 1), date(2026, 7, 1)) if _even_since(d)]
    assert missed == sorted(
        at(d, h, 30) for d in slot_days for h in (3, 15) if at(d, h, 30) <= datetime(2026, 7, 1)
    )


def _even_since(day: date) -> bool:
    return (day - date(2023, 5, 1)).days % 2 == 0


def test_two_patterns_naming_the_same_time_give_one_slot() -> None:
    schedule = Schedule((DAILY_6, "FREQ=WEEKLY;BYDAY=MO;BYHOUR=6;BYMINUTE=0"), NOTES_NOW)
    assert schedule.slots(datetime(2026, 11, 29, 12), datetime(2026, 12, 1, 12)) == [
        datetime(2026, 11, 30, 6, 0),
        datetime(2026, 12, 1, 6, 0),
    ]


def test_creation_seconds_never_reach_the_slots() -> None:
    created = datetime(2026, 11, 28, 5, 59, 17, 250_000)
    start = anchor(created)
    assert start == datetime(2026, 11, 28, 5, 59)
    schedule = Schedule((DAILY_6,), start)
    assert schedule.next_after(created) == datetime(2026, 11, 28, 6, 0)
    assert all(
        s.second == 0 and s.microsecond == 0
        for s in walk(schedule, created, created + timedelta(days=9))
    )


def test_no_slot_precedes_the_start() -> None:
    start = datetime(2026, 11, 25, 10, 0)  # a Wednesday
    daily = Schedule(("FREQ=DAILY;BYHOUR=9;BYMINUTE=0",), start)
    assert daily.next_after(datetime(2026, 11, 25, 8, 0)) == datetime(2026, 11, 26, 9, 0)
    weekly = Schedule(("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;BYHOUR=9,11;BYMINUTE=0",), start)
    assert weekly.next_after(datetime(2026, 11, 23, 8, 0)) == datetime(2026, 11, 25, 11, 0)
    assert weekly.slots(datetime(2026, 11, 20), datetime(2026, 12, 7, 10)) == [
        datetime(2026, 11, 25, 11, 0),
        datetime(2026, 12, 7, 9, 0),
    ]


def test_a_start_with_seconds_or_a_timezone_is_refused() -> None:
    with pytest.raises(ValueError, match="anchor"):
        Schedule((DAILY_6,), datetime(2026, 11, 28, 5, 59, 17))
    with pytest.raises(ValueError, match="anchor"):
        Schedule((DAILY_6,), datetime(2026, 11, 28, 5, 59, tzinfo=UTC))


def test_anchor_turns_an_aware_time_into_naive_utc() -> None:
    shanghai = timezone(timedelta(hours=8))
    assert anchor(datetime(2026, 11, 29, 7, 30, 5, tzinfo=shanghai)) == datetime(
        2026, 11, 28, 23, 30
    )


def test_every_other_day_keeps_its_parity_whatever_the_moment_asked() -> None:
    start = anchor(datetime(2025, 1, 1, 10, 0, 17))
    schedule = Schedule(("FREQ=DAILY;INTERVAL=2;BYHOUR=6;BYMINUTE=0",), start)
    for hours in range(0, 2 * 366 * 24, 7):  # two years of moments, every 7 hours
        slot = schedule.next_after(start + timedelta(hours=hours))
        assert slot is not None
        assert (slot.date() - start.date()).days % 2 == 0
        assert slot - (start + timedelta(hours=hours)) <= timedelta(days=2)


def test_every_other_week_keeps_its_weeks_whatever_the_moment_asked() -> None:
    start = anchor(datetime(2026, 11, 25, 10, 0))  # a Wednesday: its week began on 11-23
    schedule = Schedule(("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR,SU;BYHOUR=6;BYMINUTE=0",), start)
    assert walk(schedule, start, datetime(2026, 12, 13, 23, 0)) == [
        datetime(2026, 11, 27, 6, 0),
        datetime(2026, 11, 29, 6, 0),
        datetime(2026, 12, 7, 6, 0),
        datetime(2026, 12, 11, 6, 0),
        datetime(2026, 12, 13, 6, 0),
    ]
    for days in range(0, 800, 3):
        slot = schedule.next_after(start + timedelta(days=days, hours=days % 24))
        assert slot is not None
        assert (slot.date() - date(2026, 11, 23)).days // 7 % 2 == 0


def test_aware_moments_are_read_as_their_utc_instant() -> None:
    schedule = Schedule((DAILY_6,), NOTES_NOW)
    tokyo = timezone(timedelta(hours=9))
    assert schedule.next_after(datetime(2026, 11, 29, 14, 59, tzinfo=tokyo)) == datetime(
        2026, 11, 29, 6, 0
    )


# --- validation -------------------------------------------------------------------------

REFUSED = [
    ([], "at least one pattern is required"),
    ("FREQ=DAILY;BYHOUR=6;BYMINUTE=0", "patterns must be a list of strings"),
    ([DAILY_6, 6], "patterns must be a list of strings"),
    ([["FREQ=DAILY"]], "patterns must be a list of strings"),
    ([DAILY_6] * 25, "at most 24 patterns are allowed, got 25"),
    ([DAILY_6, "FREQ=HOURLY"], 'pattern 2 "FREQ=HOURLY": FREQ must be DAILY or WEEKLY'),
    (["FREQ=MONTHLY;BYHOUR=1;BYMINUTE=0"], "FREQ must be DAILY or WEEKLY"),
    (["BYHOUR=6;BYMINUTE=0"], 'pattern 1 "BYHOUR=6;BYMINUTE=0": FREQ is required'),
    (["FREQ=DAILY;BYMINUTE=0"], "BYHOUR is required with FREQ=DAILY"),
    (["FREQ=DAILY;BYHOUR=6"], "BYMINUTE is required with FREQ=DAILY"),
    (["FREQ=WEEKLY;BYHOUR=6;BYMINUTE=0"], "BYDAY is required with FREQ=WEEKLY"),
    (
        ["FREQ=DAILY;BYMONTHDAY=1;BYHOUR=6;BYMINUTE=0"],
        'key "BYMONTHDAY" is not allowed (allowed: FREQ, BYDAY, BYHOUR, BYMINUTE, INTERVAL)',
    ),
    (["freq=daily;byhour=6;byminute=0"], 'key "freq" is not allowed'),
    (["FREQ=daily;BYHOUR=6;BYMINUTE=0"], "FREQ must be DAILY or WEEKLY"),
    (["FREQ=DAILY;BYHOUR=6;BYHOUR=7;BYMINUTE=0"], "key BYHOUR appears twice"),
    (["FREQ=DAILY;BYHOUR=6;BYMINUTE=0;"], '"" is not KEY=VALUE'),
    (["FREQ=DAILY;BYHOUR;BYMINUTE=0"], '"BYHOUR" is not KEY=VALUE'),
    (["FREQ=DAILY;BYHOUR=;BYMINUTE=0"], '"BYHOUR=" is not KEY=VALUE'),
    (["RRULE:FREQ=DAILY;BYHOUR=6;BYMINUTE=0"], 'without the "RRULE:" prefix'),
    ([""], 'pattern 1 "": a pattern is a non-empty string'),
    (["FREQ=DAILY; BYHOUR=6;BYMINUTE=0"], "whitespace, control and non-ASCII characters"),
    (["FREQ=DAILY;BYHOUR=6;BYMINUTE=0\x00"], r'"FREQ=DAILY;BYHOUR=6;BYMINUTE=0\u0000": whitespace'),
    (["FREQ=DAILY;BYHOUR=\uff16;BYMINUTE=0"], "whitespace, control and non-ASCII characters"),
    (["FREQ=DAILY;BYHOUR=6;BYMINUTE=0" + ";INTERVAL=1" * 60], "longer than 512 characters"),
    (["FREQ=DAILY;BYHOUR=24;BYMINUTE=0"], 'BYHOUR value "24" is not an integer from 0 to 23'),
    (["FREQ=DAILY;BYHOUR=+6;BYMINUTE=0"], 'BYHOUR value "+6" is not an integer from 0 to 23'),
    (["FREQ=DAILY;BYHOUR=006;BYMINUTE=0"], 'BYHOUR value "006" is not an integer from 0 to 23'),
    (["FREQ=DAILY;BYHOUR=6,;BYMINUTE=0"], 'BYHOUR value "" is not an integer from 0 to 23'),
    (["FREQ=DAILY;BYHOUR=6;BYMINUTE=60"], 'BYMINUTE value "60" is not an integer from 0 to 59'),
    (["FREQ=DAILY;BYHOUR=6,7,6;BYMINUTE=0"], "BYHOUR lists 6 twice"),
    (["FREQ=WEEKLY;BYDAY=MO,XX;BYHOUR=6;BYMINUTE=0"], 'BYDAY value "XX" is not one of MO,TU,'),
    (["FREQ=WEEKLY;BYDAY=1MO;BYHOUR=6;BYMINUTE=0"], 'BYDAY value "1MO" is not one of'),
    (["FREQ=WEEKLY;BYDAY=MO,FR,MO;BYHOUR=6;BYMINUTE=0"], "BYDAY lists MO twice"),
    (
        ["FREQ=DAILY;INTERVAL=0;BYHOUR=6;BYMINUTE=0"],
        'INTERVAL must be an integer from 1 to 1000, not "0"',
    ),
    (
        ["FREQ=DAILY;INTERVAL=1001;BYHOUR=6;BYMINUTE=0"],
        "INTERVAL must be an integer from 1 to 1000",
    ),
    (["FREQ=DAILY;INTERVAL=-2;BYHOUR=6;BYMINUTE=0"], "INTERVAL must be an integer from 1 to 1000"),
    (
        ["FREQ=DAILY;INTERVAL=14;BYDAY=TU;BYHOUR=6;BYMINUTE=0"],
        "BYDAY with FREQ=DAILY needs an INTERVAL that is not a multiple of 7",
    ),
    (
        ["FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12;BYMINUTE=0,30"],
        "runs 26 times a day; at most 24 runs a day are allowed",
    ),
    (
        ["FREQ=DAILY;BYHOUR=6;BYMINUTE=0,30"],
        'pattern 1 "FREQ=DAILY;BYHOUR=6;BYMINUTE=0,30": runs at 06:00 UTC and 06:30 UTC are '
        "30 minutes apart; runs must be at least one hour apart",
    ),
    (
        [DAILY_6, "FREQ=WEEKLY;BYDAY=WE;BYHOUR=5;BYMINUTE=01"],
        f'patterns 1 "{DAILY_6}" and 2 "FREQ=WEEKLY;BYDAY=WE;BYHOUR=5;BYMINUTE=01": runs at '
        "06:00 UTC and 05:01 UTC are 59 minutes apart; runs must be at least one hour apart",
    ),
    (
        ["FREQ=WEEKLY;BYDAY=SU;BYHOUR=23;BYMINUTE=30", "FREQ=WEEKLY;BYDAY=MO;BYHOUR=0;BYMINUTE=10"],
        "runs at 23:30 UTC and 00:10 UTC the next day are 40 minutes apart",
    ),
    (
        ["FREQ=WEEKLY;BYDAY=MO;BYHOUR=0;BYMINUTE=10", "FREQ=WEEKLY;BYDAY=SU;BYHOUR=23;BYMINUTE=30"],
        "runs at 00:10 UTC and 23:30 UTC the day before are 40 minutes apart",
    ),
]


@pytest.mark.parametrize(("patterns", "message"), REFUSED)
def test_a_pattern_outside_the_subset_is_refused_with_the_rule_it_broke(
    patterns: Any, message: str
) -> None:
    with pytest.raises(PatternError) as refused:
        validate(patterns)
    assert message in str(refused.value)


def test_a_refused_pattern_cannot_make_a_schedule() -> None:
    with pytest.raises(PatternError, match="FREQ must be DAILY or WEEKLY"):
        Schedule(("FREQ=HOURLY",), NOTES_NOW)


ACCEPTED = [
    [DAILY_6],
    ["FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=14;BYMINUTE=00"],
    ["FREQ=DAILY;BYHOUR=" + ",".join(map(str, range(24))) + ";BYMINUTE=59"],  # 24 a day
    ["BYMINUTE=0;BYHOUR=6;FREQ=DAILY"],  # any key order
    [
        "FREQ=DAILY;INTERVAL=1000;BYHOUR=6;BYMINUTE=0",
        "FREQ=WEEKLY;INTERVAL=1000;BYDAY=SU;BYHOUR=6;BYMINUTE=0",
    ],
    ["FREQ=DAILY;INTERVAL=3;BYDAY=MO,FR;BYHOUR=6;BYMINUTE=0"],
    [DAILY_6] * 24,  # the same slot 24 times is one run
    [
        f"FREQ=WEEKLY;BYDAY={day};BYHOUR={hour};BYMINUTE=0"
        for day in WEEKDAYS
        for hour in (1, 9, 17)
    ][:24],
    # Same-parity days never meet: 23:30 is followed by 00:00 two days later.
    ["FREQ=DAILY;INTERVAL=2;BYHOUR=23;BYMINUTE=30", "FREQ=DAILY;INTERVAL=2;BYHOUR=0;BYMINUTE=0"],
    # The same weeks: a Sunday 23:30 run is never followed by a Monday run the next day.
    [
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=SU;BYHOUR=23;BYMINUTE=30",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO;BYHOUR=0;BYMINUTE=0",
    ],
    ["FREQ=DAILY;BYHOUR=23;BYMINUTE=30", "FREQ=DAILY;BYHOUR=0;BYMINUTE=30"],  # exactly 1 h
]


@pytest.mark.parametrize("patterns", ACCEPTED)
def test_patterns_inside_the_subset_are_accepted(patterns: list[str]) -> None:
    validate(patterns)


def test_runs_that_meet_only_after_weeks_are_refused() -> None:
    """Every 2nd week's Monday 00:00 and every 3rd week's Sunday 23:30 first meet in the
    fourth week: expanding one week of slots (or any fixed horizon) would accept them."""
    monday = "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO;BYHOUR=0;BYMINUTE=0"
    sunday = "FREQ=WEEKLY;INTERVAL=3;BYDAY=SU;BYHOUR=23;BYMINUTE=30"
    with pytest.raises(PatternError, match="30 minutes apart"):
        validate([monday, sunday])
    start = datetime(2026, 1, 5)  # a Monday
    slots = sorted(set(_expand(monday, start, 60) + _expand(sunday, start, 60)))
    close = [b for a, b in itertools.pairwise(slots) if b - a < timedelta(hours=1)]
    assert close and close[0] - start > timedelta(weeks=3)


def test_every_other_day_at_23_30_and_every_third_day_at_midnight_are_refused() -> None:
    with pytest.raises(PatternError, match="the next day are 30 minutes apart"):
        validate(
            [
                "FREQ=DAILY;INTERVAL=2;BYHOUR=23;BYMINUTE=30",
                "FREQ=DAILY;INTERVAL=3;BYHOUR=0;BYMINUTE=0",
            ]
        )


def test_a_conflict_that_depends_on_the_start_weekday_is_refused_on_any_weekday() -> None:
    """Every 14th day and every other Wednesday meet only for some creation weekdays; the rule
    does not depend on when the policy is made, so such a pair is always refused."""
    patterns = [
        "FREQ=DAILY;INTERVAL=14;BYHOUR=6;BYMINUTE=0",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=WE;BYHOUR=6;BYMINUTE=30",
    ]
    with pytest.raises(PatternError, match="30 minutes apart"):
        validate(patterns)
    meeting_weekdays = {
        start.weekday()
        for start in (datetime(2026, 1, 5) + timedelta(days=n) for n in range(7))
        if _closest_gap(patterns, start, 60) < timedelta(hours=1)
    }
    assert meeting_weekdays == {2}  # they meet only if the policy starts on a Wednesday


# --- timezones ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("UTC", timedelta(0)),
        ("UTC+00:00", timedelta(0)),
        ("UTC+08:00", timedelta(hours=8)),
        ("UTC-05:30", -timedelta(hours=5, minutes=30)),
        ("UTC+05:45", timedelta(hours=5, minutes=45)),
        ("UTC+14:00", timedelta(hours=14)),
        ("UTC-12:00", -timedelta(hours=12)),
    ],
)
def test_timezones_of_the_cbr_form_are_offsets(text: str, offset: timedelta) -> None:
    assert parse_timezone(text).utcoffset(None) == offset


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("UTC+8", "is not of the form UTC, UTC+HH:MM or UTC-HH:MM (e.g. UTC+08:00)"),
        ("UTC+0800", "is not of the form"),
        ("GMT+08:00", "is not of the form"),
        ("Asia/Shanghai", "is not of the form"),
        ("utc+08:00", "is not of the form"),
        (" UTC+08:00", "is not of the form"),
        ("UTC+08:00\x00", "is not of the form"),
        ("", "is not of the form"),
        ("UTC+08:60", "is not an offset from UTC-12:00 to UTC+14:00"),
        ("UTC+14:30", "is not an offset from UTC-12:00 to UTC+14:00"),
        ("UTC-13:00", "is not an offset from UTC-12:00 to UTC+14:00"),
    ],
)
def test_other_timezones_are_refused_with_the_expected_form(text: str, message: str) -> None:
    with pytest.raises(TimezoneError, match=re.escape(message)):
        parse_timezone(text)


# --- properties against dateutil ----------------------------------------------------------


@st.composite
def patterns_of(
    draw: st.DrawFn, max_interval: int, hours: st.SearchStrategy[int] = st.integers(0, 23)
) -> tuple[str, ...]:
    """1-3 patterns with random keys in random order (invalid sets are rejected later)."""
    texts = []
    for _ in range(draw(st.integers(1, 3))):
        frequency = draw(st.sampled_from(["DAILY", "WEEKLY"]))
        interval = draw(st.integers(1, max_interval))
        any_days = frequency == "WEEKLY" or (interval % 7 and draw(st.booleans()))
        days = draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1)) if any_days else set()
        at_hours = draw(st.sets(hours, min_size=1, max_size=4))
        minute = draw(st.integers(0, 59))
        parts = [
            f"FREQ={frequency}",
            f"BYHOUR={','.join(map(str, at_hours))}",
            f"BYMINUTE={minute:02d}",
        ]
        if interval > 1 or draw(st.booleans()):
            parts.append(f"INTERVAL={interval}")
        if days:
            parts.append("BYDAY=" + ",".join(sorted(days, key=WEEKDAYS.index)))
        texts.append(";".join(draw(st.permutations(parts))))
    return tuple(texts)


def _dateutil_rules(patterns: tuple[str, ...] | list[str], start: datetime) -> rrule.rruleset:
    """The patterns as dateutil reads them, from ``start``, walking every slot from there."""
    rules = rrule.rruleset()
    for pattern in patterns:
        rules.rrule(rrule.rrulestr(pattern, dtstart=start))
    return rules


def _expand(pattern: str, start: datetime, days: int) -> list[datetime]:
    return list(
        _dateutil_rules([pattern], start).between(start, start + timedelta(days=days), inc=True)
    )


def _closest_gap(patterns: tuple[str, ...] | list[str], start: datetime, days: int) -> timedelta:
    slots = list(
        _dateutil_rules(patterns, start).between(start, start + timedelta(days=days), inc=True)
    )
    return min((b - a for a, b in itertools.pairwise(slots)), default=timedelta.max)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    patterns=patterns_of(max_interval=5),
    created=st.datetimes(datetime(2020, 1, 1), datetime(2027, 1, 1)),
    later=st.timedeltas(timedelta(days=-3), timedelta(days=120)),
)
def test_next_after_is_the_first_slot_dateutil_finds_from_the_start(
    patterns: tuple[str, ...], created: datetime, later: timedelta
) -> None:
    try:
        validate(patterns)
    except PatternError:
        reject()
    schedule = Schedule(patterns, anchor(created))
    moment = created + later
    slot = schedule.next_after(moment)
    assert slot is not None and slot > moment
    assert slot.second == 0 and slot.microsecond == 0
    assert slot == _dateutil_rules(patterns, anchor(created)).after(moment)  # none between
    assert any(
        _dateutil_rules([p], anchor(created)).after(slot, inc=True) == slot for p in patterns
    )
    assert schedule.slots(moment, slot) == [slot]


@settings(max_examples=120, deadline=None)
# Runs around midnight, where whether two rules meet depends on their days.
@given(patterns=patterns_of(max_interval=3, hours=st.sampled_from([0, 1, 22, 23])))
def test_validation_agrees_with_expanding_every_start_weekday_over_a_whole_period(
    patterns: tuple[str, ...],
) -> None:
    """Intervals up to 3 repeat within lcm(1, 2, 3) weeks: expanding 6 weeks from a start
    on each weekday sees every combination; runs less than an hour apart (or more than
    24 a UTC day, which that implies) appear there exactly when validation refuses."""
    period = 7 * math.lcm(1, 2, 3)
    too_close = any(
        _closest_gap(patterns, datetime(2026, 1, 5) + timedelta(days=weekday), 2 * period)
        < timedelta(hours=1)
        for weekday in range(7)
    )
    try:
        validate(patterns)
    except PatternError as refused:
        event("refused")
        assert too_close, str(refused)
    else:
        event("accepted")
        assert not too_close
