"""`python -m bench`: every measurement of issue 6 in one run, on the same data.

Order of the run (each step only when selected by --only, plus what it depends on):
  1. the dataset (generated once per scale and seed, then cached in the workdir)
  2. full backups: opencbr, restic, borg
  3. copies of the full backup: opencbr replication, `restic copy`, `cp -r` + `sync`
  4. opencbr restore of the full backup into an empty directory
  5. encryption at rest (issue 18): full backup, replication into another project and
     migration within the project, in encrypted and in unencrypted regions of the same
     server, repeated; the AEAD's raw speed (`encryption.py`)
  6. the mutation, then incremental backups (opencbr, restic, borg) and opencbr's
     incremental replication
  7. the many-small-files tree (a copy): full backups, then 10% of its files changed in
     place and incremental backups (stored bytes), then 1% and again (time): opencbr,
     restic, borg
  8. API load against a separate API-only server with seeded backups
  9. the policy scheduler at scale (issue 13): 10,000 vaults whose policies share a slot,
     against a server with its embedded worker (`schedule.py`)
Then the table on stdout, the JSON file and the PNG chart.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import dataset, encryption, load, peers, report, schedule
from bench.client import Api
from bench.measure import (
    INODE_REUSE_SECONDS,
    Result,
    load_average,
    read_tree,
    remove_tree,
    seconds_until_inodes_reusable,
    tree_bytes,
)
from bench.opencbr_runner import OpencbrRunner, ReplicationUnavailable, Vaults
from bench.server import Server, write_config

OPERATIONS = (
    "full",
    "incremental",
    "small",
    "restore",
    "replication",
    "encryption",
    "load",
    "schedule",
)
TOOLS = ("opencbr", "restic", "borg", "cp")
# `encryption` compares its encrypted backup with restic's full backup of the same run.
NEEDS_FULL = {"incremental", "restore", "replication", "encryption"}
# Operations with a server of their own and no dataset: no peer runs them.
OWN_SERVER = {"load", "schedule"}
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = ~1 GiB + 100,000 files")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "opencbr-bench"
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated operations ({', '.join(OPERATIONS)}) and/or tools "
        f"({', '.join(TOOLS)}); default: everything",
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--png", type=Path, default=RESULTS / "latest.png")
    parser.add_argument("--requests", type=int, default=1000, help="per list/show scenario")
    parser.add_argument("--replicate-requests", type=int, default=30)
    parser.add_argument("--clients", default="1,4", help="load generator threads, per scenario")
    parser.add_argument("--profile", type=Path, help="py-spy the server into this folder")
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="run the schedule measurement on a fresh database of this PostgreSQL server "
        "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres); default: SQLite",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's stores and repos")
    parser.add_argument(
        "--repeats",
        type=int,
        default=4,
        help="runs of each encryption measurement (the median is reported; an even count "
        "lets each mode go first equally often: a run's first operation is the slowest)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=INODE_REUSE_SECONDS,
        help="seconds to leave between the last cleanup and the measurements (ext4 "
        "without a journal reuses freed inodes only after that; 0 = do not wait)",
    )
    return parser.parse_args(argv)


@dataclasses.dataclass(frozen=True)
class Selection:
    operations: frozenset[str]
    tools: frozenset[str]

    @classmethod
    def parse(cls, only: str) -> Selection:
        names = {name.strip() for name in only.split(",") if name.strip()}
        unknown = names - set(OPERATIONS) - set(TOOLS)
        if unknown:
            raise SystemExit(f"--only: unknown names {sorted(unknown)}")
        operations = names & set(OPERATIONS) or set(OPERATIONS)
        if operations & NEEDS_FULL:
            operations.add("full")
        return cls(frozenset(operations), frozenset(names & set(TOOLS) or set(TOOLS)))

    def wants(self, operation: str, tool: str) -> bool:
        return operation in self.operations and tool in self.tools

    def needs_server(self) -> bool:
        backups = self.operations - OWN_SERVER
        copies_chunks = self.wants("replication", "cp")
        return bool(backups) and ("opencbr" in self.tools or copies_chunks)

    def peer_tools(self) -> list[str]:
        backups = self.operations - OWN_SERVER
        return [tool for tool in ("restic", "borg") if backups and tool in self.tools]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Run:
    """One benchmark run: the workdir layout, the tools, and the results so far."""

    def __init__(self, args: argparse.Namespace, selection: Selection) -> None:
        self.args = args
        self.only = selection
        self.run_dir = args.workdir / "run"
        remove_tree(self.run_dir, args.workdir)  # left by --keep or an interrupted run
        self.run_dir.mkdir(parents=True)
        self.source = self.run_dir / "dataset"
        self.small_source = self.run_dir / "small-files"
        self.results: list[Result] = []
        self.meta: dict[str, Any] = {}
        self.restic = peers.Restic(self.run_dir / "restic", self.run_dir / "restic.log")
        self.borg = peers.Borg(self.run_dir / "borg", self.run_dir / "borg.log")
        self.server: Server | None = None
        self.opencbr: OpencbrRunner | None = None
        self.vaults: Vaults | None = None
        self.backups: dict[str, dict[str, Any]] = {}
        self.load: dict[str, Any] | None = None  # the API load's result, if it ran
        self.schedule: dict[str, Any] | None = None  # the scheduler's, if it ran
        self.encryption: dict[str, Any] | None = None  # the encryption phase's, if it ran

    def record(self, result: Result, load1: float) -> None:
        result.extra["load1_before"] = round(load1, 2)
        self.results.append(result)
        log(
            f"{result.key}: {result.seconds:.2f} s, {result.mib_per_s:.0f} MiB/s, "
            f"peak RSS {(result.peak_rss_bytes or 0) / 2**20:.0f} MiB"
        )

    def measure(self, action: Any, *args: Any) -> Any:
        """Call a measuring function; record the Result it returns (first of a tuple)."""
        load1 = load_average()[0]
        value = action(*args)
        self.record(value[0] if isinstance(value, tuple) else value, load1)
        return value

    # --- opencbr server ----------------------------------------------------------------

    def start_server(self, data: dataset.Dataset) -> None:
        # region1's root is the whole workdir: the staged tree, the cached small-files tree
        # and the restore target all live under it.
        roots = {"region1": self.args.workdir, "region2": self.run_dir / "region2"}
        unencrypted: tuple[str, ...] = ()
        if self.only.wants("encryption", "opencbr"):  # plain1 mirrors region1, plain2 region2
            unencrypted = encryption.UNENCRYPTED_REGIONS
            roots |= {"plain1": self.args.workdir, "plain2": self.run_dir / "plain2"}
        data_dir = self.run_dir / "opencbr"
        config = write_config(
            self.run_dir / "opencbr.toml", data_dir, roots, unencrypted=unencrypted
        )
        self.server = Server(config, data_dir)
        self.server.start()
        api = Api(self.server.url, self.server.password(), self.server.projects())
        self.opencbr = OpencbrRunner(self.server, api, self.args.profile)
        # The small-files copy exists when `small` runs (its vault is unused otherwise).
        small = self.small_source if self.small_source.exists() else data.small
        self.vaults = self.opencbr.prepare(self.source, small, self.run_dir / "restored")

    def stop_server(self) -> None:
        if self.opencbr is not None:
            self.opencbr.api.close()
        if self.server is not None:
            self.server.stop()
            self.server = None


def phase_full(run: Run, data: dataset.Dataset) -> None:
    size = data.logical_bytes
    read_tree(run.source)  # every tool starts from a cached tree (see read_tree)
    if run.opencbr is not None and run.vaults is not None:  # the server runs only if needed
        _result, backup = run.measure(run.opencbr.backup, run.vaults.dataset, "backup_full", size)
        run.backups["full"] = backup
    if run.only.wants("full", "restic"):
        run.restic.init("repo")
        run.measure(run.restic.backup, "repo", run.source, "backup_full", size)
    if run.only.wants("full", "borg"):
        run.borg.init("repo")
        run.measure(run.borg.create, "repo", "full", run.source, "backup_full", size)


def _replicate(run: Run, operation: str, size: int) -> None:
    if run.meta.get("replication") == "not available":
        return
    assert run.opencbr is not None and run.vaults is not None
    try:
        run.measure(run.opencbr.replicate, run.vaults.dataset, run.vaults.replica, operation, size)
        run.meta["replication"] = "available"
    except ReplicationUnavailable as exc:
        run.meta["replication"] = "not available"
        log(f"replication: not available ({exc})")


def phase_copies(run: Run, data: dataset.Dataset) -> None:
    size = data.logical_bytes
    if run.only.wants("replication", "opencbr"):
        _replicate(run, "replication_full", size)
    if run.only.wants("replication", "restic"):
        run.measure(run.restic.copy, "repo", "copy", size)
    if run.only.wants("replication", "cp"):
        assert run.opencbr is not None and run.vaults is not None
        chunks = run.opencbr.chunk_dir(run.vaults.dataset)
        log_file = run.run_dir / "cp.log"
        run.measure(peers.copy_and_sync, chunks, run.run_dir / "cp-copy", size, log_file)


def phase_restore(run: Run, data: dataset.Dataset) -> None:
    if run.only.wants("restore", "opencbr"):
        assert run.opencbr is not None and run.vaults is not None
        backup_id = run.backups["full"]["id"]
        target = run.vaults.restore_target
        run.measure(run.opencbr.restore, backup_id, target, data.logical_bytes)


def phase_encryption(run: Run, data: dataset.Dataset) -> None:
    if not run.only.wants("encryption", "opencbr"):
        return
    assert run.opencbr is not None
    read_tree(run.source)  # as before every backup phase
    log(f"encryption: {run.args.repeats} repeats, encrypted and unencrypted regions")
    phase = encryption.Phase(
        run.opencbr, run.source, data.logical_bytes, run.args.repeats, run.record, log
    )
    run.encryption = encryption.run(phase, lambda: load_average()[0])
    log(f"encryption: AEAD raw speed {run.encryption['aead_gib_per_s']} GiB/s")


def phase_incremental(run: Run, data: dataset.Dataset) -> None:
    mutation = dataset.mutate(data, run.source)
    run.meta["mutation"] = dataclasses.asdict(mutation)
    size = tree_bytes(run.source)
    run.meta["mutated_logical_bytes"] = size
    read_tree(run.source)
    if run.only.wants("incremental", "opencbr"):
        assert run.opencbr is not None and run.vaults is not None
        vault = run.vaults.dataset
        run.measure(run.opencbr.backup, vault, "backup_incremental", size)
        if run.only.wants("replication", "opencbr"):
            _replicate(run, "replication_incremental", size)
    if run.only.wants("incremental", "restic"):
        run.measure(run.restic.backup, "repo", run.source, "backup_incremental", size)
    if run.only.wants("incremental", "borg"):
        run.measure(run.borg.create, "repo", "incremental", run.source, "backup_incremental", size)


# The small-files tree's backups: the full one, then after 10% of the files changed in
# place (judged by stored bytes), then after 1% more (judged by time).
SMALL_STEPS = (
    ("backup_small_files", 0.0),
    ("backup_small_10pct", 0.10),
    ("backup_small_1pct", 0.01),
)


def phase_small(run: Run, data: dataset.Dataset) -> None:
    size, tree = data.small_bytes, run.small_source
    for index, (operation, share) in enumerate(SMALL_STEPS):
        if share:
            mutation = dataset.mutate_small(tree, share, data.seed + 10 + index)
            run.meta[f"small_mutation_{operation}"] = dataclasses.asdict(mutation)
        read_tree(tree)  # every tool starts from a cached tree (see read_tree)
        if run.only.wants("small", "opencbr"):
            assert run.opencbr is not None and run.vaults is not None
            run.measure(run.opencbr.backup, run.vaults.small, operation, size)
        if run.only.wants("small", "restic"):
            if not share:
                run.restic.init("small")
            run.measure(run.restic.backup, "small", tree, operation, size)
        if run.only.wants("small", "borg"):
            if not share:
                run.borg.init("small")
            run.measure(run.borg.create, "small", operation, tree, operation, size)


def phase_load(run: Run) -> dict[str, Any] | None:
    if not run.only.wants("load", "opencbr"):
        return None
    clients = [int(n) for n in run.args.clients.split(",")]
    replicated = load.replicated_backups(run.args.scale)
    log(f"API load: {load.LIST_BACKUPS} backups listed, {replicated} replicated, clients {clients}")
    profile = run.args.profile / "api_load.txt" if run.args.profile else None
    result = load.run(
        run.run_dir,
        run.args.requests,
        run.args.replicate_requests,
        clients,
        profile,
        scale=run.args.scale,
    )
    for scenario in result["scenarios"]:
        log(
            f"{scenario['name']} x{scenario['concurrency']}: p50 {scenario['p50_ms']} ms, "
            f"p99 {scenario['p99_ms']} ms, {scenario['req_per_s']} req/s"
        )
    return result


def phase_schedule(run: Run) -> dict[str, Any] | None:
    if not run.only.wants("schedule", "opencbr"):
        return None
    count = schedule.vault_count(run.args.scale)
    log(f"scheduler: {count:,} vaults, {schedule.POLICIES} policies sharing one slot")
    profile = run.args.profile / "schedule.txt" if run.args.profile else None
    result = schedule.run(run.run_dir, run.args.scale, run.args.postgres, profile)
    log(
        f"scheduler: {result['checkpoints']:,} checkpoints, the last "
        f"{result['last_checkpoint_after_s']} s after the slot"
    )
    return result


def check_peers(selection: Selection) -> None:
    tools = selection.peer_tools() + (["cp"] if selection.wants("replication", "cp") else [])
    missing = peers.missing(tools)
    if missing:
        raise SystemExit(
            f"missing: {', '.join(missing)}. Install Debian's packages:\n  {peers.INSTALL_HINT}\n"
            "or leave them out with --only (e.g. --only opencbr)."
        )


def settle(workdir: Path, window: float) -> None:
    """Wait until the files deleted by the last cleanup no longer slow down file creation."""
    wait = seconds_until_inodes_reusable(workdir, window)
    if wait > 0:
        log(f"waiting {wait:.0f} s for the inodes the last cleanup freed (bench/README.md)")
        time.sleep(wait)


def machine_meta(args: argparse.Namespace, selection: Selection) -> dict[str, Any]:
    return {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "scale": args.scale,
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "load_average_before": load_average(),
        "versions": {tool: peers.version(tool) for tool in selection.peer_tools()},
    }


def dataset_meta(data: dataset.Dataset) -> dict[str, Any]:
    by_kind: dict[str, int] = {}
    for spec in data.files:
        by_kind[spec.kind] = by_kind.get(spec.kind, 0) + spec.size
    return {
        "files": len(data.files),
        "logical_bytes": data.logical_bytes,
        "bytes_by_kind": by_kind,
        "small_files": data.small_count,
        "small_bytes": data.small_bytes,
    }


def measure_data(run: Run, data: dataset.Dataset) -> None:
    """Every measurement on the generated data (all but the API load)."""
    ops = run.only.operations
    dataset.stage(data, run.source)
    if "small" in ops:
        dataset.stage_small(data, run.small_source)
    try:
        if run.only.needs_server():  # in the try: a failed setup stops the server too
            run.start_server(data)
        if "full" in ops:
            phase_full(run, data)
        if "replication" in ops:
            phase_copies(run, data)
        if "restore" in ops:
            phase_restore(run, data)
        if "encryption" in ops:
            phase_encryption(run, data)
        if "incremental" in ops:
            phase_incremental(run, data)
        if "small" in ops:
            phase_small(run, data)
    finally:
        run.stop_server()


def measure(run: Run) -> None:
    """Run the selected measurements (their results go into `run`)."""
    args = run.args
    if run.only.operations - OWN_SERVER:
        log(f"dataset: scale {args.scale}, seed {args.seed} (cached in {args.workdir})")
        data = dataset.ensure(args.workdir, args.scale, args.seed)
        run.meta["dataset"] = dataset_meta(data)
        measure_data(run, data)
    run.load = phase_load(run)
    run.schedule = phase_schedule(run)


def write_outputs(run: Run) -> None:
    goals = report.targets(run.results, run.load, run.schedule)
    print(
        report.render(
            run.results, run.load, goals, schedule=run.schedule, encryption=run.encryption
        )
    )
    report.write_json(
        run.args.json, run.meta, run.results, run.load, goals, run.schedule, run.encryption
    )
    log(f"wrote {run.args.json}")
    from bench.chart import write_png

    title = f"opencbr vs restic, borg and cp: scale {run.args.scale}, {run.meta['started_at']}"
    try:  # chart.py imports matplotlib when it draws
        write_png(run.args.png, run.results, run.load, title)
    except ImportError:
        log("matplotlib is missing: no PNG (pip install -e '.[bench]')")
        return
    log(f"wrote {run.args.png}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    selection = Selection.parse(args.only)
    check_peers(selection)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    run = Run(args, selection)
    settle(args.workdir, args.settle)
    run.meta = machine_meta(args, selection)
    status = 0
    try:
        measure(run)
    except Exception as exc:  # report what was measured before the failure, then fail
        log(f"run failed: {type(exc).__name__}: {exc}")
        run.meta["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    finally:
        run.meta["load_average_after"] = load_average()
        if not args.keep:
            remove_tree(run.run_dir, args.workdir)
    write_outputs(run)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
