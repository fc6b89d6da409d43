"""Disk images and block devices <-> fixed-size blocks, with zero blocks elided.

Backup reads the image in fixed blocks (4 MiB by default: a disk rarely shifts data, so
content-defined cuts buy nothing, and aligned blocks dedup across backups of the same
disk). Holes of a sparse file are found with SEEK_DATA/SEEK_HOLE and skipped unread;
blocks that read as all zero are elided too. Both become the manifest's zero ranges:
never hashed, never sent to the sink. Block devices have no holes to ask about
(SEEK_DATA is refused), so they are read in full.

Restore writes the stored blocks at their offsets. A regular-file image is written into
a new file beside it (sized to the image, so zero ranges stay holes), fsynced and renamed
over the old one only once complete: a failed restore leaves the old image as it was,
and nothing is ever written through a link into another file. A block device is written
in place (its previous contents are unknown, so its zero ranges are written as zeros)
and fsynced. The target is opened below a directory descriptor, non-blocking and
kind-checked (archive.confined) before anything is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

from opencbr.archive.confined import PathNotConfined, open_data
from opencbr.archive.extract import create_temp
from opencbr.archive.manifest import Manifest, ManifestError, ZeroRange
from opencbr.archive.pipeline import (
    BackupResult,
    ChunkPipeline,
    ProgressCallback,
    ProgressMeter,
    RestoreResult,
    backup_result,
    prefetch_chunks,
)
from opencbr.archive.sink import ArchiveError, ChunkData, ChunkSink, ChunkSource

MiB = 1 << 20
DEFAULT_BLOCK_SIZE = 4 * MiB
DEFAULT_MAX_IN_FLIGHT = 16  # blocks: 64 MiB of 4 MiB blocks held at most


def backup_disk(
    image_fd: int,
    sink: ChunkSink,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int = 2,
    on_progress: ProgressCallback | None = None,
    metadata: dict[str, Any] | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> BackupResult:
    """Back up the image file or block device open at `image_fd` into `sink`.

    The caller opens it (confined below its root and checked for its kind, without
    blocking: `archive.confined.open_data`) and keeps the descriptor. `on_progress`
    receives the cumulative image bytes processed (zero ranges included). Only chunks
    are stored: making them durable and writing the manifest is the caller's job. Back
    up a snapshot: the size is taken once, at the start.
    """
    if block_size <= 0:
        raise ValueError("block_size must be positive")
    progress = ProgressMeter(on_progress)
    size = image_size(image_fd)
    with ThreadPoolExecutor(workers, thread_name_prefix="backup") as pool:
        pipeline = ChunkPipeline(sink, pool, max_in_flight=max_in_flight, progress=progress)
        with pipeline:
            zeros = _feed_blocks(image_fd, size, block_size, pipeline, progress)
            refs = pipeline.finish()
    progress.close()
    manifest = Manifest(
        kind="disk",
        size=size,
        chunks=refs,
        zero_ranges=tuple(zeros),
        block_size=block_size,
        metadata=dict(metadata or {}),
    )
    return backup_result(manifest, [pipeline])


def _feed_blocks(
    fd: int, size: int, block_size: int, pipeline: ChunkPipeline, progress: ProgressMeter
) -> list[ZeroRange]:
    """Submit every non-zero block in order; return the zero ranges, merged."""
    zeros: list[ZeroRange] = []
    for offset, length, may_hold_data in block_plan(size, block_size, data_extents(fd, size)):
        block = _read_block(fd, offset, length) if may_hold_data else None
        # `bytes(n)` is calloc'd zero pages: comparing with it runs at ~20 GB/s.
        if block is not None and block != bytes(length):
            pipeline.submit(block)
            continue
        if zeros and zeros[-1].offset + zeros[-1].length == offset:
            zeros[-1] = ZeroRange(zeros[-1].offset, zeros[-1].length + length)
        else:
            zeros.append(ZeroRange(offset, length))
        progress.advance(length)
    return zeros


def image_size(fd: int) -> int:
    """The size of the image file or block device open at `fd`."""
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode):
        return info.st_size
    if stat.S_ISBLK(info.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)  # st_size is 0 for a device
    raise ArchiveError("the resource is neither a regular file nor a block device")


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """Yield the [start, end) ranges of `fd` that may hold data, skipping holes.

    Falls back to one range covering everything where SEEK_DATA is unsupported.
    """
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
            end = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return  # nothing but a hole from `offset` to the end
            yield offset, size  # SEEK_DATA unsupported here (block device, old FS)
            return
        yield start, min(end, size)
        offset = end


def block_plan(
    size: int, block_size: int, extents: Iterable[tuple[int, int]]
) -> Iterator[tuple[int, int, bool]]:
    """Yield (offset, length, may_hold_data) for every block of the image, in order."""
    pending = iter(extents)
    extent = next(pending, None)
    for offset in range(0, size, block_size):
        end = min(offset + block_size, size)
        while extent is not None and extent[1] <= offset:
            extent = next(pending, None)
        yield offset, end - offset, extent is not None and extent[0] < end


def _read_block(fd: int, offset: int, length: int) -> bytes:
    parts = []
    done = 0
    while done < length:
        data = os.pread(fd, length - done, offset + done)
        if not data:
            # The image shrank after its size was taken: the rest reads as zeros.
            parts.append(bytes(length - done))
            break
        parts.append(data)
        done += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def restore_disk(
    manifest: Manifest,
    source: ChunkSource,
    target: Path,
    *,
    workers: int = 2,
    on_progress: ProgressCallback | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> RestoreResult:
    """Restore a disk backup to the path `target`, which the caller trusts: a block
    device at least as large as the image, or a regular file (created or replaced;
    zero ranges become holes). Links in `target` are followed (/dev/disk/by-id);
    confined restores use open_disk_target and restore_disk_into instead.
    """
    target = Path(os.path.realpath(target))
    directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with open_disk_target(directory, target.name, manifest.size) as opened:
            return restore_disk_into(
                manifest,
                source,
                opened,
                workers=workers,
                on_progress=on_progress,
                max_in_flight=max_in_flight,
            )
    finally:
        os.close(directory)


class DiskTarget:
    """A restore target opened and checked, before anything is written to it.

    Either a block device, open for writing (`device_fd`), or the name of a regular file
    in a directory (`directory_fd`, not owned) with the attributes of the image it will
    replace (`previous`, None when there is none yet). Lifecycle: from open_disk_target,
    used once by restore_disk_into, closed by its `with` block. One thread at a time.
    """

    def __init__(
        self,
        directory_fd: int,
        name: str,
        device_fd: int | None,
        previous: os.stat_result | None,
    ) -> None:
        self.directory_fd = directory_fd
        self.name = name
        self.device_fd = device_fd
        self.previous = previous

    def __enter__(self) -> DiskTarget:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.device_fd is not None:
            os.close(self.device_fd)
            self.device_fd = None


def open_disk_target(
    directory_fd: int, name: str, size: int, kinds: tuple[str, ...] = ("file", "block")
) -> DiskTarget:
    """Open the image `name` in the directory `directory_fd` for a restore of `size` bytes.

    The leaf is opened O_NOFOLLOW|O_NONBLOCK and must be one of `kinds` ("file": a
    regular file, "block": a block device; PathNotConfined otherwise: a link, a FIFO, a
    socket, a directory ...); a device must hold `size` bytes. A missing file is fine
    when "file" is allowed: the restore creates it.
    """
    if not name or "/" in name or name in (".", ".."):
        raise PathNotConfined(name, "a disk image must be a file below its root")
    try:
        fd = open_data(directory_fd, name, os.O_WRONLY, kinds)
    except FileNotFoundError:
        if "file" not in kinds:
            raise PathNotConfined(name, "the block device is gone") from None
        return DiskTarget(directory_fd, name, None, None)
    try:
        info = os.fstat(fd)
        is_file = stat.S_ISREG(info.st_mode)
        if not is_file and os.lseek(fd, 0, os.SEEK_END) < size:
            raise ArchiveError(f"the block device is smaller than the {size}-byte image")
    except BaseException:
        os.close(fd)
        raise
    if is_file:
        os.close(fd)  # never written to: the restore replaces the file by its name
        return DiskTarget(directory_fd, name, None, info)
    return DiskTarget(directory_fd, name, fd, info)


def restore_disk_into(
    manifest: Manifest,
    source: ChunkSource,
    target: DiskTarget,
    *,
    workers: int = 2,
    on_progress: ProgressCallback | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> RestoreResult:
    """Restore a disk backup into a target from open_disk_target (see the module doc)."""
    if manifest.kind != "disk":
        raise ArchiveError(f"expected a disk manifest, got a {manifest.kind} one")
    progress = ProgressMeter(on_progress)

    def write(fd: int, zero_fill: bool) -> None:
        with ThreadPoolExecutor(workers, thread_name_prefix="restore") as pool:
            chunks = prefetch_chunks(source, manifest.chunks, pool, depth=max_in_flight)
            with closing(chunks):
                write_blocks(fd, manifest, chunks, progress, zero_fill=zero_fill)
        os.fsync(fd)

    if target.device_fd is not None:
        write(target.device_fd, True)
    else:
        _replace_image(target, manifest.size, write)
    progress.close()
    return RestoreResult(manifest.size, len(manifest.chunks))


def _replace_image(target: DiskTarget, size: int, write: Callable[[int, bool], None]) -> None:
    directory = target.directory_fd
    fd, temp = create_temp(directory)
    try:
        try:
            _take_attributes(fd, target.previous)
            os.ftruncate(fd, size)  # a sparse file: ranges never written stay holes
            write(fd, False)
        finally:
            os.close(fd)
        os.rename(temp, target.name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=directory)
        raise
    os.fsync(directory)  # the rename itself survives a power cut


def _take_attributes(fd: int, previous: os.stat_result | None) -> None:
    """The new image keeps the old one's owner and permissions (0600 if there was none)."""
    if previous is None:
        return
    if os.geteuid() == 0:
        os.fchown(fd, previous.st_uid, previous.st_gid)  # before chmod: it clears set-id bits
    os.fchmod(fd, stat.S_IMODE(previous.st_mode))


