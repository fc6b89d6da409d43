"""Policy retention: which automatic backups of one (vault, resource) group to keep.

Pure: backups, rules and ``now`` in, a verdict with a reason for every backup out (restic's
``forget`` policy and Proxmox Backup Server's prune, as ``docs/design.md`` describes). Every
time is a naive UTC datetime. Imports only the standard library.

- The rolling set is the newest ``max_backups`` that are at most ``retention_duration_days``
  old; a backup outside it (beyond either bound) is deleted unless a rule below keeps it.
  Without either bound nothing is deleted (CBR: "kept forever"); the calendar rules only
  protect backups that a rolling bound would delete.
- ``day/week/month/year_backups = N`` keep the newest backup of each of the newest N
  calendar days, ISO weeks, months or years that hold a backup, in ``timezone``; each rule
  counts on its own (a backup may be a day's and a week's), beside ``max_backups``.
- The newest backup is always kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo


@dataclass(frozen=True)
class Candidate:
    """A backup retention may delete: the policy's own ``available`` automatic backup."""

    id: str
    created_at: datetime  # naive UTC


@dataclass(frozen=True)
class Rules:
    """A policy's ``operation_definition`` retention fields.

    A bound of 0 or less is off: CBR's -1 means off, and its documented range for a count
    starts at 1, so 0 is read as "not set" rather than "keep no backups" (which would be a
    one-keystroke way to delete a vault's history).
    """

    max_backups: int = -1
    retention_duration_days: int = -1
    day_backups: int = 0
    week_backups: int = 0
    month_backups: int = 0
    year_backups: int = 0
    timezone: tzinfo = UTC  # the calendar of the day, week, month and year buckets


@dataclass(frozen=True)
class Verdict:
    """Every candidate is in exactly one of ``keep`` and ``delete``, with its reasons."""

    keep: dict[str, str]  # id -> reasons, e.g. "newest, max_backups 3, daily 2026-11-28"
    delete: dict[str, str]  # id -> reasons, e.g. "beyond max_backups 3, older than 7 days"


# (rule field, reason word, bucket of a local time); ISO weeks run Monday to Sunday.
_CALENDAR: tuple[tuple[str, str, Callable[[datetime], str]], ...] = (
    ("day_backups", "daily", lambda t: t.strftime("%Y-%m-%d")),
    ("week_backups", "weekly", lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
    ("month_backups", "monthly", lambda t: t.strftime("%Y-%m")),
    ("year_backups", "yearly", lambda t: f"{t.year:04d}"),
)


def keeps_everything(rules: Rules) -> bool:
    """Whether ``decide`` keeps every backup whatever they are (no rolling bound is set)."""
    return rules.max_backups <= 0 and rules.retention_duration_days <= 0


def expires_at(created_at: datetime, rules: Rules) -> datetime | None:
    """When the age bound lets retention delete a backup made at ``created_at`` (it is
    deleted by the first run after that time), or None without an age bound. A calendar
    rule or ``newest`` may still keep it then; ``max_backups`` has no date."""
    if rules.retention_duration_days <= 0:
        return None
    return created_at + timedelta(days=rules.retention_duration_days)


def decide(backups: Sequence[Candidate], rules: Rules, now: datetime) -> Verdict:
    """Split ``backups`` (one group, any order, distinct ids) into keep and delete."""
    ordered = sorted(backups, key=lambda b: (b.created_at, b.id), reverse=True)
    if len({b.id for b in ordered}) != len(ordered):
        raise ValueError("retention candidates must have distinct ids")
    kept: dict[str, list[str]] = {b.id: [] for b in ordered}
    if not ordered:
        return Verdict(keep={}, delete={})
    if keeps_everything(rules):
        return Verdict(
            keep={b.id: "no max_backups or retention_duration_days" for b in ordered}, delete={}
        )
    kept[ordered[0].id].append("newest")
    dropped = _apply_rolling(ordered, rules, now, kept)
    _apply_calendar(ordered, rules, kept)
    return Verdict(
        keep={b.id: ", ".join(kept[b.id]) for b in ordered if kept[b.id]},
        delete={b.id: ", ".join(dropped[b.id]) for b in ordered if not kept[b.id]},
    )


def _apply_rolling(
    ordered: list[Candidate], rules: Rules, now: datetime, kept: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Mark the rolling set kept; return each backup's rolling violations."""
    dropped: dict[str, list[str]] = {b.id: [] for b in ordered}
    oldest_allowed = now - timedelta(days=rules.retention_duration_days)
    for position, backup in enumerate(ordered):
        if rules.max_backups > 0 and position >= rules.max_backups:
            dropped[backup.id].append(f"beyond max_backups {rules.max_backups}")
        if rules.retention_duration_days > 0 and backup.created_at < oldest_allowed:
            dropped[backup.id].append(f"older than {rules.retention_duration_days} days")
        if not dropped[backup.id]:
            kept[backup.id].append(_rolling_reason(rules))
    return dropped


def _rolling_reason(rules: Rules) -> str:
    bounds = []
    if rules.max_backups > 0:
        bounds.append(f"max_backups {rules.max_backups}")
    if rules.retention_duration_days > 0:
        bounds.append(f"within {rules.retention_duration_days} days")
    return ", ".join(bounds)


def _apply_calendar(ordered: list[Candidate], rules: Rules, kept: dict[str, list[str]]) -> None:
    """Keep the newest backup of each of the newest N non-empty buckets, rule by rule."""
    local = {b.id: b.created_at.replace(tzinfo=UTC).astimezone(rules.timezone) for b in ordered}
    for field, word, bucket_of in _CALENDAR:
        wanted: int = getattr(rules, field)
        seen: set[str] = set()
        for backup in ordered:  # newest first: the first backup of a bucket is its newest
            if len(seen) >= wanted:
                break
            bucket = bucket_of(local[backup.id])
            if bucket not in seen:
                seen.add(bucket)
                kept[backup.id].append(f"{word} {bucket}")
