"""One worker against two on the same replication (issue 14): scale-out as real processes.

`python -m bench.workers [--backups 20] [--backup-mib 16] [--postgres ADMIN_URL]` creates a
fresh PostgreSQL database (dropped afterwards) for the metadata and the task queue, starts
one `opencbr serve --no-worker` and makes a source vault of `--backups` backups (four
resources backed up in rounds, incompressible data, so every replica copies its own
chunks) with two `opencbr worker`s. Then, for 1 and for 2 workers (`--threads 2` each, the
default), it starts that many workers, replicates the whole vault into a fresh replication
vault of a region of its own (region2, region3: a backup has one replica per region)
with the seed call and times it until every record has ended, and reads
each worker's peak RSS. Results go to bench/results/workers-latest.json.

On a machine of two cores, the workers share the CPU that one worker already keeps busy
(hashing, copying, fsync), so little gain is expected: the point of a second worker there
is availability (a worker can die), not speed.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.client import Api
from bench.measure import MiB
from bench.schedule import postgres_database
from bench.server import OPENCBR, Server, free_port

RESOURCES = 4
RESULTS = Path(__file__).parent / "results" / "workers-latest.json"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_config(run: Path, database_url: str) -> Path:
    queue_url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    lines = [
        f'data_dir = "{run / "opencbr"}"',
        f'listen = "127.0.0.1:{free_port()}"',
        'metrics_listen = ""',
        'log_level = "info"',
        f"database_url = {json.dumps(database_url)}",
        f"queue_url = {json.dumps(queue_url)}",
    ]
    for region in ("region1", "region2", "region3"):
        root = run / "roots" / region
        root.mkdir(parents=True, exist_ok=True)
        lines.append(f'[[regions]]\nname = "{region}"\nstorage = "{run / "store" / region}"')
        lines.append(f'[[protectable_roots]]\nproject = "{region}"\npath = "{root}"')
    config = run / "opencbr.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


class Workers:
    """`count` `opencbr worker` processes on `config`, each logging to a file of its own
    (named after the `phase`: a worker is ready when its own log announces it)."""

    def __init__(self, config: Path, logs: Path, count: int, phase: str) -> None:
        self.processes = []
        self.logs = [logs / f"worker-{phase}-{index}.log" for index in range(count)]
        for log_path in self.logs:
            with open(log_path, "ab") as out:
                self.processes.append(
                    subprocess.Popen(
                        [*OPENCBR, "worker", "--config", str(config), "--threads", "2"],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every worker has announced itself (its consumer and housekeeping run)."""
        deadline = time.monotonic() + timeout
        for log_path in self.logs:
            while "opencbr worker:" not in log_path.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"a worker did not come up: {log_path}")
                time.sleep(0.1)

    def peak_rss_mib(self) -> list[int]:
        peaks = []
        for process in self.processes:
            status = Path(f"/proc/{process.pid}/status").read_text()
            line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
            peaks.append(int(line.split()[1]) // 1024)
        return peaks

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def make_source(api: Api, run: Path, backups: int, backup_bytes: int) -> str:
    """A vault of `backups` backups of RESOURCES folders, new random data each round."""
    rng = random.Random(5)
    folders = [run / "roots" / "region1" / f"res{r}" for r in range(RESOURCES)]
    ids = []
    for folder in folders:
        folder.mkdir()
        ids.append(api.register_directory("region1", folder.name, str(folder)))
    vault = api.create_vault("region1", "source", ids)
    made = 0
    round_ = 0
    while made < backups:
        for folder in folders:
            (folder / f"round{round_}.bin").write_bytes(rng.randbytes(backup_bytes))
        body = {"checkpoint": {"parameters": {"auto_trigger": False}, "vault_id": vault}}
        checkpoint = api.call("POST", "region1", "/checkpoints", json=body)["checkpoint"]["id"]
        api.poll(
            "region1",
            f"/checkpoints/{checkpoint}",
            lambda b: b["checkpoint"]["status"] != "protecting",
        )
        made += RESOURCES
        round_ += 1
    return vault


def replicate(api: Api, source: str, region: str, destination: str) -> float:
    """Seconds from the seed call to the poll that sees every record ended."""
    body = {
        "replicate": {
            "auto_trigger": False,
            "destination_project_id": api.projects[region],
            "destination_region": region,
            "destination_vault_id": destination,
            "vault_id": source,
        }
    }
    started = time.perf_counter()
    api.call("POST", "region1", "/checkpoints/replicate", json=body)

    def ended(listing: dict[str, Any]) -> bool:
        records = [
            r
            for b in listing["backups"]
            for r in b["replication_records"]
            if r["destination_vault_id"] == destination
        ]
        return len(records) == len(listing["backups"]) and all(
            r["status"] in ("success", "fail") for r in records
        )

    done = api.poll(
        "region1", "/backups", ended, vault_id=source, show_replication="true", limit=1000
    )
    seconds = time.perf_counter() - started
    statuses = {
        r["status"]
        for b in done["backups"]
        for r in b["replication_records"]
        if r["destination_vault_id"] == destination
    }
    assert statuses == {"success"}, statuses
    return seconds


def run(workdir: Path, admin_url: str, backups: int, backup_bytes: int) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="workers-", dir=workdir))
    with postgres_database(admin_url) as database_url:
        assert database_url is not None  # an admin URL was given
        config = write_config(run_dir, database_url)
        api_server = Server(config, run_dir / "opencbr")
        api_server.start("--no-worker")
        try:
            api = Api(api_server.url, api_server.password(), api_server.projects())
            seeding = Workers(config, run_dir / "opencbr", 2, "seeding")
            try:
                seeding.wait_ready()
                log(f"seeding {backups} backups of {backup_bytes // MiB} MiB")
                source = make_source(api, run_dir, backups, backup_bytes)
            finally:
                seeding.stop()
            rows = {}
            for count in (1, 2):
                # A region of its own each time: a backup has one replica per region.
                region = f"region{count + 1}"
                destination = api.create_vault(region, "replica", [], "replication")
                workers = Workers(config, run_dir / "opencbr", count, f"{count}-workers")
                try:
                    workers.wait_ready()
                    seconds = replicate(api, source, region, destination)
                    peaks = workers.peak_rss_mib()
                finally:
                    workers.stop()
                moved = backups * backup_bytes
                rows[count] = {
                    "seconds": round(seconds, 2),
                    "mib_per_s": round(moved / MiB / seconds, 1),
                    "worker_peak_rss_mib": peaks,
                }
                log(f"{count} worker(s): {rows[count]}")
            api.close()
        finally:
            api_server.stop()
    return {"backups": backups, "backup_bytes": backup_bytes, "workers": rows}


def report(result: dict[str, Any]) -> str:
    one = result["workers"][1]["seconds"]
    lines = [
        "| workers | seconds | MiB/s | speed-up | peak RSS per worker |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for count, row in sorted(result["workers"].items()):
        rss = ", ".join(f"{x} MiB" for x in row["worker_peak_rss_mib"])
        lines.append(
            f"| {count} | {row['seconds']} | {row['mib_per_s']} | {one / row['seconds']:.2f}x"
            f" | {rss} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--backups", type=int, default=20)
    parser.add_argument("--backup-mib", type=int, default=16)
    parser.add_argument("--postgres", default=DEFAULT_ADMIN_URL, help="an admin URL")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    result = run(args.workdir, args.postgres, args.backups, args.backup_mib * MiB)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
