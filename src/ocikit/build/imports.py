"""Imports: what a recipe's files, directories and tarballs put in a layer, as entries.

Each import is read once, and what is hashed is what is written:

- The import's directory (a single file's: the directory holding it) is reached from the
  build context one component at a time, through no symlink, and held open for the build.
  The walk goes through directory file descriptors (a directory swapped for a symlink
  meanwhile is refused, never followed), and each file is opened without following a
  symlink, checked to be the file that was listed, and hashed as it is read (its content
  hash goes into the cache key, and decides whether two imports landing on one path are
  the same).
- Where the native core is built (``ocikit._filecore``), a directory's files are listed,
  opened, checked, read and hashed in one call of it, with the GIL released and the rules
  above; whatever it finds not as listed (or cannot do) it hands back unread, and the code
  here does it again, as the pure-Python path (``OCIKIT_NATIVE=0``) does everything: the
  same entries, hashes and errors either way.
- Small files are kept from that read. The others are read again when the layer is
  written, from the held directory, checked to be the same file, and hashed on the way:
  bytes that differ from what the key saw stop the build with one line ("changed while the
  build read it"), so a layer never holds bytes the key never saw, nor bytes from outside
  the context.
- A tarball is read once: hashed whole as it is read (its ``sha256`` pin, checked against
  the bytes that were extracted) while its members, read with ocikit's own tar parser, are
  spooled to one file per import (constant memory), each hashed as spooled and checked
  again when written.

What a ``run`` step sees of an import (``layer.stage_for_steps``) is made from the same
entries, checked the same way.

Owners are normalized (0:0 unless the import says ``owner``) and modes too, so a checkout
with another umask gives the same layer: files 0755 when any execute bit is set, else 0644;
directories 0755; ``mode`` overrides the files' bits. A tarball's members keep their own
modes and owners (it carries them, reproducibly), unless ``mode``/``owner`` are given.
"""

from __future__ import annotations

import hashlib
import io
import operator
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .. import native
from ..errors import InputError, UsageError, VerificationError
from ..layer.analyze import collector_paused
from ..layer.compress import decompressing_reader, detect
from ..layer.dirfd import DIR_FLAGS, lstat_at, open_dir, open_regular, same_file
from ..layer.paths import clean
from ..layer.streams import CHUNK
from ..layer.tarstream import XGLTYPE, TarStream
from ..model.jsondoc import quote
from ..tempfiles import PrivateDir, private_tmp_dir
from .recipe import Import

_native = native.load("_filecore")

TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd")


def changed(what: str) -> InputError:
    return InputError(f"{what}: changed while the build read it")


class Anchor:
    """A directory of the build context, held open while the build needs the import: its
    files are read again from it, one component at a time, through no symlink."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._parts: tuple[str, ...] | None = None  # the last directory opened below it
        self._dir_fd = -1

    def open_file(self, parts: tuple[str, ...], listed: os.stat_result, what: str) -> int:
        """An fd of the regular file ``parts`` below the anchor, still the file ``listed``."""
        dir_fd = self.directory(parts[:-1])
        if dir_fd is None:
            raise changed(what)
        return open_regular(parts[-1], dir_fd, listed, what)

    def directory(self, parent: tuple[str, ...]) -> int | None:
        """An fd of the directory ``parent`` below the anchor (held until the next one is
        asked for); None if it is not there (as a directory, through no symlink)."""
        if parent != self._parts:  # entries come in path order: mostly the same directory
            self._drop()
            fd = open_dir(self.fd, parent)
            if fd is None:
                return None
            self._parts, self._dir_fd = parent, fd
        return self._dir_fd

    def _drop(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
        self._dir_fd, self._parts = -1, None

    def close(self) -> None:
        self._drop()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Spool:
    """A tarball's spooled members: one file, held open (read back by offset)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True)
class ContextFile:
    """A file of the build context, read again from its anchor."""

    anchor: Anchor
    parts: tuple[str, ...]
    listed: os.stat_result


@dataclass(frozen=True)
class SpoolSlice:
    """A tarball member's bytes in its import's spool."""

    spool: _Spool
    offset: int


