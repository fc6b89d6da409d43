"""Format version 2: encrypted, authenticated chunks and sealed manifests
(opencbr.storage.chunk, opencbr.storage.sealing)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from opencbr.storage import sealing as sealing_module
from opencbr.storage.chunk import (
    SEALED_HEADER_SIZE,
    decode_chunk,
    digest,
    encode_chunk,
    reseal_chunk,
    sealed_key_id,
    verify_chunk,
)
from opencbr.storage.sealing import (
    ManifestCorruptError,
    Sealing,
    UnknownKeyError,
    keyed_digest,
    open_manifest,
    seal_manifest,
)
from opencbr.storage.store import CorruptChunkError

TEXT = b"2024-05-01 12:00:00 INFO request served in 12 ms\n" * 20000  # compresses well
NOISE = os.urandom(300_000)  # does not: stored raw, then sealed


class Keys:
    """A keyring of two data keys (ids 7 and 8) and a naming secret."""

    def __init__(self) -> None:
        self.naming_key = os.urandom(32)
        self.ciphers = {7: AESGCM(os.urandom(32)), 8: AESGCM(os.urandom(32))}

    def cipher(self, key_id: int) -> AESGCM:
        if key_id not in self.ciphers:
            raise UnknownKeyError(f"no data key {key_id}")
        return self.ciphers[key_id]

    def sealing(self, key_id: int = 7) -> Sealing:
        return Sealing(key_id, self.ciphers[key_id], self.naming_key)


@pytest.fixture
def keys() -> Keys:
    return Keys()


def flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


@pytest.mark.parametrize("data", [TEXT, NOISE, b""], ids=["zstd", "raw", "empty"])
def test_a_sealed_chunk_round_trips_under_its_keyed_name(keys: Keys, data: bytes) -> None:
    name = keyed_digest(keys.naming_key, data)
    assert name != digest(data) and len(name) == 64
    blob = encode_chunk(data, sealing=keys.sealing())
    assert blob[4] == 2 and sealed_key_id(blob, name) == 7
    assert decode_chunk(blob, name, keys) == data
    verify_chunk(blob, name, keys)


def test_sealing_hides_the_content_and_compresses_first(keys: Keys) -> None:
    blob = encode_chunk(TEXT, sealing=keys.sealing())
    assert len(blob) < len(TEXT) // 10  # compressed before it was encrypted
    assert b"request served" not in blob
    # A fresh nonce per object: the same chunk sealed twice differs.
    assert encode_chunk(TEXT, sealing=keys.sealing()) != blob


def test_version_1_chunks_stay_readable_with_keys(keys: Keys) -> None:
    blob = encode_chunk(TEXT)
    assert blob[4] == 1 and sealed_key_id(blob, digest(TEXT)) is None
    assert decode_chunk(blob, digest(TEXT), keys) == TEXT


Damage = Callable[[bytes], bytes]


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: flip(blob, len(blob) - 1),  # in the tag
        lambda blob: flip(blob, SEALED_HEADER_SIZE + 3),  # in the ciphertext
        lambda blob: flip(blob, 25),  # in the nonce
        lambda blob: flip(blob, 19),  # in the key id: no such key
        lambda blob: blob[:19] + bytes([8]) + blob[20:],  # another data key's id
        lambda blob: flip(blob, 5),  # in the codec (authenticated header)
        lambda blob: blob[:-1],  # truncated
        lambda blob: blob[: SEALED_HEADER_SIZE + 4],  # truncated to nothing much
    ],
    ids=["tag", "ciphertext", "nonce", "key-id", "other-key", "codec", "truncated", "cut"],
)
def test_a_tampered_sealed_chunk_is_corrupt_naming_its_digest(keys: Keys, damage: Damage) -> None:
    name = keyed_digest(keys.naming_key, NOISE)
    blob = encode_chunk(NOISE, sealing=keys.sealing())
    for check in (decode_chunk, verify_chunk):
        with pytest.raises(CorruptChunkError) as raised:
            check(damage(blob), name, keys)
        assert raised.value.digest == name and name in str(raised.value)


def test_a_chunk_swapped_for_another_does_not_authenticate(keys: Keys) -> None:
    """The name is in the associated data: another chunk's file under this name fails
    before anything is decompressed, even though it is a valid sealed chunk."""
    other = encode_chunk(NOISE, sealing=keys.sealing())
    name = keyed_digest(keys.naming_key, TEXT)
    with pytest.raises(CorruptChunkError, match="does not authenticate") as raised:
        decode_chunk(other, name, keys)
    assert raised.value.digest == name


def test_a_sealed_chunk_cannot_be_read_without_keys_or_with_the_plain_name(keys: Keys) -> None:
    blob = encode_chunk(TEXT, sealing=keys.sealing())
    with pytest.raises(CorruptChunkError, match="no keys"):
        decode_chunk(blob, keyed_digest(keys.naming_key, TEXT))
    with pytest.raises(CorruptChunkError):
        decode_chunk(blob, digest(TEXT), keys)


def test_a_sealed_chunk_under_an_unknown_key_says_so(keys: Keys) -> None:
    blob = encode_chunk(TEXT, sealing=keys.sealing())
    del keys.ciphers[7]
    with pytest.raises(CorruptChunkError, match="unknown data key 7"):
        decode_chunk(blob, keyed_digest(keys.naming_key, TEXT), keys)


def test_resealing_seals_the_chunk_key_again_and_leaves_the_payload(keys: Keys) -> None:
    """Another project's copy: its own data key opens it (the first one is not needed),
    the envelope differs, the sealed payload is the same bytes (48 bytes of work)."""
    name = keyed_digest(keys.naming_key, TEXT)
    blob = encode_chunk(TEXT, sealing=keys.sealing(7))
    opened = sealing_module.OPENED.value
    again = reseal_chunk(blob, name, keys, keys.sealing(8))
    assert sealing_module.OPENED.value == opened + 1  # the chunk key only
    assert sealed_key_id(again, name) == 8 and len(again) == len(blob)
    assert again[:SEALED_HEADER_SIZE] != blob[:SEALED_HEADER_SIZE]
    assert again[SEALED_HEADER_SIZE:] == blob[SEALED_HEADER_SIZE:]
    del keys.ciphers[7]
    assert decode_chunk(again, name, keys) == TEXT
    with pytest.raises(CorruptChunkError):
        decode_chunk(blob, name, keys)
    with pytest.raises(CorruptChunkError):  # a damaged envelope is not sealed again
        reseal_chunk(flip(again, 40), name, keys, keys.sealing(8))
    plain = encode_chunk(TEXT)
    assert reseal_chunk(plain, digest(TEXT), keys, keys.sealing(8)) == plain


def test_two_chunks_sealed_under_one_data_key_have_unrelated_chunk_keys(keys: Keys) -> None:
    """The payload nonce is zero because each chunk key seals one payload only: the same
    content sealed twice gives unrelated payload bytes."""
    one = encode_chunk(NOISE, sealing=keys.sealing())
    two = encode_chunk(NOISE, sealing=keys.sealing())
    assert one[SEALED_HEADER_SIZE:] != two[SEALED_HEADER_SIZE:]


def test_a_sealed_manifest_round_trips_and_is_bound_to_its_name(keys: Keys) -> None:
    data = b'{"kind": "tree", "secret file name": "payroll.xlsx"}'
    blob = seal_manifest(data, "backup-1", keys.sealing())
    assert b"payroll" not in blob
    assert open_manifest(blob, "backup-1", keys) == data
    with pytest.raises(ManifestCorruptError, match="backup-2"):
        open_manifest(blob, "backup-2", keys)  # swapped for another backup's
    with pytest.raises(ManifestCorruptError):
        open_manifest(flip(blob, len(blob) // 2), "backup-1", keys)
    with pytest.raises(ManifestCorruptError):
        open_manifest(blob[:30], "backup-1", keys)
    assert open_manifest(data, "backup-1", keys) == data  # a plain one passes as it is
