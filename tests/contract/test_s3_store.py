"""What only the S3 backend has: its URL, its layout in the bucket, how S3 answers become the
contract's errors (a missing bucket is never a missing chunk; 5xx retried, 403 not), batched
deletes, and the start-up probe. Against moto's in-process server, and a tiny HTTP server
that answers every request with one status (the faults a real server gives only at random).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from opencbr.storage import probe
from opencbr.storage.chunk import digest, encode_chunk
from opencbr.storage.layout import vault_location
from opencbr.storage.location import StoreOptions, open_store
from opencbr.storage.s3 import S3ChunkStore, S3Location, S3Options
from opencbr.storage.store import (
    ChunkNotFoundError,
    PermanentStorageError,
    TransientStorageError,
)
from tests.s3servers import BUCKET, SECRET_KEY, S3Server

NO_PAUSES = (0.0, 0.0)


def chunk(seed: int) -> tuple[str, bytes]:
    data = f"s3 chunk {seed} ".encode() * 100
    return digest(data), encode_chunk(data)


def test_a_vault_store_keeps_the_local_layout_under_its_prefix(moto_s3: S3Server) -> None:
    region = moto_s3.fresh_url()
    url = vault_location(region, "vault-1")
    store = open_store(url, options=moto_s3.options())
    name, blob = chunk(1)
    store.put_chunk(name, blob)
    store.put_manifest("backup-1", b"{}")
    assert sorted(moto_s3.keys(region)) == [
        f"vaults/vault-1/chunks/{name[:2]}/{name}",
        "vaults/vault-1/manifests/backup-1",
    ]


def test_destroy_leaves_a_vault_whose_id_starts_alike_alone(moto_s3: S3Server) -> None:
    region = moto_s3.fresh_url()
    doomed = open_store(vault_location(region, "v1"), options=moto_s3.options())
    kept = open_store(vault_location(region, "v10"), options=moto_s3.options())
    name, blob = chunk(2)
    doomed.put_chunk(name, blob)
    kept.put_chunk(name, blob)
    kept.put_manifest("backup-1", b"{}")
    doomed.destroy()
    assert sorted(moto_s3.keys(region)) == [
        f"vaults/v10/chunks/{name[:2]}/{name}",
        "vaults/v10/manifests/backup-1",
    ]


def test_destroy_deletes_more_than_one_batch(
    moto_s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opencbr.storage import s3

    monkeypatch.setattr(s3, "BATCH", 7)  # 20 objects: three DeleteObjects requests
    url = moto_s3.fresh_url()
    store = S3ChunkStore(S3Location.parse(url), moto_s3.options().s3)
    for seed in range(20):
        store.put_chunk(*chunk(seed))
    store.destroy()
    assert moto_s3.keys(url) == []


def test_a_missing_bucket_is_a_permanent_fault_never_a_missing_chunk(moto_s3: S3Server) -> None:
    store = open_store("s3://no-such-bucket/x", options=moto_s3.options(), retry_delays=NO_PAUSES)
    name, blob = chunk(3)
    for call in (
        lambda: store.get_chunk(name),
        lambda: store.put_chunk(name, blob),
        lambda: list(store.list_chunks()),
        lambda: store.put_manifest("m", b"x"),
    ):
        with pytest.raises(PermanentStorageError, match="bucket 'no-such-bucket' does not exist"):
            call()
    # A missing key in an existing bucket is what ChunkNotFoundError means.
    present = open_store(moto_s3.fresh_url(), options=moto_s3.options())
    with pytest.raises(ChunkNotFoundError):
        present.get_chunk(name)


def test_the_probe_accepts_a_usable_bucket_and_names_a_missing_one(moto_s3: S3Server) -> None:
    assert probe.unusable_reason(moto_s3.fresh_url(), moto_s3.options()) is None
    assert probe.unusable_reason(f"faulty+{moto_s3.fresh_url()}?seed=1", moto_s3.options()) is None
    reason = probe.unusable_reason("s3://no-such-bucket/p", moto_s3.options())
    assert reason == f"S3 bucket 'no-such-bucket' does not exist at {moto_s3.endpoint}"
    assert probe.unusable_reason("s3://Bad_Name/p", moto_s3.options()) is not None


def test_options_never_show_the_secret() -> None:
    options = StoreOptions(s3=S3Options(access_key_id="AK", secret_access_key=SECRET_KEY))
    assert SECRET_KEY not in repr(options)


# -- a server that answers every request with one status -----------------------------------


class OneAnswer:
    """An HTTP server on 127.0.0.1 answering every request with `status`; counts requests."""

    def __init__(self, status: int) -> None:
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                owner.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = b"<Error><Code>Fault</Code></Error>"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def options(self) -> StoreOptions:
        return StoreOptions(
            s3=S3Options(self.endpoint, "us-east-1", "AK", secret_access_key=SECRET_KEY)
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def answering() -> Iterator[type[OneAnswer]]:
    servers: list[OneAnswer] = []

    class Tracked(OneAnswer):
        def __init__(self, status: int) -> None:
            super().__init__(status)
            servers.append(self)

    yield Tracked
    for server in servers:
        server.close()


@pytest.mark.parametrize("status", [409, 500, 503])
def test_server_errors_are_transient_and_retried(answering: type[OneAnswer], status: int) -> None:
    server = answering(status)
    store = open_store(f"s3://{BUCKET}/p", options=server.options(), retry_delays=NO_PAUSES)
    name, blob = chunk(4)
    with pytest.raises(TransientStorageError) as raised:
        store.put_chunk(name, blob)
    assert str(raised.value) == f"chunk {name}: S3 error (HTTP {status}) while writing it"
    assert server.requests >= 3  # every attempt of the retrying wrapper reached the server


def test_access_denied_is_permanent_not_retried_and_names_the_settings(
    answering: type[OneAnswer],
) -> None:
    server = answering(403)
    store = open_store(f"s3://{BUCKET}/p", options=server.options(), retry_delays=NO_PAUSES)
    name, blob = chunk(5)
    with pytest.raises(PermanentStorageError) as raised:
        store.put_chunk(name, blob)
    assert "access denied" in str(raised.value)
    assert "s3_secret_access_key" in str(raised.value)
    assert SECRET_KEY not in str(raised.value)
    assert server.requests == 1
    reason = probe.unusable_reason(f"s3://{BUCKET}/p", server.options())
    assert reason is not None and reason.startswith("S3 access denied")


def test_an_unreachable_endpoint_is_transient_and_the_probe_says_so(
    answering: type[OneAnswer],
) -> None:
    server = answering(200)
    server.close()  # nothing listens there any more
    store = open_store(f"s3://{BUCKET}/p", options=server.options(), retry_delays=NO_PAUSES)
    with pytest.raises(TransientStorageError, match="S3 endpoint unreachable"):
        store.get_chunk(chunk(6)[0])
    assert probe.unusable_reason(f"s3://{BUCKET}/p", server.options()) == (
        f"S3 endpoint unreachable at {server.endpoint}"
    )
