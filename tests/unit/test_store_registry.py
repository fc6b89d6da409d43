"""The registry of region stores (services/stores.py) for a region this process does not
have: a permanent storage fault with a reason for the work's row, never a KeyError."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencbr.services.stores import StoreRegistry
from opencbr.storage.store import PermanentStorageError


def test_a_region_missing_from_this_process_is_a_permanent_fault_that_says_so(
    tmp_path: Path,
) -> None:
    registry = StoreRegistry({"region1": str(tmp_path / "region1")})
    assert registry.url("region1", "v1").endswith("v1")
    for call in (
        lambda: registry.url("region3", "v1"),
        lambda: registry.vault("region3", "v1"),
        lambda: registry.read_threads("region3", 2),
    ):
        with pytest.raises(PermanentStorageError, match="region region3 is not configured"):
            call()
    assert not (tmp_path / "region3").exists()
