"""Prometheus metrics of this process, and the listener that exposes them.

Imports nothing of opencbr: the API's middleware, the job wrapper and the CLI all count
into the metrics defined here.

Two kinds of metric (docs: README "Metrics"):
- events (counters, histograms below) count what *this process* did; with several
  processes (`opencbr worker`s, API replicas) Prometheus scrapes each one's listener and
  sums across instances (`sum without (instance) (...)`);
- state (vault usage, last backup, replication lag...) is read from the database at scrape
  time by a collector the caller passes to `start_listener`. Only one process of a
  deployment should pass it (`opencbr serve`), or every replica reports the same series.

Labels are bounded by design: task and outcome names, route templates, regions, project
and vault ids. Never a backup id, a digest, a path or anything secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from threading import Thread
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry()
for _standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_standard)

# Work runs from a fraction of a second (a small incremental) to hours (a first backup).
TASK_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

TASKS = Counter(
    "opencbr_tasks",
    "Background tasks this process ran, by task and outcome (success, failed, deferred, skipped).",
    ("task", "outcome"),
    registry=REGISTRY,
)
TASK_DURATION = Histogram(
    "opencbr_task_duration_seconds",
    "How long background tasks of this process took, by task and outcome.",
    ("task", "outcome"),
    buckets=TASK_BUCKETS,
    registry=REGISTRY,
)
BACKUP_STORED_BYTES = Counter(
    "opencbr_backup_stored_bytes",
    "Bytes backups finished by this process added to their vault's store (after "
    "deduplication and compression), by region.",
    ("region",),
    registry=REGISTRY,
)
REPLICATION_COPIED_BYTES = Counter(
    "opencbr_replication_copied_bytes",
    "Bytes replications finished by this process copied, by source and destination region.",
    ("source_region", "destination_region"),
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "opencbr_http_requests",
    "HTTP requests this process answered, by method, route template and status.",
    ("method", "route", "status"),
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "opencbr_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template.",
    ("method", "route"),
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)


@dataclass
class Listener:
    """The metrics HTTP listener of this process; `stop()` closes it."""

    server: Any  # wsgiref's WSGIServer
    thread: Thread
    state: Collector | None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.state is not None:
            REGISTRY.unregister(self.state)


def split_address(address: str) -> tuple[str, int]:
    """ "HOST:PORT" (settings validated its form) -> (host without IPv6 brackets, port)."""
    host, _sep, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def start_listener(address: str, state: Collector | None = None) -> Listener:
    """Serve this process's metrics (and `state`'s, if given) at http://ADDRESS/metrics
    on a thread of its own. Raises OSError when the address cannot be bound."""
    host, port = split_address(address)
    if state is not None:
        REGISTRY.register(state)
    try:
        server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError:
        if state is not None:
            REGISTRY.unregister(state)
        raise
    return Listener(server, thread, state)
