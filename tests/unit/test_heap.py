"""The process's heap: free memory goes back to the system when its last task ends."""

from __future__ import annotations

import gc
import os
import resource
from pathlib import Path

import pytest

from opencbr import heap

KiB, MiB = 1 << 10, 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_heap_is_trimmed_when_the_last_running_task_ends() -> None:
    clock = Clock()
    trimmer = heap.IdleTrimmer(clock)
    trimmer.started()
    trimmer.started()
    assert trimmer.ended() is False  # another task still runs: its buffers are in use
    assert trimmer.ended() is True


def test_the_heap_is_trimmed_at_most_once_per_interval() -> None:
    clock = Clock()
    trimmer = heap.IdleTrimmer(clock)
    trimmer.started()
    assert trimmer.ended() is True
    clock.now += heap.TRIM_INTERVAL_SECONDS / 2
    trimmer.started()
    assert trimmer.ended() is False  # a slot's many small backups end back to back
    clock.now += heap.TRIM_INTERVAL_SECONDS
    trimmer.started()
    assert trimmer.ended() is True


def _resident_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


@pytest.mark.skipif(
    not heap.can_trim() or not os.path.exists("/proc/self/statm"), reason="glibc on Linux"
)
def test_trim_gives_freed_heap_memory_back_to_the_system() -> None:
    """What a task's buffers leave behind: 128 MiB of heap blocks (64 KiB, under glibc's
    mmap threshold), freed but for every 16th, so the free memory lies in holes that
    free() alone never returns."""
    blocks = [bytearray(64 * KiB) for _ in range(2048)]
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    kept = blocks[::16]
    del blocks
    gc.collect()
    before = _resident_bytes()
    heap.trim()
    after = _resident_bytes()
    assert before - after > 64 * MiB, (before, after)
    assert len(kept) == 128
