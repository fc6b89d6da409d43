"""The chunk digest and stored format (opencbr.storage.chunk)."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from opencbr.storage.chunk import (
    CODEC_RAW,
    CODEC_ZSTD,
    HEADER_SIZE,
    MAX_CHUNK_SIZE,
    decode_chunk,
    digest,
    encode_chunk,
    open_chunk,
    stored_digest,
    verify_chunk,
    verify_stored,
)
from opencbr.storage.store import CorruptChunkError

TEXT = b"2024-05-01 12:00:00 INFO request served in 12 ms\n" * 20000  # ~1 MiB of log


def header(blob: bytes) -> tuple[bytes, int, int, int, int]:
    magic, version, codec, reserved, length = struct.unpack(">4sBBHQ", blob[:HEADER_SIZE])
    return magic, version, codec, reserved, length


def with_header(blob: bytes, **fields: int) -> bytes:
    """`blob` with some header fields replaced (version, codec, reserved, length)."""
    magic, version, codec, reserved, length = header(blob)
    values = {"version": version, "codec": codec, "reserved": reserved, "length": length}
    values.update(fields)
    packed = struct.pack(">4sBBHQ", magic, *values.values())
    return packed + blob[HEADER_SIZE:]


# Every way of reading a stored chunk refuses the same damage.
CHECKS = pytest.mark.parametrize(
    "check", [decode_chunk, open_chunk, verify_chunk], ids=["decode", "open", "verify"]
)
Check = Callable[[bytes, str], object]


def flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


def test_digest_is_lowercase_hex_blake3() -> None:
    # BLAKE3 of the empty input, from the BLAKE3 specification's test vectors.
    assert digest(b"") == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert len(digest(TEXT)) == 64
    assert digest(TEXT) == digest(TEXT).lower()
    assert digest(b"a") != digest(b"b")


def test_compressible_data_is_stored_zstd_and_round_trips() -> None:
    blob = encode_chunk(TEXT)
    assert header(blob) == (b"OCBC", 1, CODEC_ZSTD, 0, len(TEXT))
    assert len(blob) < len(TEXT) // 10
    assert decode_chunk(blob, digest(TEXT)) == TEXT


def test_incompressible_data_is_stored_raw_and_round_trips() -> None:
    data = os.urandom(1 << 20)
    blob = encode_chunk(data)
    assert header(blob) == (b"OCBC", 1, CODEC_RAW, 0, len(data))
    assert blob[HEADER_SIZE:] == data
    assert decode_chunk(blob, digest(data)) == data


def test_empty_data_round_trips() -> None:
    blob = encode_chunk(b"")
    assert len(blob) == HEADER_SIZE
    assert decode_chunk(blob, digest(b"")) == b""


def test_higher_level_compresses_at_least_as_well() -> None:
    assert len(encode_chunk(TEXT, level=19)) <= len(encode_chunk(TEXT, level=1))


def test_data_over_the_size_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_chunk(bytes(MAX_CHUNK_SIZE + 1))


@pytest.mark.parametrize("data", [TEXT, os.urandom(4096), b""], ids=["zstd", "raw", "empty"])
def test_verify_accepts_what_decode_accepts(data: bytes) -> None:
    blob = encode_chunk(data)
    assert verify_chunk(blob, digest(data)) is None
    assert decode_chunk(blob, digest(data)) == data


def test_open_hands_a_raw_chunk_over_as_a_view_of_its_stored_bytes() -> None:
    data = os.urandom(256 * 1024)
    blob = encode_chunk(data)
    opened = open_chunk(blob, digest(data))
    assert isinstance(opened, memoryview) and opened.obj is blob  # not copied
    assert opened == data
    compressed = encode_chunk(TEXT)
    assert (
        bytes(open_chunk(compressed, digest(TEXT)))
        == TEXT
        == decode_chunk(compressed, digest(TEXT))
    )


@CHECKS
def test_unsupported_version_is_corrupt(check: Check) -> None:
    blob = with_header(encode_chunk(TEXT), version=3)
    with pytest.raises(CorruptChunkError, match="version 3"):
        check(blob, digest(TEXT))


@CHECKS
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b"XXXX" + b[4:], "magic"),
        (lambda b: b[: HEADER_SIZE - 1], "shorter than its header"),
        (lambda b: with_header(b, codec=7), "codec"),
        (lambda b: with_header(b, reserved=1), "flags"),
        (lambda b: with_header(b, length=MAX_CHUNK_SIZE + 1), "exceeds"),
        (lambda b: with_header(b, length=len(TEXT) + 1), "frame size"),
        (lambda b: b[:-100], "zstd"),
        (lambda b: b + b"trailing", "zstd"),
    ],
    ids=["magic", "truncated-header", "codec", "flags", "huge-length", "length", "cut", "extra"],
)
def test_malformed_stored_bytes_are_corrupt(damage: object, message: str, check: Check) -> None:
    assert callable(damage)
    with pytest.raises(CorruptChunkError, match=message):
        check(damage(encode_chunk(TEXT)), digest(TEXT))


@CHECKS
def test_raw_payload_of_the_wrong_length_is_corrupt(check: Check) -> None:
    data = os.urandom(1000)
    with pytest.raises(CorruptChunkError, match="header says 1000"):
        check(encode_chunk(data)[:-1], digest(data))


@CHECKS
@pytest.mark.parametrize("data", [TEXT, os.urandom(4096)], ids=["zstd", "raw"])
def test_a_flipped_payload_byte_is_corrupt_and_names_the_digest(data: bytes, check: Check) -> None:
    blob = encode_chunk(data)
    for index in (HEADER_SIZE, len(blob) // 2, len(blob) - 1):
        with pytest.raises(CorruptChunkError, match=digest(data)):
            check(flip(blob, index), digest(data))


@CHECKS
def test_a_wrong_expected_digest_is_corrupt_and_names_it(check: Check) -> None:
    other = digest(b"something else")
    with pytest.raises(CorruptChunkError, match=f"{other}: content does not match"):
        check(encode_chunk(TEXT), other)


@CHECKS
def test_a_zstd_frame_without_content_size_is_corrupt(check: Check) -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(TEXT)
    blob = struct.pack(">4sBBHQ", b"OCBC", 1, CODEC_ZSTD, 0, len(TEXT)) + frame
    with pytest.raises(CorruptChunkError, match="frame size"):
        check(blob, digest(TEXT))


def test_encode_and_decode_are_safe_from_many_threads() -> None:
    inputs = [TEXT[i * 997 :] + os.urandom(i * 3000) for i in range(64)]
    expected = [encode_chunk(data) for data in inputs]

    def round_trip(i: int) -> bool:
        blob = encode_chunk(inputs[i])
        return blob == expected[i] and decode_chunk(blob, digest(inputs[i])) == inputs[i]

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(round_trip, list(range(64)) * 4))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=20000), level=st.integers(min_value=-5, max_value=19))
def test_any_bytes_round_trip_at_any_level(data: bytes, level: int) -> None:
    blob = encode_chunk(data, level=level)
    assert len(blob) <= HEADER_SIZE + len(data)  # never larger than raw storage
    assert decode_chunk(blob, digest(data)) == data


@CHECKS
@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=5000), position=st.integers(min_value=0))
def test_any_single_byte_change_is_detected(data: bytes, position: int, check: Check) -> None:
    blob = encode_chunk(data)
    with pytest.raises(CorruptChunkError):
        check(flip(blob, position % len(blob)), digest(data))


# --- the stored-bytes digest (invariant 3: copies check stored bytes without decoding) --


# TEXT stored raw: a valid chunk of the same content whose stored bytes differ.
RAW_TEXT = struct.pack(">4sBBHQ", b"OCBC", 1, CODEC_RAW, 0, len(TEXT)) + TEXT


def test_the_stored_digest_is_blake3_of_the_whole_stored_chunk() -> None:
    verify_chunk(RAW_TEXT, digest(TEXT))
    blob = encode_chunk(TEXT)
    assert stored_digest(blob) == digest(blob)  # header and payload alike
    verify_stored(blob, digest(TEXT), stored_digest(blob))


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: flip(blob, len(blob) // 2),  # a flipped bit in the payload
        lambda blob: flip(blob, 9),  # in the header's length
        lambda blob: blob[:-1],  # truncated
        lambda blob: RAW_TEXT,  # same content, other stored bytes
        lambda blob: encode_chunk(b"another chunk's content"),  # swapped for another
    ],
    ids=["bit", "header", "truncated", "re-encoded", "swapped"],
)
def test_stored_bytes_that_differ_from_their_digest_are_refused_naming_the_chunk(
    damage: Callable[[bytes], bytes],
) -> None:
    blob = encode_chunk(TEXT)
    name = digest(TEXT)
    with pytest.raises(CorruptChunkError, match=f"chunk {name}: stored bytes") as raised:
        verify_stored(damage(blob), name, stored_digest(blob))
    assert raised.value.digest == name
