"""The run's output: issue 6's targets checked, a terminal table, a JSON file, a PNG chart.

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
# (opencbr operation, peer key, minimum ratio of opencbr's throughput to the peer's)
THROUGHPUT_TARGETS = (
    ("backup_full", "restic.backup_full", 1.5),
    ("backup_full", "borg.backup_full", 1.5),
    ("backup_incremental", "restic.backup_incremental", 1.0),
    ("backup_small_files", "restic.backup_small_files", 1.0),
    ("replication_full", "cp.copy_chunk_dir", 0.8),
    ("replication_full", "restic.copy_full", 10.0),
)
PEERS_OF = {
    "backup_full": ("restic.backup_full", "borg.backup_full"),
    "backup_incremental": ("restic.backup_incremental", "borg.backup_incremental"),
    "backup_small_files": ("restic.backup_small_files", "borg.backup_small_files"),
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


def _throughput_targets(results: dict[str, Result]) -> list[Target]:
    targets = []
    for mine, peer, minimum in THROUGHPUT_TARGETS:
        ratio = _ratio(results, mine, peer)
        name = f"{mine} >= {minimum:g} x {peer}"
        value = f"{ratio:.2f} x" if ratio is not None else "not measured"
        targets.append(Target(name, value, None if ratio is None else ratio >= minimum))
    return targets


def _incremental_replication_target(results: dict[str, Result]) -> Target:
    name = "incremental replication bytes moved <= 1.1 x new unique chunk bytes"
    replica = results.get("opencbr.replication_incremental")
    backup = results.get("opencbr.backup_incremental")
    if replica is None or backup is None or replica.moved_bytes is None or not backup.moved_bytes:
        return Target(name, "not measured", None)
    ratio = replica.moved_bytes / backup.moved_bytes
    value = f"{replica.moved_bytes / MiB:.1f} / {backup.moved_bytes / MiB:.1f} MiB = {ratio:.2f}"
    return Target(name, value, ratio <= 1.1)


def _latency_targets(load: dict[str, Any] | None) -> list[Target]:
    """Judged with one client (the latency of a request, not of a queue of them)."""
    wanted = (("list_backups", LIST_P99_MS), ("replicate", REPLICATE_P99_MS))
    scenarios = {(s["name"], s["concurrency"]): s for s in (load or {}).get("scenarios", [])}
    targets = []
    for name, limit in wanted:
        scenario = scenarios.get((name, 1))
        label = f"{name} p99 < {limit:g} ms (1 client)"
        if scenario is None or scenario["errors"]:
            reason = "not measured" if scenario is None else f"{scenario['errors']} errors"
            targets.append(Target(label, reason, None if scenario is None else False))
        else:
            value = f"{scenario['p99_ms']:.1f} ms"
            targets.append(Target(label, value, scenario["p99_ms"] < limit))
    return targets


def _rss_target(results: list[Result], load: dict[str, Any] | None) -> Target:
    peaks = {r.key: r.peak_rss_bytes for r in results if r.tool == "opencbr" and r.peak_rss_bytes}
    if load and load.get("server_peak_rss_bytes"):
        peaks["opencbr.api_load"] = load["server_peak_rss_bytes"]
    if not peaks:
        return Target("opencbr peak RSS < 300 MB", "not measured", None)
    worst = max(peaks, key=lambda key: peaks[key])
    value = f"max {peaks[worst] / 1e6:.0f} MB ({worst})"
    return Target("opencbr peak RSS < 300 MB", value, peaks[worst] < RSS_LIMIT)


def targets(results: list[Result], load: dict[str, Any] | None) -> list[Target]:
    by_key = {result.key: result for result in results}
    return [
        *_throughput_targets(by_key),
        _incremental_replication_target(by_key),
        *_latency_targets(load),
        _rss_target(results, load),
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
    results: list[Result], load: dict[str, Any] | None, goals: list[Target], markdown: bool = False
) -> str:
    parts = [format_table(results_table(results), markdown)] if results else []
    if load and load.get("scenarios"):
        parts.append(format_table(load_table(load), markdown))
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
) -> None:
    payload = {
        "meta": meta,
        "results": [result.to_json() for result in results],
        "load": load,
        "targets": [goal.to_json() for goal in goals],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def read_json(path: Path) -> tuple[list[Result], dict[str, Any] | None]:
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
    return results, payload.get("load")


if __name__ == "__main__":
    # `python -m bench.report results/latest.json [--markdown]`: the tables again, e.g.
    # for the README, from a saved run.
    saved, saved_load = read_json(Path(sys.argv[1]))
    print(render(saved, saved_load, targets(saved, saved_load), "--markdown" in sys.argv))
