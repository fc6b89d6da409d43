"""opencbr's measurements, each one a real API flow against a served process.

Wall time runs from the request that starts the work to the poll that sees it finished
(the checkpoint `available`, the restore's operation log `success`, the replication
records `success`): what a user waits, queueing included. Peak RSS is the server's own
high-water mark over that interval (reset before each measurement).

With a profile folder, py-spy samples the server during each measurement and writes
collapsed stacks there (`<operation>.txt`, see `Server.profiling`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.client import POLL, Api, ApiError
from bench.measure import Result
from bench.server import Server

T = TypeVar("T")
SOURCE, DESTINATION = "region1", "region2"


class ReplicationUnavailable(Exception):
    """The server has no `POST /checkpoints/replicate` route yet."""


@dataclass
class Vaults:
    """What `OpencbrRunner.prepare` creates: vault and resource ids by role."""

    dataset: str
    small: str
    restore_target: str
    replica: str


def _restore_log(body: dict[str, Any], backup_id: str) -> dict[str, Any] | None:
    for log in body["operation_logs"]:
        restore = log["extra_info"].get("restore") or {}
        if restore.get("backup_id") == backup_id and log["status"] in ("success", "failed"):
            return dict(log)
    return None


def _records(body: dict[str, Any], ids: set[str]) -> list[dict[str, Any]]:
    records = [r for b in body["backups"] for r in b.get("replication_records") or []]
    return [r for r in records if r["id"] in ids]


def _finished(record: dict[str, Any]) -> bool:
    return record["status"] == "success" or "fail" in record["status"]


class OpencbrRunner:
    def __init__(self, server: Server, api: Api, profile_dir: Path | None = None) -> None:
        self.server = server
        self.api = api
        self.profile_dir = profile_dir
        # The embedded Huey workers back off to one poll per 10 s when idle, so how long
        # the server sat idle before a measurement is part of what it measured.
        self._last_request = time.monotonic()

    def prepare(self, dataset: Path, small: Path, restore_target: Path) -> Vaults:
        """Register the trees as turbo protectables and put each in its own vault."""
        restore_target.mkdir(parents=True, exist_ok=True)
        data_id = self.api.register_directory(SOURCE, "dataset", str(dataset))
        small_id = self.api.register_directory(SOURCE, "small-files", str(small))
        target_id = self.api.register_directory(SOURCE, "restore-target", str(restore_target))
        return Vaults(
            dataset=self.api.create_vault(SOURCE, "bench-dataset", [data_id]),
            small=self.api.create_vault(SOURCE, "bench-small-files", [small_id]),
            restore_target=target_id,
            replica=self.api.create_vault(DESTINATION, "bench-replica", [], "replication"),
        )

    def fresh_vault(self, region: str, name: str, tree: Path) -> str:
        """A new vault of `region` protecting `tree`, registered afresh as its own resource
        (a resource is in one vault at a time): its first backup is a full one."""
        resource_id = self.api.register_directory(region, name, str(tree))
        return self.api.create_vault(region, name, [resource_id])

    def chunk_dir(self, vault_id: str) -> Path:
        return self.server.data_dir / "store" / SOURCE / "vaults" / vault_id / "chunks"

    # --- measurements -----------------------------------------------------------------

    def backup(
        self, vault_id: str, operation: str, logical: int, region: str = SOURCE
    ) -> tuple[Result, dict[str, Any]]:
        """POST /checkpoints and wait until available; the result and the backup's body."""

        def run() -> str:
            body = {"checkpoint": {"vault_id": vault_id}}
            checkpoint = self.api.call("POST", region, "/checkpoints", json=body)["checkpoint"]
            path = f"/checkpoints/{checkpoint['id']}"
            done = self.api.poll(region, path, lambda b: b["checkpoint"]["status"] != "protecting")
            if done["checkpoint"]["status"] != "available":
                raise RuntimeError(f"checkpoint ended {done['checkpoint']['status']}")
            return str(checkpoint["id"])

        checkpoint_id, seconds, peak, extra = self._measured(operation, run)
        listing = self.api.call("GET", region, "/backups", params={"checkpoint_id": checkpoint_id})
        backup = listing["backups"][0]
        extra["backup_id"] = backup["id"]
        result = Result("opencbr", operation, seconds, logical, backup["stored_bytes"], peak, extra)
        return result, backup

    def restore(self, backup_id: str, target_id: str, logical: int) -> Result:
        def run() -> dict[str, Any]:
            body = {"restore": {"resource_id": target_id}}
            self.api.call("POST", SOURCE, f"/backups/{backup_id}/restore", json=body)
            done = self.api.poll(
                SOURCE,
                "/operation-logs",
                lambda b: _restore_log(b, backup_id) is not None,
                operation_type="restore",
            )
            log = _restore_log(done, backup_id)
            assert log is not None
            return log

        log, seconds, peak, extra = self._measured("restore", run)
        if log["status"] != "success":
            raise RuntimeError(f"restore failed: {log.get('error_info')}")
        return Result("opencbr", "restore", seconds, logical, logical, peak, extra)

    def replicate(
        self,
        vault_id: str,
        destination_vault_id: str,
        operation: str,
        logical: int,
        regions: tuple[str, str] = (SOURCE, DESTINATION),
    ) -> Result:
        """Replicate the vault's not yet replicated backups from `regions[0]` into the other
        region (and so its project); wait for their records."""
        source, destination = regions
        body = {
            "replicate": {
                "vault_id": vault_id,
                "destination_region": destination,
                "destination_project_id": self.api.projects[destination],
                "destination_vault_id": destination_vault_id,
            }
        }

        def run() -> list[dict[str, Any]]:
            reply = self._start_replication(source, body)
            ids = {b["replication_record_id"] for b in reply["replication"]["backups"]}
            params = {"vault_id": vault_id, "show_replication": "true", "limit": 1000}
            done = self.api.poll(
                source, "/backups", lambda b: all(map(_finished, _records(b, ids))), **params
            )
            return _records(done, ids)

        records, seconds, peak, extra = self._measured(operation, run)
        failed = [r for r in records if r["status"] != "success"]
        if failed:
            raise RuntimeError(f"replication failed: {failed[0]['extra_info']}")
        result = self._replication_result(operation, records, seconds, logical, peak)
        result.extra.update(extra)
        return result

    def _start_replication(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.api.call("POST", region, "/checkpoints/replicate", json=body)
        except ApiError as exc:
            # 404 APIGW.0101 (no such route) or 405 (only GET /checkpoints/{id} matches).
            if exc.status == 405 or (exc.status == 404 and exc.code == "APIGW.0101"):
                raise ReplicationUnavailable(str(exc)) from exc
            raise

    @staticmethod
    def _replication_result(
        operation: str, records: list[dict[str, Any]], seconds: float, logical: int, peak: int
    ) -> Result:
        info = [r["extra_info"] for r in records]
        extra = {
            key: sum(int(i.get(key) or 0) for i in info)
            for key in ("bytes_total", "chunks_total", "chunks_copied", "chunks_present")
        }
        moved = sum(int(i.get("bytes_copied") or 0) for i in info)
        return Result("opencbr", operation, seconds, logical, moved, peak, extra)

    def migrate(
        self,
        region: str,
        vault_id: str,
        backup: dict[str, Any],
        destination_vault_id: str,
        operation: str,
        logical: int,
    ) -> Result:
        """migrateresources of every resource of the vault into another vault of the same
        project (region), timed until `backup` is in the destination (services/migrations.py:
        it moves once every chunk is copied and indexed there); moved = its stored bytes."""
        body = {"destination_vault_id": destination_vault_id}

        def run() -> None:
            self.api.call("POST", region, f"/vaults/{vault_id}/migrateresources", json=body)
            self.api.poll(
                region,
                f"/backups/{backup['id']}",
                lambda b: b["backup"]["vault_id"] == destination_vault_id,
            )

        _none, seconds, peak, extra = self._measured(operation, run)
        return Result("opencbr", operation, seconds, logical, backup["stored_bytes"], peak, extra)

    def wait_until_empty(self, region: str, vault_id: str, timeout: float) -> bool:
        """Whether the vault's `billing.used` reached 0 (its chunks collected) in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            vault = self.api.call("GET", region, f"/vaults/{vault_id}")["vault"]
            if vault["billing"]["used"] == 0:
                return True
            time.sleep(POLL)
        return False

    # --- timing, peak RSS and profiling ------------------------------------------------

    def _measured(
        self, operation: str, action: Callable[[], T]
    ) -> tuple[T, float, int, dict[str, Any]]:
        """Run `action`; its value, wall time, the server's peak RSS and context."""
        self.server.reset_peak_rss()
        profile = self.profile_dir / f"{operation}.txt" if self.profile_dir else None
        with self.server.profiling(profile):
            started = time.perf_counter()
            context = {"server_idle_before_s": round(time.monotonic() - self._last_request, 1)}
            try:
                value = action()
            finally:
                seconds = time.perf_counter() - started
                self._last_request = time.monotonic()
        return value, seconds, self.server.peak_rss(), context
