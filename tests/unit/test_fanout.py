"""Read once, send to many: the union of what several destinations lack."""

from __future__ import annotations

from opencbr.services.fanout import Wanted, union

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
