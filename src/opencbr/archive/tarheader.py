"""PAX tar headers for backup members, built without `tarfile.TarInfo`.

`member_header` returns exactly the bytes `TarInfo.tobuf(tarfile.PAX_FORMAT, "utf-8",
"surrogateescape")` gives for the same member when its `pax_headers` hold only the
nanosecond `mtime` (what tree backups always write): a PAX extended header (`mtime`
first, then `path`, `linkpath`, `uname`, `gname`, `uid`, `gid`, `size` when a value does
not fit its ustar field, `hdrcharset=BINARY` ahead of them when a value is not valid
UTF-8), then the ustar header. tarfile spends ~70 us per member building a dict, a
TarInfo copy and two checksums through Python-level loops; this takes a few us.
Byte-identity with tarfile is checked by the unit tests.
"""

from __future__ import annotations

import functools
import struct
import tarfile

_NS = 1_000_000_000
_BLOCK = tarfile.BLOCKSIZE
# name, mode, uid, gid, size, mtime, chksum, typeflag, linkname, magic+version, uname,
# gname, devmajor, devminor, prefix; NUL-padded to one block. "s" pads and truncates
# like tarfile's stn().
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_BLANK_CHKSUM = b" " * 8
_CHKSUM_START, _CHKSUM_END = 148, 155  # six octal digits and a NUL; byte 155 stays " "
_MAGIC = tarfile.POSIX_MAGIC
_PAX_NAME = b"././@PaxHeader"
_ZEROS = bytes(_BLOCK)
_MAX_ID, _MAX_SIZE = 8**7, 8**11  # ustar limits of 8- and 12-byte octal fields


def format_ns(ns: int) -> str:
    """Exact PAX time value of a nanosecond timestamp ("-1.500000000"; no float)."""
    sign = "-" if ns < 0 else ""
    seconds, fraction = divmod(abs(ns), _NS)
    return f"{sign}{seconds}.{fraction:09d}"


def parse_ns(text: str) -> int:
    """Inverse of `format_ns`; accepts any PAX decimal, truncating past nanoseconds."""
    sign = -1 if text[:1] == "-" else 1
    whole, _, fraction = text[1:].partition(".") if text[:1] in "+-" else text.partition(".")
    digits = whole + fraction
    if not text or not digits or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"not a PAX time value: {text!r}")
    return sign * (int(whole or "0") * _NS + int((fraction + "0" * 9)[:9]))


def member_header(
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
) -> bytes:
    """The header blocks of one member (see the module docstring); names are str
    with undecodable bytes as surrogates, as os.listdir/readlink return them."""
    if typeflag == tarfile.DIRTYPE and not name.endswith("/"):
        name += "/"
    pax = {"mtime": format_ns(mtime_ns)}
    if not name.isascii() or len(name) > 100:
        pax["path"] = name
    if not linkname.isascii() or len(linkname) > 100:
        pax["linkpath"] = linkname
    if not uname.isascii() or len(uname) > 32:
        pax["uname"] = uname
    if not gname.isascii() or len(gname) > 32:
        pax["gname"] = gname
    if not 0 <= uid < _MAX_ID:
        pax["uid"], uid = str(uid), 0
    if not 0 <= gid < _MAX_ID:
        pax["gid"], gid = str(gid), 0
    if not 0 <= size < _MAX_SIZE:
        pax["size"], size = str(size), 0
    mtime = mtime_ns // _NS
    if not 0 <= mtime < _MAX_SIZE:
        mtime = 0  # the PAX mtime record carries it
    records = _pax_records(pax)
    return b"".join(
        (
            _pax_block(len(records)),
            records,
            _ZEROS[: -len(records) % _BLOCK],
            _ustar(
                name.encode("ascii", "replace"),
                mode & 0o7777,
                uid,
                gid,
                size,
                mtime,
                typeflag,
                linkname.encode("ascii", "replace"),
                uname.encode("ascii", "replace"),
                gname.encode("ascii", "replace"),
            ),
        )
    )


@functools.lru_cache(maxsize=1024)
def _pax_block(size: int) -> bytes:
    # Its only variable field is the size of the records: ~100 distinct values.
    return _ustar(_PAX_NAME, 0, 0, 0, size, 0, tarfile.XHDTYPE, b"", b"", b"")


def _pax_records(pax: dict[str, str]) -> bytes:
    binary = False
    encoded: list[tuple[bytes, bytes]] = []
    for keyword, value in pax.items():
        if not value.isascii():
            try:
                value.encode("utf-8", "strict")
            except UnicodeEncodeError:
                binary = True  # surrogates: store the original bytes
        encoded.append((keyword.encode("ascii"), value.encode("utf-8", "surrogateescape")))
    parts = [b"21 hdrcharset=BINARY\n"] if binary else []
    for key, raw in encoded:
        # "<length> <keyword>=<value>\n", where <length> counts its own digits.
        body = len(key) + len(raw) + 3
        length = 0
        while (candidate := body + len(str(length))) != length:
            length = candidate
        parts.append(b"%d %s=%s\n" % (length, key, raw))
    return b"".join(parts)


def _ustar(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes,
    uname: bytes,
    gname: bytes,
) -> bytes:
    block = _USTAR.pack(
        name, b"%07o\0" % mode, b"%07o\0" % uid, b"%07o\0" % gid, b"%011o\0" % size,
        b"%011o\0" % mtime, _BLANK_CHKSUM, typeflag, linkname, _MAGIC, uname, gname,
        b"", b"", b"",
    )  # fmt: skip
    # The checksum is the byte sum with its own field read as spaces, as it is here.
    chksum = b"%06o\0" % sum(block)
    return block[:_CHKSUM_START] + chksum + block[_CHKSUM_END:]
