"""Chunk store in an S3 bucket (AWS S3, SeaweedFS, Ceph RGW, MinIO, ...), through obstore's
sync API.

A region's storage `s3://BUCKET/PREFIX` holds its vaults under `PREFIX/vaults/<vault id>/`
with the local store's layout (`opencbr.storage.layout`) and chunk format, so a vault's keys
are `.../chunks/<2 hex>/<digest>` and `.../manifests/<name>`. How S3 keeps the contract:

- put_chunk: one PUT with `If-None-Match: *` (obstore `mode="create"`); a chunk already
  there answers 412 and the put returns False, so concurrent puts of one digest return True
  once. An existing chunk's time is *not* refreshed (that would be a copy-to-self per
  deduplicated chunk): garbage collection relies on the database's writer exclusion
  (`services/gc.py`), and `chunk_mtime` (LastModified) only ages crash leftovers.
- durability: a PUT is durable when S3 answers 200, so `flush` is a no-op and
  `put_manifest` is a plain PUT (an overwrite is atomic).
- listings page through ListObjectsV2 (1000 keys a page) and stream.
- `destroy` deletes the vault's prefix with batched DeleteObjects (1000 keys a request).
- errors: 5xx, 408/409/429, timeouts and connection failures are TransientStorageError (the
  RetryingChunkStore `open_store` adds repeats them); 403, a missing bucket and other 4xx
  are PermanentStorageError. Messages name the object and the fault, never the endpoint's
  answer verbatim, and never a credential.

Credentials and endpoint come from `S3Options` (the region's settings), never from the URL;
what they leave unset obstore takes from the standard `AWS_*` environment variables.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from opencbr.storage import layout
from opencbr.storage.store import (
    ChunkNotFoundError,
    ManifestNotFoundError,
    NotFoundError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
    check_digest,
    check_manifest_name,
    is_digest,
    is_manifest_name,
)

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

# S3's limit of keys per DeleteObjects request and per ListObjectsV2 page.
BATCH = 1000
# obstore retries a little by itself (a dropped connection mid-request); the
# RetryingChunkStore around every store does the patient retries, with logging.
_CLIENT_RETRIES: RetryConfig = {
    "max_retries": 2,
    "retry_timeout": timedelta(seconds=20),
    "backoff": {"init_backoff": timedelta(milliseconds=50), "max_backoff": timedelta(seconds=1)},
}
_TIMEOUTS: ClientConfig = {"connect_timeout": "5s", "timeout": "60s"}
_STATUS_RE = re.compile(r"status(?: code)?:? (\d{3})")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# 409: AWS answers ConditionalRequestConflict to a conditional PUT racing another upload of
# the key; the repeat then gets 412 (the chunk exists), so the put returns False.
_TRANSIENT_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True)
class S3Options:
    """How to reach a region's S3 endpoint; None leaves a value to the `AWS_*` environment
    variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).

    An `http://` endpoint is allowed because the operator wrote it; over https the payload
    is signed too. The secret never appears in `repr`.
    """

    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class S3Location:
    """`s3://BUCKET/PREFIX` split: the bucket and the key prefix ('' for the bucket's root)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or parts.query or parts.fragment:
            raise ValueError("S3 storage URL must be s3://BUCKET/PREFIX")
        if not _BUCKET_RE.fullmatch(parts.netloc):
            raise ValueError(f"invalid S3 bucket name {parts.netloc!r}")
        segments = [s for s in parts.path.split("/") if s]
        if any(s in (".", "..") for s in segments):
            raise ValueError("S3 storage URL prefix may not contain '.' or '..'")
        return cls(parts.netloc, "/".join(segments))


def open_bucket(location: S3Location, options: S3Options, *, retries: bool = True) -> S3Store:
    """An obstore client for `location` (its prefix applied to every key)."""
    config: dict[str, str] = {}
    if options.endpoint:
        config["endpoint"] = options.endpoint
    if options.region:
        config["region"] = options.region
    if options.access_key_id:
        config["access_key_id"] = options.access_key_id
    if options.secret_access_key:
        config["secret_access_key"] = options.secret_access_key
    client: ClientConfig = dict(_TIMEOUTS)  # type: ignore[assignment]
    # Plain http only where the operator named an http:// endpoint (tests, a LAN gateway).
    if (options.endpoint or os.environ.get("AWS_ENDPOINT_URL", "")).startswith("http://"):
        client["allow_http"] = True
    return S3Store(
        location.bucket,
        prefix=location.prefix or None,
        config=config,  # type: ignore[arg-type]
        client_options=client,
        retry_config=_CLIENT_RETRIES if retries else {"max_retries": 0},
        virtual_hosted_style_request=False,  # path style: SeaweedFS, Ceph RGW, MinIO
    )


class S3ChunkStore:
    """A ChunkStore under one prefix of an S3 bucket (see the module docstring).

    Thread rules: every method may be called from any thread (obstore clients are shared
    and release the GIL while waiting). Lifecycle: nothing to open or close; `destroy`
    deletes every object under the prefix.
    """

    def __init__(self, location: S3Location, options: S3Options) -> None:
        self.location = location
        self._bucket = open_bucket(location, options)

    def __repr__(self) -> str:
        return f"S3ChunkStore('s3://{self.location.bucket}/{self.location.prefix}')"

    # -- chunks ---------------------------------------------------------------

    def put_chunk(self, digest: str, blob: bytes) -> bool:
        check_digest(digest)
        try:
            obstore.put(
                self._bucket, layout.chunk_path(digest), blob, mode="create", use_multipart=False
            )
        except (AlreadyExistsError, PreconditionError) as exc:
            if _status(exc) != 409:
                return False  # 412: the chunk is there
            # 409: another upload of the key was in flight; its outcome is not known yet.
            raise self._error(exc, f"chunk {digest}", "writing it", digest) from exc
        except Exception as exc:
            raise self._error(exc, f"chunk {digest}", "writing it", digest) from exc
        return True

    def get_chunk(self, digest: str) -> bytes:
        check_digest(digest)
        try:
            return bytes(obstore.get(self._bucket, layout.chunk_path(digest)).bytes())
        except Exception as exc:
            raise self._error(exc, f"chunk {digest}", "reading it", digest) from exc

    def has_chunk(self, digest: str) -> bool:
        check_digest(digest)
        return self._exists(layout.chunk_path(digest), f"chunk {digest}", digest)

    def delete_chunk(self, digest: str) -> bool:
        check_digest(digest)
        return self._delete(layout.chunk_path(digest), f"chunk {digest}", digest)

    def delete_chunks(self, digests: Sequence[str]) -> None:
        for digest in digests:
            check_digest(digest)
        keys = [layout.chunk_path(digest) for digest in digests]
        for start in range(0, len(keys), BATCH):
            self._delete_batch(keys[start : start + BATCH])

    def list_chunks(self) -> Iterator[str]:
        for key in self._keys(f"{layout.CHUNKS_FOLDER}/"):
            name = key.rpartition("/")[2]
            if is_digest(name) and key == layout.chunk_path(name):
                yield name

    def chunk_mtime(self, digest: str) -> float:
        check_digest(digest)
        try:
            meta = obstore.head(self._bucket, layout.chunk_path(digest))
        except Exception as exc:
            raise self._error(exc, f"chunk {digest}", "reading its time", digest) from exc
        return meta["last_modified"].timestamp()

    # -- manifests ------------------------------------------------------------

    def put_manifest(self, name: str, data: bytes) -> None:
        check_manifest_name(name)
        try:
            obstore.put(self._bucket, _manifest_key(name), data, use_multipart=False)
        except Exception as exc:
            raise self._error(exc, f"manifest {name}", "writing it") from exc

    def get_manifest(self, name: str) -> bytes:
        check_manifest_name(name)
        try:
            return bytes(obstore.get(self._bucket, _manifest_key(name)).bytes())
        except Exception as exc:
            raise self._error(exc, f"manifest {name}", "reading it") from exc

    def delete_manifest(self, name: str) -> bool:
        check_manifest_name(name)
        return self._delete(_manifest_key(name), f"manifest {name}")

    def list_manifests(self) -> Iterator[str]:
        for key in self._keys(f"{layout.MANIFESTS_FOLDER}/"):
            name = key.rpartition("/")[2]
            if is_manifest_name(name) and key == _manifest_key(name):
                yield name

    # -- durability and lifecycle ---------------------------------------------

    def flush(self) -> None:
        """Nothing to do: every PUT that returned is durable."""

    def close(self) -> None:
        """Nothing to release: the HTTP client's connections close with it."""

    def destroy(self) -> None:
        # Manifests first (a half-destroyed store commits no backup), then everything else.
        self._delete_all(f"{layout.MANIFESTS_FOLDER}/")
        self._delete_all(None)

    # -- internals ------------------------------------------------------------

    def _keys(self, prefix: str | None) -> Iterator[str]:
        """Every key under `prefix` (relative to the store's), a page at a time."""
        try:
            for page in obstore.list(self._bucket, prefix, chunk_size=BATCH):
                for meta in page:
                    yield meta["path"]
        except Exception as exc:
            raise self._error(exc, "chunk store", "listing it") from exc

    def _delete_all(self, prefix: str | None) -> None:
        batch: list[str] = []
        for key in self._keys(prefix):
            batch.append(key)
            if len(batch) == BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, keys: Sequence[str]) -> None:
        try:
            obstore.delete(self._bucket, keys)
        except FileNotFoundError as exc:
            if _missing_bucket(exc):
                raise self._error(exc, "chunk store", "deleting it") from exc
        except Exception as exc:
            raise self._error(exc, "chunk store", "deleting it") from exc

    def _exists(self, key: str, what: str, digest: str | None = None) -> bool:
        try:
            obstore.head(self._bucket, key)
        except FileNotFoundError:
            return False  # HEAD answers have no body: a missing bucket looks the same
        except Exception as exc:
            raise self._error(exc, what, "looking it up", digest) from exc
        return True

    def _delete(self, key: str, what: str, digest: str | None = None) -> bool:
        # S3's DELETE answers 204 whether or not the key existed: HEAD tells which.
        existed = self._exists(key, what, digest)
        if existed:
            try:
                obstore.delete(self._bucket, key)
            except FileNotFoundError:
                return False  # deleted by another caller meanwhile
            except Exception as exc:
                raise self._error(exc, what, "deleting it", digest) from exc
        return existed

    def _error(
        self, exc: Exception, what: str, doing: str, digest: str | None = None
    ) -> StorageError:
        return storage_error(exc, self.location.bucket, what, doing, digest)


