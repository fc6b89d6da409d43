"""The PNG chart: throughput per operation and tool, API latency, peak RSS.

matplotlib is the `bench` optional dependency; it is imported here only, with the Agg
backend (no display on the project's machines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.measure import MiB, Result
from bench.report import LIST_P99_MS, REPLICATE_P99_MS, RSS_LIMIT

GROUPS = {
    "backup_full": "full backup",
    "backup_incremental": "incremental",
    "backup_small_files": "small files",
    "backup_small_10pct": "small files, 10% changed",
    "backup_small_1pct": "small files, 1% changed",
    "restore": "restore",
    "replication_full": "full copy",
    "copy_full": "full copy",
    "copy_chunk_dir": "full copy",
    "replication_incremental": "incr. replication",
    "backup_full_encrypted": "backup enc.",
    "backup_full_plain": "backup plain",
    "replication_encrypted": "repl. enc.",
    "replication_plain": "repl. plain",
    "migration_encrypted": "migr. enc.",
    "migration_plain": "migr. plain",
}
COLOURS = {"opencbr": "#1f77b4", "restic": "#ff7f0e", "borg": "#2ca02c", "cp": "#7f7f7f"}


def _throughput(axis: Any, results: list[Result]) -> None:
    groups = list(dict.fromkeys(GROUPS.get(r.operation, r.operation) for r in results))
    tools = list(dict.fromkeys(r.tool for r in results))
    width = 0.8 / max(1, len(tools))
    for slot, tool in enumerate(tools):
        for r in (r for r in results if r.tool == tool):
            x = groups.index(GROUPS.get(r.operation, r.operation)) + (slot - len(tools) / 2) * width
            axis.bar(x + width / 2, r.mib_per_s, width, color=COLOURS.get(tool, "black"))
            axis.text(x + width / 2, r.mib_per_s, f"{r.mib_per_s:.0f}", ha="center", fontsize=7)
    axis.set_xticks(range(len(groups)), groups, rotation=20, fontsize=8)
    axis.set_ylabel("MiB/s (logical size / wall time)")
    axis.set_title("Throughput")
    from matplotlib.patches import Patch

    handles = [Patch(color=COLOURS.get(tool, "black"), label=tool) for tool in tools]
    axis.legend(handles=handles, fontsize=8)


def _latency(axis: Any, load: dict[str, Any]) -> None:
    scenarios = load.get("scenarios", [])
    labels = [f"{s['name']}\n{s['concurrency']} client(s)" for s in scenarios]
    xs = range(len(scenarios))
    axis.bar([x - 0.2 for x in xs], [s["p50_ms"] for s in scenarios], 0.4, label="p50")
    axis.bar([x + 0.2 for x in xs], [s["p99_ms"] for s in scenarios], 0.4, label="p99")
    axis.axhline(LIST_P99_MS, color="red", linestyle=":", label="list target")
    axis.axhline(REPLICATE_P99_MS, color="purple", linestyle=":", label="replicate target")
    axis.set_yscale("log")
    axis.set_xticks(list(xs), labels, fontsize=7)
    axis.set_ylabel("ms")
    axis.set_title("API latency")
    axis.legend(fontsize=8)


def _rss(axis: Any, results: list[Result], load: dict[str, Any] | None) -> None:
    pairs = [(r.key, r.peak_rss_bytes) for r in results if r.peak_rss_bytes]
    if load and load.get("server_peak_rss_bytes"):
        pairs.append(("opencbr.api_load", load["server_peak_rss_bytes"]))
    colours = [COLOURS.get(key.split(".")[0], "black") for key, _ in pairs]
    axis.barh([key for key, _ in pairs], [value / MiB for _, value in pairs], color=colours)
    axis.axvline(RSS_LIMIT / MiB, color="red", linestyle=":", label="300 MB")
    axis.tick_params(axis="y", labelsize=7)
    axis.set_xlabel("MiB")
    axis.set_title("Peak RSS")
    axis.legend(fontsize=8)


def write_png(path: Path, results: list[Result], load: dict[str, Any] | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    panels = 3 if load and load.get("scenarios") else 2
    figure, axes = pyplot.subplots(1, panels, figsize=(6 * panels, 5.5))
    _throughput(axes[0], results)
    if panels == 3:
        _latency(axes[1], load or {})
    _rss(axes[-1], results, load)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
