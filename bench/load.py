"""API latency under load: list backups, show backup and the replicate call.

The driver (`run`) starts an API-only server (no embedded worker: the replicate call must
only plan and enqueue, and copies running behind it would load the machine), creates the
vaults, stops it, seeds backup rows (`seed.py`: 10,000 in one vault to list, and 10,000 x
--scale in another to replicate), starts it again and runs the load generator in a second
process: `python -m bench.load SPEC.json` prints one JSON object per scenario. The
generator sends a fixed number of requests from N threads, each with its own keep-alive
connection, after a short warm-up, and reports latency percentiles and requests per
second. A replicate call takes every backup of the vault not yet replicated to the
region, so after each one (untimed) the generator waits until the server has made the
plan's records and deletes them.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, text

from bench.client import Api, ApiError
from bench.seed import seed_backups
from bench.server import Server, write_config
from opencbr.settings import load_settings

LIST_BACKUPS, REPLICATE_BACKUPS = 10_000, 10_000  # the latter at scale 1 (issue 17)
PAGE = 100
WARMUP = 20
Request = dict[str, Any]  # {"method", "path", "body"?}: one HTTP request to send
Sample = tuple[float, int, float]  # (latency in seconds, HTTP status, wall time it was sent)


# --- the load generator (second process) -------------------------------------------------


def _percentile(sorted_values: list[float], share: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(share * (len(sorted_values) - 1)))
    return sorted_values[index]


def _send(client: httpx.Client, request: Request) -> Sample:
    sent, started = time.time(), time.perf_counter()
    response = client.request(request["method"], request["path"], json=request.get("body"))
    return time.perf_counter() - started, response.status_code, sent


def _worker(
    url: str, token: str, queue: list[Request], lock: threading.Lock, until: Path | None
) -> list[Sample]:
    """Take requests off the shared list until it is empty; a sample each. With `until`,
    go round the list instead, until that file exists (the driver creates it)."""
    results: list[Sample] = []
    with httpx.Client(base_url=url, headers={"X-Auth-Token": token}, timeout=60) as client:
        while True:
            with lock:
                if not queue or (until is not None and until.exists()):
                    return results
                request = queue.pop()
                if until is not None:
                    queue.insert(0, request)
            results.append(_send(client, request))


def _one_at_a_time(url: str, token: str, scenario: dict[str, Any]) -> dict[str, Any]:
    """Send each request, then (untimed) run the scenario's `reset` SQL statement."""
    reset = scenario["reset"]
    engine = create_engine(reset["db_url"])
    samples: list[Sample] = []
    started = time.perf_counter()
    try:
        with httpx.Client(base_url=url, headers={"X-Auth-Token": token}, timeout=60) as client:
            for request in scenario["requests"]:
                samples.append(_send(client, request))
                _run_reset(engine, reset)
    finally:
        engine.dispose()
    return _summary(scenario, samples, time.perf_counter() - started)


