"""Encryption at rest: the keys a stored object is sealed with, keyed chunk names, and
sealed manifests.

Objects are sealed with AES-256-GCM (`cryptography`'s AESGCM: hardware AES here, 6 GiB/s
to open a 1 MiB chunk, against 2.3 GiB/s for ChaCha20-Poly1305 on the same machine), a
fresh random 96-bit nonce per object, and the object's identity (a chunk's name, a
manifest's name) in the associated data, so one object cannot stand in for another.
Random nonces keep a key safe for 2^32 objects (4 PiB of 1 MiB chunks); a project's data
key can be replaced long before (`opencbr admin key rotate --data-key`).

Chunk names of encrypted chunks are BLAKE3 keyed with the deployment's naming secret:
the name of a chunk says nothing about its content to someone who reads the storage,
yet the same content gets the same name in every vault of the deployment, so
deduplication and replication planning keep working.

Where keys come from is the services' business (`services/keys.py`); this module sees
them through `ChunkKeys`. Sealed manifest layout (24-byte header, then the AEAD output):

    offset size  field
    0      4     magic b"OCBM"
    4      1     version (1)
    5      3     reserved, zero
    8      4     key id, unsigned big-endian
    12     12    nonce
    24     ...   AES-256-GCM(manifest bytes), 16-byte tag last; AD = header + name

Pure functions and immutable values: safe from any number of threads.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass
from typing import Protocol

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from opencbr.storage.store import StorageError

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
MANIFEST_MAGIC = b"OCBM"
_MANIFEST_HEADER = struct.Struct(">4sB3xI12s")
MANIFEST_HEADER_SIZE = _MANIFEST_HEADER.size
_ENCRYPT_INTO = hasattr(AESGCM, "encrypt_into")  # cryptography >= 45


class _Counter:
    """How many sealed objects this process opened (decryptions): replication within one
    key scope must copy ciphertext without opening it, and tests hold it to that."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self) -> None:
        with self._lock:
            self.value += 1


OPENED = _Counter()


class UnknownKeyError(StorageError):
    """A sealed object names a key id the keyring does not hold."""


class ChunkKeys(Protocol):
    """What reading sealed objects needs: the naming secret and every data key by id.

    Thread rules: called from many threads at once.
    """

    @property
    def naming_key(self) -> bytes:
        """The deployment's 32-byte naming secret (keyed BLAKE3 of chunk names)."""
        ...

    def cipher(self, key_id: int) -> AESGCM:
        """The AEAD of data key `key_id`; raises UnknownKeyError when there is none."""
        ...


@dataclass(frozen=True)
class Sealing:
    """How a writer seals what it stores: one project's current data key, and the naming
    secret its chunk names are keyed with."""

    key_id: int
    cipher: AESGCM
    naming_key: bytes

    def name(self, data: bytes | memoryview) -> str:
        return keyed_digest(self.naming_key, data)


def keyed_digest(naming_key: bytes, data: bytes | bytearray | memoryview) -> str:
    """The name of an encrypted chunk: lowercase hex BLAKE3 keyed with the naming secret
    (releases the GIL on large input, as the plain digest does)."""
    return blake3.blake3(data, key=naming_key).hexdigest()


def seal(
    cipher: AESGCM, header: bytes, data: bytes | bytearray | memoryview, identity: bytes
) -> bytes:
    """`header` + nonce + AEAD(data): the header (which must end where the nonce starts,
    without it) and the object's identity are authenticated, not encrypted. A fresh random
    nonce each time."""
    nonce = os.urandom(NONCE_SIZE)
    return seal_into(cipher, header + nonce, nonce, data, header + nonce + identity)


def seal_into(
    cipher: AESGCM,
    prefix: bytes,
    nonce: bytes,
    data: bytes | bytearray | memoryview,
    associated: bytes,
) -> bytes:
    """`prefix` + AEAD(data) under `nonce`, authenticating `associated`."""
    if not _ENCRYPT_INTO:
        return prefix + cipher.encrypt(nonce, data, associated)
    # Into one buffer: 8.7 GiB/s for 1 MiB here, against 1.9 GiB/s for `encrypt`, whose
    # result is allocated and copied again.
    out = bytearray(len(prefix) + len(data) + TAG_SIZE)
    out[: len(prefix)] = prefix
    cipher.encrypt_into(nonce, data, associated, memoryview(out)[len(prefix) :])
    return bytes(out)


def open_sealed(
    cipher: AESGCM, blob: bytes, header_size: int, identity: bytes
) -> bytes | bytearray | None:
    """The plaintext of `seal`'s output (whose header, nonce included, is `header_size`
    bytes), or None when it does not authenticate: tampered, truncated, sealed for
    another identity or with another key."""
    view = memoryview(blob)
    nonce = bytes(view[header_size - NONCE_SIZE : header_size])
    return open_body(cipher, blob, header_size, nonce, bytes(view[:header_size]) + identity)


def open_body(
    cipher: AESGCM, blob: bytes, start: int, nonce: bytes, associated: bytes
) -> bytes | bytearray | None:
    """The plaintext of the AEAD output from `start` on, or None when it does not
    authenticate. Counted in OPENED."""
    OPENED.add()
    view = memoryview(blob)[start:]
    try:
        if not _ENCRYPT_INTO or len(view) < TAG_SIZE:
            return cipher.decrypt(nonce, view, associated)
        # Into a buffer of our own: 3-4x faster than `decrypt` on 1 MiB here (its result is
        # allocated and copied again).
        out = bytearray(len(view) - TAG_SIZE)
        cipher.decrypt_into(nonce, view, associated, out)
        return out
    except InvalidTag:
        return None


def seal_manifest(data: bytes, name: str, sealing: Sealing) -> bytes:
    """The sealed form of manifest `name` (bound to its name: a manifest cannot be
    swapped for another backup's)."""
    header = _MANIFEST_HEADER.pack(MANIFEST_MAGIC, 1, sealing.key_id, b"")[:-NONCE_SIZE]
    return seal(sealing.cipher, header, data, name.encode())


def is_sealed_manifest(blob: bytes) -> bool:
    return blob[:4] == MANIFEST_MAGIC


def open_manifest(blob: bytes, name: str, keys: ChunkKeys | None) -> bytes:
    """The plain bytes of manifest `name`; a manifest that is not sealed (stored before
    encryption, or in a vault without it) is returned as it is.

    Raises ManifestCorruptError when a sealed one does not authenticate, and
    UnknownKeyError when its key is unknown.
    """
    if not is_sealed_manifest(blob):
        return blob
    if len(blob) < MANIFEST_HEADER_SIZE + TAG_SIZE or keys is None:
        raise ManifestCorruptError(f"manifest {name}: sealed, but truncated or no keys")
    _magic, version, key_id, _nonce = _MANIFEST_HEADER.unpack_from(blob)
    if version != 1:
        raise ManifestCorruptError(f"manifest {name}: unsupported sealed version {version}")
    plain = open_sealed(keys.cipher(key_id), blob, MANIFEST_HEADER_SIZE, name.encode())
    if plain is None:
        raise ManifestCorruptError(f"manifest {name}: does not authenticate (tampered or swapped)")
    return bytes(plain)


class ManifestCorruptError(StorageError):
    """A sealed manifest fails authentication or is malformed."""
