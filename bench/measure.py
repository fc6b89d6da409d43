"""Wall time and peak RSS of child processes, and the record every measurement produces."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1 << 20


@dataclass
class Result:
    """One measurement: `tool` did `operation` on `logical_bytes` of data in `seconds`.

    `moved_bytes` is what the operation wrote to its destination (repository growth, bytes
    copied by a replication); `peak_rss_bytes` is the measured process's high-water mark.
    """

    tool: str
    operation: str
    seconds: float
    logical_bytes: int
    moved_bytes: int | None = None
    peak_rss_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.tool}.{self.operation}"

    @property
    def mib_per_s(self) -> float:
        return self.logical_bytes / MiB / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "operation": self.operation,
            "seconds": round(self.seconds, 3),
            "logical_bytes": self.logical_bytes,
            "mib_per_s": round(self.mib_per_s, 1),
            "moved_bytes": self.moved_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "extra": self.extra,
        }


class CommandFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class ProcessRun:
    seconds: float
    peak_rss_bytes: int


TIME = "/usr/bin/time"  # GNU time, Debian's package `time`


def run_measured(
    argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> ProcessRun:
    """Run a command to completion; its wall time and peak RSS (itself and its children).

    The peak comes from GNU time, not from our own wait4: a child started from Python
    inherits the interpreter's high-water mark across exec (vfork shares our memory), so
    wait4 would report at least the benchmark's own ~80 MiB for `cp`. GNU time is small,
    and Linux reports the maximum over the child and every descendant it waited for, so
    `sh -c "cp && sync"` counts too.
    """
    rss_file = log.with_suffix(".rss")
    started = time.perf_counter()
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        done = subprocess.run(
            [TIME, "-f", "%M", "-o", str(rss_file), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_environ(env),
            cwd=cwd,
            check=False,
        )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise CommandFailed(f"{argv[0]} exited {done.returncode}:\n{tail}")
    return ProcessRun(seconds, int(rss_file.read_text().split()[-1]) * 1024)


def _environ(extra: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, **(extra or {})}


def tree_bytes(root: Path) -> int:
    """Apparent size of the regular files under `root` (what a copy of it must write)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                total += os.stat(path).st_size
    return total


def read_tree(root: Path) -> int:
    """Read every regular file under `root` once; the bytes read.

    Brings a source tree into the page cache before the tools read it. On these machines
    DAMON pages out file data idle for about a minute, so without this the first tool
    to back up a tree unused since the last run reads it from disk and the next ones
    find it cached (20 s against 7 s for opencbr's small-files backup).
    """
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                with open(path, "rb", buffering=0) as f:
                    while block := f.read(1 << 20):
                        total += len(block)
    return total


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


# ext4 without a journal (these machines' root file system) does not hand out an inode
# freed in the last 60 s, or 360 s while its inode table block is dirty, which the next
# run's own new files make it: every file created meanwhile first walks past all of
# them, under its folder's lock. Deleting the previous run's ~4,000 files therefore
# slowed the next run's file creation for minutes (perf: 15-25% of a replication's CPU in
# recently_deleted(), `cp` of the chunk folder 1.7 s instead of 0.6 s), most for the
# tools that write one file per chunk. A run waits that window out (`--settle`).
INODE_REUSE_SECONDS = 370.0
_CLEANUP_STAMP = ".last-cleanup"


def remove_tree(path: Path, workdir: Path) -> None:
    """Delete `path`, flush the deletion to disk and note when (see INODE_REUSE_SECONDS)."""
    if not path.exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    os.sync()  # clean inode tables: the window is 60 s, not 360 s
    (workdir / _CLEANUP_STAMP).touch()


def seconds_until_inodes_reusable(workdir: Path, window: float = INODE_REUSE_SECONDS) -> float:
    try:
        deleted_at = (workdir / _CLEANUP_STAMP).stat().st_mtime
    except FileNotFoundError:
        return 0.0
    return max(0.0, deleted_at + window - time.time())