def run_scenario(url: str, token: str, scenario: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(base_url=url, headers={"X-Auth-Token": token}, timeout=60) as client:
        for request in scenario.get("warmup", []):
            _send(client, request)
    if scenario.get("reset"):
        return _one_at_a_time(url, token, scenario)
    requests = list(reversed(scenario["requests"]))  # pop() from the end keeps the order
    lock = threading.Lock()
    until = Path(scenario["until"]) if scenario.get("until") else None
    started = time.perf_counter()
    with ThreadPoolExecutor(scenario["concurrency"]) as pool:
        futures = [
            pool.submit(_worker, url, token, requests, lock, until)
            for _ in range(scenario["concurrency"])
        ]
        samples = [sample for future in futures for sample in future.result()]
    elapsed = time.perf_counter() - started
    return _summary(scenario, samples, elapsed)


def latency_summary(latencies: list[float]) -> dict[str, float]:
    """p50, p99 and max of latencies in seconds, in milliseconds."""
    ordered = sorted(latencies)
    return {
        "p50_ms": round(_percentile(ordered, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else 0.0,
    }


def _summary(scenario: dict[str, Any], samples: list[Sample], elapsed: float) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for _latency, status, _sent in samples:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    summary = {
        "name": scenario["name"],
        "concurrency": scenario["concurrency"],
        "requests": len(samples),
        "errors": sum(n for code, n in statuses.items() if code != str(scenario["expect"])),
        "statuses": statuses,
        "seconds": round(elapsed, 3),
        "req_per_s": round(len(samples) / elapsed, 1) if elapsed else 0.0,
        **latency_summary([latency for latency, _status, _sent in samples]),
    }
    if scenario.get("keep_samples"):  # for a driver that judges a time window of the run
        summary["samples"] = samples
    return summary


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    for scenario in spec["scenarios"]:
        print(json.dumps(run_scenario(spec["url"], spec["token"], scenario)), flush=True)


# --- the driver --------------------------------------------------------------------------


def replicated_backups(scale: float) -> int:
    """Backups in the vault the replicate call takes: 10,000 at scale 1."""
    return max(100, round(REPLICATE_BACKUPS * scale))


class Setup:
    """The load server's vaults: one to list (10,000 backups), one to replicate (see
    `replicated_backups`) and one replication vault in region2."""

    def __init__(self, server: Server, folders: Path) -> None:
        server.start()
        self.projects = server.projects()
        api = Api(server.url, server.password(), self.projects)
        try:
            self.listed = self._vault(api, folders, "listed")
            self.source = self._vault(api, folders, "source")
            self.destination = api.create_vault("region2", "target", [], "replication")
        finally:
            api.close()
            server.stop()

    @staticmethod
    def _vault(api: Api, folders: Path, name: str) -> str:
        folder = folders / name
        folder.mkdir(parents=True, exist_ok=True)
        resource = api.register_directory("region1", name, str(folder))
        return api.create_vault("region1", name, [resource])


def list_requests(base: str, vault_id: str, count: int, rng: random.Random) -> list[Request]:
    pages = LIST_BACKUPS // PAGE
    return [
        {
            "method": "GET",
            "path": f"{base}/backups?vault_id={vault_id}&limit={PAGE}"
            f"&offset={rng.randrange(pages) * PAGE}",
        }
        for _ in range(count)
    ]


def _show_requests(base: str, ids: list[str], count: int, rng: random.Random) -> list[Request]:
    return [{"method": "GET", "path": f"{base}/backups/{rng.choice(ids)}"} for _ in range(count)]


def _replicate_request(base: str, setup: Setup) -> Request:
    replicate = {
        "vault_id": setup.source,
        "destination_region": "region2",
        "destination_project_id": setup.projects["region2"],
        "destination_vault_id": setup.destination,
    }
    return {
        "method": "POST",
        "path": f"{base}/checkpoints/replicate",
        "body": {"replicate": replicate},
    }


def replication_available(api: Api, request: Request) -> bool:
    """Send one replicate call (a warm-up that also tells whether the route exists)."""
    try:
        api.call("POST", "region1", "/checkpoints/replicate", json=request["body"])
    except ApiError as exc:
        if exc.status == 405 or (exc.status == 404 and exc.code == "APIGW.0101"):
            return False
        raise
    return True


def _forget_plans(db_url: str, setup: Setup) -> dict[str, Any]:
    """The statements that make every backup of the source vault eligible again, once the
    server has turned the call's plan into its records (`until_zero`: the call answers
    before, and that work, ~100 ms at 10,000 backups, is the server's to do, not skipped)."""
    return {
        "db_url": db_url,
        "until_zero": "SELECT COUNT(*) FROM replication_plans WHERE source_vault_id = :vault",
        "sql": [
            "DELETE FROM replication_plans WHERE source_vault_id = :vault",
            "DELETE FROM replication_records WHERE source_vault_id = :vault",
        ],
        "params": {"vault": setup.source},
    }


def _run_reset(engine: Engine, reset: dict[str, Any]) -> None:
    params = reset.get("params", {})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if not connection.execute(text(reset["until_zero"]), params).scalar():
                break
        time.sleep(0.01)
    with engine.begin() as connection:
        for statement in reset["sql"]:
            connection.execute(text(statement), params)


def _scenarios(
    base: str,
    setup: Setup,
    shown: list[str],
    counts: tuple[int, int],
    concurrencies: list[int],
    db_url: str,
) -> list[dict[str, Any]]:
    """list and show `requests` times at each concurrency; replicate `replicates` times.

    The replicate call runs one client at a time only: its planning writes a record per
    backup, and SQLite takes one writer at a time, so concurrent calls only queue.
    """
    requests, replicates = counts
    rng = random.Random(6)
    warm_list = list_requests(base, setup.listed, WARMUP, rng)
    warm_show = _show_requests(base, shown, WARMUP, rng)
    scenarios: list[dict[str, Any]] = []
    for concurrency in concurrencies:
        scenarios.append(
            {
                "name": "list_backups",
                "requests": list_requests(base, setup.listed, requests, rng),
                "warmup": warm_list,
                "concurrency": concurrency,
                "expect": 200,
            }
        )
        scenarios.append(
            {
                "name": "show_backup",
                "requests": _show_requests(base, shown, requests, rng),
                "warmup": warm_show,
                "concurrency": concurrency,
                "expect": 200,
            }
        )
    scenarios.append(
        {
            "name": "replicate",
            "requests": [_replicate_request(base, setup)] * replicates,
            "reset": _forget_plans(db_url, setup),
            "concurrency": 1,
            "expect": 200,
        }
    )
    return scenarios


def _generate(spec: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """Run the load generator in its own process; one summary per scenario."""
    path = folder / "load-spec.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def run(
    run_dir: Path,
    requests: int,
    replicate_requests: int,
    concurrencies: list[int],
    profile: Path | None = None,
    scale: float = 1.0,
) -> dict[str, Any]:
    """The whole API load measurement; a JSON-ready dict."""
    data_dir, folders = run_dir / "load-data", run_dir / "load-roots"
    roots = {region: folders / region for region in ("region1", "region2")}
    config = write_config(run_dir / "load.toml", data_dir, roots, embedded_worker=False)
    server = Server(config, data_dir)
    setup = Setup(server, roots["region1"])
    shown = seed_backups(config, setup.listed, LIST_BACKUPS)
    replicated = replicated_backups(scale)
    seed_backups(config, setup.source, replicated)
    db_url = load_settings(config).db_url
    server.start()
    try:
        api = Api(server.url, server.password(), setup.projects)
        base = f"/v3/{setup.projects['region1']}"
        available = replication_available(api, _replicate_request(base, setup))
        forget = _forget_plans(db_url, setup)
        _reset(forget)
        counts = (requests, replicate_requests)
        scenarios = _scenarios(base, setup, shown, counts, concurrencies, db_url)
        if not available:
            scenarios = [s for s in scenarios if s["name"] != "replicate"]
        spec = {"url": server.url, "token": api.token("region1"), "scenarios": scenarios}
        api.close()
        server.reset_peak_rss()
        with server.profiling(profile):
            results = _generate(spec, run_dir)
        peak = server.peak_rss()
    finally:
        server.stop()
    return {
        "backups_listed_vault": LIST_BACKUPS,
        "backups_replicated_vault": replicated,
        "replication_available": available,
        "scenarios": results,
        "server_peak_rss_bytes": peak,
    }


def _reset(reset: dict[str, Any]) -> None:
    engine = create_engine(reset["db_url"])
    try:
        _run_reset(engine, reset)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1])
