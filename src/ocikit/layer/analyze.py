"""What each layer entry does to the filesystem the layers below leave, and what is wrong with it.

``Tree`` models a root filesystem by path names and types only (memory grows with the number
of paths, never with file content). ``LayerAnalyzer`` is fed one layer's entries in order and
reports findings (the rules of ocikit/help/check.md); in repair mode it also plans, per entry, what
the repaired layer writes instead: the entry unchanged, dropped, or renamed.

Paths are resolved the way a container sees them: an entry's parents through the symlinks of
the tree (absolute targets from the image root, relative ones from the link's directory,
``..`` stopping at the root), so ``bin/python3`` over ``bin -> usr/bin`` lands in
``usr/bin/python3``.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..model.jsondoc import exact_bytes, quote
from .paths import OPAQUE, WHITEOUT, CleanName, clean, go_clean, split_target
from .tarstream import (
    BLKTYPE,
    CHRTYPE,
    DIRTYPE,
    FIFOTYPE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    XGLTYPE,
    TarEntry,
)

MAX_LINKS = 40  # symlinks followed resolving one path, as Linux's MAXSYMLINKS
MAX_PER_RULE = 50  # findings of one rule in one layer before they are summarised

ERROR = "error"
WARNING = "warning"

SEVERITY = {
    "config-digest": ERROR,
    "diff-id-count": ERROR,
    "history-count": ERROR,
    "blob-digest": ERROR,
    "blob-size": ERROR,
    "diff-id": ERROR,
    "media-type": ERROR,
    "layer-unreadable": ERROR,
    "decompression-bomb": ERROR,
    "duplicate-path": ERROR,
    "replaces-symlinked-dir": ERROR,
    "through-symlink": WARNING,
    "parent-not-dir": ERROR,
    "absolute-path": ERROR,
    "path-traversal": ERROR,
    "root-type": ERROR,
    "hardlink-escape": ERROR,
    "hardlink-missing": ERROR,
    "hardlink-to-dir": ERROR,
    "whiteout-malformed": ERROR,
    "whiteout-same-layer": WARNING,
    "device-node": WARNING,
    "unsupported-type": ERROR,
    "owner-out-of-range": ERROR,
    "name-too-long": ERROR,
}

# rules whose entries ``--repair`` cannot fix safely (dropped only with ``--drop-unsafe``)
UNSAFE = frozenset(
    {
        "parent-not-dir",
        "path-traversal",
        "root-type",
        "hardlink-escape",
        "hardlink-missing",
        "hardlink-to-dir",
        "whiteout-malformed",
        "unsupported-type",
        "owner-out-of-range",
        "name-too-long",
    }
)

# what docker's layer applier (and containerd's, and umoci's) extracts; it fails on any other
# type, ignores global PAX headers (type ``g``, handled apart) and refuses GNU sparse (``S``)
_KNOWN_TYPES = frozenset({REGTYPE, LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE})
#: owners the kernel keeps as they are: a larger or negative one is cut to 32 bits when
#: applied (2**32 becomes root), and 2**32 - 1 means "unchanged"
MAX_OWNER = (1 << 32) - 2


@dataclass(frozen=True)
class Finding:
    rule: str
    message: str
    layer: int | None = None
    layer_digest: str | None = None
    paths: tuple[str, ...] = ()
    resolved: str | None = None

    @property
    def severity(self) -> str:
        return SEVERITY[self.rule]

    def to_dict(self) -> dict[str, Any]:
        """The finding as JSON. A path that is not UTF-8 reads as U+FFFD in ``paths`` (what
        ``json_text`` writes); ``paths_base64`` then gives every path's exact bytes."""
        out = {
            "rule": self.rule,
            "severity": self.severity,
            "layer": self.layer,
            "layer_digest": self.layer_digest,
            "paths": list(self.paths),
            "message": self.message,
            "resolved": self.resolved,
        }
        exact = exact_bytes(self.paths)
        if exact is not None:
            out["paths_base64"] = [base64.b64encode(p).decode() for p in exact]
        return out

    def __str__(self) -> str:
        where = f"layer {self.layer} " if self.layer is not None else ""
        return f"{self.severity} {self.rule}: {where}{self.message}"


