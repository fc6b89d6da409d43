"""The run's output: issue 6's targets (and issue 13's scheduler targets) checked, a terminal
table, a JSON file, a PNG chart.

Every ratio is opencbr's throughput over the peer's, both measured as the dataset's
logical size over wall time in the same run (the issue's definition), so a ratio above 1
means opencbr was faster.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import MiB, Result

RSS_LIMIT = 300_000_000  # "300 MB"; decimal, the stricter reading
LIST_P99_MS, REPLICATE_P99_MS = 50.0, 100.0
SCHEDULED_VAULTS, SLOT_DEADLINE_S = 10_000, 60.0  # issue 13: checkpoints of a shared slot
# (opencbr operation, peer key, minimum ratio of opencbr's throughput to the peer's)
THROUGHPUT_TARGETS = (
    ("backup_full", "restic.backup_full", 1.5),
    ("backup_full", "borg.backup_full", 1.5),
    ("backup_incremental", "restic.backup_incremental", 1.0),
    ("backup_small_files", "restic.backup_small_files", 1.0),
    ("backup_small_1pct", "restic.backup_small_1pct", 2.0),
    ("replication_full", "cp.copy_chunk_dir", 0.8),
    ("replication_full", "restic.copy_full", 10.0),
)
# Issue 18 (encryption at rest; bench/encryption.py): (opencbr operation, the key it is
# compared with, minimum ratio of throughputs, what the target means). "Same speed" within
# a project is read as at least 0.9x: the spread of repeated runs on this machine.
ENCRYPTION_TARGETS = (
    ("backup_full_encrypted", "opencbr.backup_full_plain", 0.9, "encrypted backup"),
    ("backup_full_encrypted", "restic.backup_full", 1.5, "restic always encrypts"),
    (
        "migration_encrypted",
        "opencbr.migration_plain",
        0.9,
        "within a project (migrateresources): same speed, within 10%",
    ),
    ("replication_encrypted", "opencbr.replication_plain", 0.7, "across projects"),
)
ENCRYPTION_ROWS = (
    ("backup_full", "full backup, fresh vault"),
    ("replication", "replication across projects"),
    ("migration", "migrateresources within a project (ciphertext copied as is)"),
)
PEERS_OF = {
    "backup_full": ("restic.backup_full", "borg.backup_full"),
    "backup_full_encrypted": ("restic.backup_full", "borg.backup_full"),
    "backup_incremental": ("restic.backup_incremental", "borg.backup_incremental"),
    "backup_small_files": ("restic.backup_small_files", "borg.backup_small_files"),
    "backup_small_10pct": ("restic.backup_small_10pct", "borg.backup_small_10pct"),
    "backup_small_1pct": ("restic.backup_small_1pct", "borg.backup_small_1pct"),
    "replication_full": ("cp.copy_chunk_dir", "restic.copy_full"),
}


@dataclass(frozen=True)
class Target:
    name: str
    value: str
    met: bool | None  # None: not measured in this run

    def to_json(self) -> dict[str, Any]:
        return {"target": self.name, "value": self.value, "met": self.met}


# --- targets ---------------------------------------------------------------------------


def _ratio(results: dict[str, Result], mine: str, peer: str) -> float | None:
    a, b = results.get(f"opencbr.{mine}"), results.get(peer)
    if a is None or b is None or not b.mib_per_s:
        return None
    return a.mib_per_s / b.mib_per_s


def _ratio_target(
    results: dict[str, Result], mine: str, other: str, minimum: float, meaning: str = ""
) -> Target:
    ratio = _ratio(results, mine, other)
    name = f"{mine} >= {minimum:g} x {other}" + (f" ({meaning})" if meaning else "")
    value = f"{ratio:.{_digits(ratio, minimum)}f} x" if ratio is not None else "not measured"
    return Target(name, value, None if ratio is None else ratio >= minimum)


def _digits(ratio: float, minimum: float) -> int:
    """Two decimals, three where two would print the limit itself (0.8975 is missed)."""
    return 3 if f"{ratio:.2f}" == f"{minimum:.2f}" else 2


def _throughput_targets(results: dict[str, Result]) -> list[Target]:
    return [_ratio_target(results, *target) for target in THROUGHPUT_TARGETS]


def _encryption_targets(results: dict[str, Result]) -> list[Target]:
    return [_ratio_target(results, *target) for target in ENCRYPTION_TARGETS]


def _incremental_replication_target(results: dict[str, Result]) -> Target:
    name = "incremental replication bytes moved <= 1.1 x new unique chunk bytes"
    replica = results.get("opencbr.replication_incremental")
    backup = results.get("opencbr.backup_incremental")
    if replica is None or backup is None or replica.moved_bytes is None or not backup.moved_bytes:
        return Target(name, "not measured", None)
    ratio = replica.moved_bytes / backup.moved_bytes
    value = f"{replica.moved_bytes / MiB:.1f} / {backup.moved_bytes / MiB:.1f} MiB = {ratio:.2f}"
    return Target(name, value, ratio <= 1.1)


def _small_increment_targets(results: dict[str, Result]) -> list[Target]:
    """Issue 17: the 10%-changed increment stores at most 0.3x restic's; the 1%-changed
    one is at least 5x faster than opencbr's full backup of the tree."""
    stored_name = "backup_small_10pct stored bytes <= 0.3 x restic.backup_small_10pct"
    mine, peer = results.get("opencbr.backup_small_10pct"), results.get("restic.backup_small_10pct")
    if mine is None or peer is None or mine.moved_bytes is None or not peer.moved_bytes:
        stored = Target(stored_name, "not measured", None)
    else:
        ratio = mine.moved_bytes / peer.moved_bytes
        value = f"{mine.moved_bytes / MiB:.1f} / {peer.moved_bytes / MiB:.1f} MiB = {ratio:.2f}"
        stored = Target(stored_name, value, ratio <= 0.3)
    speed_name = "backup_small_1pct >= 5 x faster than backup_small_files"
    full, increment = (
        results.get("opencbr.backup_small_files"),
        results.get("opencbr.backup_small_1pct"),
    )
    if full is None or increment is None or increment.seconds <= 0:
        return [stored, Target(speed_name, "not measured", None)]
    speedup = full.seconds / increment.seconds
    return [stored, Target(speed_name, f"{speedup:.2f} x", speedup >= 5.0)]