@dataclass
class Entry:
    """One entry of an import, before it is placed (``parts`` relative to the dest)."""

    rel: tuple[str, ...]  # below the import's dest (empty: the dest itself)
    kind: str  # "dir" | "file" | "symlink" | "hardlink"
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int = 0
    sha256: str = ""  # of a file's content
    target: str = ""  # a symlink's target; a hardlink's target as ``rel`` joined by "/"
    source: ContextFile | SpoolSlice | None = None  # where a file's content is read again
    inline: bytes | None = None  # a small file's content, kept from the hashing read

    def identity(self) -> tuple[object, ...]:
        """What makes two entries at one path the same."""
        return (self.kind, self.mode, self.uid, self.gid, self.sha256, self.target)


@dataclass
class ImportContent:
    """Everything one import contributes, and its content hash for the cache key."""

    spec: Import
    origin: str  # images.NAME.imports[i] (src)
    single_file: bool  # a single file: dest names the file (or dest/ its directory)
    entries: list[Entry]
    digest: str = ""
    spools: list[PrivateDir] = field(default_factory=list)  # locked: reclaimed if killed
    anchor: Anchor | None = None  # the directory its files are read again from
    raw: Entry | None = None  # a tarball itself, as run steps see it (its bytes hashed)
    _spool_files: list[_Spool] = field(default_factory=list)

    def close(self) -> None:
        if self.anchor is not None:
            self.anchor.close()
        for f in self._spool_files:
            f.close()
        self._spool_files.clear()
        for spool in self.spools:
            spool.remove()
        self.spools.clear()


def _locate(context: Path, src: str, what: str) -> tuple[int, str | None, os.stat_result]:
    """The directory holding ``src`` (an fd: reached from the context one component at a
    time, through no symlink), ``src``'s name there (None: ``src`` is the context itself)
    and its lstat. Symlinks on the way are resolved first, and must stay in the context."""
    root = os.path.realpath(context)
    full = os.path.normpath(os.path.join(root, src))
    head, leaf = os.path.split(full)
    parent = root if full == root else os.path.realpath(head)
    inside = root.rstrip("/") + "/"
    if parent != root and not parent.startswith(inside):
        raise UsageError(f"{what}: leads outside the build context")
    rel = [p for p in os.path.relpath(parent, root).split("/") if p not in ("", ".")]
    try:
        root_fd = os.open(root, DIR_FLAGS)
    except OSError as e:
        raise UsageError(f"{what}: cannot read {src}: {e.strerror}") from None
    try:
        fd = open_dir(root_fd, rel)
    finally:
        os.close(root_fd)
    if fd is None:
        raise changed(what)
    if full == root:
        return fd, None, os.fstat(fd)
    st = lstat_at(leaf, fd)
    if st is None:
        os.close(fd)
        raise UsageError(f"{what}: cannot read {src}: no such file or directory")
    return fd, leaf, st


