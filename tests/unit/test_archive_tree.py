"""File-tree backup and restore (opencbr.archive.tree) and the shared pipeline."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyfastcdc import FastCDC

from opencbr.archive.catalog import CATALOG_MAGIC, iter_catalog
from opencbr.archive.extract import (
    UnsafeMemberError,
    restore_tree,
)
from opencbr.archive.manifest import Manifest
from opencbr.archive.pipeline import BackupResult, ChunkPipeline, StreamChunker
from opencbr.archive.sink import ArchiveError, ChunkRef, ChunkVerifyError, chunk_digest
from opencbr.archive.tarheader import format_ns, parse_ns
from tests.unit.archive_support import (
    CorruptingSource,
    MemoryVault,
    assert_same_tree,
    build_tree,
    mutate_in_place,
)
from tests.unit.opening import backup_tree_at

MiB = 1 << 20


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MemoryVault, BackupResult]:
    root = tmp_path_factory.mktemp("src") / "tree"
    build_tree(root)
    vault = MemoryVault()
    return root, vault, backup_tree_at(root, vault)


def test_restore_reproduces_every_byte_and_attribute(
    backed_up: tuple[Path, MemoryVault, BackupResult], tmp_path: Path
) -> None:
    root, vault, result = backed_up
    target = tmp_path / "restored"
    target.mkdir()
    restored = restore_tree(result.manifest, vault, target)
    assert_same_tree(root, target)
    assert restored.bytes_total == result.bytes_total
    assert restored.chunks_loaded == len(result.manifest.chunks)


def test_backup_result_counts_what_it_stored(
    backed_up: tuple[Path, MemoryVault, BackupResult],
) -> None:
    _, vault, result = backed_up
    manifest = result.manifest
    assert result.bytes_total == manifest.size == sum(r.length for r in manifest.chunks)
    assert result.chunks_total == len(manifest.chunks) + len(manifest.catalog)
    assert result.digests == manifest.digests()
    assert result.chunks_new == len(result.digests) == len(vault)
    catalog_bytes = sum(r.length for r in manifest.catalog)
    assert 0 < result.bytes_stored_new < result.bytes_new <= result.bytes_total + catalog_bytes
    assert len(manifest.chunks) > 10  # several chunks, so the tests below mean something
    assert max(vault.missing_calls) <= 32  # batched queries, never the whole stream


def test_second_backup_of_unchanged_tree_stores_nothing(
    backed_up: tuple[Path, MemoryVault, BackupResult],
) -> None:
    root, vault, first = backed_up
    second = backup_tree_at(root, vault, metadata={"resource": "r1"})
    assert second.manifest.chunks == first.manifest.chunks
    assert second.manifest.metadata == {"resource": "r1"}
    assert (second.bytes_new, second.chunks_new, second.bytes_stored_new) == (0, 0, 0)


def test_a_smaller_in_flight_window_changes_nothing_but_memory(
    backed_up: tuple[Path, MemoryVault, BackupResult],
) -> None:
    root, _, result = backed_up
    narrow = backup_tree_at(root, MemoryVault(), workers=1, max_in_flight=2)
    assert narrow.manifest.chunks == result.manifest.chunks
    assert narrow.manifest.catalog == result.manifest.catalog


def test_restore_replaces_existing_entries_without_following_symlinks(
    backed_up: tuple[Path, MemoryVault, BackupResult], tmp_path: Path
) -> None:
    root, vault, result = backed_up
    outside = tmp_path / "outside"
    outside.write_bytes(b"must survive")
    target = tmp_path / "restored"
    target.mkdir()
    (target / "empty").symlink_to(outside)  # a file in the backup
    (target / "script.sh").write_bytes(b"stale")
    (target / "links").write_bytes(b"a file where the backup has a directory")
    (target / "readonly").mkdir()  # a directory where the backup has a file
    os.link(outside, target / "big0.bin")  # writing into it would change `outside`
    restore_tree(result.manifest, vault, target)
    assert_same_tree(root, target)
    assert outside.read_bytes() == b"must survive"


def test_incremental_backup_stores_little_and_restores_identically(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    build_tree(root, big_files=6, big_size=16 * MiB)
    vault = MemoryVault()
    first = backup_tree_at(root, vault)
    changed = mutate_in_place(root, 0.02)  # one region in each of 3 files
    second = backup_tree_at(root, vault, workers=3)
    # Per changed file: the chunk with its header (new mtime) and the 1-2 chunks
    # around the changed region; plus the catalog chunk holding the new mtimes.
    assert second.chunks_new <= 3 * 3 + 1
    assert changed < second.bytes_new < 0.2 * second.bytes_total
    target = tmp_path / "restored"
    target.mkdir()
    restore_tree(second.manifest, vault, target)
    assert_same_tree(root, target)
    assert first.manifest.digests() & second.manifest.digests()


def test_progress_is_cumulative_and_ends_at_the_total(
    backed_up: tuple[Path, MemoryVault, BackupResult], tmp_path: Path
) -> None:
    root, vault, result = backed_up
    seen: list[int] = []
    backup_tree_at(root, vault, on_progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == result.bytes_total
    restored: list[int] = []
    restore_tree(result.manifest, vault, tmp_path, on_progress=restored.append)
    assert restored[-1] == result.bytes_total


def test_restoring_one_large_file_reports_progress_inside_it(tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    (root / "one.bin").write_bytes(os.urandom(12 * MiB))
    vault = MemoryVault()
    result = backup_tree_at(root, vault)
    restored: list[int] = []
    (tmp_path / "out").mkdir()
    restore_tree(result.manifest, vault, tmp_path / "out", on_progress=restored.append)
    # Every 4 MiB of the file's data, not only once the member is complete.
    inside = [done for done in restored if done < result.bytes_total]
    assert len(inside) >= 2 and inside == sorted(inside), restored
    assert restored[-1] == result.bytes_total


def test_catalog_lists_every_member_with_its_stream_offsets(
    backed_up: tuple[Path, MemoryVault, BackupResult],
) -> None:
    root, vault, result = backed_up
    entries = list(iter_catalog(result.manifest, vault))
    assert entries[0].path == b"." and entries[0].type == tarfile.DIRTYPE
    by_path = {e.path: e for e in entries}
    assert by_path[b"links/absolute"].linkname == b"/etc/hostname"
    assert by_path[b"links/hard_c"].type == tarfile.LNKTYPE
    big = by_path[b"big1.bin"]
    assert big.size == (root / "big1.bin").stat().st_size
    assert big.header_offset < big.data_offset
    assert [e.header_offset for e in entries] == sorted(e.header_offset for e in entries)


def test_corrupt_chunk_fails_the_restore_naming_its_digest(
    backed_up: tuple[Path, MemoryVault, BackupResult], tmp_path: Path
) -> None:
    _, vault, result = backed_up
    bad = result.manifest.chunks[3].digest
    with pytest.raises(ChunkVerifyError, match=bad):
        restore_tree(result.manifest, CorruptingSource(vault, bad), tmp_path)


def test_missing_chunk_error_names_its_digest(
    backed_up: tuple[Path, MemoryVault, BackupResult], tmp_path: Path
) -> None:
    _, _, result = backed_up
    with pytest.raises(KeyError) as caught:
        restore_tree(result.manifest, MemoryVault(), tmp_path)
    assert result.manifest.chunks[0].digest in "".join(caught.value.__notes__)


# ---------------------------------------------------------------- hostile streams


def _stream_manifest(vault: MemoryVault, members: list[tuple[tarfile.TarInfo, bytes]]) -> Manifest:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    stream = buffer.getvalue()
    pieces = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
    refs = tuple(ChunkRef(vault.put_plain(p), len(p)) for p in pieces)
    catalog = (ChunkRef(vault.put_plain(CATALOG_MAGIC), len(CATALOG_MAGIC)),)
    return Manifest(kind="tree", size=len(stream), chunks=refs, catalog=catalog)


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize(
    "members",
    [
        [(_member("../evil"), b"x")],
        [(_member("/tmp/evil-absolute"), b"x")],
        [(_member("a/../../evil"), b"x")],
        [(_member("link", tarfile.SYMTYPE, "{outside}"), b""), (_member("link/evil"), b"x")],
        [(_member("link", tarfile.SYMTYPE, ".."), b""), (_member("link/evil"), b"x")],
        [(_member("hard", tarfile.LNKTYPE, "../outside/victim"), b"")],
        [(_member("dev", tarfile.CHRTYPE), b"")],
        [
            (_member("d", tarfile.DIRTYPE), b""),
            (_member("d", tarfile.SYMTYPE, "{outside}"), b""),
            (_member("d/evil"), b"x"),
        ],
    ],
    ids=[
        "dotdot",
        "absolute",
        "nested-dotdot",
        "via-symlink",
        "via-relative-symlink",
        "hardlink-escape",
        "device",
        "dir-replaced-by-symlink",
    ],
)
def test_hostile_stream_is_refused_and_nothing_escapes(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"victim")
    for info, _ in members:
        info.linkname = info.linkname.format(outside=outside)
    target = tmp_path / "work" / "target"
    target.mkdir(parents=True)
    vault = MemoryVault()
    with pytest.raises(UnsafeMemberError):
        restore_tree(_stream_manifest(vault, members), vault, target)
    assert sorted(os.listdir(outside)) == ["victim"]
    assert not (tmp_path / "work" / "evil").exists() and not Path("/tmp/evil-absolute").exists()


def test_special_files_are_skipped_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    os.mkfifo(root / "pipe")
    (root / "file").write_bytes(b"data")
    result = backup_tree_at(root, MemoryVault())
    assert len(result.warnings) == 1 and "pipe" in result.warnings[0]


def test_backup_of_a_non_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ArchiveError, match="not a directory"):
        backup_tree_at(tmp_path / "file", MemoryVault())


def test_restore_normalises_names_and_keeps_symlink_targets(tmp_path: Path) -> None:
    vault = MemoryVault()
    link = _member("./a//b/", tarfile.SYMTYPE, "/etc/passwd")
    link.mode = 0o120777
    members = [(_member("a", tarfile.DIRTYPE), b""), (link, b"")]
    restore_tree(_stream_manifest(vault, members), vault, tmp_path)
    assert os.readlink(tmp_path / "a" / "b") == "/etc/passwd"


@pytest.mark.parametrize("dropped", [0, 1], ids=["first-chunk", "middle-chunk"])
def test_damaged_stream_fails_instead_of_restoring_part_of_it(tmp_path: Path, dropped: int) -> None:
    vault = MemoryVault()
    members = [(_member("a"), b"a" * 10_000), (_member("b"), b"b" * 5000)]
    manifest = _stream_manifest(vault, members)
    chunks = manifest.chunks[:dropped] + manifest.chunks[dropped + 1 :]
    damaged = Manifest(
        kind="tree",
        size=sum(ref.length for ref in chunks),
        chunks=chunks,
        catalog=manifest.catalog,
    )
    with pytest.raises(ArchiveError, match="damaged tar stream"):
        restore_tree(damaged, vault, tmp_path)


# ---------------------------------------------------------------- PAX time values


@given(st.integers(min_value=-(10**19), max_value=10**19))
def test_pax_time_values_round_trip_exactly(ns: int) -> None:
    assert parse_ns(format_ns(ns)) == ns


@pytest.mark.parametrize(
    ("text", "ns"),
    [("1", 10**9), ("1.5", 1_500_000_000), ("-0.25", -250_000_000), (".5", 5 * 10**8)],
)
def test_pax_time_values_from_other_writers(text: str, ns: int) -> None:
    assert parse_ns(text) == ns


@pytest.mark.parametrize("text", ["", "-", "1e9", "1.2.3", "abc", "١٢"])
def test_malformed_pax_time_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ns(text)


# ---------------------------------------------------------------- pipeline


def _cdc() -> FastCDC:
    return FastCDC(16 * 1024, min_size=4 * 1024, max_size=64 * 1024)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=600_000), st.lists(st.integers(1, 200_000), max_size=30))
def test_streaming_cut_equals_a_single_cut_of_the_whole_stream(
    seed: bytes, writes: list[int]
) -> None:
    data = blake3.blake3(seed).digest(length=len(seed) * 3) if seed else b""
    expected = [bytes(c.data) for c in _cdc().cut_buf(data)]
    emitted: list[bytes] = []
    chunker = StreamChunker(emitted.append, _cdc(), buffer_size=128 * 1024)
    position = 0
    for size in writes:
        chunker.write(data[position : position + size])
        position += size
    chunker.write_from(io.BytesIO(data[position:]).readinto, len(data))
    chunker.close()
    assert emitted == expected
    assert chunker.position == len(data)


class _SlowSink:
    """Counts chunks held by the pipeline: submitted minus those whose store finished."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submitted = 0
        self.finished = 0
        self.peak = 0

    def name(self, data: bytes | memoryview) -> str:
        return chunk_digest(data)

    def missing(self, digests: Sequence[str]) -> set[str]:
        return set(digests)

    def store(self, digest: str, data: bytes) -> int:
        with self.lock:
            self.peak = max(self.peak, self.submitted - self.finished)
        threading.Event().wait(0.001)
        with self.lock:
            self.finished += 1
        return len(data)


def test_pipeline_holds_at_most_max_in_flight_chunks_and_keeps_order() -> None:
    sink = _SlowSink()
    chunks = [os.urandom(100) for _ in range(300)] + [b"same"] * 20
    with (
        ThreadPoolExecutor(2) as pool,
        ChunkPipeline(sink, pool, max_in_flight=8, batch_size=4) as p,
    ):
        for chunk in chunks:
            sink.submitted += 1
            p.submit(chunk)
        refs = p.finish()
    assert [r.digest for r in refs] == [blake3.blake3(c).hexdigest() for c in chunks]
    assert sink.peak <= 8 + 1  # +1: the chunk in hand, counted before submit() takes it
    assert p.chunks_new == 301  # b"same" is stored once