def storage_error(
    exc: Exception, bucket: str, what: str, doing: str, digest: str | None = None
) -> StorageError:
    """Classify an obstore error as the contract's (see the module docstring)."""
    if isinstance(exc, FileNotFoundError) and not _missing_bucket(exc):
        if digest is not None:
            return ChunkNotFoundError(f"{what} not found", digest=digest)
        if what.startswith("manifest "):
            return ManifestNotFoundError(f"{what} not found")
        return NotFoundError(f"{what} not found")
    fault = describe_fault(exc, bucket)
    kind = TransientStorageError if is_transient(exc) else PermanentStorageError
    return kind(f"{what}: {fault} while {doing}", digest=digest)


def describe_fault(exc: Exception, bucket: str) -> str:
    """The kind of fault, in words an operator can act on; no endpoint answer verbatim."""
    status = _status(exc)
    if _missing_bucket(exc):
        return f"S3 bucket {bucket!r} does not exist"
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or status in (401, 403):
        return "S3 access denied (check the region's s3_access_key_id and s3_secret_access_key)"
    if status is not None:
        return f"S3 error (HTTP {status})"
    if "timed out" in str(exc).lower():  # not "timeout": every answer names retry_timeout
        return "S3 request timed out"
    return "S3 endpoint unreachable"


def is_transient(exc: Exception) -> bool:
    """5xx, 408, 409, 429, timeouts and connection failures; never 403 or a missing bucket."""
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or _missing_bucket(exc):
        return False
    status = _status(exc)
    if status is None:
        return True  # no answer at all: a connection or timeout fault
    return status >= 500 or status in _TRANSIENT_STATUSES


def _status(exc: Exception) -> int | None:
    found = _STATUS_RE.search(str(exc))
    return int(found[1]) if found else None


def _missing_bucket(exc: Exception) -> bool:
    return "NoSuchBucket" in str(exc)


def _manifest_key(name: str) -> str:
    return f"{layout.MANIFESTS_FOLDER}/{name}"
