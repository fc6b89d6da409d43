"""One `opencbr serve` process started by the benchmark, with its own TOML configuration.

Lifecycle: `write_config` then `start()`; `stop()` ends it (SIGTERM, then SIGKILL). The
process's peak RSS is read from /proc (VmHWM) and reset between measurements by writing
5 to /proc/<pid>/clear_refs, so each measurement reports its own peak without a restart.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

OPENCBR = [sys.executable, "-m", "opencbr"]
START_TIMEOUT = 120.0
PROFILE_RATE = 100  # py-spy samples per second: about 1% of a core


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path,
    data_dir: Path,
    roots: dict[str, Path],
    *,
    embedded_worker: bool = True,
    database_url: str | None = None,
    unencrypted: Collection[str] = (),
) -> Path:
    """A config with one protectable root per region (the benchmark's data lives there).

    The metrics listener gets a free port too: the default one may be held by another
    opencbr on the machine, and the server would not start. With `unencrypted` region
    names, every region of `roots` is written out as a `[[regions]]` entry (storage where
    the default regions keep it, `<data_dir>/store/<name>`) and those named get
    `encryption = false`; without them the server has the default regions.
    """
    lines = [
        f'data_dir = "{data_dir}"',
        f'listen = "127.0.0.1:{free_port()}"',
        f'metrics_listen = "127.0.0.1:{free_port()}"',
        f"embedded_worker = {'true' if embedded_worker else 'false'}",
        'log_level = "warning"',
    ]
    if database_url is not None:
        lines.append(f"database_url = {json.dumps(database_url)}")
    if unencrypted:
        for region in roots:
            lines += ["", "[[regions]]", f'name = "{region}"']
            lines += [f'storage = "{data_dir / "store" / region}"']
            lines += ["encryption = false"] if region in unencrypted else []
    for region, root in roots.items():
        root.mkdir(parents=True, exist_ok=True)
        lines += ["", "[[protectable_roots]]", f'project = "{region}"', f'path = "{root}"']
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Server:
    config: Path
    data_dir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        for line in self.config.read_text().splitlines():
            if line.startswith("listen"):
                return "http://" + line.split('"')[1]
        raise ValueError(f"no listen address in {self.config}")

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    def start(self, *args: str) -> None:
        """Start `opencbr serve` with extra `args` (e.g. "--no-worker")."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "serve.log", "ab") as log:
            self.process = subprocess.Popen(
                [*OPENCBR, "serve", "--config", str(self.config), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/identity/v3", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("opencbr serve did not come up:\n" + self.log_tail())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def log_tail(self, size: int = 4000) -> str:
        path = self.data_dir / "serve.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def password(self) -> str:
        return (self.data_dir / "admin-password").read_text().strip()

    def projects(self) -> dict[str, str]:
        """Region name -> project id, from the idempotent `opencbr admin bootstrap`."""
        argv = [*OPENCBR, "admin", "bootstrap", "--user", "admin", "--password"]
        argv += [self.password(), "--config", str(self.config)]
        done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
        return {p["region"]: p["id"] for p in json.loads(done.stdout)["projects"]}

    def reset_peak_rss(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def peak_rss(self) -> int:
        """VmHWM of the server process (the embedded workers are threads in it), bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc status")

    @contextlib.contextmanager
    def profiling(self, output: Path | None) -> Iterator[None]:
        """py-spy samples every thread of the server into `output` (no-op for None).

        The output is collapsed stacks: one line per distinct stack, frames separated by
        ';', the thread first, then the number of samples.
        """
        if output is None:
            yield
            return
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        output.parent.mkdir(parents=True, exist_ok=True)
        argv = [py_spy, "record", "-p", str(self.pid), "-r", str(PROFILE_RATE), "--threads"]
        argv += ["--format", "raw", "-o", str(output)]
        profiler = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let py-spy attach before the work starts
        try:
            yield
        finally:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
