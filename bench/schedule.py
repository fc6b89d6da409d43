"""The policy scheduler at scale (issue 13): N vaults (10,000 at scale 1) bound to ten backup
policies whose slots fall in the same minute.

The driver (`run`):
1. starts a server (embedded worker, default settings) to make, through the API, one vault
   protecting a one-file folder and one vault to list, then stops it;
2. seeds with the server stopped (`seed.py`): 10,000 backups in the listed vault, N - 1
   copies of the first vault, each protecting a one-file folder of its own, and ten daily
   backup policies whose slot is the first whole minute at least LEAD ahead, the vaults
   bound to them in turn (N/10 each); on PostgreSQL, ANALYZE (see `_analyze`);
3. counts the SQL statements of the scheduler's tick on a copy of the seeded database
   (`tick_cost`): `policy_runs.tick` runs in this process with opencbr's clock moved just
   past the slot, every statement counted by a SQLAlchemy `before_cursor_execute` listener.
   The tick the server runs is the same function on the same rows; counting it in the
   server would mean changing the server, and PostgreSQL's pg_stat_statements needs the
   module preloaded (a restart of the machine's shared PostgreSQL). To show what the cost
   grows with, the copy then keeps one binding per policy and ticks the same slot again;
4. starts the server again and runs the load generator (`python -m bench.load`, a second
   process, one client): list backups (a page of 100 out of 10,000) at rest until 3 s
   before the slot, then again from there until every checkpoint exists;
5. polls the database read-only every POLL seconds until all N checkpoints exist (or WAIT
   after the slot), then reads the exact times from the rows: each policy run's claim
   (`policy_runs.created_at`) and each checkpoint's `created_at`, against the slot;
then stops the server (the N backups themselves need not finish). The latency "during
the slot" is judged on the requests sent between the first claim and the last checkpoint.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, select, text, update

from bench import load
from bench.client import Api
from bench.report import SCHEDULED_VAULTS
from bench.seed import bind_policies, clone_vaults, seed_backups
from bench.server import Server, write_config
from opencbr import clock
from opencbr.db.backups import Backup, Checkpoint
from opencbr.db.policies import Policy, PolicyBinding, PolicyRun
from opencbr.db.session import Database, sqlite_file
from opencbr.services import policy_runs
from opencbr.services.runtime import Runtime
from opencbr.settings import load_settings

POLICIES = 10
LEAD = datetime.timedelta(seconds=30)  # the slot is at least this far after the seeding
WAIT_SECONDS = 300.0  # after the slot, give up waiting for the checkpoints
POLL = 0.5
REST_STOPS_BEFORE_SLOT = 3.0  # seconds: the at-rest requests end before any claim
ROOT = Path(__file__).resolve().parent.parent


def vault_count(scale: float) -> int:
    return max(POLICIES, round(SCHEDULED_VAULTS * scale))


@dataclass
class Fleet:
    """The seeded server: its vaults, the policies bound to them and their common slot."""

    server: Server
    projects: dict[str, str]
    listed: str
    vault_ids: list[str]
    policy_ids: list[str]
    slot: datetime.datetime  # naive UTC, as the database stores it
    seed_seconds: float

    @property
    def slot_epoch(self) -> float:
        return _epoch(self.slot)


def _epoch(moment: datetime.datetime) -> float:
    return moment.replace(tzinfo=datetime.UTC).timestamp()


# --- seeding -------------------------------------------------------------------------------


def _folders(root: Path, count: int) -> list[Path]:
    """`count` folders of one small file each: what each vault protects."""
    folders = []
    for index in range(count):
        folder = root / f"v{index:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data.txt").write_text(f"vault {index}\n")
        folders.append(folder)
    return folders


def _make_vaults(server: Server, folders: list[Path], listed_folder: Path) -> tuple[str, str]:
    """Through the API: the vault to copy (protecting folders[0]) and the vault to list."""
    api = Api(server.url, server.password(), server.projects())
    try:
        template_resource = api.register_directory("region1", "sched", str(folders[0]))
        template = api.create_vault("region1", "sched", [template_resource])
        listed_folder.mkdir(parents=True, exist_ok=True)
        listed_resource = api.register_directory("region1", "listed", str(listed_folder))
        listed = api.create_vault("region1", "listed", [listed_resource])
    finally:
        api.close()
    return template, listed


def prepare(run_dir: Path, count: int, database_url: str | None) -> Fleet:
    data_dir, roots_dir = run_dir / "schedule-data", run_dir / "schedule-roots"
    roots = {region: roots_dir / region for region in ("region1", "region2")}
    config = write_config(run_dir / "schedule.toml", data_dir, roots, database_url=database_url)
    server = Server(config, data_dir)
    folders = _folders(roots["region1"] / "vaults", count)
    server.start()
    try:
        projects = server.projects()
        template, listed = _make_vaults(server, folders, roots["region1"] / "listed")
    finally:
        server.stop()
    started = time.monotonic()
    seed_backups(config, listed, load.LIST_BACKUPS)
    vault_ids = clone_vaults(config, template, folders)
    slot, policy_ids = bind_policies(config, vault_ids, POLICIES, LEAD)
    if database_url is not None:
        _analyze(database_url)
    seconds = time.monotonic() - started
    return Fleet(server, projects, listed, vault_ids, policy_ids, slot, seconds)


def _analyze(database_url: str) -> None:
    """Give PostgreSQL's planner statistics of the seeded rows. Rows a server inserted
    over time would have them from autovacuum; without them, listing a page of the 10,000
    seeded backups took ~540 ms instead of ~60 ms (a bad plan, not the server)."""
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()


# --- the tick's statements, on a copy of the seeded database ----------------------------------


@contextmanager
def database_copy(url: str, folder: Path) -> Iterator[str]:
    """A copy of the stopped server's database (SQLite file or PostgreSQL template); its URL."""
    source = sqlite_file(url)
    if source is not None:
        target = folder / "tick-copy.db"
        with sqlite3.connect(source) as original, sqlite3.connect(target) as copy:
            original.backup(copy)
        try:
            yield f"sqlite:///{target}"
        finally:
            for companion in ("", "-wal", "-shm"):
                target.with_name(target.name + companion).unlink(missing_ok=True)
        return
    base, _, name = url.rpartition("/")
    copy_name = f"{name}_tick"
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{copy_name}" TEMPLATE "{name}"'))
        yield f"{base}/{copy_name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{copy_name}" WITH (FORCE)'))
        admin.dispose()


