"""Read once, send to many: the union of what several destinations lack."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from opencbr.services.fanout import IN_FLIGHT, Wanted, copy_in_order, union

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def test_each_chunk_once_with_every_destination_that_lacks_it_in_plan_order() -> None:
    first = [(B, 10, 7), (A, 20, 9)]
    second = [(A, 20, 9), (C, 30, 11)]
    third: list[tuple[str, int, int]] = []  # holds everything already
    assert union([first, second, third]) == [
        Wanted(B, 7, (0,)),
        Wanted(A, 9, (0, 1)),
        Wanted(C, 11, (1,)),
    ]


def test_nothing_lacking_nothing_to_copy() -> None:
    assert union([[], []]) == []
    assert union([[(D, 1, 1)]]) == [Wanted(D, 1, (0,))]


def test_a_paced_copy_hands_out_each_finished_job_before_drawing_far_ahead() -> None:
    """With `todo` paced (the rate limit waits between chunks), a finished job is handed
    out after the next submission, not once IN_FLIGHT jobs are under way: progress follows
    the copy (it stayed at 0% for the first 16 chunks of a rate-limited copy). Order and
    results are kept."""
    copied: dict[int, threading.Event] = {}
    draws: list[int] = []

    def copy(job: int) -> int:
        copied[job].set()
        return job * 10

    def paced() -> Iterator[int]:
        for job in range(40):
            copied[job] = threading.Event()
            if job:  # the pace: the previous chunk is copied before the next is drawn
                assert copied[job - 1].wait(5)
            draws.append(job)
            yield job

    seen: list[tuple[int, int, int]] = []  # (job, result, jobs drawn when it came out)
    with ThreadPoolExecutor(2) as pool:
        for job, result in copy_in_order(pool, copy, paced()):
            seen.append((job, result, len(draws)))
    assert [(job, result) for job, result, _ in seen] == [(j, j * 10) for j in range(40)]
    # Old behaviour: job j came out once j + IN_FLIGHT jobs were drawn. Now right after
    # the next draws (a margin for the thread that marks a future done being late).
    assert all(drawn <= job + IN_FLIGHT // 2 for job, _, drawn in seen), seen[:5]
