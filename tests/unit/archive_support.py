"""In-memory vault, fault-injecting sources and tree builders for the archive tests."""

from __future__ import annotations

import os
import random
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import blake3
import zstandard

from opencbr.archive.sink import chunk_digest

MiB = 1 << 20


class MemoryVault:
    """Dict-backed ChunkSink and ChunkSource storing zstd-compressed chunks.

    Thread-safe like a real store; counts calls so tests can check what was asked.
    """

    def __init__(self, level: int = 1) -> None:
        self._chunks: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._level = level
        self.missing_calls: list[int] = []
        self.stores: list[str] = []
        self.loads: list[str] = []

    def name(self, data: bytes | memoryview) -> str:
        return chunk_digest(data)

    def missing(self, digests: Sequence[str]) -> set[str]:
        with self._lock:
            self.missing_calls.append(len(digests))
            return {d for d in digests if d not in self._chunks}

    def store(self, digest: str, data: bytes) -> int:
        assert blake3.blake3(data).hexdigest() == digest
        # One compressor per thread: sharing one across threads crashes zstd.
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = zstandard.ZstdCompressor(level=self._level)
        blob = compressor.compress(data)
        with self._lock:
            self.stores.append(digest)
            if digest in self._chunks:
                return 0
            self._chunks[digest] = blob
            return len(blob)

    def load(self, digest: str) -> bytes:
        with self._lock:
            self.loads.append(digest)
            blob = self._chunks[digest]
        return zstandard.ZstdDecompressor().decompress(blob)

    def put_plain(self, data: bytes) -> str:
        digest = blake3.blake3(data).hexdigest()
        self.store(digest, data)
        return digest

    def __len__(self) -> int:
        return len(self._chunks)


class CorruptingSource:
    """Returns flipped bytes for one digest, as a store with silent bit rot would."""

    def __init__(self, inner: MemoryVault, bad_digest: str) -> None:
        self._inner = inner
        self.bad_digest = bad_digest

    def name(self, data: bytes | memoryview) -> str:
        return chunk_digest(data)

    def load(self, digest: str) -> bytes:
        data = self._inner.load(digest)
        if digest == self.bad_digest:
            return bytes([data[0] ^ 0xFF]) + data[1:]
        return data


# ---------------------------------------------------------------- trees


