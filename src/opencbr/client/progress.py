"""Following work until it ends (`--wait`): a live bar per step on a terminal (bytes
done/total, rate, ETA; plus a total when there are several steps), plain lines elsewhere.

`OPENCBR_PROGRESS` picks the display: `auto` (the default: bars when stderr is a
terminal), `bar` or `plain`. Plain mode prints a line when a step is first seen, every
`OPENCBR_PROGRESS_INTERVAL` seconds (default 10) while it runs, and when it ends. Both
write to stderr, so stdout keeps the command's result (`-f json` stays parseable).
"""

from __future__ import annotations

import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)

from opencbr.client.http import ApiError, ClientError

# Statuses of operation logs, replication records and backups that end the work.
SUCCEEDED = frozenset({"success", "available", "skipped"})
FAILED = frozenset({"failed", "fail", "error", "timeout"})
# Polls start quick (short work ends without a wasted second) and slow down to 1 s.
FIRST_POLL_SECONDS, POLL_SECONDS = 0.2, 1.0
UNREACHABLE_SECONDS = 120.0  # how long --wait rides out a server that does not answer


@dataclass
class Step:
    """One piece of work as last seen: a backup, a restore, a replication record."""

    key: str
    label: str
    status: str
    done: int = 0
    total: int | None = None  # None until the server knows it
    reason: str = ""  # why it failed

    @property
    def ended(self) -> bool:
        return self.status in SUCCEEDED or self.status in FAILED

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    @property
    def percent(self) -> int:
        if self.status in SUCCEEDED:
            return 100
        return min(100, self.done * 100 // self.total) if self.total else 0


def mode(environ: Mapping[str, str] | None = None) -> str:
    """`bar` or `plain`, from OPENCBR_PROGRESS (`auto`: bars on a terminal)."""
    env = os.environ if environ is None else environ
    wanted = env.get("OPENCBR_PROGRESS", "auto").strip().lower() or "auto"
    if wanted not in ("auto", "bar", "plain"):
        raise ClientError("OPENCBR_PROGRESS must be auto, bar or plain")
    if wanted == "auto":
        return "bar" if sys.stderr.isatty() else "plain"
    return wanted


def follow(
    poll: Callable[[], list[Step]], *, timeout: float | None = None, what: str = "work"
) -> list[Step]:
    """Poll until every step has ended (and there is at least one); show them meanwhile.
    Returns the last steps. Raises ClientError when `timeout` seconds pass first."""
    view: _View = _Bars() if mode() == "bar" else _Lines(_interval())
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = FIRST_POLL_SECONDS
    unreachable_since: float | None = None
    steps: list[Step] = []
    with view:
        while True:
            try:
                steps = poll()
                unreachable_since = None
            except ClientError as exc:
                # A server restarting (its work resumes) is waited for; a refusal is not.
                if isinstance(exc, ApiError) and exc.status < 500:
                    raise
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > UNREACHABLE_SECONDS:
                    raise
            view.show(steps)
            if steps and all(step.ended for step in steps):
                return steps
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(
                    f"gave up waiting after {timeout:g} s; the {what} goes on on the server"
                )
            time.sleep(pause)
            pause = min(pause * 1.5, POLL_SECONDS)


def _interval() -> float:
    raw = os.environ.get("OPENCBR_PROGRESS_INTERVAL", "10")
    try:
        seconds = float(raw)
    except ValueError:
        raise ClientError("OPENCBR_PROGRESS_INTERVAL must be a number of seconds") from None
    return max(seconds, 0.5)


class _View(ABC):
    """How `--wait` shows the steps it follows: bars or plain lines."""

    def __enter__(self) -> _View:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @abstractmethod
    def show(self, steps: list[Step]) -> None:
        """Show the steps' latest state."""


class _Bars(_View):
    """rich bars on stderr, forced to a terminal's behaviour (OPENCBR_PROGRESS=bar)."""

    def __init__(self) -> None:
        self.console = Console(stderr=True, force_terminal=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(binary_units=True),
            # Rate and ETA from the first sample seen: the server reports every 2 s, too
            # seldom for rich's own speed estimate, which needs several recent samples.
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"),
            console=self.console,
            refresh_per_second=4,
        )
        self.tasks: dict[str, TaskID] = {}
        self.first: dict[str, tuple[float, int]] = {}
        self.total: TaskID | None = None

    def __enter__(self) -> _Bars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def show(self, steps: list[Step]) -> None:
        for step in steps:
            if step.key not in self.tasks:
                self.tasks[step.key] = self.progress.add_task(
                    step.label, total=step.total, rate="", eta=""
                )
            rate, eta = self._pace(step.key, step.done, step.total, step.ended)
            self.progress.update(
                self.tasks[step.key],
                completed=step.done,
                total=step.total,
                description=_described(step),
                rate=rate,
                eta=eta,
            )
        if len(steps) > 1:
            self._show_total(steps)

    def _pace(self, key: str, done: int, total: int | None, ended: bool) -> tuple[str, str]:
        """Rate since the first sample of `key`, and the time left at that rate."""
        now = time.monotonic()
        first_at, first_done = self.first.setdefault(key, (now, done))
        elapsed = now - first_at
        rate = (done - first_done) / elapsed if elapsed > 0 else 0.0
        if rate <= 0:
            return "", ""
        left = "" if ended or not total else _duration(max(total - done, 0) / rate)
        return f"{human_bytes(int(rate))}/s", left

    def _show_total(self, steps: list[Step]) -> None:
        known = all(step.total is not None for step in steps)
        total = sum(step.total or 0 for step in steps) if known else None
        done = sum(step.done for step in steps)
        ended = sum(step.ended for step in steps)
        description = f"total ({ended}/{len(steps)} done)"
        if self.total is None:
            self.total = self.progress.add_task(description, total=total, rate="", eta="")
        rate, eta = self._pace("\0total", done, total, ended == len(steps))
        self.progress.update(
            self.total, completed=done, total=total, description=description, rate=rate, eta=eta
        )


def _described(step: Step) -> str:
    if step.failed:
        return f"{step.label} [red]failed[/red]"
    if step.ended:
        return f"{step.label} [green]done[/green]"
    return f"{step.label} ({step.status})"


@dataclass
class _Seen:
    first_at: float
    first_done: int
    printed_at: float
    ended: bool = False


class _Lines(_View):
    """One plain line per step when first seen, every `interval` seconds, and at its end."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.seen: dict[str, _Seen] = {}
        self.start = time.monotonic()
        self.out = sys.stderr

    def show(self, steps: list[Step]) -> None:
        now = time.monotonic()
        for step in steps:
            seen = self.seen.get(step.key)
            if seen is None:
                seen = self.seen[step.key] = _Seen(now, step.done, now)
                self._print(step, seen, now)
            elif step.ended and not seen.ended:
                seen.ended = True
                self._print(step, seen, now)
            elif not step.ended and now - seen.printed_at >= self.interval:
                seen.printed_at = now
                self._print(step, seen, now)

    def _print(self, step: Step, seen: _Seen, now: float) -> None:
        print(f"{_stamp()} {step.label}: {_state(step, seen, now)}", file=self.out, flush=True)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state(step: Step, seen: _Seen, now: float) -> str:
    if step.failed:
        return f"failed: {step.reason}" if step.reason else "failed"
    amount = human_bytes(step.done)
    if step.total:
        amount = f"{step.percent}% {human_bytes(step.done)} of {human_bytes(step.total)}"
    if step.ended:
        return f"done, {human_bytes(step.done)}"
    elapsed = now - seen.first_at
    rate = (step.done - seen.first_done) / elapsed if elapsed > 0 else 0.0
    parts = [step.status, amount]
    if rate > 0:
        parts.append(f"{human_bytes(int(rate))}/s")
        if step.total:
            parts.append(f"ETA {_duration((step.total - step.done) / rate)}")
    return ", ".join(parts)


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # not reached


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