def _open_subdir(dir_fd: int, name: str, listed: os.stat_result, what: str) -> int:
    """The directory ``name`` in ``dir_fd``, still the one listed (never a symlink)."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        raise changed(what) from None
    if not same_file(os.fstat(fd), listed):
        os.close(fd)
        raise changed(what)
    return fd


@collector_paused()
def read_import(
    spec: Import,
    origin: str,
    context: Path,
    epoch: int | None,
    budget: list[int] | None = None,
) -> ImportContent:
    """``epoch``: mtimes are clamped to it (None: kept as they are). ``budget``: bytes of
    small files that may be kept in memory from the hashing read (shared by the imports of
    one image; default ``INLINE_BUDGET``). The content holds descriptors open: ``close`` it."""
    budget = budget if budget is not None else [INLINE_BUDGET]
    uid, gid = (int(x) for x in (spec.owner or "0:0").split(":"))
    what = f"{origin}: {spec.src}"
    parent_fd, leaf, st = _locate(context, spec.src, origin)
    extract = spec.extract
    if extract is None:
        extract = stat.S_ISREG(st.st_mode) and spec.src.endswith(TARBALL_SUFFIXES)
    single = not stat.S_ISDIR(st.st_mode) and not (stat.S_ISREG(st.st_mode) and extract)
    content = ImportContent(spec, origin, single, [])
    try:
        if stat.S_ISDIR(st.st_mode):
            if leaf is not None:
                top = _open_subdir(parent_fd, leaf, st, what)
                os.close(parent_fd)
                parent_fd = top
            content.anchor, parent_fd = Anchor(parent_fd), -1
            content.entries = list(_walk(content.anchor, spec, uid, gid, epoch, origin, budget))
        elif stat.S_ISREG(st.st_mode) and leaf is not None:
            fd = open_regular(leaf, parent_fd, st, what)
            content.anchor, parent_fd = Anchor(parent_fd), -1
            source = ContextFile(content.anchor, (leaf,), st)
            if extract:
                content.entries, sha, size = _tarball(fd, content, (uid, gid), epoch)
                content.raw = Entry(
                    (), "file", _file_mode(st.st_mode, spec), 0, 0, _mtime(st, epoch), size,
                    sha, source=source,
                )  # fmt: skip
            else:
                entry = _file(fd, st, (), spec, uid, gid, epoch, source, budget)
                if spec.sha256 is not None and entry.sha256 != spec.sha256:
                    raise VerificationError(
                        f"{what} has sha256 {entry.sha256}, the recipe pins {spec.sha256}"
                    )
                content.entries = [entry]
        elif stat.S_ISLNK(st.st_mode) and leaf is not None:
            try:
                target = os.readlink(leaf, dir_fd=parent_fd)
            except OSError:
                raise changed(what) from None
            content.entries = [
                Entry((), "symlink", 0o777, uid, gid, _mtime(st, epoch), target=target)
            ]
        else:
            raise UsageError(f"{origin}: {spec.src} is not a file, directory or symlink")
    except BaseException:
        if parent_fd >= 0:
            os.close(parent_fd)
        content.close()
        raise
    if parent_fd >= 0:
        os.close(parent_fd)
    content.digest = _digest(content)
    return content


def _mtime(st: os.stat_result, epoch: int | None) -> int:
    m = int(st.st_mtime)
    return m if epoch is None else min(max(m, 0), epoch)


def _file_mode(st_mode: int, spec: Import) -> int:
    if spec.mode is not None:
        return int(spec.mode)
    return 0o755 if st_mode & 0o111 else 0o644


INLINE_MAX = 64 << 10  # files up to this size are kept from the hashing read ...
INLINE_BUDGET = 64 << 20  # ... up to this much per import: written without a second open


def _file(
    fd: int,
    st: os.stat_result,
    rel: tuple[str, ...],
    spec: Import,
    uid: int,
    gid: int,
    epoch: int | None,
    source: ContextFile,
    budget: list[int] | None = None,
) -> Entry:
    """A regular file (``fd``, closed here), hashed as it is read once."""
    h = hashlib.sha256()
    size = 0
    inline = None
    try:
        done = False
        if st.st_size <= INLINE_MAX:
            data = os.read(fd, INLINE_MAX + 1)
            h.update(data)
            size = len(data)
            done = size <= INLINE_MAX and not os.read(fd, 1)  # all of it
            if not done:  # it grew while read: the rest the long way
                os.lseek(fd, size, os.SEEK_SET)
            elif budget is not None and budget[0] >= size:
                budget[0] -= size
                inline = data
        if not done:
            buf = bytearray(CHUNK)
            while n := os.readv(fd, [buf]):
                h.update(memoryview(buf)[:n])
                size += n
    finally:
        os.close(fd)
    return Entry(
        rel,
        "file",
        _file_mode(st.st_mode, spec),
        uid,
        gid,
        _mtime(st, epoch),
        size,
        h.hexdigest(),
        source=source,
        inline=inline,
    )


def _walk(
    anchor: Anchor,
    spec: Import,
    uid: int,
    gid: int,
    epoch: int | None,
    origin: str,
    budget: list[int],
) -> Iterator[Entry]:
    """A directory's contents, depth first in sorted order, through directory fds (nothing
    followed, no recursion: any depth); a file sharing its inode with an earlier one
    becomes a hardlink to it."""
    inodes: dict[tuple[int, int], str] = {}

    def what(rel: tuple[str, ...]) -> str:  # for a message: made only when one is said
        return f"{origin}: {quote(spec.src + '/' + '/'.join(rel))}"

    def scan(frame: _Frame) -> None:
        """The directory's names, and the native core's work on them: each lstat'ed, its
        regular files read and hashed, in one call (what it did not do, or found not as
        listed, is left to the loop below, as if alone)."""
        frame.names = names = sorted(os.listdir(frame.fd))
        if _native is None:
            return
        scanned: list[tuple[Any, Any]] = []
        left = budget[0]
        for start in range(0, len(names), SCAN_BATCH):  # the core's memory per call: bounded
            part = _native.scan(frame.fd, names[start : start + SCAN_BATCH], INLINE_MAX, left)
            left -= sum(d[0] for _, d in part if type(d) is tuple and d[2] is not None)
            scanned += part
        frame.scanned = scanned

    def entries() -> Iterator[Entry]:
        stack = [_Frame(anchor.fd, (), [], None, owned=False)]  # the directories open
        try:
            scan(stack[0])
            while stack:
                frame = stack[-1]
                if frame.next == len(frame.names):
                    stack.pop()
                    frame.close()
                    continue
                i = frame.next
                frame.next += 1
                name, dir_fd = frame.names[i], frame.fd
                rel = (*frame.rel, name)
                st, done = (None, None) if frame.scanned is None else frame.scanned[i]
                if st is None:
                    st = lstat_at(name, dir_fd)
                    if st is None:
                        raise changed(what(rel))
                mtime = _mtime(st, epoch)
                if stat.S_ISDIR(st.st_mode):
                    sub = _Frame(_open_subdir(dir_fd, name, st, what(rel)), rel, [], None)
                    stack.append(sub)
                    yield Entry(rel, "dir", 0o755, uid, gid, mtime)
                    scan(sub)
                elif stat.S_ISLNK(st.st_mode):
                    if done is None:
                        try:
                            done = os.readlink(name, dir_fd=dir_fd)
                        except OSError:
                            raise changed(what(rel)) from None
                    yield Entry(rel, "symlink", 0o777, uid, gid, mtime, target=done)
                elif stat.S_ISREG(st.st_mode):
                    yield regular(name, dir_fd, st, done, rel, mtime)
                else:
                    raise UsageError(
                        f"{what(rel)} is a special file; imports take files, directories and "
                        f"symlinks"
                    )
        finally:
            for frame in stack:
                frame.close()

    def regular(
        name: str, dir_fd: int, st: os.stat_result, done: Any, rel: tuple[str, ...], mtime: int
    ) -> Entry:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in inodes:
            mode = _file_mode(st.st_mode, spec)
            return Entry(rel, "hardlink", mode, uid, gid, mtime, target=inodes[key])
        if st.st_nlink > 1:
            inodes[key] = "/".join(rel)
        source = ContextFile(anchor, rel, st)
        if done is None:  # not read by the native core: read here
            fd = open_regular(name, dir_fd, st, what(rel))
            return _file(fd, st, rel, spec, uid, gid, epoch, source, budget)
        size, sha256, inline = done
        if inline is not None and budget[0] >= size:
            budget[0] -= size  # what the Python path keeps, in the same order
        else:
            inline = None
        mode = _file_mode(st.st_mode, spec)
        return Entry(rel, "file", mode, uid, gid, mtime, size, sha256, "", source, inline)

    return entries()


class _Frame:
    """A directory being walked: its fd (closed with it unless ``owned`` is False), path,
    names, what the native core did for each (None: nothing), the next name's index."""

    __slots__ = ("fd", "names", "next", "owned", "rel", "scanned")

    def __init__(
        self,
        fd: int,
        rel: tuple[str, ...],
        names: list[str],
        scanned: list[tuple[Any, Any]] | None,
        owned: bool = True,
    ) -> None:
        self.fd, self.rel, self.names, self.scanned, self.owned = fd, rel, names, scanned, owned
        self.next = 0

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


