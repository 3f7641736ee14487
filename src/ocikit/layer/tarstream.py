"""A one-pass tar reader for streams: headers parsed, data moved in large chunks.

``tarfile``'s stream mode copies every byte through small buffers; this reader parses each
512-byte header as ``tarfile.TarInfo.frombuf`` does (checksum, base-256 numbers), applies PAX
(``x``/``g``) and GNU long-name (``L``/``K``) records itself, and lets the caller pull an
entry's data with ``readinto``. Whatever the caller does not read is skipped.
"""

from __future__ import annotations

import struct
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import InputError

BLOCK = 512
MAX_META = 1 << 20  # a PAX or long-name record larger than this is hostile


@dataclass
class TarEntry:
    name: str
    type: bytes
    size: int
    linkname: str = ""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime: float = 0
    uname: str = ""
    gname: str = ""
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)

    def isreg(self) -> bool:
        return self.type in tarfile.REGULAR_TYPES

    def isdir(self) -> bool:
        return self.type == tarfile.DIRTYPE

    def issym(self) -> bool:
        return self.type == tarfile.SYMTYPE

    def islnk(self) -> bool:
        return self.type == tarfile.LNKTYPE


class TarStream:
    """Iterate over the entries of a tar read from ``raw``; ``readinto`` reads the current one."""

    def __init__(self, raw: BinaryIO, what: str = "archive", keep_raw: bool = False) -> None:
        self._raw = raw
        self.what = what
        self._remaining = 0  # data bytes of the current entry not yet read
        self._padding = 0
        self.offset = 0  # bytes consumed from raw
        self.data_size = 0  # of the current entry
        self._skip_buf: memoryview | None = None
        # keep_raw: the current entry's header blocks exactly as read (PAX and long-name
        # records included), and apart from them its global PAX records, for rewriting
        self._keep = keep_raw
        self.raw_header = bytearray()
        self.raw_global = bytearray()

    # -- low level ------------------------------------------------------------------------
    def _read_exact(self, n: int, eof_ok: bool = False) -> bytes:
        """Exactly ``n`` bytes; at a clean end of input, b"" if ``eof_ok``."""
        data = self._raw.read(n) or b""
        while len(data) < n:
            more = self._raw.read(n - len(data))
            if not more:
                break
            data += more
        if eof_ok and not data:
            return b""
        if len(data) < n:
            raise InputError(f"{self.what}: archive is truncated")
        self.offset += n
        if self._keep:
            self.raw_header += data
        return data

    def _skip(self, n: int) -> None:
        if self._skip_buf is None:
            self._skip_buf = memoryview(bytearray(1 << 20))
        view = self._skip_buf
        while n > 0:
            got = self._raw.readinto(view[: min(n, len(view))])  # type: ignore[attr-defined]
            if not got:
                raise InputError(f"{self.what}: archive is truncated")
            n -= got
            self.offset += got

    def readinto(self, buffer: memoryview | bytearray) -> int:
        """Read the current entry's data; 0 at its end."""
        if self._remaining <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), self._remaining)]
        got = self._raw.readinto(view)  # type: ignore[attr-defined]
        if not got:
            raise InputError(f"{self.what}: archive is truncated")
        self._remaining -= got
        self.offset += got
        return got

    def _finish_entry(self) -> None:
        rest = self._remaining + self._padding
        if rest:
            self._skip(rest)
            self._remaining = self._padding = 0

    def _meta(self, size: int) -> bytes:
        if size > MAX_META:
            raise InputError(f"{self.what}: a tar metadata record of {size} bytes")
        data = self._read_exact(size)
        pad = -size % BLOCK
        if pad:
            self._read_exact(pad)
        return data

    # -- entries --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[TarEntry]:
        pax_global: dict[str, str] = {}
        pending: dict[str, str] = {}
        empty_seen = False
        while True:
            self._finish_entry()
            if self._keep:
                self.raw_header.clear()
                self.raw_global.clear()
            header = self._read_exact(BLOCK, eof_ok=True)
            if not header:
                if self.offset == 0:
                    raise InputError(f"{self.what}: empty input, not a tar archive")
                return  # EOF without end-of-archive blocks: tolerated, as GNU tar does
            if header == _ZERO_BLOCK:
                if empty_seen:
                    return
                empty_seen = True
                continue
            if empty_seen:
                raise InputError(f"{self.what}: data after a zero block")
            try:
                info = _parse_header(header)
            except (tarfile.HeaderError, ValueError) as e:
                kind = "not a tar archive" if self.offset == BLOCK else "corrupt tar header"
                raise InputError(f"{self.what}: {kind} ({e})") from None
            t = info.type
            if t in (tarfile.XHDTYPE, tarfile.XGLTYPE, b"X"):
                start = len(self.raw_header) - BLOCK
                records = _parse_pax(self._meta(info.size), self.what)
                if self._keep and t == tarfile.XGLTYPE:
                    self.raw_global += self.raw_header[start:]
                (pax_global if t == tarfile.XGLTYPE else pending).update(records)
                continue
            if t in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                value = self._meta(info.size).split(b"\0", 1)[0]
                key = "path" if t == tarfile.GNUTYPE_LONGNAME else "linkpath"
                pending[key] = value.decode("utf-8", "surrogateescape")
                continue
            if pax_global or pending:
                entry = _with_pax(info, {**pax_global, **pending}, self.what)
                pending = {}
            else:
                entry = info
            if entry.size < 0:
                raise InputError(f"{self.what}: negative size for {entry.name!r}")
            t = entry.type
            data_size = 0 if t in _NO_DATA else entry.size
            self.data_size = data_size
            self._remaining = data_size
            self._padding = -data_size % BLOCK
            yield entry