def _text(rng: random.Random, size: int) -> bytes:
    # Non-periodic text: a repeated line would leave FastCDC no cut points at all.
    words = [b"alpha", b"backup", b"chunk", b"digest", b"vault", b"replica", b"region\n"]
    words += [rng.randbytes(4).hex().encode() for _ in range(200)]
    return b" ".join(rng.choices(words, k=size // 6 + 1))[:size]


def _payload(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size) if rng.random() < 0.5 else _text(rng, size)


def _write(path: Path, data: bytes, mode: int, mtime_ns: int) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def build_tree(root: Path, *, seed: int = 7, big_files: int = 4, big_size: int = 4 * MiB) -> None:
    """A few hundred files of every kind the engine must preserve, under `root`."""
    rng = random.Random(seed)
    root.mkdir(exist_ok=True)
    base_ns = 1_700_000_000_123_456_789
    for d in range(12):
        folder = root / f"dir{d:02d}" / "sub"
        folder.mkdir(parents=True)
        for f in range(25):
            size = rng.choice([0, 1, 100, 511, 512, 513, 4096, 70_000, rng.randrange(300_000)])
            mtime = base_ns + rng.randrange(10**12)
            _write(folder / f"f{f:03d}.dat", _payload(rng, size), rng.choice([0o644, 0o600]), mtime)
    for b in range(big_files):
        _write(root / f"big{b}.bin", _payload(rng, big_size + b * 12345), 0o644, base_ns + b)
    _special_entries(root, rng, base_ns)


def _special_entries(root: Path, rng: random.Random, base_ns: int) -> None:
    _write(root / "empty", b"", 0o644, base_ns)
    _write(root / "script.sh", b"#!/bin/sh\necho hi\n", 0o755, base_ns - 10**18)  # 1938
    _write(root / "readonly", b"ro", 0o400, base_ns)
    (root / "empty_dir").mkdir()
    (root / "unicode dir café").mkdir()
    _write(root / "unicode dir café" / "日本語.txt", "naïve ✓".encode(), 0o644, base_ns)
    raw = os.fsencode(root)
    os.mkdir(raw + b"/\xff\xfe-dir")
    _write(Path(os.fsdecode(raw + b"/\xff\xfe-dir/\xff\xfe.bin")), b"latin", 0o644, base_ns)
    (root / ("long" * 40)).mkdir()
    _write(root / ("long" * 40) / ("n" * 200), b"long name", 0o644, base_ns)
    setgid = root / "setgid_dir"
    setgid.mkdir()
    os.chmod(setgid, 0o2775)
    _write(setgid / "inside", b"x", 0o644, base_ns)
    _links(root, raw, base_ns)
    ro_dir = root / "readonly_dir"
    ro_dir.mkdir()
    _write(ro_dir / "kept", b"kept", 0o644, base_ns)
    os.chmod(ro_dir, 0o555)
    if os.geteuid() == 0:  # owners are restored only by root
        os.chown(setgid / "inside", 1234, 5678)
        os.chown(root / "links" / "dangling", 4321, 8765, follow_symlinks=False)
    for path in (setgid, ro_dir, root / "empty_dir", root):
        os.utime(path, ns=(base_ns + 42, base_ns + 42))


def _links(root: Path, raw: bytes, base_ns: int) -> None:
    links = root / "links"
    links.mkdir()
    (links / "relative").symlink_to("../script.sh")
    (links / "absolute").symlink_to("/etc/hostname")
    (links / "dangling").symlink_to("does/not/exist")
    os.symlink(b"\xff\xfe-dir/\xff\xfe.bin", raw + b"/links/to-latin")
    os.utime(links / "relative", ns=(base_ns + 5, base_ns + 5), follow_symlinks=False)
    _write(links / "hard_a", b"shared inode" * 1000, 0o640, base_ns)
    os.link(links / "hard_a", root / "dir00" / "hard_b")
    os.link(links / "hard_a", links / "hard_c")


def mutate_in_place(root: Path, fraction: float, *, seed: int = 1) -> int:
    """Overwrite one contiguous region in each of the big files; returns bytes changed."""
    rng = random.Random(seed)
    bigs = sorted(root.glob("big*.bin"))[:3]
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    per_file = int(total * fraction / len(bigs))
    for path in bigs:
        with open(path, "r+b") as handle:
            handle.seek(rng.randrange(path.stat().st_size - per_file))
            handle.write(rng.randbytes(per_file))
    return per_file * len(bigs)


# ---------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Entry:
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    link: bytes
    content: str


def snapshot(root: Path) -> tuple[dict[bytes, Entry], set[frozenset[bytes]]]:
    """Every entry under `root` (root itself as b".") and the hard-link groups."""
    raw_root = os.fsencode(root)
    entries: dict[bytes, Entry] = {b".": _entry(raw_root)}
    inodes: dict[tuple[int, int], set[bytes]] = {}
    for folder, dirs, files in os.walk(raw_root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, raw_root)
            entries[rel] = _entry(path)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                inodes.setdefault((st.st_dev, st.st_ino), set()).add(rel)
    groups = {frozenset(g) for g in inodes.values() if len(g) > 1}
    return entries, groups


def _entry(path: bytes) -> Entry:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else b""
    content = ""
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as handle:
            content = blake3.blake3(handle.read()).hexdigest()
    size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
    return Entry(
        str(kind),
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_gid,
        size,
        st.st_mtime_ns,
        link,
        content,
    )


def assert_same_tree(expected: Path, actual: Path) -> None:
    want, want_groups = snapshot(expected)
    got, got_groups = snapshot(actual)
    assert sorted(got) == sorted(want)
    for path, entry in want.items():
        assert got[path] == entry, path
    assert got_groups == want_groups


def build_small_files(
    root: Path, count: int, *, per_folder: int = 500, sizes: tuple[int, int] = (1024, 2048)
) -> None:
    """`count` files of random bytes (sizes in `sizes`, inclusive), `per_folder` a folder."""
    rng = random.Random(3)
    for index in range(count):
        folder = root / f"s{index // per_folder:03d}"
        if index % per_folder == 0:
            folder.mkdir(parents=True)
        (folder / f"{index:06d}.dat").write_bytes(rng.randbytes(rng.randint(*sizes)))