def _latency_targets(load: dict[str, Any] | None) -> list[Target]:
    """Judged with one client (the latency of a request, not of a queue of them)."""
    wanted = (("list_backups", LIST_P99_MS), ("replicate", REPLICATE_P99_MS))
    scenarios = {(s["name"], s["concurrency"]): s for s in (load or {}).get("scenarios", [])}
    targets = []
    for name, limit in wanted:
        scenario = scenarios.get((name, 1))
        label = f"{name} p99 < {limit:g} ms (1 client)"
        if name == "replicate" and load and load.get("backups_replicated_vault"):
            backups = load["backups_replicated_vault"]
            label = f"{name} p99 < {limit:g} ms (1 client, {backups:,} backups)"
        if scenario is None or scenario["errors"]:
            reason = "not measured" if scenario is None else f"{scenario['errors']} errors"
            targets.append(Target(label, reason, None if scenario is None else False))
        else:
            value = f"{scenario['p99_ms']:.1f} ms"
            targets.append(Target(label, value, scenario["p99_ms"] < limit))
    return targets


def _rss_target(
    results: list[Result], load: dict[str, Any] | None, schedule: dict[str, Any] | None
) -> Target:
    peaks = {r.key: r.peak_rss_bytes for r in results if r.tool == "opencbr" and r.peak_rss_bytes}
    if load and load.get("server_peak_rss_bytes"):
        peaks["opencbr.api_load"] = load["server_peak_rss_bytes"]
    if schedule and schedule.get("server_peak_rss_bytes"):
        peaks["opencbr.schedule"] = schedule["server_peak_rss_bytes"]
    if not peaks:
        return Target("opencbr peak RSS < 300 MB", "not measured", None)
    worst = max(peaks, key=lambda key: peaks[key])
    value = f"max {peaks[worst] / 1e6:.0f} MB ({worst})"
    return Target("opencbr peak RSS < 300 MB", value, peaks[worst] < RSS_LIMIT)


def _checkpoints_target(schedule: dict[str, Any] | None) -> Target:
    vaults = schedule["vaults"] if schedule else SCHEDULED_VAULTS
    name = f"{vaults:,} vault checkpoints within {SLOT_DEADLINE_S:g} s of the slot"
    if schedule is None:
        return Target(name, "not measured", None)
    made, last = schedule["checkpoints"], schedule["last_checkpoint_after_s"]
    if made < vaults or last is None:
        return Target(name, f"{made:,} of {vaults:,} after {schedule['timeline'][-1][0]} s", False)
    claims = [run["claimed_after_s"] for run in schedule["runs"]]
    value = f"last at {last:.1f} s (runs claimed at {min(claims):.1f}-{max(claims):.1f} s)"
    return Target(name, value, last <= SLOT_DEADLINE_S)


def _slot_latency_target(schedule: dict[str, Any] | None) -> Target:
    name = f"list_backups p99 < {LIST_P99_MS:g} ms while the slot's checkpoints are created"
    window = schedule.get("list_during_slot") if schedule else None
    if schedule is None or not window or not window["requests"]:
        return Target(name, "not measured", None if schedule is None else False)
    rest = schedule["list_at_rest"]
    value = (
        f"{window['p99_ms']:.1f} ms over {window['requests']} requests "
        f"(at rest {rest['p99_ms']:.1f} ms)"
    )
    return Target(name, value, window["p99_ms"] < LIST_P99_MS and not window["errors"])