def write_blocks(
    fd: int,
    manifest: Manifest,
    chunks: Iterable[ChunkData],
    progress: ProgressMeter,
    *,
    zero_fill: bool,
) -> None:
    """Write the image's data chunks at their offsets; write its zero ranges as zeros
    too when `zero_fill` (a target whose old contents are unknown)."""
    for offset, data in zip(data_offsets(manifest), chunks, strict=True):
        _pwrite_all(fd, data, offset)
        progress.advance(offset + len(data) - progress.done)
    if zero_fill:
        for zero in manifest.zero_ranges:
            _write_zeros(fd, zero, manifest.block_size or DEFAULT_BLOCK_SIZE)
    progress.advance(manifest.size - progress.done)


def data_offsets(manifest: Manifest) -> Iterator[int]:
    """Yield the image offset of each data chunk: chunks fill the gaps between zeros."""
    zeros = iter(manifest.zero_ranges)
    zero = next(zeros, None)
    offset = 0
    for ref in manifest.chunks:
        while zero is not None and zero.offset == offset:
            offset += zero.length
            zero = next(zeros, None)
        if zero is not None and zero.offset < offset + ref.length:
            raise ManifestError(f"chunk {ref.digest} at {offset} overlaps a zero range")
        yield offset
        offset += ref.length


def _pwrite_all(fd: int, data: ChunkData, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _write_zeros(fd: int, zero: ZeroRange, block_size: int) -> None:
    buffer = bytes(min(block_size, zero.length))
    for offset in range(zero.offset, zero.offset + zero.length, len(buffer)):
        end = min(offset + len(buffer), zero.offset + zero.length)
        _pwrite_all(fd, buffer[: end - offset], offset)
