"""Random access to the members of a tar archive read from a file or, in one pass, from a pipe.

A seekable file is indexed in place: member headers are read, data is seeked over and read by
offset later. A pipe is read exactly once; regular members are spooled, one after the other,
into a single anonymous temporary file as they stream by (nothing held in memory, nothing left
behind even if the process is killed), since the formats put the file that says what
everything is (``manifest.json``, ``index.json``) after the blobs. A ``Tee`` may see each
member's bytes on the way (to compress a layer while it arrives).

Both read with the one tar reader (``layer.tarstream``, Go's verdicts) and build the same
members, the way ``docker load`` sees the archive: it extracts it, then opens files inside it.
So a member name is cleaned (a leading ``/`` is dropped; ``..`` above the top is refused), a
later member replaces an earlier one of the same name (a directory with everything in it), a
hardlink is the member it names at that point of the archive, and a name is resolved at the
end, following symlinks inside the archive (an absolute target from its top, ``..`` stopping
there), as docker's ``FollowSymlinkInScope`` does. A member written through a symlink or
below a file (which docker's extraction handles differently) is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from ..errors import DestinationError, InputError, NotFoundError, UnsafeInputError
from ..layer.streams import CHUNK, LimitedReader
from ..layer.tarstream import XGLTYPE, TarEntry, TarStream
from ..model.jsondoc import quote
from ..tempfiles import describe, temp_root

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


class _HasMembers(Protocol):
    def exists(self, name: str) -> bool: ...


def image_format(files: _HasMembers) -> str | None:
    """The transport that reads these files (an archive's members, or a directory's):
    ``oci-archive`` for an OCI layout (``oci-layout`` and ``index.json``; Docker >= 25's
    ``docker save`` is one, and a docker-archive too), ``docker-archive`` for ``manifest.json``
    alone, None for neither."""
    if files.exists("oci-layout") and files.exists("index.json"):
        return "oci-archive"
    if files.exists("manifest.json"):
        return "docker-archive"
    return None


def normalize(name: str) -> str | None:
    """The archive-relative form of a member name (``.`` for the top), or None if its ``..``
    climb above the top."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts) or "."


@dataclass
class Member:
    name: str
    kind: str  # "file", "symlink", "dir", "other", "consumed" (by a tee)
    size: int = 0
    offset: int = 0  # where the data starts in the archive, or in the spool
    linkname: str = ""
    head: bytes = b""  # first bytes of a member consumed by a tee
    digest: str | None = None  # content digest of a member consumed by a tee


def _spool(f: BinaryIO, data: memoryview, what: str) -> None:
    try:
        while data:
            written = f.write(data)
            data = data[written:]
    except OSError as e:
        raise _spool_error(what, e) from None


def _spool_error(what: str, error: OSError) -> DestinationError:
    where = temp_root()
    return DestinationError(
        f"{what}: cannot keep the archive's members in {where} ($TMPDIR): {describe(error)}"
    )


def _kind(entry: TarEntry) -> str:
    if entry.type == XGLTYPE:
        return "global"
    if entry.isreg():
        return "other" if entry.sparse is not None else "file"
    if entry.issym():
        return "symlink"
    if entry.islnk():
        return "hardlink"
    return "dir" if entry.isdir() else "other"


