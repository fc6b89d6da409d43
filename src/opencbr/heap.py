"""glibc malloc settings of a long-running process: few arenas, and free memory given back.

Both matter because backups, restores and copies pass ~1 MiB chunk buffers between a dozen
threads: glibc keeps what they free in its arenas (and, once a buffer that size was freed,
serves later ones from the heap rather than mmap), so a process that ran a large job stays
that large, and the next job's peak adds to it. Elsewhere (musl, macOS) both are no-ops.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable

_M_ARENA_MAX = -8  # <malloc.h>
MALLOC_ARENAS = 2
# At most one trim a second: a policy slot's thousands of small backups end one after
# another, and each trim walks the arenas (10 ms when it gives back ~240 MiB, 0.2 ms
# when nothing is free).
TRIM_INTERVAL_SECONDS = 1.0

_LIBC = ctypes.CDLL(None)
_mallopt = getattr(_LIBC, "mallopt", None)  # glibc only
_malloc_trim = getattr(_LIBC, "malloc_trim", None)


def limit_arenas() -> None:
    """Let glibc's malloc use two arenas unless the operator set MALLOC_ARENA_MAX; call it
    before any thread starts.

    By default a thread that contends for the allocator gets an arena of its own, up to 8
    per core, and each arena keeps the buffers freed into it. With a dozen worker, I/O and
    request threads passing ~1 MiB chunks around, that retained memory grew the server's
    RSS operation after operation (bench, server's peak during the small-files backup at
    the end of a run: 234 MiB, 204 MiB with two arenas, same speed).
    """
    if "MALLOC_ARENA_MAX" not in os.environ and _mallopt is not None:
        _mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


class IdleTrimmer:
    """Gives the heap's free memory back to the system (glibc `malloc_trim`) each time the
    process's last running task ends, at most once per TRIM_INTERVAL_SECONDS.

    Measured with `make bench`: the server's resident size after the encryption phase
    stayed at ~260 MiB without it, so the small-files backup that followed peaked at
    289 MiB (over the 300 MB target) where the same backup alone peaks at ~210 MiB.
    Thread rules: `started`/`ended` from any thread, paired per task.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._running = 0
        self._last_trim = float("-inf")

    def started(self) -> None:
        with self._lock:
            self._running += 1

    def ended(self) -> bool:
        """The task ended; True if that made this trim the heap."""
        with self._lock:
            self._running -= 1
            now = self._clock()
            if self._running or now - self._last_trim < TRIM_INTERVAL_SECONDS:
                return False
            self._last_trim = now
        trim()
        return True


def trim() -> bool:
    """Return free heap memory to the system; True if glibc released some."""
    return _malloc_trim is not None and bool(_malloc_trim(0))


def can_trim() -> bool:
    """Whether this C library has `malloc_trim` (glibc)."""
    return _malloc_trim is not None