_NO_DATA = frozenset(
    (
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.DIRTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
    )
)


def _with_pax(info: TarEntry, pax: dict[str, str], what: str) -> TarEntry:
    """The header's fields overridden by the PAX records that apply to it."""
    info.pax = pax
    try:
        if "path" in pax:
            info.name = pax["path"]
        if "linkpath" in pax:
            info.linkname = pax["linkpath"]
        if "uid" in pax:
            info.uid = int(pax["uid"])
        if "gid" in pax:
            info.gid = int(pax["gid"])
        if "mtime" in pax:
            info.mtime = float(pax["mtime"])
        if "uname" in pax:
            info.uname = pax["uname"]
        if "gname" in pax:
            info.gname = pax["gname"]
        if "size" in pax:
            info.size = int(pax["size"])
    except ValueError:
        raise InputError(f"{what}: bad PAX record for {info.name!r}") from None
    return info


def _parse_pax(data: bytes, what: str) -> dict[str, str]:
    """``LEN key=value\\n`` records; the length counts the whole record."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise InputError(f"{what}: malformed PAX header") from None
        if length <= 0 or pos + length > len(data):
            raise InputError(f"{what}: malformed PAX header")
        record = data[space + 1 : pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise InputError(f"{what}: malformed PAX header")
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


_ZERO_BLOCK = bytes(BLOCK)
_POSIX_MAGIC = b"ustar\x0000"


_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s")
_ADLER_MOD = 65521


def _num(field: bytes) -> int:
    """A numeric field as tarfile reads it: octal up to the first NUL, or GNU base-256."""
    if field[0] & 0x80:  # base-256 (positive 0x80, negative 0xff)
        return tarfile.nti(field)
    try:
        return int(field.partition(b"\0")[0], 8)  # int() ignores surrounding spaces
    except ValueError:
        text = field.partition(b"\0")[0].strip()
        if text:
            raise tarfile.InvalidHeaderError("invalid header") from None
        return 0


def _str(field: bytes) -> str:
    return field.partition(b"\0")[0].decode("utf-8", "surrogateescape")


def _checksum_ok(buf: bytes, stored: int) -> bool:
    """The header's byte sum, with the checksum field counted as spaces, equals ``stored``
    (unsigned, or signed as some old tars wrote it).

    adler32's low half is 1 + the byte sum modulo 65521: the exact sum in one C call whenever
    too few bytes are non-zero to reach 65521 (every real header); otherwise summed here."""
    unsigned = stored - 256 + sum(buf[148:156])  # what the whole block must sum to
    if (BLOCK - buf.count(0)) * 255 < _ADLER_MOD:
        total = ((zlib.adler32(buf) & 0xFFFF) - 1) % _ADLER_MOD
    else:
        total = sum(buf)
    if unsigned == total:
        return True
    return stored == sum(struct.unpack_from("148b8x356b", buf)) + 256


def _parse_header(buf: bytes) -> TarEntry:
    """A 512-byte ustar/GNU/v7 header, as ``tarfile.TarInfo.frombuf`` reads it, faster."""
    (
        name_f,
        mode_f,
        uid_f,
        gid_f,
        size_f,
        mtime_f,
        chksum_f,
        t,
        linkname_f,
        magic_f,
        uname_f,
        gname_f,
        devmajor_f,
        devminor_f,
        prefix_f,
    ) = _HEADER.unpack_from(buf)
    if not _checksum_ok(buf, _num(chksum_f)):
        raise tarfile.HeaderError("bad checksum")
    name = _str(name_f)
    if magic_f == _POSIX_MAGIC and t not in tarfile.GNU_TYPES and prefix_f[0]:
        name = _str(prefix_f) + "/" + name
    if t == tarfile.AREGTYPE and name.endswith("/"):
        t = tarfile.DIRTYPE
    if t == tarfile.DIRTYPE:
        name = name.rstrip("/")
    return TarEntry(
        name,
        t,
        _num(size_f),
        _str(linkname_f),
        _num(mode_f),
        _num(uid_f),
        _num(gid_f),
        _num(mtime_f),
        _str(uname_f),
        _str(gname_f),
        _num(devmajor_f),
        _num(devminor_f),
    )
