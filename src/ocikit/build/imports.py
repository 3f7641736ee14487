"""Imports: what a recipe's files, directories and tarballs put in a layer, as entries.

Each import is read once: files are hashed (their content hash goes into the cache key, and
decides whether two imports landing on one path are the same), a tarball's members are read
with ocikit's own tar parser and their data spooled to one file per import (constant memory).

Owners are normalized (0:0 unless the import says ``owner``) and modes too, so a checkout
with another umask gives the same layer: files 0755 when any execute bit is set, else 0644;
directories 0755; ``mode`` overrides the files' bits. A tarball's members keep their own
modes and owners (it carries them, reproducibly), unless ``mode``/``owner`` are given.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import InputError, UsageError, VerificationError
from ..layer.compress import decompressing_reader, detect
from ..layer.paths import clean
from ..layer.streams import CHUNK
from ..layer.tarstream import XGLTYPE, TarStream
from ..model.jsondoc import quote
from ..tempfiles import PrivateDir, private_tmp_dir
from .recipe import Import

TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd")


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
    data: tuple[str, int] | None = None  # (file, offset) holding a file's content
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

    def close(self) -> None:
        for spool in self.spools:
            spool.remove()
        self.spools.clear()


def read_import(
    spec: Import,
    origin: str,
    context: Path,
    epoch: int | None,
    budget: list[int] | None = None,
) -> ImportContent:
    """``epoch``: mtimes are clamped to it (None: kept as they are). ``budget``: bytes of
    small files that may be kept in memory from the hashing read (shared by the imports of
    one image; default ``INLINE_BUDGET``)."""
    budget = budget if budget is not None else [INLINE_BUDGET]
    src = context / spec.src
    uid, gid = (int(x) for x in (spec.owner or "0:0").split(":"))
    try:
        st = os.lstat(src)
    except OSError as e:
        raise UsageError(f"{origin}: cannot read {spec.src}: {e.strerror}") from None
    extract = spec.extract
    if extract is None:
        extract = stat.S_ISREG(st.st_mode) and spec.src.endswith(TARBALL_SUFFIXES)
    if stat.S_ISDIR(st.st_mode):
        content = ImportContent(spec, origin, False, [])
        content.entries = list(_walk(src, spec, uid, gid, epoch, origin, budget))
    elif stat.S_ISREG(st.st_mode) and extract:
        content = ImportContent(spec, origin, False, [])
        _check_pin(src, spec, origin)
        content.entries = _tarball(src, spec, uid, gid, epoch, origin, content)
    elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
        content = ImportContent(spec, origin, True, [])
        if stat.S_ISREG(st.st_mode):
            entry = _file(src, st, (), spec, uid, gid, epoch, budget)
            if spec.sha256 is not None and entry.sha256 != spec.sha256:
                raise VerificationError(
                    f"{origin}: {spec.src} has sha256 {entry.sha256}, the recipe pins {spec.sha256}"
                )
        else:
            entry = Entry(
                (), "symlink", 0o777, uid, gid, _mtime(st, epoch), target=os.readlink(src)
            )
        content.entries = [entry]
    else:
        raise UsageError(f"{origin}: {spec.src} is not a file, directory or symlink")
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
    path: str | Path,
    st: os.stat_result,
    rel: tuple[str, ...],
    spec: Import,
    uid: int,
    gid: int,
    epoch: int | None,
    budget: list[int] | None = None,
) -> Entry:
    h = hashlib.sha256()
    size = 0
    inline = None
    with open(path, "rb", buffering=0) as f:
        if st.st_size <= INLINE_MAX:
            data = f.read(INLINE_MAX + 1)
            if len(data) <= INLINE_MAX and f.read(1) == b"":
                h.update(data)
                size = len(data)
                if budget is not None and budget[0] >= size:
                    budget[0] -= size
                    inline = data
            else:  # it grew while read: hash it the long way
                f.seek(0)
                data = b""
        if not size and inline is None and st.st_size:
            buf = bytearray(CHUNK)
            while n := f.readinto(buf):
                h.update(memoryview(buf)[:n])
                size += n
    return Entry(
        rel,
        "file",
        _file_mode(st.st_mode, spec),
        uid,
        gid,
        _mtime(st, epoch),
        size,
        h.hexdigest(),
        data=(str(path), 0),
        inline=inline,
    )


def _walk(
    root: Path,
    spec: Import,
    uid: int,
    gid: int,
    epoch: int | None,
    origin: str,
    budget: list[int],
) -> Iterator[Entry]:
    """A directory's contents, depth first in sorted order; a file sharing its inode with an
    earlier one becomes a hardlink to it."""
    inodes: dict[tuple[int, int], str] = {}

    def walk(rel_dir: tuple[str, ...]) -> Iterator[Entry]:
        directory = os.path.join(root, *rel_dir)
        for name in sorted(os.listdir(directory)):
            rel = (*rel_dir, name)
            path = os.path.join(directory, name)
            st = os.lstat(path)
            mtime = _mtime(st, epoch)
            if stat.S_ISDIR(st.st_mode):
                yield Entry(rel, "dir", 0o755, uid, gid, mtime)
                yield from walk(rel)
            elif stat.S_ISLNK(st.st_mode):
                yield Entry(rel, "symlink", 0o777, uid, gid, mtime, target=os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in inodes:
                    mode = _file_mode(st.st_mode, spec)
                    yield Entry(rel, "hardlink", mode, uid, gid, mtime, target=inodes[key])
                    continue
                if st.st_nlink > 1:
                    inodes[key] = "/".join(rel)
                yield _file(path, st, rel, spec, uid, gid, epoch, budget)
            else:
                raise UsageError(
                    f"{origin}: {spec.src}/{'/'.join(rel)} is a special file; imports take "
                    f"files, directories and symlinks"
                )

    return walk(())


def _check_pin(path: Path, spec: Import, origin: str) -> None:
    if spec.sha256 is None:
        return
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        while n := f.readinto(buf):
            h.update(memoryview(buf)[:n])
    if h.hexdigest() != spec.sha256:
        raise VerificationError(
            f"{origin}: {spec.src} has sha256 {h.hexdigest()}, the recipe pins {spec.sha256}"
        )


def _tarball(
    path: Path,
    spec: Import,
    uid: int,
    gid: int,
    epoch: int | None,
    origin: str,
    content: ImportContent,
) -> list[Entry]:
    """A tarball's members (read safely: no name leaves the dest, links stay inside)."""
    private = private_tmp_dir("import", f"{origin}: {spec.src}")
    content.spools.append(private)
    spool = os.path.join(private.path, "spool")
    entries: dict[tuple[str, ...], Entry] = {}
    with open(spool, "xb") as out, open(path, "rb") as raw:
        buffered = io.BufferedReader(raw, CHUNK)  # type: ignore[arg-type]
        plain = decompressing_reader(buffered, detect(buffered.peek(4)[:4]))  # type: ignore[arg-type]
        stream = TarStream(io.BufferedReader(plain, CHUNK), what=f"{origin}: {spec.src}")  # type: ignore[arg-type]
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
                    e = Entry(
                        rel,
                        "hardlink",
                        mode,
                        uid,
                        gid,
                        mtime,
                        target="/".join(tn.parts),
                    )
                elif entry.isreg():
                    offset = out.tell()
                    h = hashlib.sha256()
                    buf = bytearray(CHUNK)
                    while n := stream.readinto(buf):
                        h.update(memoryview(buf)[:n])
                        out.write(memoryview(buf)[:n])
                    e = Entry(
                        rel,
                        "file",
                        mode,
                        uid,
                        gid,
                        mtime,
                        entry.size,
                        h.hexdigest(),
                        data=(spool, offset),
                    )
                else:
                    raise UsageError(
                        f"{origin}: {spec.src}: {quote(entry.name)} is a special file; imports "
                        f"take files, directories and symlinks"
                    )
                entries.pop(rel, None)
                entries[rel] = e  # a repeated member: the last wins, as extraction does
        finally:
            plain.close()
    return list(entries.values())


def _digest(content: ImportContent) -> str:
    """The import's content, canonically: sorted entries with their metadata and hashes."""
    h = hashlib.sha256()
    h.update(b"single" if content.single_file else b"tree")
    for e in sorted(content.entries, key=lambda e: e.rel):
        h.update(
            "\0".join(
                [
                    "/".join(e.rel),
                    e.kind,
                    oct(e.mode),
                    str(e.uid),
                    str(e.gid),
                    str(e.mtime),
                    str(e.size),
                    e.sha256,
                    e.target,
                ]
            ).encode()
            + b"\n"
        )
    return h.hexdigest()


def open_data(entry: Entry) -> BinaryIO:
    if entry.inline is not None:
        return io.BytesIO(entry.inline)
    assert entry.data is not None
    path, offset = entry.data
    f = open(path, "rb")  # noqa: SIM115 - the caller closes it
    f.seek(offset)
    return f
