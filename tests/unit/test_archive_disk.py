"""Disk image backup and restore (opencbr.archive.disk)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import blake3
import pytest

from opencbr.archive.disk import block_plan, data_extents, restore_disk, write_blocks
from opencbr.archive.manifest import Manifest, ManifestError, ZeroRange
from opencbr.archive.pipeline import ProgressMeter
from opencbr.archive.sink import ArchiveError, ChunkRef, ChunkVerifyError
from tests.unit.archive_support import CorruptingSource, MemoryVault
from tests.unit.opening import backup_disk_at

MiB = 1 << 20
BLOCK = 4 * MiB
# (offset, length) of the data written into the sparse image; two cross a block edge.
REGIONS = [(5 * MiB, 300_000), (40 * MiB - 1000, 2 * MiB), (131 * MiB, 1), (255 * MiB, MiB)]


def _file_hash(path: Path) -> str:
    hasher = blake3.blake3()
    with open(path, "rb") as handle:
        while data := handle.read(8 * MiB):
            hasher.update(data)
    return hasher.hexdigest()


@pytest.fixture
def sparse_image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    with open(path, "wb") as handle:
        handle.truncate(256 * MiB)
        for offset, length in REGIONS:
            handle.seek(offset)
            handle.write(os.urandom(length))
    return path


def _touched_blocks() -> set[int]:
    return {
        block
        for offset, length in REGIONS
        for block in range(offset // BLOCK, (offset + length - 1) // BLOCK + 1)
    }


def test_sparse_image_stores_only_its_data_blocks_and_skips_holes(sparse_image: Path) -> None:
    vault = MemoryVault()
    started = time.perf_counter()
    result = backup_disk_at(sparse_image, vault)
    elapsed = time.perf_counter() - started
    manifest = result.manifest
    assert len(manifest.chunks) == len(_touched_blocks()) == result.chunks_new
    assert result.bytes_total == manifest.size == 256 * MiB
    assert result.bytes_new == len(_touched_blocks()) * BLOCK
    assert sum(z.length for z in manifest.zero_ranges) == (64 - len(_touched_blocks())) * BLOCK
    assert elapsed < 5  # holes are skipped, not read and hashed (~0.1 s here)


def test_sparse_image_restores_identically_and_stays_sparse(
    sparse_image: Path, tmp_path: Path
) -> None:
    vault = MemoryVault()
    manifest = backup_disk_at(sparse_image, vault).manifest
    target = tmp_path / "restored.img"
    target.write_bytes(os.urandom(3 * MiB))  # old contents must not survive
    restored = restore_disk(manifest, vault, target)
    assert restored.bytes_total == 256 * MiB
    assert target.stat().st_size == 256 * MiB
    assert _file_hash(target) == _file_hash(sparse_image)
    assert target.stat().st_blocks * 512 <= (len(_touched_blocks()) + 1) * BLOCK


def test_data_extents_report_only_the_written_regions(sparse_image: Path) -> None:
    fd = os.open(sparse_image, os.O_RDONLY)
    try:
        extents = list(data_extents(fd, 256 * MiB))
    finally:
        os.close(fd)
    covered = sum(end - start for start, end in extents)
    assert sum(length for _, length in REGIONS) <= covered < 8 * MiB


def test_zero_blocks_written_out_are_elided_too(tmp_path: Path) -> None:
    image = tmp_path / "zeros.img"
    data = os.urandom(BLOCK)
    image.write_bytes(bytes(BLOCK) + data + bytes(2 * BLOCK) + data[:12345])
    vault = MemoryVault()
    result = backup_disk_at(image, vault)
    assert result.manifest.zero_ranges == (ZeroRange(0, BLOCK), ZeroRange(2 * BLOCK, 2 * BLOCK))
    assert [ref.length for ref in result.manifest.chunks] == [BLOCK, 12345]
    target = tmp_path / "out.img"
    restore_disk(result.manifest, vault, target)
    assert target.read_bytes() == image.read_bytes()


def test_unchanged_image_stores_nothing_the_second_time(sparse_image: Path) -> None:
    vault = MemoryVault()
    backup_disk_at(sparse_image, vault)
    progress: list[int] = []
    again = backup_disk_at(sparse_image, vault, workers=3, on_progress=progress.append)
    assert (again.bytes_new, again.chunks_new) == (0, 0)
    assert progress == sorted(progress) and progress[-1] == 256 * MiB


def test_repeated_blocks_are_stored_once(tmp_path: Path) -> None:
    image = tmp_path / "repeat.img"
    image.write_bytes(os.urandom(MiB) * 6)
    result = backup_disk_at(image, MemoryVault(), block_size=MiB)
    assert (len(result.manifest.chunks), result.chunks_new, len(result.digests)) == (6, 1, 1)


def test_empty_image_round_trips(tmp_path: Path) -> None:
    image = tmp_path / "empty.img"
    image.write_bytes(b"")
    vault = MemoryVault()
    manifest = backup_disk_at(image, vault).manifest
    assert (manifest.size, manifest.chunks, manifest.zero_ranges) == (0, (), ())
    restore_disk(manifest, vault, tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == b""


def test_zero_fill_overwrites_unknown_contents(tmp_path: Path) -> None:
    # What a block-device target gets: its old bytes are unknown, so zeros are written.
    image = tmp_path / "image.img"
    image.write_bytes(bytes(3 * MiB) + os.urandom(MiB) + bytes(MiB // 2))
    vault = MemoryVault()
    manifest = backup_disk_at(image, vault, block_size=MiB).manifest
    target = tmp_path / "device-like.img"
    target.write_bytes(b"\xaa" * (5 * MiB))
    fd = os.open(target, os.O_WRONLY)
    try:
        chunks = (vault.load(ref.digest) for ref in manifest.chunks)
        write_blocks(fd, manifest, chunks, ProgressMeter(None), zero_fill=True)
    finally:
        os.close(fd)
    assert target.read_bytes()[: manifest.size] == image.read_bytes()


def test_corrupt_block_fails_the_restore_naming_its_digest(
    sparse_image: Path, tmp_path: Path
) -> None:
    vault = MemoryVault()
    manifest = backup_disk_at(sparse_image, vault).manifest
    bad = manifest.chunks[1].digest
    with pytest.raises(ChunkVerifyError, match=bad):
        restore_disk(manifest, CorruptingSource(vault, bad), tmp_path / "out.img")


def test_neither_file_nor_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="neither"):
        backup_disk_at(tmp_path, MemoryVault())


def test_block_plan_marks_blocks_overlapping_data() -> None:
    # Extents are [start, end) ranges.
    plan = list(block_plan(10, 4, [(5, 9)]))
    assert plan == [(0, 4, False), (4, 4, True), (8, 2, True)]
    plan = list(block_plan(12, 4, [(1, 2), (8, 9)]))
    assert plan == [(0, 4, True), (4, 4, False), (8, 4, True)]
    assert list(block_plan(8, 4, [])) == [(0, 4, False), (4, 4, False)]


def test_manifest_whose_chunk_overlaps_a_zero_range_is_refused(tmp_path: Path) -> None:
    vault = MemoryVault()
    digest = vault.put_plain(b"x" * 8)
    manifest = Manifest(
        kind="disk",
        size=12,
        chunks=(ChunkRef(digest, 8),),
        zero_ranges=(ZeroRange(4, 4),),
        block_size=8,
    )
    with pytest.raises(ManifestError, match="overlaps"):
        restore_disk(manifest, vault, tmp_path / "out.img")