_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", re.IGNORECASE)


def _kind(statement: str) -> str:
    """`SELECT policies`, `UPDATE policies`, `BEGIN`…: what a statement is, for the breakdown."""
    verb = statement.split(None, 1)[0].upper()
    table = _TABLE.search(statement)
    return f"{verb} {table[1]}" if table and verb != "BEGIN" else verb


@contextmanager
def _counting(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _timed_tick(rt: Runtime) -> dict[str, Any]:
    with _counting(rt.db.engine) as statements:
        started = time.perf_counter()
        runs = policy_runs.tick(rt)
        seconds = time.perf_counter() - started
    kinds = Counter(_kind(statement) for statement in statements)
    return {
        "runs_claimed": len(runs),
        "statements": len(statements),
        "milliseconds": round(seconds * 1000, 1),
        "by_kind": dict(sorted(kinds.items())),
    }


def _unclaim(db: Database, fleet: Fleet) -> None:
    """Make the slot due again, as before the tick claimed it."""
    with db.transaction() as session:
        session.execute(delete(PolicyRun))
        session.execute(update(Policy).values(next_run_at=fleet.slot))


def _one_binding_per_policy(db: Database, fleet: Fleet) -> None:
    """Keep one vault per policy: the same due slot, 1/1000 of the vaults at scale 1."""
    with db.transaction() as session:
        kept = fleet.vault_ids[:POLICIES]  # bound in turn: one to each policy
        session.execute(delete(PolicyBinding).where(PolicyBinding.vault_id.not_in(kept)))


def tick_cost(fleet: Fleet, folder: Path) -> dict[str, Any]:
    """Statements (and time) of one tick at the slot: with every vault bound, with one vault
    per policy, and with nothing due. A first tick, not counted, warms the connection and
    SQLAlchemy's statement cache, as the server's first tick of the day would have been."""
    url = load_settings(fleet.server.config).db_url
    after_slot = fleet.slot.replace(tzinfo=datetime.UTC) + datetime.timedelta(seconds=1)
    with database_copy(url, folder) as copy_url:
        settings = load_settings(fleet.server.config, database_url=copy_url)
        rt = Runtime(Database(copy_url), settings)
        clock.set_clock(lambda: after_slot)
        try:
            _timed_tick(rt)  # the warm-up
            nothing_due = _timed_tick(rt)
            _unclaim(rt.db, fleet)
            every_vault = _timed_tick(rt)
            _unclaim(rt.db, fleet)
            _one_binding_per_policy(rt.db, fleet)
            few_vaults = _timed_tick(rt)
        finally:
            clock.reset_clock()
            rt.close()
            rt.db.dispose()
    return {
        "due_policies": POLICIES,
        "bound_vaults": len(fleet.vault_ids),
        "every_vault_bound": every_vault,
        "one_vault_per_policy": few_vaults,
        "nothing_due": nothing_due,
    }


# --- the slot ------------------------------------------------------------------------------------


def _scenarios(base: str, listed: str, rest_stop: Path, busy_stop: Path) -> list[dict[str, Any]]:
    """List backups, one client: at rest until `rest_stop` exists, then until `busy_stop`."""
    rng = random.Random(13)
    common = {"concurrency": 1, "expect": 200}
    return [
        {
            **common,
            "name": "list_backups_at_rest",
            "requests": load.list_requests(base, listed, 1000, rng),
            "warmup": load.list_requests(base, listed, load.WARMUP, rng),
            "until": str(rest_stop),
        },
        {
            **common,
            "name": "list_backups_during_slot",
            "requests": load.list_requests(base, listed, 1000, rng),
            "until": str(busy_stop),
            "keep_samples": True,
        },
    ]


def _checkpoints_made(db: Database, policy_ids: list[str]) -> int:
    with db.reading() as session:
        query = select(func.count()).where(Checkpoint.policy_id.in_(policy_ids))
        return int(session.scalar(query) or 0)


def _wait_for_checkpoints(db: Database, fleet: Fleet) -> list[tuple[float, int]]:
    """Poll until every vault has its checkpoint or WAIT passed; (seconds after the slot,
    checkpoints) at each change."""
    timeline: list[tuple[float, int]] = []
    deadline = fleet.slot_epoch + WAIT_SECONDS
    while True:
        made = _checkpoints_made(db, fleet.policy_ids)
        if not timeline or timeline[-1][1] != made:
            timeline.append((round(time.time() - fleet.slot_epoch, 1), made))
        if made >= len(fleet.vault_ids) or time.time() > deadline:
            return timeline
        time.sleep(POLL)


def _sleep_until(epoch: float) -> None:
    time.sleep(max(0.0, epoch - time.time()))


def _facts(db: Database, fleet: Fleet) -> dict[str, Any]:
    """What the rows say: when each run was claimed, when the checkpoints were created."""
    ids = fleet.policy_ids
    with db.reading() as session:
        runs = session.execute(
            select(PolicyRun.created_at, PolicyRun.status, PolicyRun.started, PolicyRun.skipped)
            .where(PolicyRun.policy_id.in_(ids))
            .order_by(PolicyRun.created_at)
        ).all()
        first, last = session.execute(
            select(func.min(Checkpoint.created_at), func.max(Checkpoint.created_at)).where(
                Checkpoint.policy_id.in_(ids)
            )
        ).one()
        statuses = session.execute(
            select(Backup.status, func.count())
            .where(Backup.policy_id.in_(ids))
            .group_by(Backup.status)
        ).all()
    slot = fleet.slot_epoch
    return {
        "runs": [
            {
                "claimed_after_s": round(_epoch(row.created_at) - slot, 2),
                "status": row.status,
                "started": row.started,
                "skipped": row.skipped,
            }
            for row in runs
        ],
        "first_checkpoint_after_s": round(_epoch(first) - slot, 2) if first else None,
        "last_checkpoint_after_s": round(_epoch(last) - slot, 2) if last else None,
        "backups_by_status": {status: count for status, count in statuses},
    }


def _during(samples: list[list[Any]], start: float, end: float) -> dict[str, Any]:
    """The latency of the requests sent while the checkpoints were being created."""
    window = [sample for sample in samples if start <= sample[2] <= end]
    summary: dict[str, Any] = {
        "requests": len(window),
        "errors": sum(1 for sample in window if sample[1] != 200),
        "window_s": round(end - start, 2),
    }
    return summary | load.latency_summary([sample[0] for sample in window])


def measure_slot(fleet: Fleet, folder: Path, profile: Path | None) -> dict[str, Any]:
    server = fleet.server
    rest_stop, busy_stop = folder / "rest.stop", folder / "busy.stop"
    server.start()
    up_before_slot = fleet.slot_epoch - time.time()
    db = Database(load_settings(server.config).db_url)
    output = folder / "schedule-load.jsonl"
    try:
        api = Api(server.url, server.password(), fleet.projects)
        spec = {
            "url": server.url,
            "token": api.token("region1"),
            "scenarios": _scenarios(
                f"/v3/{fleet.projects['region1']}", fleet.listed, rest_stop, busy_stop
            ),
        }
        api.close()
        (folder / "schedule-spec.json").write_text(json.dumps(spec))
        with open(output, "w") as out:
            generator = subprocess.Popen(
                [sys.executable, "-m", "bench.load", str(folder / "schedule-spec.json")],
                stdout=out,
                cwd=ROOT,
            )
        try:
            _sleep_until(fleet.slot_epoch - REST_STOPS_BEFORE_SLOT)
            rest_stop.touch()
            server.reset_peak_rss()
            with server.profiling(profile):
                timeline = _wait_for_checkpoints(db, fleet)
            peak = server.peak_rss()
        finally:
            busy_stop.touch()
            rest_stop.touch()
            generator.wait(timeout=120)
        facts = _facts(db, fleet)
    finally:
        db.dispose()
        server.stop()
    at_rest, during = (json.loads(line) for line in output.read_text().splitlines())
    claims = [run["claimed_after_s"] for run in facts["runs"]]
    end = facts["last_checkpoint_after_s"]
    window = (
        _during(during["samples"], fleet.slot_epoch + min(claims), fleet.slot_epoch + end)
        if claims and end is not None
        else None
    )
    del during["samples"]
    return {
        "server_up_before_slot_s": round(up_before_slot, 1),
        "load_average_at_end": os.getloadavg(),
        "checkpoints": timeline[-1][1] if timeline else 0,
        "timeline": timeline,
        **facts,
        "list_at_rest": at_rest,
        "list_during_slot": window,
        "list_slot_to_end": during,
        "server_peak_rss_bytes": peak,
    }


# --- the driver ----------------------------------------------------------------------------------


@contextmanager
def postgres_database(admin_url: str | None) -> Iterator[str | None]:
    """A fresh PostgreSQL database on the server of `admin_url` (dropped after); None: SQLite."""
    if admin_url is None:
        yield None
        return
    name = f"opencbr_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(
    run_dir: Path, scale: float, postgres_admin_url: str | None, profile: Path | None
) -> dict[str, Any]:
    """The whole scheduler measurement; a JSON-ready dict."""
    folder = run_dir / "schedule"
    folder.mkdir(parents=True, exist_ok=True)
    with postgres_database(postgres_admin_url) as database_url:
        fleet = prepare(folder, vault_count(scale), database_url)
        tick = tick_cost(fleet, folder)
        slot = measure_slot(fleet, folder, profile)
    return {
        "database": "postgresql" if postgres_admin_url else "sqlite",
        "vaults": len(fleet.vault_ids),
        "policies": POLICIES,
        "slot": fleet.slot.isoformat() + "Z",
        "seed_seconds": round(fleet.seed_seconds, 1),
        "tick": tick,
        **slot,
    }
