"""Tree backups: PAX headers without TarInfo, and memory that does not grow with files."""

from __future__ import annotations

import os
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencbr.archive.confined import opened
from opencbr.archive.pipeline import StreamChunker
from opencbr.archive.tarheader import format_ns, member_header
from opencbr.archive.tree import _TarWriter, _walk, new_cdc
from tests.unit.archive_support import build_small_files

KiB = 1 << 10
_NS = 1_000_000_000

# Names as os.listdir gives them: any code point but NUL, undecodable bytes as surrogates.
_names = st.text(
    st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))
    | st.sampled_from(["\udcff", "\udc80", "é", "日"]),
    max_size=130,
)
_ids = st.integers(0, 2**32 - 1) | st.sampled_from([0, 8**7 - 1, 8**7])
_sizes = st.integers(0, 2**40) | st.sampled_from([0, 511, 512, 8**11 - 1, 8**11])
_mtimes = st.integers(-(2**40) * _NS, 2**40 * _NS) | st.sampled_from([0, -1, 8**11 * _NS])


@settings(max_examples=400, deadline=None)
@given(
    name=_names,
    typeflag=st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]),
    mode=st.integers(0, 0o7777),
    uid=_ids,
    gid=_ids,
    size=_sizes,
    mtime_ns=_mtimes,
    linkname=_names,
    uname=st.sampled_from(["", "root", "u" * 33, "café", "\udcffx"]),
    gname=st.sampled_from(["", "wheel", "g" * 32, "日本", "\udc80"]),
)
def test_member_header_is_what_tarfile_writes(
    name: str,
    typeflag: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime_ns: int,
    linkname: str,
    uname: str,
    gname: str,
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.size = typeflag, mode, uid, gid, size
    info.mtime, info.linkname, info.uname, info.gname = mtime_ns // _NS, linkname, uname, gname
    info.pax_headers = {"mtime": format_ns(mtime_ns)}
    expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    got = member_header(name, typeflag, mode, uid, gid, size, mtime_ns, linkname, uname, gname)
    assert got == expected


FILES = 5_000
SAMPLE_EVERY = FILES // 20


@pytest.mark.slow
def test_tree_writer_holds_nothing_per_file(tmp_path: Path) -> None:
    # The walk and the tar writer with chunks dropped as soon as they are cut: memory
    # in use must stay flat from the 250th file to the 5,000th (it varies by ~1 KiB).
    # A TarInfo kept per member (what tarfile.TarFile does), catalog entries or an inode
    # entry per file hold 100-1,000 bytes each; the bound fails at 14 bytes a file. (The
    # chunk window of a whole backup is bounded separately:
    # test_pipeline_holds_at_most_max_in_flight_chunks_and_keeps_order.)
    root = tmp_path / "tree"
    build_small_files(root, FILES, sizes=(0, 300))
    writer = _TarWriter(StreamChunker(lambda chunk: None, new_cdc()), lambda chunk: None)
    in_use: list[int] = []
    tracemalloc.start()
    try:
        with opened(os.open(root, os.O_RDONLY | os.O_CLOEXEC)) as root_fd:
            for index, member in enumerate(_walk(root_fd, writer.warn, writer.close_directory)):
                writer.add(*member)
                if index % SAMPLE_EVERY == SAMPLE_EVERY - 1:
                    in_use.append(tracemalloc.get_traced_memory()[0])
        writer.close()
    finally:
        tracemalloc.stop()
    assert len(in_use) == 20 and not writer.warnings
    assert max(in_use) - in_use[0] < 64 * KiB, [n // KiB for n in in_use]
