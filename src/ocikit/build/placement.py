"""A layer from imports, placed on the base image's filesystem so that consumers accept it.

Every entry's path is resolved through the symlinks of the base (and of what this layer
added before it): ``bin/tool`` over ``bin -> usr/bin`` lands at ``usr/bin/tool``. A layer
made here therefore never holds a path twice, never turns a symlinked directory into a
directory, and never replaces a directory, or a symlink to one, by a file. Two imports that
land on one path must agree (same content and metadata) or the build stops, naming both.

Entries are written sorted by path, with normalized headers (owner numbers only, no names,
mtimes as the imports clamped them), so the same inputs give the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..layer.analyze import Kind, Node, Resolution, Tree, collector_paused
from ..layer.paths import clean
from ..layer.streams import CHUNK
from ..layer.tarstream import DIRTYPE, LNKTYPE, REGTYPE, SYMTYPE
from ..layer.tarwriter import TarOutput
from .imports import Entry, ImportContent, open_data, read_again
from .recipe import BuildError

NEW = 1 << 30  # the layer index of nodes this layer adds
#: told each entry of a layer as its header is written: name, type, link target, uid, gid
#: (and a device's major and minor numbers)
EntryHook = Callable[..., None]


@dataclass
class Placed:
    parts: tuple[str, ...]
    entry: Entry
    origin: str
    link: tuple[str, ...] | None = None  # a hardlink's target, placed


@collector_paused()
def place(imports: Sequence[ImportContent], tree: Tree) -> list[Placed]:
    """Where each import's entries land on ``tree`` (changed: it ends as the new layer leaves
    it); the layer's entries in path order, missing parent directories included. Imports
    without ``dest`` (only run steps see them) are not placed: the caller leaves them out."""
    placed: dict[tuple[str, ...], Placed] = {}
    last = _LastParent()
    for content in imports:
        landed: dict[str, tuple[str, ...]] = {}  # rel path -> where it landed (hardlinks)
        written = content.spec.dest
        if written is None:
            raise ValueError(f"{content.origin}: placed without a dest")
        dest = clean(written).parts
        for entry in content.entries:
            if content.single_file:
                parts = (
                    (*dest, content.spec.src.rsplit("/", 1)[-1]) if written.endswith("/") else dest
                )
            else:
                parts = (*dest, *entry.rel)
            if not parts:
                if entry.kind == "dir":
                    continue  # the root itself
                raise BuildError(f"{content.origin}: cannot replace the image's root")
            where = _place_one(tree, placed, parts, entry, content, last)
            if where is not None:
                landed["/".join(entry.rel)] = where
        for p in placed.values():
            if p.entry.kind == "hardlink" and p.link is None and p.origin == content.origin:
                target = landed.get(p.entry.target)
                if target is None:
                    raise BuildError(
                        f"{content.origin}: hardlink {'/'.join(p.parts)} to "
                        f"{p.entry.target}, which this import does not hold"
                    )
                p.link = target
    ordered = [placed[k] for k in sorted(placed)]
    _links_after_targets(ordered, placed)
    return ordered


def _links_after_targets(ordered: list[Placed], placed: dict[tuple[str, ...], Placed]) -> None:
    """A hardlink sorted before its target: the two swap roles (the first one in the layer
    holds the data), so extraction always finds the target first."""
    seen: set[tuple[str, ...]] = set()
    for p in ordered:
        if p.entry.kind == "hardlink" and p.link is not None and p.link not in seen:
            target = placed[p.link]
            data_entry, link_entry = target.entry, p.entry
            p.entry = data_entry
            target.entry = link_entry
            new_target = p.parts
            for q in placed.values():  # every link to the old target now points here
                if q.entry.kind == "hardlink" and q.link == target.parts:
                    q.link = new_target
            target.link = new_target
            p.link = None
        seen.add(p.parts)


class _LastParent:
    """The parent directory the last entry landed in, as resolved: the next entries of the
    same directory land there too. Kept only where the resolution followed no symlink: it
    then went through the prefixes of the path alone, which a later entry of the directory
    (a longer path) cannot change, and every missing one was added as it was first placed."""

    __slots__ = ("key", "res")

    def __init__(self) -> None:
        self.key: tuple[str, ...] | None = None
        self.res: Resolution | None = None


def _place_one(
    tree: Tree,
    placed: dict[tuple[str, ...], Placed],
    parts: tuple[str, ...],
    entry: Entry,
    content: ImportContent,
    last: _LastParent | None = None,
) -> tuple[str, ...] | None:
    origin = content.origin
    shown = "/" + "/".join(parts)
    if last is not None and last.key == parts[:-1] and last.res is not None:
        parent = last.res  # its missing directories were added when it was resolved
        landing = (*parent.parts, parts[-1])
        return _land(tree, placed, parts, landing, entry, content, shown)
    parent = tree.resolve(list(parts[:-1]), follow_last=True)
    if parent.blocked is not None or parent.loop:
        what = "a symlink loop" if parent.loop else f"/{parent.blocked}, which is not a directory"
        raise BuildError(f"{origin}: {shown} cannot be placed: its parent leads to {what}")
    if parent.node is not None and parent.node.kind is not Kind.DIR:
        raise BuildError(
            f"{origin}: {shown} cannot be placed: /{parent.path} is a {_kind(parent.node)}, "
            f"and a layer must not replace it by a directory"
        )
    # missing parent directories are part of the layer (looked up going down once: a path
    # thousands deep costs its depth, not its depth squared)
    node = tree.root
    for i, name in enumerate(parent.parts):
        assert node.children is not None  # a resolved path goes through directories
        child = node.children.get(name)
        if child is None:
            prefix = tuple(parent.parts[: i + 1])
            d = Entry(prefix, "dir", 0o755, 0, 0, entry.mtime)
            placed[prefix] = Placed(prefix, d, origin)
            child = node.children[name] = Node(Kind.DIR, NEW)
        node = child
    if last is not None:
        last.key, last.res = (parts[:-1], parent) if parent.via is None else (None, None)
    landing = (*parent.parts, parts[-1])
    return _land(tree, placed, parts, landing, entry, content, shown)


def _land(
    tree: Tree,
    placed: dict[tuple[str, ...], Placed],
    parts: tuple[str, ...],
    landing: tuple[str, ...],
    entry: Entry,
    content: ImportContent,
    shown: str,
) -> tuple[str, ...] | None:
    """``entry`` (at ``parts``) placed at ``landing``, its parent resolved."""
    origin = content.origin
    existing = tree.lookup(landing)
    if entry.kind == "dir":
        if existing is None:
            placed[landing] = Placed(landing, entry, origin)
            _add(tree, landing, Node(Kind.DIR, NEW))
            return landing
        if existing.kind is Kind.DIR:
            _same(placed, landing, entry, origin, shown)
            return landing
        if existing.kind is Kind.SYMLINK:  # a directory through a symlinked directory
            res = tree.resolve(list(landing), follow_last=True)
            if res.node is not None and res.node.kind is Kind.DIR:
                return tuple(res.parts)
        raise BuildError(
            f"{origin}: {shown} is a directory but /{'/'.join(landing)} is a "
            f"{_kind(existing)} there; a layer must not replace it"
        )
    if existing is not None and existing.kind is Kind.DIR:
        raise BuildError(
            f"{origin}: {shown} would replace the directory /{'/'.join(landing)} by a {entry.kind}"
        )
    if existing is not None and existing.kind is Kind.SYMLINK and entry.kind != "symlink":
        # a file over bin -> usr/bin: /bin/* vanishes in the container (ocikit check's
        # replaces-symlinked-dir); a symlink over it stays a symlink, as check agrees
        res = tree.resolve(list(landing), follow_last=True)
        if res.node is not None and res.node.kind is Kind.DIR and not res.loop:
            hint = ""
            if content.single_file and not (content.spec.dest or "/").endswith("/"):
                hint = f" (dest: {shown}/ puts it in the directory)"
            raise BuildError(
                f"{origin}: {shown} would replace /{'/'.join(landing)}, a symlink to the "
                f"directory /{res.path}, by a {entry.kind}{hint}"
            )
    if existing is not None and existing.layer == NEW:
        _same(placed, landing, entry, origin, shown)
        return landing
    placed[landing] = Placed(landing, entry, origin)
    kind = Kind.SYMLINK if entry.kind == "symlink" else Kind.FILE
    _add(tree, landing, Node(kind, NEW, entry.target if entry.kind == "symlink" else ""))
    return landing


def _same(
    placed: dict[tuple[str, ...], Placed],
    landing: tuple[str, ...],
    entry: Entry,
    origin: str,
    shown: str,
) -> None:
    """A second entry at a path this layer already writes: fine if it is the same."""
    first = placed.get(landing)
    if first is None or first.entry.identity() == entry.identity():
        return
    if first.entry.kind == "dir" and entry.kind == "dir" and first.origin == origin:
        return
    raise BuildError(
        f"{origin}: {shown} lands on /{'/'.join(landing)}, which {first.origin} already "
        f"writes with other content or metadata"
    )


def _add(tree: Tree, parts: tuple[str, ...], node: Node) -> None:
    parent = tree.lookup(parts[:-1])
    assert parent is not None and parent.children is not None
    parent.children[parts[-1]] = node


def _kind(node: Node) -> str:
    return node.kind.value


@collector_paused()
def write_tar(entries: Sequence[Placed], out: BinaryIO, on_entry: EntryHook | None = None) -> None:
    """The layer's tar: entries in order, normalized POSIX headers (PAX records only for
    what ustar cannot hold), file data streamed from the imports, the two zero blocks.
    ``on_entry``: told each entry's name, type, link target and owner as it is written."""
    tar = TarOutput(out)
    for p in entries:
        e = p.entry
        name = "/".join(p.parts) + ("/" if e.kind == "dir" else "")
        size = 0
        linkname = ""
        if e.kind == "dir":
            kind = DIRTYPE
        elif e.kind == "symlink":
            kind, linkname = SYMTYPE, e.target
        elif e.kind == "hardlink":
            assert p.link is not None
            kind, linkname = LNKTYPE, "/".join(p.link)
        else:
            kind, size = REGTYPE, e.size
        # a file kept from the hashing read goes in as it is: the bytes that were hashed (a
        # small one not kept: read again whole, checked, by the native core where it can)
        inline = None
        if kind == REGTYPE:
            inline = e.inline if e.inline is not None else read_again(e)
        tar.entry(name, kind, size, e.mode, e.uid, e.gid, e.mtime, linkname, inline)
        if on_entry is not None:
            on_entry(name, kind, linkname, e.uid, e.gid)
        if kind == REGTYPE and inline is None:
            with open_data(e, f"{p.origin}: {name}") as data:
                tar.data(data, size, f"{p.origin}: {name}")
    tar.finish()


