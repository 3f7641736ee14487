"""Random access to the members of a tar archive read from a file or, in one pass, from a pipe.

A seekable file is indexed in place: member headers are read, data is read by offset later.
A pipe is read exactly once; regular members are spooled, one after the other, into a single
anonymous temporary file as they stream by (nothing held in memory, nothing left behind even
if the process is killed), since the formats put the file that says what everything is
(``manifest.json``, ``index.json``) after the blobs. A ``Tee`` may see each member's bytes on
the way (to compress a layer while it arrives).
Symlinks and hardlinks between members are resolved inside the archive only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import posixpath
import stat
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from ..errors import InputError, NotFoundError, UnsafeInputError
from ..layer.streams import CHUNK, LimitedReader
from ..layer.tarstream import TarEntry, TarStream

MAX_LINK_HOPS = 40
#: a docker save has about three members per layer; an archive with more is hostile, and
#: indexing it would grow memory without bound
MAX_MEMBERS = 100_000
F_SETPIPE_SZ = 1031


class TeeSink(Protocol):
    #: True if the sink keeps what it needs of the member, so it is not spooled at all;
    #: opening such a member later is an error naming ``failure`` if the sink failed.
    consumes: bool
    failure: str | None
    #: the member's content digest, once finished (so a mismatch can be reported as one)
    digest: str | None

    def write(self, chunk: memoryview) -> None: ...
    def finish(self) -> None: ...


#: Called with a member's name and first bytes while a pipe is read; the sink it returns, if
#: any, receives the member's bytes (one pass: e.g. compress a layer as it arrives).
Tee = Callable[[str, bytes], TeeSink | None]


def normalize(name: str) -> str | None:
    """The archive-relative form of a member name, or None if it points outside the archive."""
    if name.startswith("/"):
        return None
    n = posixpath.normpath(name)
    return None if n == ".." or n.startswith("../") else n


@dataclass
class Member:
    name: str
    kind: str  # "file", "symlink", "hardlink", "dir", "other", "consumed" (by a tee)
    size: int = 0
    offset: int = 0  # where the data starts in the archive, or in the spool
    linkname: str = ""
    head: bytes = b""  # first bytes of a member consumed by a tee
    digest: str | None = None  # content digest of a member consumed by a tee


def _write_all(f: BinaryIO, data: memoryview) -> None:
    while data:
        written = f.write(data)
        data = data[written:]


def _kind(info: tarfile.TarInfo | TarEntry) -> str:
    if info.isreg():
        return "file"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    return "dir" if info.isdir() else "other"


class TarArchive:
    """Members of a tar archive by normalized name; ``open`` follows links inside the archive."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.members: dict[str, Member] = {}
        self._fd: int | None = None
        self._failures: dict[str, str] = {}

    # -- construction -------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, what: str | None = None, tee: Tee | None = None) -> TarArchive:
        """``path`` ``-`` is stdin: indexed in place if a regular file, else spooled."""
        what = what or ("standard input" if path == "-" else path)
        if path == "-":
            fd = os.dup(0)
            if stat.S_ISREG(os.fstat(fd).st_mode):  # `< file`: no need to spool
                return cls._index_fd(fd, what, os.lseek(fd, 0, os.SEEK_CUR))
            with contextlib.suppress(OSError):  # fewer, larger reads from a pipe
                fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK)
            with os.fdopen(fd, "rb", buffering=CHUNK) as stream:
                return cls.from_stream(stream, what, tee)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"{path}: no such file") from None
        except OSError as e:
            raise InputError(f"{path}: {e.strerror}") from None
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise InputError(f"{path}: is a directory, not an archive")
        return cls._index_fd(fd, what, 0)

    @classmethod
    def _index_fd(cls, fd: int, what: str, start: int) -> TarArchive:
        self = cls(what)
        self._fd = fd
        end = os.fstat(fd).st_size
        if end - start <= 0:
            self.close()
            raise InputError(f"{what}: empty input, not a tar archive")
        raw = os.fdopen(os.dup(fd), "rb")
        raw.seek(start)
        try:
            with tarfile.open(fileobj=raw, mode="r:") as tar:
                for info in tar:
                    if info.isreg() and start + info.offset_data + info.size > end:
                        raise InputError(f"{what}: archive is truncated (in {info.name})")
                    self._add(
                        info.name, _kind(info), info.size, start + info.offset_data, info.linkname
                    )
        except tarfile.TarError as e:
            self.close()
            raise InputError(f"{what}: not a tar archive ({e})") from None
        except BaseException:
            self.close()
            raise
        finally:
            raw.close()
        return self

    @classmethod
    def from_stream(cls, stream: BinaryIO, what: str, tee: Tee | None = None) -> TarArchive:
        """Read ``stream`` once; regular members' data goes into one anonymous spool file
        (already unlinked: nothing outlives the process, even if it is killed)."""
        self = cls(what)
        spool = tempfile.TemporaryFile(prefix="ocikit-spool-", buffering=0)  # noqa: SIM115
        self._fd = os.dup(spool.fileno())
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        position = 0
        try:
            with spool:
                tar = TarStream(stream, what)
                for entry in tar:
                    sink = None
                    kind = _kind(entry)
                    if entry.isreg():
                        n = tar.readinto(view)
                        head = bytes(view[: min(n, 512)])
                        sink = tee(entry.name, head) if tee and n else None
                        keep = sink is None or not sink.consumes
                        while n:
                            if keep:
                                _write_all(spool, view[:n])
                            if sink is not None:
                                sink.write(view[:n])
                            n = tar.readinto(view)
                        if sink is not None:
                            sink.finish()
                        if not keep:
                            kind = "consumed"
                    self._add(entry.name, kind, entry.size, position, entry.linkname)
                    if kind == "file":
                        position += entry.size
                    elif kind == "consumed" and (member := self._member(entry.name)):
                        member.head = head
                        member.digest = sink.digest if sink is not None else None
                        if sink is not None and sink.failure:
                            self._failures[member.name] = sink.failure
        except BaseException:
            self.close()
            raise
        if not self.members:
            self.close()
            raise InputError(f"{what}: empty input, not a tar archive")
        return self

    def _add(self, name: str, kind: str, size: int, offset: int, linkname: str) -> None:
        if len(self.members) >= MAX_MEMBERS:
            raise InputError(f"{self.what}: more than {MAX_MEMBERS} members; not an image archive")
        normalized = normalize(name)
        if normalized is None:
            return  # outside the archive: can never be referenced
        self.members[normalized] = Member(normalized, kind, size, offset, linkname)

    # -- access ---------------------------------------------------------------------------
    def resolve(self, name: str) -> Member:
        """The regular-file member ``name`` designates, following links inside the archive."""
        current = normalize(name)
        seen: list[str] = []
        while True:
            if current is None:
                raise UnsafeInputError(f"{self.what}: {name!r} points outside the archive")
            member = self.members.get(current)
            if member is None:
                where = f" (via {seen[-1]!r})" if seen else ""
                raise NotFoundError(f"{self.what}: {current!r} is missing from the archive{where}")
            if member.kind in ("file", "consumed"):
                return member
            if member.kind not in ("symlink", "hardlink"):
                raise InputError(f"{self.what}: {current!r} is not a regular file")
            if current in seen or len(seen) >= MAX_LINK_HOPS:
                raise UnsafeInputError(f"{self.what}: symlink loop at {name!r}")
            seen.append(current)
            link = member.linkname
            if link.startswith("/"):
                raise UnsafeInputError(
                    f"{self.what}: {current!r} links to {link!r}, outside the archive"
                )
            base = posixpath.dirname(current) if member.kind == "symlink" else ""
            target = posixpath.normpath(posixpath.join(base, link))
            if target == ".." or target.startswith("../"):
                raise UnsafeInputError(
                    f"{self.what}: {current!r} links to {link!r}, outside the archive"
                )
            current = target

    def _member(self, name: str) -> Member | None:
        n = normalize(name)
        return None if n is None else self.members.get(n)

    def exists(self, name: str) -> bool:
        n = normalize(name)
        return n is not None and n in self.members

    def size(self, name: str) -> int:
        return self.resolve(name).size

    def open_member(self, name: str) -> BinaryIO:
        member = self.resolve(name)
        if member.kind == "consumed":
            why = self._failures.get(member.name)
            raise InputError(
                f"{self.what}: {member.name!r} was not kept while streaming"
                + (f" ({why})" if why else "")
            )
        assert self._fd is not None
        return LimitedReader(self._fd, member.offset, member.size)  # type: ignore[return-value]

    def read_small(self, name: str, limit: int = 64 << 20) -> bytes:
        """A JSON member; bounded so a hostile archive cannot make us hold a huge file."""
        member = self.resolve(name)
        if member.size > limit:
            raise InputError(f"{self.what}: {name!r} is too large ({member.size} bytes)")
        with self.open_member(name) as f:
            data = f.read(member.size + 1)
        if len(data) != member.size:
            raise InputError(f"{self.what}: archive is truncated (in {name!r})")
        return data

    def head(self, name: str, n: int = 8) -> bytes:
        member = self.resolve(name)
        if member.kind == "consumed":
            return member.head[:n]
        with self.open_member(name) as f:
            return f.read(n)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> TarArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