class _HashingFile(io.RawIOBase):
    """Reads a file descriptor, hashing every byte once; ``close`` leaves it open (its
    owner reads the rest with ``drain``, then closes it)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        n = os.readv(self.fd, [buffer])
        self.hash.update(memoryview(buffer)[:n])
        self.size += n
        return n

    def drain(self) -> None:
        """The bytes nobody read yet (after the tar's end), hashed."""
        while data := os.read(self.fd, CHUNK):
            self.hash.update(data)
            self.size += len(data)


def _tarball(
    fd: int, content: ImportContent, owner: tuple[int, int], epoch: int | None
) -> tuple[list[Entry], str, int]:
    """A tarball's members (read safely: no name leaves the dest, links stay inside), from
    one read of ``fd`` (closed here) that also hashes it whole: the pin is checked against
    the bytes that were extracted. Returns the entries, the tarball's sha256 and size.
    ``owner``: the import's (uid, gid), for members when it names one."""
    spec, origin = content.spec, content.origin
    raw = _HashingFile(fd)
    try:
        try:
            entries = _members(raw, content, owner, epoch)
        except (InputError, UsageError):
            if spec.sha256 is not None:  # a tarball that is not the one pinned: say that
                raw.drain()
                _check_pin(raw, spec, origin)
            raise
        raw.drain()
    finally:
        os.close(fd)
    _check_pin(raw, spec, origin)
    return entries, raw.hash.hexdigest(), raw.size


def _check_pin(raw: _HashingFile, spec: Import, origin: str) -> None:
    if spec.sha256 is not None and raw.hash.hexdigest() != spec.sha256:
        raise VerificationError(
            f"{origin}: {spec.src} has sha256 {raw.hash.hexdigest()}, the recipe pins {spec.sha256}"
        )


def _members(
    raw: _HashingFile, content: ImportContent, owner: tuple[int, int], epoch: int | None
) -> list[Entry]:
    spec, origin = content.spec, content.origin
    uid, gid = owner
    private = private_tmp_dir("import", f"{origin}: {spec.src}")
    content.spools.append(private)
    fd = os.open(
        os.path.join(private.path, "spool"),
        os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    spool = _Spool(fd)
    content._spool_files.append(spool)
    entries: dict[tuple[str, ...], Entry] = {}
    buffered = io.BufferedReader(raw, CHUNK)
    plain = decompressing_reader(buffered, detect(buffered.peek(4)[:4]))
    stream = TarStream(io.BufferedReader(plain, CHUNK), what=f"{origin}: {spec.src}")  # type: ignore[type-var]
    offset = 0
    try:
        for entry in stream:
            if entry.type == XGLTYPE:
                continue  # a global PAX header (git archive writes one): no file
            cn = clean(entry.name)
            if cn.escapes:  # an absolute name is taken below the dest, as tar does
                raise InputError(
                    f"{origin}: {spec.src}: {quote(entry.name)} leads outside the import"
                )
            rel = tuple(cn.parts)
            if not rel:
                continue  # the tarball's "./": the dest itself
            mtime = entry.mtime if epoch is None else min(max(int(entry.mtime), 0), epoch)
            # a tarball carries its own modes and owners (a root filesystem's setuid
            # bits, 1777 /tmp, root:shadow): kept unless the import says otherwise
            mode = entry.mode & 0o7777 if spec.mode is None else int(spec.mode)
            if spec.owner is None:
                uid, gid = entry.uid, entry.gid
            if entry.isdir():
                e = Entry(rel, "dir", entry.mode & 0o7777, uid, gid, mtime)
            elif entry.issym():
                e = Entry(rel, "symlink", 0o777, uid, gid, mtime, target=entry.linkname)
            elif entry.islnk():
                tn = clean(entry.linkname)
                if tn.escapes or tuple(tn.parts) not in entries:
                    raise InputError(
                        f"{origin}: {spec.src}: hardlink {quote(entry.name)} to "
                        f"{quote(entry.linkname)}, which is not an earlier member"
                    )
                e = Entry(rel, "hardlink", mode, uid, gid, mtime, target="/".join(tn.parts))
            elif entry.isreg():
                start = offset
                h = hashlib.sha256()  # what is spooled is what is hashed: one buffer
                buf = bytearray(CHUNK)
                while n := stream.readinto(buf):
                    view = memoryview(buf)[:n]
                    h.update(view)
                    _write_all(spool.fd, view)
                    offset += n
                e = Entry(
                    rel,
                    "file",
                    mode,
                    uid,
                    gid,
                    mtime,
                    entry.size,
                    h.hexdigest(),
                    source=SpoolSlice(spool, start),
                )
            else:
                raise UsageError(
                    f"{origin}: {spec.src}: {quote(entry.name)} is a special file; imports "
                    f"take files, directories and symlinks"
                )
            entries.pop(rel, None)
            entries[rel] = e  # a repeated member: the last wins, as extraction does
    finally:
        plain.close()  # stops a decompressing thread; ``raw`` stays open
    return list(entries.values())


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _digest(content: ImportContent) -> str:
    """The import's content, canonically: sorted entries with their metadata and hashes
    (a name or link target that is not UTF-8 as its bytes, as the layer holds it)."""
    h = hashlib.sha256()
    h.update(b"single" if content.single_file else b"tree")
    lines: list[str] = []  # one line an entry, hashed a few thousand at a time
    for e in sorted(content.entries, key=_by_rel):
        lines.append(
            f"{'/'.join(e.rel)}\0{e.kind}\0{oct(e.mode)}\0{e.uid}\0{e.gid}\0{e.mtime}\0"
            f"{e.size}\0{e.sha256}\0{e.target}\n"
        )
        if len(lines) >= 4096:
            h.update("".join(lines).encode("utf-8", "surrogateescape"))
            lines.clear()
    h.update("".join(lines).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


_by_rel = operator.attrgetter("rel")


AGAIN_MAX = CHUNK  # files up to this size are read again whole by the native core
SCAN_BATCH = 4096  # names of a directory given to the native core at a time


def read_again(entry: Entry) -> bytes | None:
    """A context file's content read again whole by the native core, in one call: exactly
    the bytes that were hashed (the same file, the same size, the same sha256), or None
    (no native core, a larger file or a tarball's member, or anything changed): then
    ``open_data`` reads it, and says what changed."""
    source = entry.source
    if _native is None or entry.size > AGAIN_MAX or not isinstance(source, ContextFile):
        return None
    dir_fd = source.anchor.directory(source.parts[:-1])
    if dir_fd is None:
        return None
    listed = source.listed
    again: bytes | None = _native.read_again(
        dir_fd, source.parts[-1], listed.st_dev, listed.st_ino, entry.size, entry.sha256
    )
    return again


def open_data(entry: Entry, what: str) -> BinaryIO:
    """A file entry's content: exactly the bytes that were hashed, or InputError naming
    ``what`` (one line) as soon as they are not."""
    if entry.inline is not None:
        return io.BytesIO(entry.inline)
    source = entry.source
    if isinstance(source, SpoolSlice):
        return _Verified(source.spool.fd, source.offset, False, entry, what)  # type: ignore[return-value]
    assert source is not None
    fd = source.anchor.open_file(source.parts, source.listed, what)
    return _Verified(fd, None, True, entry, what)  # type: ignore[return-value]


class _Verified(io.RawIOBase):
    """``entry.size`` bytes of ``fd`` (from ``offset`` with pread, else from its current
    position), hashed on the way; the read that completes them checks the hash against
    the one the key has (and that a file did not grow)."""

    def __init__(self, fd: int, offset: int | None, owns: bool, entry: Entry, what: str) -> None:
        super().__init__()
        self._fd, self._offset, self._owns = fd, offset, owns
        self._left = entry.size
        self._sha256 = entry.sha256
        self._hash = hashlib.sha256()
        self._pos = 0
        self.what = what
        if not self._left:
            self._check()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = min(self._left, CHUNK if n is None or n < 0 else n)
        if self._offset is None:
            data = os.read(self._fd, want)
        else:
            data = os.pread(self._fd, want, self._offset + self._pos)
        if not data:
            raise changed(self.what)
        self._hash.update(data)
        self._pos += len(data)
        self._left -= len(data)
        if not self._left:
            self._check()
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _check(self) -> None:
        if self._hash.hexdigest() != self._sha256:
            raise changed(self.what)
        if self._offset is None and os.fstat(self._fd).st_size != self._pos:
            raise changed(self.what)  # it grew (or shrank) since it was hashed

    def close(self) -> None:
        if not self.closed and self._owns:
            os.close(self._fd)
        super().close()