def materialize(entries: Sequence[Placed], root: Path, implied_mtime: int) -> None:
    """The layer's entries as files under the empty directory ``root`` (for mksquashfs):
    owners as given (as root; otherwise every owner must be 0:0), modes, mtimes."""
    as_root = os.geteuid() == 0
    if not as_root and any(p.entry.uid or p.entry.gid for p in entries):
        raise BuildError("squashfs layers with owners other than 0:0 need root to be made")
    dirs: list[tuple[Path, Entry]] = []
    for p in entries:
        e = p.entry
        path = root.joinpath(*p.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        if e.kind == "dir":
            path.mkdir(exist_ok=True)
            dirs.append((path, e))
            continue
        if e.kind == "symlink":
            os.symlink(e.target, path)
        elif e.kind == "hardlink":
            assert p.link is not None
            os.link(root.joinpath(*p.link), path, follow_symlinks=False)
            continue
        else:
            what = f"{p.origin}: {'/'.join(p.parts)}"
            with open_data(e, what) as src, open(path, "xb") as out:
                left = e.size
                while left > 0:
                    chunk = src.read(min(CHUNK, left))
                    if not chunk:
                        raise BuildError(f"{what} changed while read")
                    out.write(chunk)
                    left -= len(chunk)
            os.chmod(path, e.mode)
        if as_root:
            os.chown(path, e.uid, e.gid, follow_symlinks=False)
        os.utime(path, (e.mtime, e.mtime), follow_symlinks=False)
    for path, e in reversed(dirs):  # deepest last written, first fixed: children touch parents
        os.chmod(path, e.mode)
        if as_root:
            os.chown(path, e.uid, e.gid)
        os.utime(path, (e.mtime, e.mtime))
    # directories implied by the layer's paths (their parents in the base), and the root:
    # 0755 root, the epoch as mtime (an overlay shows the upper directory's metadata)
    written = {path for path, _ in dirs}
    for current, subdirs, _files in os.walk(root):
        for d in subdirs:
            path = Path(current, d)
            if path not in written:
                os.chmod(path, 0o755)
                os.utime(path, (implied_mtime, implied_mtime), follow_symlinks=False)
    os.chmod(root, 0o755)
    os.utime(root, (implied_mtime, implied_mtime))


def stage_for_steps(content: ImportContent, where: Path, epoch: int) -> Path | None:
    """What ``run`` steps see of an import (or a read-only bind): made under ``where`` (a
    new directory of the step's private directory) from the bytes that were hashed, so a
    step never sees what the key did not; the path to mount. A tarball is the file itself;
    a directory, its entries. None for a symlink: a mount would follow it on the host."""
    where.mkdir()
    if content.raw is not None:
        entries = [Placed(("f",), content.raw, content.origin)]
        path = where / "f"
    elif content.single_file:
        [entry] = content.entries
        if entry.kind == "symlink":
            return None
        entries = [Placed(("f",), entry, content.origin)]
        path = where / "f"
    else:
        path = where / "t"
        path.mkdir()
        entries = []
        for e in content.entries:
            link = ("t", *e.target.split("/")) if e.kind == "hardlink" else None
            entries.append(Placed(("t", *e.rel), e, content.origin, link))
    materialize(entries, where, epoch)
    return path
