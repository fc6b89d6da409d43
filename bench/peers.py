"""The peers, run on the same data in the same run as opencbr: restic, borg and `cp -r`.

Each run is one child process, timed and measured (peak RSS) by `measure.run_measured`.
Both backup tools keep their caches and configuration under the run directory, so every
run starts cold and leaves nothing in the user's home. Both fsync their repositories, so
their numbers are for durable backups, like opencbr's.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.measure import TIME, Result, run_measured, tree_bytes

INSTALL_HINT = "apt-get install -y restic borgbackup time   (Debian: restic 0.14, borg 1.2)"
PASSWORD = "opencbr-bench"  # restic always encrypts; the key stretching is paid once per run
BORG_COMPRESSION = "zstd,3"  # opencbr's default level, for a like-for-like comparison


def missing(tools: list[str]) -> list[str]:
    """The tools (and GNU time, which measures them) that are not installed."""
    absent = [tool for tool in tools if shutil.which(tool) is None]
    return absent + ([TIME] if tools and not Path(TIME).exists() else [])


def version(tool: str) -> str:
    argv = [tool, "version"] if tool == "restic" else [tool, "--version"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown"


@dataclass
class Restic:
    """restic with local repositories under `home`; the full repo is `home/repo`."""

    home: Path
    log: Path

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_FROM_PASSWORD": PASSWORD,
            "RESTIC_CACHE_DIR": str(self.home / "cache"),
        }

    def repo(self, name: str) -> Path:
        return self.home / name

    def init(self, name: str, copy_from: str | None = None) -> None:
        argv = ["restic", "-r", str(self.repo(name)), "init"]
        if copy_from:
            # Same chunker parameters as the source: `copy` can then skip known blobs.
            argv += ["--from-repo", str(self.repo(copy_from)), "--copy-chunker-params"]
        run_measured(argv, self.log, self.env)

    def backup(self, name: str, source: Path, operation: str, logical: int) -> Result:
        repo = self.repo(name)
        before = tree_bytes(repo)
        argv = ["restic", "-r", str(repo), "backup", "--quiet", "--host", "bench", str(source)]
        run = run_measured(argv, self.log, self.env)
        moved = tree_bytes(repo) - before
        return Result("restic", operation, run.seconds, logical, moved, run.peak_rss_bytes)

    def copy(self, source: str, destination: str, logical: int) -> Result:
        """`restic copy` of every snapshot of `source` into a fresh repository."""
        self.init(destination, copy_from=source)
        argv = ["restic", "-r", str(self.repo(destination)), "copy"]
        argv += ["--from-repo", str(self.repo(source))]
        run = run_measured(argv, self.log, self.env)
        moved = tree_bytes(self.repo(destination))
        stored = tree_bytes(self.repo(source))
        extra = {"source_repo_bytes": stored}
        return Result("restic", "copy_full", run.seconds, logical, moved, run.peak_rss_bytes, extra)


@dataclass
class Borg:
    """borg with unencrypted local repositories under `home`."""

    home: Path
    log: Path

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "BORG_BASE_DIR": str(self.home / "base"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }

    def repo(self, name: str) -> Path:
        return self.home / name

    def init(self, name: str) -> None:
        run_measured(["borg", "init", "-e", "none", str(self.repo(name))], self.log, self.env)

    def create(self, name: str, archive: str, source: Path, operation: str, logical: int) -> Result:
        repo = self.repo(name)
        before = tree_bytes(repo)
        argv = ["borg", "create", "--compression", BORG_COMPRESSION]
        argv += [f"{repo}::{archive}", str(source)]
        run = run_measured(argv, self.log, self.env)
        moved = tree_bytes(repo) - before
        return Result("borg", operation, run.seconds, logical, moved, run.peak_rss_bytes)


def copy_and_sync(source: Path, destination: Path, logical: int, log: Path) -> Result:
    """The machine's limit for a durable copy: `cp -r` of a chunk folder, then `sync`.

    `logical` is the dataset size the folder holds, so the throughput compares with the
    replication of the same backup (same folder, same definition of throughput).
    """
    script = 'cp -r "$1" "$2" && sync'
    run = run_measured(["sh", "-c", script, "sh", str(source), str(destination)], log)
    moved = tree_bytes(destination)
    return Result("cp", "copy_chunk_dir", run.seconds, logical, moved, run.peak_rss_bytes)
