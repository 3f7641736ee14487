"""A one-pass tar reader for streams: headers parsed, data moved in large chunks.

``tarfile``'s stream mode copies every byte through small buffers; this reader parses each
512-byte header as ``tarfile.TarInfo.frombuf`` does (checksum, base-256 numbers), applies PAX
(``x``/``g``) and GNU long-name (``L``/``K``) records itself, and lets the caller pull an
entry's data with ``readinto``. Whatever the caller does not read is skipped.
"""

from __future__ import annotations

import struct
import tarfile
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
        if self._remaining:
            self._skip(self._remaining)
            self._remaining = 0
        if self._padding:
            self._skip(self._padding)
            self._padding = 0

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
            pax = {**pax_global, **pending}
            pending = {}
            entry = TarEntry(
                name=pax.get("path", info.name),
                type=t,
                size=info.size,
                linkname=pax.get("linkpath", info.linkname),
                mode=info.mode,
                uid=int(pax.get("uid", info.uid)),
                gid=int(pax.get("gid", info.gid)),
                mtime=float(pax.get("mtime", info.mtime)),
                uname=pax.get("uname", info.uname),
                gname=pax.get("gname", info.gname),
                devmajor=info.devmajor,
                devminor=info.devminor,
                pax=pax,
            )
            if "size" in pax:
                try:
                    entry.size = int(pax["size"])
                except ValueError:
                    raise InputError(f"{self.what}: bad PAX size for {entry.name!r}") from None
            if entry.size < 0:
                raise InputError(f"{self.what}: negative size for {entry.name!r}")
            has_data = t not in (
                tarfile.SYMTYPE,
                tarfile.LNKTYPE,
                tarfile.DIRTYPE,
                tarfile.CHRTYPE,
                tarfile.BLKTYPE,
                tarfile.FIFOTYPE,
            )
            data_size = entry.size if has_data else 0
            self.data_size = data_size
            self._remaining = data_size
            self._padding = -data_size % BLOCK
            yield entry


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


@dataclass
class _Header:
    name: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    type: bytes
    linkname: str
    uname: str
    gname: str
    devmajor: int
    devminor: int


def _num(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 (positive 0x80, negative 0xff)
        return tarfile.nti(field)
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _str(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_header(buf: bytes) -> _Header:
    """A 512-byte ustar/GNU/v7 header, as ``tarfile.TarInfo.frombuf`` reads it, faster."""
    stored = _num(buf[148:156])
    if stored != sum(buf) - sum(buf[148:156]) + 256:  # 256: the checksum field as spaces
        signed = sum(struct.unpack_from("148b8x356b", buf)) + 256
        if stored != signed:
            raise tarfile.HeaderError("bad checksum")
    t = buf[156:157]
    name = _str(buf[0:100])
    if buf[257:265] == _POSIX_MAGIC and t not in tarfile.GNU_TYPES:
        prefix = _str(buf[345:500])
        if prefix:
            name = prefix + "/" + name
    if t == tarfile.AREGTYPE and name.endswith("/"):
        t = tarfile.DIRTYPE
    if t == tarfile.DIRTYPE:
        name = name.rstrip("/")
    return _Header(
        name=name,
        mode=_num(buf[100:108]),
        uid=_num(buf[108:116]),
        gid=_num(buf[116:124]),
        size=_num(buf[124:136]),
        mtime=_num(buf[136:148]),
        type=t,
        linkname=_str(buf[157:257]),
        uname=_str(buf[265:297]),
        gname=_str(buf[297:329]),
        devmajor=_num(buf[329:337]),
        devminor=_num(buf[337:345]),
    )