def _tick_target(schedule: dict[str, Any] | None) -> Target:
    """The tick's statements with every vault bound and with one vault per policy: the
    same number means they grow with the due policies only."""
    name = "scheduler tick: SQL statements do not grow with the bound vaults"
    if schedule is None:
        return Target(name, "not measured", None)
    tick = schedule["tick"]
    many, few = tick["every_vault_bound"], tick["one_vault_per_policy"]
    per_policy = tick["bound_vaults"] // tick["due_policies"]
    value = (
        f"{many['statements']} for {tick['due_policies']} due policies x {per_policy:,} "
        f"vaults, {few['statements']} x 1 vault, {tick['nothing_due']['statements']} "
        "with nothing due"
    )
    return Target(name, value, many["statements"] == few["statements"])


def targets(
    results: list[Result], load: dict[str, Any] | None, schedule: dict[str, Any] | None = None
) -> list[Target]:
    by_key = {result.key: result for result in results}
    return [
        *_throughput_targets(by_key),
        *_encryption_targets(by_key),
        _incremental_replication_target(by_key),
        *_small_increment_targets(by_key),
        *_latency_targets(load),
        _checkpoints_target(schedule),
        _slot_latency_target(schedule),
        _tick_target(schedule),
        _rss_target(results, load, schedule),
    ]


# --- terminal table ----------------------------------------------------------------------


def _ratios_text(results: dict[str, Result], result: Result) -> str:
    if result.tool != "opencbr":
        return ""
    parts = []
    for peer in PEERS_OF.get(result.operation, ()):
        ratio = _ratio(results, result.operation, peer)
        if ratio is not None:
            parts.append(f"{ratio:.2f}x {peer.split('.')[0]}")
    return ", ".join(parts)


def _mib(value: int | None) -> str:
    return f"{value / MiB:.1f}" if value is not None else "-"


def results_table(results: list[Result]) -> list[list[str]]:
    by_key = {result.key: result for result in results}
    header = ["tool", "operation", "seconds", "MiB/s", "moved MiB", "peak RSS MiB", "opencbr/peer"]
    rows = [header]
    for r in results:
        rows.append(
            [
                r.tool,
                r.operation,
                f"{r.seconds:.2f}",
                f"{r.mib_per_s:.0f}",
                _mib(r.moved_bytes),
                _mib(r.peak_rss_bytes),
                _ratios_text(by_key, r),
            ]
        )
    return rows


def load_table(load: dict[str, Any]) -> list[list[str]]:
    rows = [["request", "clients", "requests", "req/s", "p50 ms", "p99 ms", "errors"]]
    for s in load.get("scenarios", []):
        rows.append(
            [
                s["name"],
                str(s["concurrency"]),
                str(s["requests"]),
                f"{s['req_per_s']:.1f}" if s["req_per_s"] < 10 else f"{s['req_per_s']:.0f}",
                f"{s['p50_ms']:.1f}",
                f"{s['p99_ms']:.1f}",
                str(s["errors"]),
            ]
        )
    return rows


def _seconds_range(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f} s" if values else "-"


def _latency_text(summary: dict[str, Any] | None) -> str:
    if not summary or not summary.get("requests"):
        return "not measured"
    return (
        f"p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, "
        f"max {summary['max_ms']:.1f} ms ({summary['requests']} requests)"
    )


def schedule_table(schedule: dict[str, Any]) -> list[list[str]]:
    """The scheduler measurement: times are seconds after the slot."""
    tick = schedule["tick"]
    many, few = tick["every_vault_bound"], tick["one_vault_per_policy"]
    kinds = ", ".join(f"{kind} {n}" for kind, n in many["by_kind"].items())
    made, last = schedule["checkpoints"], schedule["last_checkpoint_after_s"]
    first_claim = min((run["claimed_after_s"] for run in schedule["runs"]), default=None)
    rate = (
        f"{made / (last - first_claim):.0f} checkpoints/s from the first claim"
        if last is not None and first_claim is not None and last > first_claim
        else "-"
    )
    by_status = ", ".join(f"{k} {v}" for k, v in sorted(schedule["backups_by_status"].items()))
    rows = [
        ["schedule", "value"],
        [
            "setup",
            f"{schedule['vaults']:,} vaults, {schedule['policies']} policies, "
            f"{schedule['database']}; seeded in {schedule['seed_seconds']:.1f} s; "
            f"server up {schedule['server_up_before_slot_s']:.1f} s before the slot",
        ],
        ["runs claimed", _seconds_range([run["claimed_after_s"] for run in schedule["runs"]])],
        [
            "checkpoints created",
            f"{made:,}: first {schedule['first_checkpoint_after_s']} s, last {last} s; {rate}",
        ],
        [
            "tick, every vault bound",
            f"{many['statements']} statements, {many['milliseconds']:.0f} ms ({kinds})",
        ],
        [
            "tick, one vault per policy",
            f"{few['statements']} statements, {few['milliseconds']:.0f} ms",
        ],
        ["tick, nothing due", f"{tick['nothing_due']['statements']} statements"],
        ["list_backups at rest", _latency_text(schedule["list_at_rest"])],
        ["list_backups during the slot", _latency_text(schedule["list_during_slot"])],
        ["backups when stopped", by_status or "-"],
        ["server peak RSS", f"{schedule['server_peak_rss_bytes'] / MiB:.0f} MiB"],
    ]
    return rows


