"""The manifest format (opencbr.archive.manifest): round trips and strict loading."""

from __future__ import annotations

import json
from typing import Any

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from opencbr.archive.manifest import (
    FORMAT_VERSION,
    Manifest,
    ManifestError,
    ZeroRange,
)
from opencbr.archive.sink import ChunkRef

D1, D2, D3 = ("1" * 64, "a" * 64, "0123456789abcdef" * 4)


def _tree(**overrides: Any) -> Manifest:
    fields: dict[str, Any] = {
        "kind": "tree",
        "size": 30,
        "chunks": (ChunkRef(D1, 10), ChunkRef(D2, 20)),
        "catalog": (ChunkRef(D3, 5),),
        "metadata": {"resource_id": "r-1", "paths": ["/srv"], "nested": {"n": 1.5}},
    }
    return Manifest(**{**fields, **overrides})


def _disk(**overrides: Any) -> Manifest:
    fields: dict[str, Any] = {
        "kind": "disk",
        "size": 100,
        "chunks": (ChunkRef(D1, 8), ChunkRef(D1, 8)),
        "zero_ranges": (ZeroRange(0, 8), ZeroRange(16, 76)),  # data at 8 and at 92
        "block_size": 8,
    }
    return Manifest(**{**fields, **overrides})


def _document(manifest: Manifest) -> dict[str, Any]:
    document = json.loads(zstandard.ZstdDecompressor().decompress(manifest.to_bytes()))
    assert isinstance(document, dict)
    return document


def _encode(document: object) -> bytes:
    return zstandard.ZstdCompressor().compress(json.dumps(document).encode())


@pytest.mark.parametrize("manifest", [_tree(), _disk()], ids=["tree", "disk"])
def test_manifest_round_trips_exactly(manifest: Manifest) -> None:
    blob = manifest.to_bytes()
    assert Manifest.from_bytes(blob) == manifest
    assert Manifest.from_bytes(blob).to_bytes() == blob  # deterministic


def test_wire_format_is_versioned_json_in_zstd() -> None:
    document = _document(_tree())
    assert document["format"] == "opencbr-manifest"
    assert document["version"] == FORMAT_VERSION == 1
    assert document["chunks"] == [[D1, 10], [D2, 20]]
    assert document["zero_ranges"] == [] and document["block_size"] is None


def test_digests_cover_data_and_catalog() -> None:
    assert _tree().digests() == {D1, D2, D3}
    assert _disk().digests() == {D1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "version"),
        ({"format": "something-else"}, "not a manifest"),
        ({"kind": "volume"}, "kind"),
        ({"size": True}, "integer"),
        ({"size": 31}, "add up"),
        ({"size": "30"}, "integer"),
        ({"chunks": [[D1, 10], [D2.upper(), 20]]}, "digest"),
        ({"chunks": [[D1, 10, 0], [D2, 20]]}, "2-element"),
        ({"chunks": [[D1, 0], [D2, 30]]}, "length"),
        ({"chunks": {"a": 1}}, "list"),
        ({"catalog": []}, "catalog"),
        ({"metadata": []}, "object"),
        ({"zero_ranges": [[0, 1]]}, "no zero ranges"),
        ({"block_size": 4}, "no zero ranges"),
        ({"extra": 1}, "keys"),
    ],
)
def test_loading_refuses_malformed_tree_manifests(change: dict[str, Any], message: str) -> None:
    document = {**_document(_tree()), **change}
    with pytest.raises(ManifestError, match=message):
        Manifest.from_bytes(_encode(document))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"zero_ranges": [[16, 76], [0, 8]]}, "overlaps or is unsorted"),
        ({"zero_ranges": [[0, 8], [4, 96]]}, "overlaps or is unsorted"),
        ({"zero_ranges": [[0, 8], [16, 0]]}, "overlaps or is unsorted"),
        ({"zero_ranges": [[0, 8], [16, 90]]}, "past the image size"),
        ({"zero_ranges": [[0, 8]]}, "image size"),
        ({"block_size": None}, "block size"),
        ({"block_size": 0}, "block size"),
        ({"catalog": [[D3, 5]]}, "no catalog"),
    ],
)
def test_loading_refuses_inconsistent_disk_manifests(change: dict[str, Any], message: str) -> None:
    document = {**_document(_disk()), **change}
    with pytest.raises(ManifestError, match=message):
        Manifest.from_bytes(_encode(document))


def test_missing_key_is_refused() -> None:
    document = _document(_tree())
    del document["metadata"]
    with pytest.raises(ManifestError, match="keys"):
        Manifest.from_bytes(_encode(document))


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"not zstd at all",
        zstandard.ZstdCompressor().compress(b"\xff\xfe"),
        zstandard.ZstdCompressor().compress(b"[1, 2]"),
        zstandard.ZstdCompressor().compress(b'{"size": NaN}'),
    ],
    ids=["empty", "garbage", "not-utf8", "not-object", "nan"],
)
def test_unreadable_blobs_raise_manifest_error(blob: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_bytes(blob)


def test_oversized_frame_is_refused_before_decompressing() -> None:
    bomb = zstandard.ZstdCompressor().compress(b" " * (1 << 20))  # declares 1 MiB
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("opencbr.archive.manifest.MAX_MANIFEST_JSON", 1 << 10)
        with pytest.raises(ManifestError, match="over the limit"):
            Manifest.from_bytes(bomb)


def test_metadata_must_be_json() -> None:
    with pytest.raises(ManifestError, match="JSON"):
        _tree(metadata={"when": object()})
    with pytest.raises(ManifestError, match="JSON"):
        _tree(metadata={"x": float("nan")})


_digests = st.text("0123456789abcdef", min_size=64, max_size=64)
_refs = st.lists(st.builds(ChunkRef, _digests, st.integers(1, 2**40)), max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@given(_refs, _refs.filter(bool), st.dictionaries(st.text(max_size=8), _json, max_size=4))
def test_any_valid_tree_manifest_round_trips(
    chunks: list[ChunkRef], catalog: list[ChunkRef], metadata: dict[str, Any]
) -> None:
    manifest = Manifest(
        kind="tree",
        size=sum(r.length for r in chunks),
        chunks=tuple(chunks),
        catalog=tuple(catalog),
        metadata=metadata,
    )
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 2**33)), max_size=30))
def test_any_valid_disk_manifest_round_trips(runs: list[tuple[bool, int]]) -> None:
    chunks: list[ChunkRef] = []
    zeros: list[ZeroRange] = []
    offset = 0
    for is_zero, length in runs:
        if is_zero and zeros and zeros[-1].offset + zeros[-1].length == offset:
            zeros[-1] = ZeroRange(zeros[-1].offset, zeros[-1].length + length)
        elif is_zero:
            zeros.append(ZeroRange(offset, length))
        else:
            chunks.append(ChunkRef(D2, length))
        offset += length
    manifest = Manifest(
        kind="disk",
        size=offset,
        chunks=tuple(chunks),
        zero_ranges=tuple(zeros),
        block_size=4 << 20,
    )
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest
