"""Whether a region's storage location can hold chunk stores, checked once at start-up so a
misconfigured region is reported at once instead of by its first backup."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import obstore

from opencbr.storage import s3
from opencbr.storage.location import NO_OPTIONS, StoreOptions


def unusable_reason(url: str, options: StoreOptions = NO_OPTIONS) -> str | None:
    """Why no chunk store can be written under the storage `url`, or None when one can.

    A local location is created if absent (as its first vault would) and a file is written
    and removed in it; an S3 location gets one small object put and deleted under its
    prefix (a missing bucket, wrong credentials or an unreachable endpoint say so).
    Accepts the URLs `open_store` does; a `faulty+` wrapper is looked through.
    """
    spec = url.removeprefix("faulty+")
    if url.startswith("faulty+") and "?" in spec:
        spec = spec.rpartition("?")[0]
    if spec.startswith("s3://"):
        return _s3_reason(spec, options.s3)
    try:
        root = _local_root(spec)
    except ValueError as exc:
        return str(exc)
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".opencbr-probe-", dir=root)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return None


def _s3_reason(url: str, options: s3.S3Options) -> str | None:
    try:
        location = s3.S3Location.parse(url)
        bucket = s3.open_bucket(location, options, retries=False)
    except ValueError as exc:
        return str(exc)
    except Exception as exc:  # obstore refuses the configuration (a malformed endpoint)
        return f"S3 configuration rejected ({type(exc).__name__})"
    key = f".opencbr-probe-{secrets.token_hex(8)}"
    try:
        obstore.put(bucket, key, b"", use_multipart=False)
        obstore.delete(bucket, key)
    except Exception as exc:
        endpoint = options.endpoint or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
        return f"{s3.describe_fault(exc, location.bucket)} at {endpoint}"
    return None


def _local_root(spec: str) -> Path:
    if not spec:
        raise ValueError("empty storage URL")
    if "://" not in spec:
        return Path(spec)
    parts = urlsplit(spec)
    if parts.scheme != "file":
        raise ValueError(f"unsupported storage URL scheme {parts.scheme!r}")
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ValueError("file URL must be file:///absolute/path")
    return Path(unquote(parts.path))
