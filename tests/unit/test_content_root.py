"""The content-root encoding (archive/content_root.py): exactly what it covers."""

from __future__ import annotations

import blake3
import pytest

from opencbr.archive.content_root import SERVER_PREFIX, UNIT_PREFIX, server_root, unit_root
from opencbr.archive.sink import ChunkRef

A = ChunkRef("aa" * 32, 1000)
B = ChunkRef("bb" * 32, 2000)
C = ChunkRef("cc" * 32, 30)


def test_unit_root_is_the_documented_encoding() -> None:
    expected = blake3.blake3(
        UNIT_PREFIX
        + (2).to_bytes(8, "big")
        + bytes.fromhex(A.digest)
        + (1000).to_bytes(8, "big")
        + bytes.fromhex(B.digest)
        + (2000).to_bytes(8, "big")
        + (1).to_bytes(8, "big")
        + bytes.fromhex(C.digest)
        + (30).to_bytes(8, "big")
    ).digest()
    assert unit_root([A, B], [C]) == expected


def test_unit_root_changes_with_order_length_list_and_digest() -> None:
    root = unit_root([A, B], [C])
    assert unit_root([B, A], [C]) != root  # order
    assert unit_root([A, ChunkRef(B.digest, 2001)], [C]) != root  # length
    assert unit_root([A, B, C], []) != root  # a catalog chunk is not a data chunk
    assert unit_root([A], [B, C]) != root
    assert unit_root([A, ChunkRef("bd" * 32, 2000)], [C]) != root  # digest
    assert unit_root([A, B], [C]) == root  # deterministic


def test_server_root_covers_volume_names_and_roots_in_a_fixed_order() -> None:
    sys_root, data_root = unit_root([A], [C]), unit_root([B])
    root = server_root([("sys", sys_root), ("data", data_root)])
    assert server_root([("data", data_root), ("sys", sys_root)]) == root  # any input order
    assert server_root([("sys", data_root), ("data", sys_root)]) != root  # swapped contents
    assert server_root([("sys", sys_root)]) != root
    expected = blake3.blake3(
        SERVER_PREFIX
        + (2).to_bytes(8, "big")
        + (4).to_bytes(8, "big")
        + b"data"
        + data_root
        + (3).to_bytes(8, "big")
        + b"sys"
        + sys_root
    ).digest()
    assert root == expected
    # A lone volume's server root is never its unit root (domain separation).
    assert server_root([("sys", sys_root)]) != sys_root


def test_server_root_refuses_a_root_of_the_wrong_size() -> None:
    with pytest.raises(ValueError):
        server_root([("sys", b"short")])
