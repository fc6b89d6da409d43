"""The S3 chunk store against a real S3 server: SeaweedFS `weed mini`, started once per
session by the `weed` fixture (tests/s3servers.py). It enforces credentials, so wrong keys
and the `AWS_*` fallback are tested here; moto accepts any key."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from opencbr.storage import probe
from opencbr.storage.chunk import decode_chunk, digest, encode_chunk
from opencbr.storage.location import StoreOptions, open_store
from opencbr.storage.s3 import S3Options
from opencbr.storage.store import PermanentStorageError, TransientStorageError
from tests.s3servers import ACCESS_KEY, SECRET_KEY, S3Server, SeaweedFS

pytestmark = pytest.mark.s3


def chunk(seed: int, size: int = 64 * 1024) -> tuple[str, bytes]:
    data = (f"weed {seed} ".encode() * (size // 8 + 1))[:size]
    return digest(data), encode_chunk(data)


def test_chunks_and_manifests_round_trip_and_destroy_empties_the_prefix(
    seaweedfs: S3Server,
) -> None:
    url = seaweedfs.fresh_url()
    store = open_store(url, options=seaweedfs.options())
    names = {}
    for seed in range(30):
        name, blob = chunk(seed)
        assert store.put_chunk(name, blob) is True
        assert store.put_chunk(name, blob) is False
        names[name] = blob
    store.put_manifest("backup-1", b"refs")
    assert set(store.list_chunks()) == set(names)
    assert list(store.list_manifests()) == ["backup-1"]
    for name, blob in names.items():
        assert store.get_chunk(name) == blob
        decode_chunk(blob, name)
    assert time.time() - 60 < store.chunk_mtime(next(iter(names))) <= time.time() + 5
    store.destroy()
    assert seaweedfs.keys(url) == []


def test_concurrent_puts_of_one_digest_report_new_exactly_once(seaweedfs: S3Server) -> None:
    store = open_store(seaweedfs.fresh_url(), options=seaweedfs.options())
    name, blob = chunk(99, size=256 * 1024)
    for _ in range(2):  # SeaweedFS takes ~1.7 s a round (it serialises these writes)
        store.delete_chunk(name)
        start = threading.Barrier(8)

        def put(start: threading.Barrier) -> bool:
            start.wait()
            return store.put_chunk(name, blob)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(put, [start] * 8))
        assert results.count(True) == 1
        assert store.get_chunk(name) == blob


def test_wrong_credentials_are_permanent_and_never_echo_the_secret(seaweedfs: S3Server) -> None:
    wrong = "not-the-secret-7c1e"
    options = seaweedfs.options(secret_access_key=wrong)
    store = open_store(seaweedfs.fresh_url(), options=options, retry_delays=(0.0,))
    name, blob = chunk(1)
    with pytest.raises(PermanentStorageError) as raised:
        store.put_chunk(name, blob)
    assert "access denied" in str(raised.value) and wrong not in str(raised.value)
    reason = probe.unusable_reason(seaweedfs.fresh_url(), options)
    assert reason == (
        "S3 access denied (check the region's s3_access_key_id and s3_secret_access_key)"
        f" at {seaweedfs.endpoint}"
    )
    assert probe.unusable_reason(seaweedfs.fresh_url(), seaweedfs.options()) is None


def test_unset_options_fall_back_to_the_aws_environment(
    seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweedfs.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    store = open_store(seaweedfs.fresh_url(), options=StoreOptions(s3=S3Options()))
    name, blob = chunk(2)
    assert store.put_chunk(name, blob) is True
    assert store.get_chunk(name) == blob
    # A setting beats its variable: a wrong secret in the settings is used, and refused.
    refused = StoreOptions(s3=S3Options(secret_access_key="wrong-secret"))
    with pytest.raises(PermanentStorageError, match="access denied"):
        open_store(seaweedfs.fresh_url(), options=refused, retry_delays=()).get_chunk(name)


@pytest.mark.slow
def test_a_server_down_is_transient_and_the_retries_outlast_a_quick_restart(
    weed: SeaweedFS, seaweedfs: S3Server
) -> None:
    store = open_store(seaweedfs.fresh_url(), options=seaweedfs.options(), retry_delays=())
    name, blob = chunk(3)
    weed.kill()
    try:
        with pytest.raises(TransientStorageError, match="S3 endpoint unreachable"):
            store.put_chunk(name, blob)
        assert probe.unusable_reason(seaweedfs.fresh_url(), seaweedfs.options()) == (
            f"S3 endpoint unreachable at {seaweedfs.endpoint}"
        )
        patient = open_store(seaweedfs.fresh_url(), options=seaweedfs.options())
        restart = threading.Timer(0.3, weed.start)
        restart.start()  # back within the default retry schedule (about 3.75 s)
        assert patient.put_chunk(name, blob) is True
        restart.join()
    finally:
        if weed.process is None:
            weed.start()
    assert patient.get_chunk(name) == blob
