"""Opening a chunk store from its URL: a registry of URL schemes and their factories
(after restic's internal/backend/location).

- `/abs/or/relative/path` or `file:///abs/path`: a LocalChunkStore, created if absent.
- `faulty+<inner-url>?<options>`: a FaultyChunkStore around the store of `<inner-url>`,
  for fault-injection tests. The options are the query after the last '?':
  `fail_put=<0..1>` (ratio of put_chunk calls that fail), `fail_get=<0..1>` (ratio of
  get_chunk calls that fail), `fail_other=<0..1>` (ratio of the calls of every other
  method that fail), `fault=transient|permanent|corrupt` (the error injected
  faults raise; transient by default), `seed=<int>` (makes failures repeatable),
  `corrupt=<digest>` (get_chunk returns that chunk damaged; repeat the option or
  separate digests by commas), `delay=<seconds>` (each chunk put and get waits that
  long first: a slow store). Example: `faulty+file:///srv/cbr?fail_put=0.1&seed=1`.
- `s3://BUCKET/PREFIX`: an S3ChunkStore under that prefix of the bucket, reached as
  `StoreOptions.s3` says (endpoint and credentials are never part of the URL).

`open_store` wraps every store it opens in a RetryingChunkStore, so each call of each
store retries transient faults and no caller retries by hand. A new backend is one
factory given to `register`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from opencbr.storage.faulty import FAULT_KINDS, FaultyChunkStore
from opencbr.storage.local import LocalChunkStore
from opencbr.storage.retrying import RETRY_DELAYS, RetryingChunkStore
from opencbr.storage.s3 import S3ChunkStore, S3Location, S3Options
from opencbr.storage.store import ChunkStore


@dataclass(frozen=True)
class StoreOptions:
    """What a region says about reaching its storage besides the URL: endpoints and
    credentials, which must never travel in URLs (URLs are logged and used as keys).
    Each backend reads its own field; the local store needs none."""

    s3: S3Options = field(default_factory=S3Options)


NO_OPTIONS = StoreOptions()

# Opens a store from its URL (for a wrapper scheme `name+<inner-url>`: from what follows
# the '+') and the region's options. The store it returns retries nothing; `open_store`
# adds that.
Factory = Callable[[str, StoreOptions], ChunkStore]

_FACTORIES: dict[str, Factory] = {}
_WRAPPER_RE = re.compile(r"([a-z][a-z0-9]*)\+")


def register(scheme: str, factory: Factory) -> None:
    """Make `open_store` open URLs of `scheme` (`scheme://...`, or `scheme+<url>` for a
    wrapper around another store) with `factory`."""
    _FACTORIES[scheme] = factory


def open_store(
    url: str,
    *,
    options: StoreOptions = NO_OPTIONS,
    retry_delays: Sequence[float] = RETRY_DELAYS,
) -> ChunkStore:
    """Open the chunk store named by `url` (see the module docstring) with the region's
    `options`, retrying its transient faults after each pause in `retry_delays`.

    Raises ValueError for a URL it cannot open.
    """
    return RetryingChunkStore(_open(url, options), retry_delays)


def _open(url: str, options: StoreOptions) -> ChunkStore:
    scheme, rest = _split_scheme(url)
    factory = _FACTORIES.get(scheme)
    if factory is None:
        raise ValueError(f"unsupported storage URL scheme {scheme!r}")
    return factory(rest, options)


def _split_scheme(url: str) -> tuple[str, str]:
    """(scheme, what its factory reads): a plain path is a `file` location."""
    wrapper = _WRAPPER_RE.match(url)
    if wrapper is not None and wrapper[1] in _FACTORIES:
        return wrapper[1], url[wrapper.end() :]
    if "://" in url:
        return urlsplit(url).scheme, url
    return "file", url


def _open_local(url: str, options: StoreOptions) -> ChunkStore:
    if not url:
        raise ValueError("empty storage URL")
    if "://" not in url:
        return LocalChunkStore(Path(url))
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ValueError(f"file URL must be file:///absolute/path, got {url!r}")
    return LocalChunkStore(Path(unquote(parts.path)))


def _open_s3(url: str, options: StoreOptions) -> ChunkStore:
    return S3ChunkStore(S3Location.parse(url), options.s3)


_FAULTY_OPTIONS = frozenset(
    {"fail_put", "fail_get", "fail_other", "fault", "seed", "corrupt", "delay"}
)


def _open_faulty(spec: str, options: StoreOptions) -> ChunkStore:
    inner_url, _, query = spec.rpartition("?") if "?" in spec else (spec, "", "")
    query_options = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    unknown = set(query_options) - _FAULTY_OPTIONS
    if unknown:
        raise ValueError(f"unknown faulty store options: {sorted(unknown)}")

    def last(option: str, default: str) -> str:
        return query_options.get(option, [default])[-1]

    fault = FAULT_KINDS.get(last("fault", "transient"))
    if fault is None:
        raise ValueError(f"unknown faulty store fault kind; use one of {sorted(FAULT_KINDS)}")
    corrupt = {d for value in query_options.get("corrupt", []) for d in value.split(",") if d}
    seed = query_options.get("seed", [None])[-1]
    inner = _open(inner_url, options)
    try:
        return FaultyChunkStore(
            inner,
            fail_put_ratio=float(last("fail_put", "0")),
            fail_get_ratio=float(last("fail_get", "0")),
            fail_other_ratio=float(last("fail_other", "0")),
            fault=fault,
            seed=None if seed is None else int(seed),
            corrupt_digests=frozenset(corrupt),
            delay=float(last("delay", "0")),
        )
    except ValueError:
        inner.close()  # options rejected: do not leak the store just opened
        raise


register("file", _open_local)
register("s3", _open_s3)
register("faulty", _open_faulty)
