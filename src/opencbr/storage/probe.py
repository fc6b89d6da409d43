"""Whether a region's storage location can hold chunk stores, checked once at start-up so a
misconfigured region is reported at once instead of by its first backup."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit


def unusable_reason(url: str) -> str | None:
    """Why no chunk store can be written under the storage `url`, or None when one can.

    A local location is created if absent (as its first vault would) and a file is written
    and removed in it. Accepts the URLs `open_store` does; a `faulty+` wrapper is looked
    through.
    """
    spec = url.removeprefix("faulty+")
    if url.startswith("faulty+") and "?" in spec:
        spec = spec.rpartition("?")[0]
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


def _local_root(spec: str) -> Path:
    if spec.startswith("s3://"):
        raise ValueError("S3 storage is not supported yet")
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