def encryption_table(results: list[Result], encryption: dict[str, Any]) -> list[list[str]]:
    """Encrypted against unencrypted regions (medians), and the AEAD alone."""
    by_key = {result.key: result for result in results}
    repeats = encryption["repeats"]
    header = [f"encryption (median of {repeats})", "encrypted", "unencrypted", "ratio"]
    rows = [header]
    for operation, label in ENCRYPTION_ROWS:
        mine, plain = (
            by_key.get(f"opencbr.{operation}_encrypted"),
            by_key.get(f"opencbr.{operation}_plain"),
        )
        if mine is None or plain is None:
            continue
        ratio = _ratio(by_key, f"{operation}_encrypted", plain.key)
        rows.append([label, _speed(mine), _speed(plain), f"{ratio:.2f}x" if ratio else "-"])
    aead = ", ".join(f"{name} {rate:.2f}" for name, rate in encryption["aead_gib_per_s"].items())
    rows.append(["AEAD alone, GiB/s (1 MiB buffers, 1 thread)", aead, "", ""])
    return rows


def _speed(result: Result) -> str:
    """The median's seconds and MiB/s, and the range of every run's seconds."""
    each = result.extra.get("seconds_each") or [result.seconds]
    spread = f" ({min(each):.2f}-{max(each):.2f})" if len(each) > 1 else ""
    return f"{result.seconds:.2f} s{spread}, {result.mib_per_s:.0f} MiB/s"


def format_table(rows: list[list[str]], markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        lines.insert(1, "|" + "|".join(" --- " for _ in rows[0]) + "|")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def render(
    results: list[Result],
    load: dict[str, Any] | None,
    goals: list[Target],
    markdown: bool = False,
    schedule: dict[str, Any] | None = None,
    encryption: dict[str, Any] | None = None,
) -> str:
    parts = [format_table(results_table(results), markdown)] if results else []
    if encryption:
        parts.append(format_table(encryption_table(results, encryption), markdown))
    if load and load.get("scenarios"):
        parts.append(format_table(load_table(load), markdown))
    if schedule:
        parts.append(format_table(schedule_table(schedule), markdown))
    if load and not load.get("replication_available", True):
        parts.append("replication: not available (POST /checkpoints/replicate is not served)")
    marks = {True: "met   ", False: "MISSED", None: "n/a   "}
    bullet = "- " if markdown else ""
    parts.append("\n".join(f"{bullet}[{marks[t.met]}] {t.name}: {t.value}" for t in goals))
    return "\n\n".join(parts)


# --- files -------------------------------------------------------------------------------


def write_json(
    path: Path,
    meta: dict[str, Any],
    results: list[Result],
    load: dict[str, Any] | None,
    goals: list[Target],
    schedule: dict[str, Any] | None = None,
    encryption: dict[str, Any] | None = None,
) -> None:
    payload = {
        "meta": meta,
        "results": [result.to_json() for result in results],
        "load": load,
        "schedule": schedule,
        "encryption": encryption,
        "targets": [goal.to_json() for goal in goals],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def read_json(
    path: Path,
) -> tuple[list[Result], dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """The results, the API load, the scheduler and the encryption measurements of a saved
    run."""
    payload = json.loads(path.read_text())
    results = [
        Result(
            r["tool"],
            r["operation"],
            r["seconds"],
            r["logical_bytes"],
            r["moved_bytes"],
            r["peak_rss_bytes"],
            r["extra"],
        )
        for r in payload["results"]
    ]
    return results, payload.get("load"), payload.get("schedule"), payload.get("encryption")


if __name__ == "__main__":
    # `python -m bench.report results/latest.json [--markdown]`: the tables again, e.g.
    # for the README, from a saved run.
    saved, saved_load, saved_schedule, saved_encryption = read_json(Path(sys.argv[1]))
    goals = targets(saved, saved_load, saved_schedule)
    markdown = "--markdown" in sys.argv
    print(render(saved, saved_load, goals, markdown, saved_schedule, saved_encryption))
