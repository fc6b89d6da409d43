"""`opencbr serve` settles the garbage collector before serving: the startup heap frozen out
of its sight, and full collections ten times rarer than CPython's default."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from opencbr.cli import FULL_COLLECTION_EVERY, settle_garbage_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_serve_freezes_the_startup_heap_and_makes_full_collections_rarer(
    restored_collector: None,
) -> None:
    young, middle, full = gc.get_threshold()
    survivor: list[object] = [[], "lives as long as the process"]
    assert gc.get_freeze_count() == 0

    settle_garbage_collector()

    assert gc.get_freeze_count() > 0 and gc.is_tracked(survivor)
    assert all(obj is not survivor for obj in gc.get_objects())  # no collection traverses it
    assert gc.get_threshold() == (young, middle, FULL_COLLECTION_EVERY)
    assert full < FULL_COLLECTION_EVERY