MAX_PARENTS = 1 << 16  # parent resolutions cached per layer


class Kind(enum.Enum):
    DIR = "directory"
    FILE = "file"
    SYMLINK = "symlink"
    OTHER = "special file"


_KINDS = {
    DIRTYPE: Kind.DIR,
    SYMTYPE: Kind.SYMLINK,
    CHRTYPE: Kind.OTHER,
    BLKTYPE: Kind.OTHER,
    FIFOTYPE: Kind.OTHER,
}


def kind_of(entry: TarEntry) -> Kind:
    return _KINDS.get(entry.type, Kind.FILE)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off meanwhile (a ``with``, or a decorator): walks of
    tens of thousands of entries (a layer's headers, a build's files, the tree they make)
    make no reference cycles (reference counting frees what they drop), and every
    collection would traverse all of them again (~10% of such a walk's CPU). On again after,
    if it was on: only the outermost turns it back on."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _type_name(t: bytes) -> str:
    if t == LNKTYPE:
        return "hardlink"
    if t == XGLTYPE:
        return "global PAX header"
    return _KINDS.get(t, Kind.FILE).value


def type_name(entry: TarEntry) -> str:
    return _type_name(entry.type)


class Node:
    __slots__ = ("children", "kind", "layer", "target")

    def __init__(self, kind: Kind, layer: int, target: str = "") -> None:
        self.kind = kind
        self.layer = layer  # the layer that last wrote this path
        self.target = target  # of a symlink
        self.children: dict[str, Node] | None = {} if kind is Kind.DIR else None


@dataclass
class Resolution:
    parts: list[str]  # where the path lands, from the root
    node: Node | None  # what is there now (None: nothing yet)
    via: str | None = None  # the first symlink followed, as a path from the root
    escaped: bool = False  # a symlink's ".." climbed above the root
    blocked: str | None = None  # a parent that is a file or a dangling symlink
    loop: bool = False

    @property
    def path(self) -> str:
        return "/".join(self.parts)


class Tree:
    """The root filesystem the layers below leave: names and types, no content."""

    def __init__(self) -> None:
        self.root = Node(Kind.DIR, -1)

    def resolve(self, parts: list[str] | tuple[str, ...], follow_last: bool = False) -> Resolution:
        """Where ``parts`` lands: every symlink on the way is followed inside the root.

        A missing directory is fine (extraction creates it), but a symlink whose target is
        missing is not (extraction fails there): that is reported as ``blocked``.
        """
        todo = list(reversed(parts))
        cur: list[str] = []
        stack: list[Node] = [self.root]  # the nodes along cur, while they exist
        via: str | None = None
        escaped = False
        links = 0
        marks: list[tuple[int, str]] = []  # (len(todo) once a link's target is consumed, link)

        def here() -> Node | None:
            return stack[-1] if len(stack) > len(cur) else None

        while True:
            while marks and len(todo) == marks[-1][0]:
                _, link = marks.pop()
                if here() is None:  # a dangling symlink
                    return Resolution(cur, None, via, escaped, blocked=link)
            if not todo:
                break
            name = todo.pop()
            if name == "..":
                if cur:
                    if len(stack) > len(cur):
                        stack.pop()
                    cur.pop()
                else:
                    escaped = True
                continue
            if name in ("", "."):
                continue
            node = here()
            if node is None:  # below a missing directory: extraction creates it
                cur.append(name)
                continue
            if node.kind is not Kind.DIR:
                return Resolution(cur, None, via, escaped, blocked="/".join(cur) or ".")
            assert node.children is not None
            child = node.children.get(name)
            if child is not None and child.kind is Kind.SYMLINK and (todo or follow_last):
                links += 1
                link = "/".join([*cur, name])
                if links > MAX_LINKS:
                    return Resolution([*cur, name], None, via, escaped, loop=True)
                if via is None:
                    via = link
                absolute, target = split_target(child.target)
                if absolute:
                    cur, stack = [], [self.root]
                marks.append((len(todo), link))
                todo.extend(reversed(target))
                continue
            cur.append(name)
            if child is not None:
                stack.append(child)
        return Resolution(cur, here(), via, escaped)

    def copy(self) -> Tree:
        """An independent copy (names and types: no content to copy)."""
        new = Tree()
        todo = [(self.root, new.root)]
        while todo:
            src, dst = todo.pop()
            dst.kind, dst.layer, dst.target = src.kind, src.layer, src.target
            if src.children is not None:
                dst.children = {}
                for name, child in src.children.items():
                    copy = Node(child.kind, child.layer, child.target)
                    dst.children[name] = copy
                    todo.append((child, copy))
        return new

    def lookup(self, parts: list[str] | tuple[str, ...]) -> Node | None:
        """The node at exactly ``parts`` (no symlink followed)."""
        node: Node | None = self.root
        for p in parts:
            if node is None or node.children is None:
                return None
            node = node.children.get(p)
        return node

    def walk(self) -> Iterator[tuple[str, Node]]:
        todo: list[tuple[str, Node]] = [("", self.root)]
        while todo:
            path, node = todo.pop()
            yield path, node
            if node.children:
                for name, child in node.children.items():
                    todo.append((f"{path}/{name}" if path else name, child))


class Action(enum.Enum):
    KEEP = "keep"
    DROP = "drop"
    RENAME = "rename"


@dataclass(frozen=True)
class Edit:
    action: Action
    name: str = ""  # RENAME: the new name
    linkname: str | None = None  # RENAME of a hardlink: the new target
    reason: str = ""


@dataclass(slots=True)
class _Seen:
    index: int
    name: str
    tar_type: bytes
    is_dir: bool

    @property
    def type(self) -> str:
        return _type_name(self.tar_type)


@dataclass
class LayerAnalyzer:
    """Feed a layer's entries in order with ``feed``, then ``finish`` it.

    ``repair``: plan the repaired layer (``edits``) and keep the tree as the repaired layer
    leaves it; ``drop_unsafe``: unsafe entries are dropped instead of listed in ``unsafe``.
    """

    tree: Tree
    layer: int
    layer_digest: str | None = None
    repair: bool = False
    drop_unsafe: bool = False
    findings: list[Finding] = field(default_factory=list)
    edits: dict[int, Edit] = field(default_factory=dict)
    unsafe: list[Finding] = field(default_factory=list)
    entries: int = 0
    _counts: dict[str, int] = field(default_factory=dict)
    _names: dict[str, _Seen] = field(default_factory=dict)  # cleaned name -> first entry
    _effective: dict[str, _Seen] = field(default_factory=dict)  # landing path -> last entry
    _under: dict[str, set[str]] = field(default_factory=dict)  # landing dir -> its children
    _links_to: dict[str, int] = field(default_factory=dict)  # hardlink target -> first link
    _whiteouts: list[tuple[list[str], int, str]] = field(default_factory=list)
    _opaque: list[tuple[list[str], int, str]] = field(default_factory=list)
    _hidden: set[tuple[str, ...]] = field(default_factory=set)  # whited out so far
    _opaque_dirs: set[tuple[str, ...]] = field(default_factory=set)  # made opaque so far
    # parent directory -> its resolution, an existing directory: valid while no directory or
    # symlink of the tree is replaced (adding a path never changes where another one lands)
    _parents: dict[tuple[str, ...], Resolution] = field(default_factory=dict)

    # -- findings -----------------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Findings of each rule in this layer so far, those past ``MAX_PER_RULE`` too."""
        return dict(self._counts)

    def _find(
        self, rule: str, message: str, paths: tuple[str, ...], resolved: str | None = None
    ) -> Finding:
        f = Finding(rule, message, self.layer, self.layer_digest, paths, resolved)
        n = self._counts.get(rule, 0) + 1
        self._counts[rule] = n
        if n <= MAX_PER_RULE:
            self.findings.append(f)
        return f

    def _unsafe(self, index: int, rule: str, message: str, name: str) -> None:
        f = self._find(rule, message, (name,))
        if self.repair:
            if self.drop_unsafe:
                self.edits[index] = Edit(Action.DROP, reason=rule)
            else:
                self.unsafe.append(f)

    # -- entries --------------------------------------------------------------------------------
    def feed(self, index: int, entry: TarEntry) -> None:
        self.entries += 1
        name = entry.name
        cn = clean(name)
        first = self._same_name(index, entry, _go_key(name, cn))
        if entry.type == XGLTYPE:
            return  # extraction ignores it; only its name counts (above)
        if cn.escapes:
            self._unsafe(index, "path-traversal", f"{quote(name)} leads outside the root", name)
            return
        if entry.type not in _KNOWN_TYPES:
            what = "GNU sparse" if entry.type == b"S" else repr(entry.type)
            self._unsafe(
                index,
                "unsupported-type",
                f"{quote(name)} has tar type {what}, which docker's and containerd's "
                "extraction refuse",
                name,
            )
            return
        if not (0 <= entry.uid <= MAX_OWNER and 0 <= entry.gid <= MAX_OWNER):
            self._unsafe(
                index,
                "owner-out-of-range",
                f"{quote(name)} is owned by {entry.uid}:{entry.gid}, beyond 32 bits: docker "
                f"applies it as {_applied(entry.uid)}:{_applied(entry.gid)}",
                name,
            )
            return
        too_long = _too_long(cn.parts, entry)
        if too_long:
            self._unsafe(index, "name-too-long", f"{quote(name)}: {too_long}", name)
            return
        if not cn.parts:
            if not entry.isdir():
                self._unsafe(
                    index, "root-type", f"{quote(name)} makes the root a {type_name(entry)}", name
                )
            return
        if cn.absolute:
            self._find("absolute-path", f"{quote(name)} is an absolute name", (name,))
        base = cn.parts[-1]
        if base.startswith(WHITEOUT):
            if self.repair and first is not None:  # the same whiteout twice: once is enough
                self.edits[index] = Edit(Action.DROP, reason="duplicate-path")
                return
            self._whiteout(index, entry, cn.parts)
            return
        if entry.type in (CHRTYPE, BLKTYPE):
            self._find(
                "device-node",
                f"{quote(name)} is a device node ({entry.devmajor}, {entry.devminor})",
                (name,),
            )
        parent_parts = cn.parts[:-1]
        parent = self._parents.get(parent_parts)
        if parent is None:
            parent = self.tree.resolve(parent_parts, follow_last=True)
            if not self._parent_ok(index, name, parent):
                return
            if len(self._parents) >= MAX_PARENTS:
                self._parents.clear()
            self._parents[parent_parts] = parent
        # where it lands, as a path: for a finding or a repair only (most entries need none)
        landing = "/".join([*parent.parts, base]) if self.repair or parent.via is not None else ""
        link_target: str | None = None
        if entry.type == LNKTYPE:
            link_target = self._hardlink(index, entry)
            if link_target is None:
                return
        if parent.via is not None:
            self._find(
                "through-symlink",
                f"{quote(name)} goes through the symlink {quote(parent.via)} and lands at "
                f"{quote(landing)}",
                (name,),
                resolved=landing,
            )
        existing = (
            parent.node.children.get(base)
            if parent.node and parent.node.children is not None
            else None
        )
        kind = _KINDS.get(entry.type, Kind.FILE)
        if (
            existing is not None
            and existing.kind is Kind.SYMLINK
            and kind is not Kind.SYMLINK
            and existing.layer < self.layer
            and self._is_dir_link([*parent.parts, base])
        ):
            landing = "/".join([*parent.parts, base])
            what = "directory" if kind is Kind.DIR else type_name(entry)
            self._find(
                "replaces-symlinked-dir",
                f"{quote(name)} ({what}) replaces the symlink {quote(landing)} -> "
                f"{quote(existing.target)}: "
                f"the directory it points to vanishes from that path in the container",
                (name,),
            )
            if self.repair:
                if kind is Kind.DIR:
                    self.edits[index] = Edit(Action.DROP, reason="replaces-symlinked-dir")
                    return
                f = Finding(
                    "replaces-symlinked-dir",
                    f"{quote(name)} would replace the symlinked directory {quote(landing)}",
                    self.layer,
                    self.layer_digest,
                    (name,),
                )
                if self.drop_unsafe:
                    self.edits[index] = Edit(Action.DROP, reason="replaces-symlinked-dir")
                    return
                self.unsafe.append(f)
        replaces_dir = existing is not None and existing.kind is Kind.DIR and kind is not Kind.DIR
        if self.repair:
            self._duplicates(index, entry, landing, kind, replaces_dir)
        # the tree as extraction leaves it
        assert parent.node is not None and parent.node.children is not None
        if existing is not None and existing.kind is Kind.DIR and kind is Kind.DIR:
            existing.layer = self.layer
        else:
            if existing is not None and existing.kind in (Kind.DIR, Kind.SYMLINK):
                self._parents.clear()  # the tree changed shape: resolve afresh
            parent.node.children[base] = Node(
                kind, self.layer, entry.linkname if kind is Kind.SYMLINK else ""
            )
        if self.repair and index not in self.edits:
            rename = landing != cn.path or cn.absolute
            relink = link_target is not None and (
                link_target != clean(entry.linkname).path or entry.linkname.startswith("/")
            )
            if rename or relink:
                new_name = landing + ("/" if kind is Kind.DIR else "") if rename else name
                self.edits[index] = Edit(
                    Action.RENAME, new_name, link_target if relink else None, reason="resolved"
                )

    def _parent_ok(self, index: int, name: str, parent: Resolution) -> bool:
        if parent.loop:
            self._unsafe(
                index, "path-traversal", f"{quote(name)}: too many levels of symlinks", name
            )
            return False
        if parent.escaped:
            self._unsafe(
                index,
                "path-traversal",
                f"{quote(name)} goes through the symlink {quote(parent.via or '')}, which leads "
                "outside the root",
                name,
            )
            return False
        if parent.blocked is not None:
            self._unsafe(
                index,
                "parent-not-dir",
                f"{quote(name)}: its parent {quote(parent.blocked)} is not a directory",
                name,
            )
            return False
        if parent.node is None:
            # a missing parent: extraction creates it (as docker's MkdirAll does)
            parent.node = self._mkdirs(parent.parts)
        elif parent.node.kind is not Kind.DIR:
            self._unsafe(
                index,
                "parent-not-dir",
                f"{quote(name)}: its parent {quote(parent.path)} is a {parent.node.kind.value}",
                name,
            )
            return False
        return True

    def _mkdirs(self, parts: list[str]) -> Node:
        node = self.tree.root
        for p in parts:
            assert node.children is not None
            child = node.children.get(p)
            if child is None or child.kind is not Kind.DIR:
                if child is not None:
                    self._parents.clear()
                child = node.children[p] = Node(Kind.DIR, self.layer)
            node = child
        return node

    def _is_dir_link(self, parts: list[str]) -> bool:
        res = self.tree.resolve(parts, follow_last=True)
        return res.node is not None and res.node.kind is Kind.DIR and not res.escaped

    def _hardlink(self, index: int, entry: TarEntry) -> str | None:
        """The hardlink's target as it resolves (None: unsafe, reported)."""
        name, cl = entry.name, clean(entry.linkname)
        if cl.escapes or not cl.parts:
            self._unsafe(
                index,
                "hardlink-escape",
                f"{quote(name)} links to {quote(entry.linkname)}, outside the root",
                name,
            )
            return None
        res = self.tree.resolve(cl.parts, follow_last=False)
        if res.escaped or res.loop:
            self._unsafe(
                index,
                "hardlink-escape",
                f"{quote(name)} links to {quote(entry.linkname)}, which resolves outside the root",
                name,
            )
            return None
        if res.node is None or self._whited_out(res):
            self._unsafe(
                index,
                "hardlink-missing",
                f"{quote(name)} links to {quote(entry.linkname)}, which is not present before it",
                name,
            )
            return None
        if res.node.kind is Kind.DIR:
            self._unsafe(
                index,
                "hardlink-to-dir",
                f"{quote(name)} links to the directory {quote(entry.linkname)}",
                name,
            )
            return None
        if res.via is not None:
            self._find(
                "through-symlink",
                f"{quote(name)} links to {quote(entry.linkname)} through the symlink "
                f"{quote(res.via)}; "
                f"the target is {quote(res.path)}",
                (name,),
                resolved=res.path,
            )
        self._links_to[res.path] = index  # the last link to it counts
        return res.path

    def _whited_out(self, res: Resolution) -> bool:
        """A lower layer's file that a whiteout seen earlier in this layer removes.

        Extraction applies whiteouts as they come, so a later hardlink finds nothing.
        """
        if res.node is None or res.node.layer >= self.layer:
            return False
        if not (self._hidden or self._opaque_dirs):
            return False
        parts = tuple(res.parts)
        for n in range(1, len(parts) + 1):
            if parts[:n] in self._hidden or (n < len(parts) and parts[:n] in self._opaque_dirs):
                return True
        return () in self._opaque_dirs and len(parts) > 0

    def _same_name(self, index: int, entry: TarEntry, key: str) -> _Seen | None:
        """Report a name seen before in this layer, as docker's loader compares names
        (``key``, its ``filepath.Clean``: ``./a``, ``a/`` and ``a`` are one name, ``/a``
        another; a global PAX header's name counts too). Repair drops a global header whose
        name collides."""
        first = self._names.get(key)
        if first is None:
            self._names[key] = _Seen(index, entry.name, entry.type, entry.isdir())
            return None
        self._find(
            "duplicate-path",
            f"{quote(first.name)} ({first.type}) and {quote(entry.name)} "
            f"({type_name(entry)}) are the "
            f"same path; docker load refuses the image",
            (first.name, entry.name),
        )
        if self.repair:
            if first.tar_type == XGLTYPE:
                self.edits[first.index] = Edit(Action.DROP, reason="duplicate-path")
                self._names[key] = _Seen(index, entry.name, entry.type, entry.isdir())
            elif entry.type == XGLTYPE or not clean(entry.name).parts:
                # a global header changes nothing; of two root entries the last counts
                dropped = index if entry.type == XGLTYPE else first.index
                self.edits[dropped] = Edit(Action.DROP, reason="duplicate-path")
                if dropped == first.index:
                    self._names[key] = _Seen(index, entry.name, entry.type, entry.isdir())
        return first

    def _duplicates(
        self, index: int, entry: TarEntry, landing: str, kind: Kind, replaces_dir: bool
    ) -> None:
        """Repair: the entry that extraction leaves at ``landing`` is the last one."""
        if not self.repair:
            return
        seen = _Seen(index, entry.name, entry.type, kind is Kind.DIR)
        earlier = self._effective.get(landing)
        self._effective[landing] = seen
        if earlier is None:
            self._under.setdefault(landing.rpartition("/")[0], set()).add(landing)
        if replaces_dir:  # extraction removes the directory, and what this layer put in it
            todo = list(self._under.pop(landing, ()))
            while todo:
                path = todo.pop()
                self.edits[self._effective.pop(path).index] = Edit(
                    Action.DROP, reason="duplicate-path"
                )
                todo.extend(self._under.pop(path, ()))
        if earlier is None:
            return
        linked = self._links_to.get(landing)
        if linked is not None and linked > earlier.index and not (earlier.is_dir and seen.is_dir):
            self.unsafe.append(
                Finding(
                    "duplicate-path",
                    f"{quote(earlier.name)} is replaced by {quote(entry.name)} after a "
                    "hardlink to it: "
                    f"cannot be collapsed safely",
                    self.layer,
                    self.layer_digest,
                    (earlier.name, entry.name),
                )
            )
            return
        self.edits[earlier.index] = Edit(Action.DROP, reason="duplicate-path")

    def _whiteout(self, index: int, entry: TarEntry, parts: tuple[str, ...]) -> None:
        name, base = entry.name, parts[-1]
        hidden = base[len(WHITEOUT) :]
        bad = None
        if not hidden:
            bad = "a whiteout with no name"
        elif base != OPAQUE and hidden.startswith(WHITEOUT):
            bad = "an unknown whiteout marker"
        elif hidden in (".", ".."):
            bad = f"a whiteout of {quote(hidden)}"
        elif not entry.isreg():
            bad = f"a whiteout that is a {type_name(entry)}"
        if bad is not None:
            self._unsafe(index, "whiteout-malformed", f"{quote(name)} is {bad}", name)
            return
        parent = self.tree.resolve(parts[:-1], follow_last=True)
        if not self._parent_ok(index, name, parent):
            return
        if parent.via is not None:
            target = "/".join([*parent.parts, base])
            self._find(
                "through-symlink",
                f"{quote(name)} goes through the symlink {quote(parent.via)} and lands at "
                f"{quote(target)}",
                (name,),
                resolved=target,
            )
            if self.repair:
                self.edits[index] = Edit(Action.RENAME, target, reason="resolved")
        elif self.repair and name.startswith("/"):
            self.edits[index] = Edit(Action.RENAME, "/".join(parts), reason="resolved")
        if base == OPAQUE:
            self._opaque.append((parent.parts, index, name))
            self._opaque_dirs.add(tuple(parent.parts))
        else:
            self._whiteouts.append(([*parent.parts, hidden], index, name))
            self._hidden.add((*parent.parts, hidden))

    # -- end of layer -----------------------------------------------------------------------------
    def finish(self) -> None:
        """Apply the layer's whiteouts to the lower layers' paths, and summarise."""
        for parts, _index, name in self._whiteouts:
            node = self.tree.lookup(parts[:-1])
            target = node.children.get(parts[-1]) if node and node.children else None
            if target is None:
                continue
            if target.layer == self.layer:
                self._find(
                    "whiteout-same-layer",
                    f"{quote(name)} names {quote('/'.join(parts))}, which this same layer "
                    "adds: a whiteout "
                    f"hides lower layers only",
                    (name,),
                )
                continue
            assert node is not None and node.children is not None
            del node.children[parts[-1]]
        for parts, _index, _name in self._opaque:
            node = self.tree.lookup(parts)
            if node is not None and node.kind is Kind.DIR:
                _prune_lower(node, self.layer)
        for rule, n in self._counts.items():
            if n > MAX_PER_RULE:
                self.findings.append(
                    Finding(
                        rule,
                        f"{n - MAX_PER_RULE} more {rule} findings in this layer",
                        self.layer,
                        self.layer_digest,
                    )
                )


#: Linux's limits (PATH_MAX, NAME_MAX): a longer path, component or symlink target makes the
#: extraction's system calls fail (ENAMETOOLONG), and docker load with them (checked with the
#: engine); they also bound what resolving one entry costs
MAX_PATH = 4095
MAX_COMPONENT = 255


def _go_key(name: str, cn: CleanName) -> str:
    """``go_clean(name)``, from its ``clean`` when that tells it: the two agree but on a
    ``..`` above the root (Go keeps it in a relative name, drops it in an absolute one)."""
    if cn.escapes:
        return go_clean(name)
    if cn.absolute:
        return "/" + "/".join(cn.parts)
    return "/".join(cn.parts) or "."


def _too_long(parts: tuple[str, ...], entry: TarEntry) -> str | None:
    """Why the entry cannot be extracted on Linux, by the length of its names (None: it can)."""
    name, linkname = entry.name, entry.linkname
    # the usual case, without encoding: a character is at most 4 bytes in UTF-8 (one when
    # ASCII, or a surrogate-escaped byte), and the cleaned parts are no longer than the name
    if (len(name) <= 63 or (len(name) <= MAX_COMPONENT and name.isascii())) and (
        len(linkname) <= MAX_PATH // 4 or not (entry.issym() or entry.islnk())
    ):
        return None
    size = sum(len(p.encode("utf-8", "surrogateescape")) + 1 for p in parts)
    if size > MAX_PATH:
        return f"a path of {size} bytes (Linux takes {MAX_PATH})"
    for part in parts:
        n = len(part.encode("utf-8", "surrogateescape"))
        if n > MAX_COMPONENT:
            return f"a name of {n} bytes (Linux takes {MAX_COMPONENT})"
    if entry.issym() or entry.islnk():
        n = len(entry.linkname.encode("utf-8", "surrogateescape"))
        if n > MAX_PATH:
            return f"a link target of {n} bytes (Linux takes {MAX_PATH})"
    return None


def _applied(owner: int) -> int:
    """The owner the kernel gets from a chown with ``owner`` (a 32-bit uid_t); -1, "leave it",
    leaves the extracting user, root."""
    cut = owner & 0xFFFFFFFF
    return 0 if cut == 0xFFFFFFFF else cut


def _prune_lower(node: Node, layer: int) -> None:
    """An opaque directory: what lower layers put in it is hidden, this layer's stays."""
    assert node.children is not None
    for name, child in list(node.children.items()):
        if child.layer < layer:
            del node.children[name]
        elif child.kind is Kind.DIR:
            _prune_lower(child, layer)
