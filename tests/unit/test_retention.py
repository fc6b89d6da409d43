"""Policy retention: worked examples of each rule and hypothesis properties over random
backup timelines and rules. Times are explicit naive UTC datetimes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencbr.services.retention import (
    Candidate,
    Rules,
    Verdict,
    decide,
    expires_at,
    keeps_everything,
)

NOW = datetime(2026, 11, 28, 23, 30)
SHANGHAI = timezone(timedelta(hours=8))


def backups(*times: datetime) -> list[Candidate]:
    """Candidates named b0, b1, ... in the order given."""
    return [Candidate(id=f"b{n}", created_at=t) for n, t in enumerate(times)]


def daily(first: datetime, count: int) -> list[Candidate]:
    return backups(*(first + timedelta(days=n) for n in range(count)))


# --- worked examples -------------------------------------------------------------------


def test_no_rolling_bound_keeps_everything_even_with_calendar_rules() -> None:
    group = daily(datetime(2026, 1, 1, 6), 40)
    for rules in (Rules(), Rules(max_backups=0, retention_duration_days=0), Rules(day_backups=3)):
        assert keeps_everything(rules)
        verdict = decide(group, rules, NOW)
        assert verdict.delete == {}
        assert set(verdict.keep) == {b.id for b in group}
        assert verdict.keep["b0"] == "no max_backups or retention_duration_days"


def test_max_backups_keeps_the_newest_n_whatever_the_input_order() -> None:
    group = daily(datetime(2026, 11, 20, 6), 5)
    verdict = decide(list(reversed(group)), Rules(max_backups=3), NOW)
    assert verdict == Verdict(
        keep={"b4": "newest, max_backups 3", "b3": "max_backups 3", "b2": "max_backups 3"},
        delete={"b1": "beyond max_backups 3", "b0": "beyond max_backups 3"},
    )
    assert not keeps_everything(Rules(max_backups=3))


def test_retention_days_deletes_only_what_is_older_than_the_bound() -> None:
    group = backups(
        NOW - timedelta(days=7, seconds=1),  # b0: just too old
        NOW - timedelta(days=7),  # b1: exactly 7 days old: kept
        NOW - timedelta(days=1),  # b2
    )
    verdict = decide(group, Rules(retention_duration_days=7), NOW)
    assert verdict.keep == {"b2": "newest, within 7 days", "b1": "within 7 days"}
    assert verdict.delete == {"b0": "older than 7 days"}


def test_the_newest_backup_is_kept_even_when_every_bound_would_delete_it() -> None:
    group = daily(datetime(2025, 1, 1), 3)
    verdict = decide(group, Rules(retention_duration_days=30), NOW)
    assert verdict.keep == {"b2": "newest"}
    assert verdict.delete == {"b0": "older than 30 days", "b1": "older than 30 days"}


def test_both_rolling_bounds_delete_what_violates_either() -> None:
    group = backups(
        NOW - timedelta(days=20),  # b0: too old and beyond the count
        NOW - timedelta(days=10),  # b1: too old, within the count
        NOW - timedelta(days=3),  # b2: recent but beyond the count
        NOW - timedelta(days=2),  # b3
        NOW - timedelta(days=1),  # b4
    )
    verdict = decide(group, Rules(max_backups=4, retention_duration_days=7), NOW)
    # b2 is the 3rd newest: inside max_backups 4 and 3 days old.
    assert verdict.keep == {
        "b4": "newest, max_backups 4, within 7 days",
        "b3": "max_backups 4, within 7 days",
        "b2": "max_backups 4, within 7 days",
    }
    assert verdict.delete == {
        "b1": "older than 7 days",
        "b0": "beyond max_backups 4, older than 7 days",
    }
    tighter = decide(group, Rules(max_backups=2, retention_duration_days=7), NOW)
    assert set(tighter.keep) == {"b4", "b3"}
    assert tighter.delete["b2"] == "beyond max_backups 2"


def test_daily_rule_keeps_the_newest_of_each_of_the_last_days_holding_a_backup() -> None:
    group = backups(
        datetime(2026, 11, 20, 6),  # b0: 11-20
        datetime(2026, 11, 23, 6),  # b1: 11-23 (11-21 and 11-22 hold none)
        datetime(2026, 11, 23, 18),  # b2: 11-23, newer
        datetime(2026, 11, 26, 6),  # b3: 11-26
        datetime(2026, 11, 28, 6),  # b4: 11-28
        datetime(2026, 11, 28, 18),  # b5: 11-28, newest
    )
    verdict = decide(group, Rules(max_backups=1, day_backups=3), NOW)
    assert verdict.keep == {
        "b5": "newest, max_backups 1, daily 2026-11-28",
        "b3": "daily 2026-11-26",
        "b2": "daily 2026-11-23",
    }
    assert set(verdict.delete) == {"b0", "b1", "b4"}
    assert verdict.delete["b4"] == "beyond max_backups 1"


def test_calendar_rules_count_independently_of_each_other_and_of_max_backups() -> None:
    group = backups(
        datetime(2026, 9, 15, 6),  # b0: September
        datetime(2026, 10, 30, 6),  # b1: October, ISO week 44
        datetime(2026, 11, 20, 6),  # b2: week 47
        datetime(2026, 11, 26, 6),  # b3: week 48 (Thursday)
        datetime(2026, 11, 27, 6),  # b4: week 48 (Friday)
    )
    rules = Rules(max_backups=2, day_backups=1, week_backups=2, month_backups=3)
    verdict = decide(group, rules, NOW)
    assert verdict.keep == {
        "b4": "newest, max_backups 2, daily 2026-11-27, weekly 2026-W48, monthly 2026-11",
        "b3": "max_backups 2",
        "b2": "weekly 2026-W47",
        "b1": "monthly 2026-10",
        "b0": "monthly 2026-09",
    }
    assert verdict.delete == {}


def test_days_are_those_of_the_policy_timezone() -> None:
    group = backups(
        datetime(2026, 11, 27, 12),  # b0: 11-27 20:00 in UTC+8
        datetime(2026, 11, 28, 10),  # b1: 11-28 18:00 in UTC+8
        datetime(2026, 11, 28, 23, 30),  # b2: 11-29 07:30 in UTC+8, still 11-28 in UTC
    )
    in_utc = decide(group, Rules(max_backups=1, day_backups=2), NOW)
    assert in_utc.keep == {
        "b2": "newest, max_backups 1, daily 2026-11-28",
        "b0": "daily 2026-11-27",
    }
    in_shanghai = decide(group, Rules(max_backups=1, day_backups=2, timezone=SHANGHAI), NOW)
    assert in_shanghai.keep == {
        "b2": "newest, max_backups 1, daily 2026-11-29",
        "b1": "daily 2026-11-28",
    }
    assert in_shanghai.delete == {"b0": "beyond max_backups 1"}


def test_iso_week_53_spans_the_new_year_and_years_are_calendar_years() -> None:
    group = backups(
        datetime(2026, 12, 21, 6),  # b0: 2026-W52
        datetime(2026, 12, 28, 6),  # b1: Monday of 2026-W53
        datetime(2026, 12, 31, 6),  # b2: 2026-W53, the last backup of 2026
        datetime(2027, 1, 2, 6),  # b3: Saturday, still 2026-W53
    )
    now = datetime(2027, 1, 3)
    weekly = decide(group, Rules(max_backups=1, week_backups=2), now)
    assert weekly.keep == {"b3": "newest, max_backups 1, weekly 2026-W53", "b0": "weekly 2026-W52"}
    yearly = decide(group, Rules(max_backups=1, year_backups=2), now)
    assert yearly.keep == {"b3": "newest, max_backups 1, yearly 2027", "b2": "yearly 2026"}


def test_the_new_year_comes_earlier_east_of_utc() -> None:
    group = backups(datetime(2026, 12, 31, 10), datetime(2026, 12, 31, 20))  # b1: 2027 in +08
    rules = Rules(max_backups=1, year_backups=2, month_backups=2, timezone=SHANGHAI)
    verdict = decide(group, rules, NOW)
    assert verdict.keep == {
        "b1": "newest, max_backups 1, monthly 2027-01, yearly 2027",
        "b0": "monthly 2026-12, yearly 2026",
    }


def test_equal_creation_times_are_ordered_by_id() -> None:
    same = datetime(2026, 11, 28, 6)
    group = [Candidate("a", same), Candidate("c", same), Candidate("b", same)]
    verdict = decide(group, Rules(max_backups=2), NOW)
    assert verdict.keep == {"c": "newest, max_backups 2", "b": "max_backups 2"}
    assert verdict.delete == {"a": "beyond max_backups 2"}


def test_an_empty_group_gives_an_empty_verdict() -> None:
    assert decide([], Rules(max_backups=1), NOW) == Verdict(keep={}, delete={})


def test_repeated_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct ids"):
        decide([Candidate("a", NOW), Candidate("a", NOW - timedelta(days=1))], Rules(), NOW)


def test_expiry_follows_the_age_bound_only() -> None:
    made = datetime(2026, 11, 28, 6, 0, 5)
    assert expires_at(made, Rules(retention_duration_days=7)) == datetime(2026, 12, 5, 6, 0, 5)
    assert expires_at(made, Rules(max_backups=3)) is None
    assert expires_at(made, Rules(retention_duration_days=0)) is None
    # A backup is kept at its expiry and deleted by the first run after it.
    group = [Candidate("old", made), Candidate("new", NOW)]
    at_expiry = expires_at(made, Rules(retention_duration_days=7))
    assert at_expiry is not None
    assert "old" in decide(group, Rules(retention_duration_days=7), at_expiry).keep
    after = at_expiry + timedelta(microseconds=1)
    assert "old" in decide(group, Rules(retention_duration_days=7), after).delete


# --- properties ------------------------------------------------------------------------

WORDS = {
    "day_backups": "daily",
    "week_backups": "weekly",
    "month_backups": "monthly",
    "year_backups": "yearly",
}
BUCKETS = {
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
    "monthly": lambda t: t.strftime("%Y-%m"),
    "yearly": lambda t: str(t.year),
}

timelines = st.lists(st.datetimes(datetime(2024, 12, 1), datetime(2027, 2, 1)), max_size=40).map(
    lambda times: backups(*times)
)
rule_sets = st.builds(
    Rules,
    max_backups=st.integers(-1, 12),
    retention_duration_days=st.integers(-1, 400),
    day_backups=st.integers(0, 8),
    week_backups=st.integers(0, 6),
    month_backups=st.integers(0, 6),
    year_backups=st.integers(0, 3),
    timezone=st.sampled_from([UTC, SHANGHAI, timezone(-timedelta(hours=5, minutes=30))]),
)
later = st.timedeltas(timedelta(0), timedelta(days=120))


def local(backup: Candidate, zone: tzinfo) -> datetime:
    return backup.created_at.replace(tzinfo=UTC).astimezone(zone)


def reasons(verdict: Verdict, backup_id: str) -> list[str]:
    return verdict.keep[backup_id].split(", ")


@settings(max_examples=120, deadline=None)
@given(group=timelines, rules=rule_sets, after_last=later, seed=st.randoms())
def test_every_backup_is_kept_or_deleted_the_newest_kept_and_order_is_irrelevant(
    group: list[Candidate], rules: Rules, after_last: timedelta, seed: random.Random
) -> None:
    now = max((b.created_at for b in group), default=NOW) + after_last
    verdict = decide(group, rules, now)
    ids = {b.id for b in group}
    assert set(verdict.keep) | set(verdict.delete) == ids
    assert not set(verdict.keep) & set(verdict.delete)
    if group:
        newest = max(group, key=lambda b: (b.created_at, b.id))
        assert newest.id in verdict.keep
    shuffled = list(group)
    seed.shuffle(shuffled)
    assert decide(shuffled, rules, now) == verdict


@settings(max_examples=120, deadline=None)
@given(group=timelines, rules=rule_sets, after_last=later)
def test_each_calendar_rule_keeps_the_newest_of_its_n_newest_buckets(
    group: list[Candidate], rules: Rules, after_last: timedelta
) -> None:
    now = max((b.created_at for b in group), default=NOW) + after_last
    verdict = decide(group, rules, now)
    if keeps_everything(rules):
        return
    for field, word in WORDS.items():
        bucket_of = BUCKETS[word]
        newest_in: dict[str, Candidate] = {}
        for backup in sorted(group, key=lambda b: (b.created_at, b.id)):
            newest_in[bucket_of(local(backup, rules.timezone))] = backup
        expected = sorted(newest_in, reverse=True)[: getattr(rules, field)]
        kept_for = {
            reason.split(" ", 1)[1]: backup_id
            for backup_id in verdict.keep
            for reason in reasons(verdict, backup_id)
            if reason.startswith(word + " ")
        }
        assert len(kept_for) <= getattr(rules, field)
        assert kept_for == {bucket: newest_in[bucket].id for bucket in expected}


@settings(max_examples=120, deadline=None)
@given(group=timelines, rules=rule_sets, after_last=later)
def test_a_backup_is_deleted_only_for_a_rolling_bound_and_kept_only_for_a_reason(
    group: list[Candidate], rules: Rules, after_last: timedelta
) -> None:
    now = max((b.created_at for b in group), default=NOW) + after_last
    verdict = decide(group, rules, now)
    rank = {
        b.id: n
        for n, b in enumerate(sorted(group, key=lambda b: (b.created_at, b.id), reverse=True))
    }
    created = {b.id: b.created_at for b in group}
    for backup_id in verdict.delete:
        beyond = 0 < rules.max_backups <= rank[backup_id]
        too_old = rules.retention_duration_days > 0 and created[backup_id] < now - timedelta(
            days=rules.retention_duration_days
        )
        assert beyond or too_old
    for backup_id in verdict.keep:
        in_count = rules.max_backups <= 0 or rank[backup_id] < rules.max_backups
        young = rules.retention_duration_days <= 0 or created[backup_id] >= now - timedelta(
            days=rules.retention_duration_days
        )
        own = reasons(verdict, backup_id)
        protected = "newest" in own or any(r.split(" ")[0] in BUCKETS for r in own)
        assert (in_count and young) or protected, own


@settings(max_examples=80, deadline=None)
@given(group=timelines, limit=st.integers(1, 50), after_last=later)
def test_max_backups_alone_keeps_exactly_the_newest_n(
    group: list[Candidate], limit: int, after_last: timedelta
) -> None:
    now = max((b.created_at for b in group), default=NOW) + after_last
    verdict = decide(group, Rules(max_backups=limit), now)
    newest_first = sorted(group, key=lambda b: (b.created_at, b.id), reverse=True)
    assert len(verdict.keep) == min(limit, len(group))
    assert set(verdict.keep) == {b.id for b in newest_first[:limit]}