class TarArchive:
    """Members of a tar archive by normalized name; ``open`` follows links inside the archive."""

    def __init__(self, what: str, path: str | None = None) -> None:
        self.what = what
        #: the path the archive was opened at (``-``: standard input), for hints
        self.path = path
        self.members: dict[str, Member] = {}
        self._children: dict[str, set[str]] = {}
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
                return cls._index_fd(fd, what, os.lseek(fd, 0, os.SEEK_CUR), path)
            with contextlib.suppress(OSError):  # fewer, larger reads from a pipe
                fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK)
            with os.fdopen(fd, "rb", buffering=CHUNK) as stream:
                archive = cls.from_stream(stream, what, tee)
                archive.path = path
                return archive
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"{path}: no such file") from None
        except OSError as e:
            raise InputError(f"{path}: {e.strerror}") from None
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            hint = ""
            if os.path.isfile(os.path.join(path, "oci-layout")):
                hint = f"; an OCI layout directory is read as oci:{path}"
            raise InputError(f"{path}: is a directory, not an archive{hint}")
        return cls._index_fd(fd, what, 0, path)

    @classmethod
    def _index_fd(cls, fd: int, what: str, start: int, path: str | None = None) -> TarArchive:
        """Headers read with the tar reader, data seeked over: members point into the file."""
        self = cls(what, path)
        self._fd = fd
        raw = os.fdopen(os.dup(fd), "rb", buffering=1 << 16)
        try:
            raw.seek(start)
            tar = TarStream(raw, what, seekable=True)
            for entry in tar:
                self._add(entry, start + tar.offset)
        except BaseException:
            self.close()
            raise
        finally:
            raw.close()
        return self._nonempty()

    @classmethod
    def from_stream(cls, stream: BinaryIO, what: str, tee: Tee | None = None) -> TarArchive:
        """Read ``stream`` once; regular members' data goes into one anonymous spool file
        (already unlinked: nothing outlives the process, even if it is killed)."""
        self = cls(what)
        try:
            spool = tempfile.TemporaryFile(  # noqa: SIM115
                prefix="ocikit-spool-", dir=temp_root(), buffering=0
            )
        except OSError as e:
            raise _spool_error(what, e) from None
        self._fd = os.dup(spool.fileno())
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        position = 0
        try:
            with spool:
                tar = TarStream(stream, what)
                for entry in tar:
                    if _kind(entry) != "file":
                        self._add(entry, 0)
                        continue
                    n = tar.readinto(view)
                    head = bytes(view[: min(n, 512)])
                    sink = tee(entry.name, head) if tee and n else None
                    keep = sink is None or not sink.consumes
                    while n:
                        if keep:
                            _spool(spool, view[:n], what)
                        if sink is not None:
                            sink.write(view[:n])
                        n = tar.readinto(view)
                    if sink is not None:
                        sink.finish()
                    member = self._add(entry, position, None if keep else "consumed")
                    if keep:
                        position += entry.size
                    elif member is not None:
                        member.head = head
                        member.digest = sink.digest if sink is not None else None
                        if sink is not None and sink.failure:
                            self._failures[member.name] = sink.failure
        except BaseException:
            self.close()
            raise
        return self._nonempty()

    def _nonempty(self) -> TarArchive:
        if not self.members:
            self.close()
            raise InputError(f"{self.what}: empty input, not a tar archive")
        return self

    def _add(self, entry: TarEntry, offset: int, kind: str | None = None) -> Member | None:
        """The member ``entry`` makes, as extraction leaves it (None: nothing to keep)."""
        kind = kind or _kind(entry)
        if kind == "global":
            return None  # a global PAX header: extraction ignores it
        name = normalize(entry.name)
        if name is None:
            raise UnsafeInputError(
                f"{self.what}: member {quote(entry.name)} leads outside the archive"
            )
        if name == ".":
            return None
        if len(self.members) >= MAX_MEMBERS:
            raise InputError(f"{self.what}: more than {MAX_MEMBERS} members; not an image archive")
        parent = self._parents(name)
        if kind == "hardlink":
            member = self._hardlink(name, entry)
        else:
            member = Member(name, kind, entry.size, offset, entry.linkname)
        old = self.members.get(name)
        if old is not None and not (old.kind == member.kind == "dir"):
            self._remove(name)
        if old is None or old.kind != "dir" or member.kind != "dir":
            self.members[name] = member
            self._children.setdefault(parent, set()).add(name)
        return member

    def _parents(self, name: str) -> str:
        """Make the directories above ``name`` (as extraction does); its parent's name."""
        parent = "."
        parts = name.split("/")
        for i in range(1, len(parts)):
            path = "/".join(parts[:i])
            member = self.members.get(path)
            if member is None:
                if len(self.members) >= MAX_MEMBERS:
                    raise InputError(f"{self.what}: more than {MAX_MEMBERS} members")
                self.members[path] = Member(path, "dir")
                self._children.setdefault(parent, set()).add(path)
            elif member.kind != "dir":
                what = "the symlink" if member.kind == "symlink" else "the non-directory"
                raise UnsafeInputError(
                    f"{self.what}: member {quote(name)} is written through {what} {quote(path)}"
                )
            parent = path
        return parent

    def _hardlink(self, name: str, entry: TarEntry) -> Member:
        """A hardlink shares the file its target names at this point of the archive."""
        target = normalize(entry.linkname)
        member = self.members.get(target) if target not in (None, ".") else None
        if member is None or member.kind == "dir":
            raise InputError(
                f"{self.what}: {quote(name)} is a hardlink to {quote(entry.linkname)}, "
                f"which is not a file before it in the archive"
            )
        return Member(
            name,
            member.kind,
            member.size,
            member.offset,
            member.linkname,
            member.head,
            member.digest,
        )

    def _remove(self, name: str) -> None:
        """A member replaced: a directory goes with everything in it."""
        todo = [name]
        while todo:
            path = todo.pop()
            self.members.pop(path, None)
            todo.extend(self._children.pop(path, ()))
        parent = name.rpartition("/")[0] or "."
        self._children.get(parent, set()).discard(name)

    # -- access ---------------------------------------------------------------------------
    def resolve(self, name: str) -> Member:
        """The regular-file member ``name`` designates, following symlinks inside the archive,
        component by component, as docker follows them in the archive it extracted. A link
        that leaves the archive (absolute, or ``..`` above the top) is refused."""
        start = normalize(name)
        if start is None:
            raise UnsafeInputError(f"{self.what}: {quote(name)} points outside the archive")
        todo = [] if start == "." else list(reversed(start.split("/")))
        current: list[str] = []
        hops = 0
        while todo:
            part = todo.pop()
            if part == "..":
                if not current:
                    raise UnsafeInputError(
                        f"{self.what}: {quote(name)} leads outside the archive through a symlink"
                    )
                current.pop()
                continue
            path = "/".join([*current, part])
            member = self.members.get(path)
            if member is None:
                raise NotFoundError(f"{self.what}: {quote(path)} is missing from the archive")
            if member.kind == "symlink":
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise UnsafeInputError(f"{self.what}: symlink loop at {quote(name)}")
                if member.linkname.startswith("/"):
                    raise UnsafeInputError(
                        f"{self.what}: {quote(path)} links to {quote(member.linkname)}, "
                        "outside the archive"
                    )
                todo.extend(reversed([p for p in member.linkname.split("/") if p not in ("", ".")]))
                continue
            if todo and member.kind != "dir":
                raise NotFoundError(f"{self.what}: {quote(path)} is not a directory")
            current.append(part)
        path = "/".join(current) or "."
        member = self.members.get(path)
        if member is None or member.kind not in ("file", "consumed"):
            raise InputError(f"{self.what}: {quote(name)} is not a regular file")
        return member

    def _member(self, name: str) -> Member | None:
        n = normalize(name)
        return None if n is None else self.members.get(n)

    def exists(self, name: str) -> bool:
        try:
            self.resolve(name)
        except InputError:
            return False
        return True

    def size(self, name: str) -> int:
        return self.resolve(name).size

    def open_member(self, name: str) -> BinaryIO:
        member = self.resolve(name)
        if member.kind == "consumed":
            why = self._failures.get(member.name)
            raise InputError(
                f"{self.what}: {quote(member.name)} was not kept while streaming"
                + (f" ({why})" if why else "")
            )
        assert self._fd is not None
        return LimitedReader(self._fd, member.offset, member.size)  # type: ignore[return-value]

    def read_small(self, name: str, limit: int = 64 << 20) -> bytes:
        """A JSON member; bounded so a hostile archive cannot make us hold a huge file."""
        member = self.resolve(name)
        if member.size > limit:
            raise InputError(f"{self.what}: {quote(name)} is too large ({member.size} bytes)")
        with self.open_member(name) as f:
            data = f.read(member.size + 1)
        if len(data) != member.size:
            raise InputError(f"{self.what}: archive is truncated (in {quote(name)})")
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
