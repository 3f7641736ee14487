"""A directory in overlayfs's format (an upper dir, an unsquashed squashfs layer) read as the
tar entries of a layer: a character device 0/0 is a whiteout (``.wh.NAME``), a directory
with ``trusted.overlay.opaque=y`` gets ``.wh..wh..opq``, files sharing an inode become
hardlinks to the first one, sorted depth first. The xattrs that matter (file capabilities)
come along; overlayfs's own are left out.

The directory was written by hostile input (a ``run`` step, a squashfs layer), so it is read
through directory file descriptors (``layer.dirfd``): a symlink is read, never followed; a
fifo or a device is listed, never opened; a file is opened for its data only if it is still
the regular file that was listed.

What an entry of a layer carries is defined here once, for every layer type (``keeps_xattr``,
``in_layer``, ``layer_mtime``): a regular file its ``security.capability``, a directory the
opaque mark (``trusted.overlay.opaque=y``), nothing else (overlayfs's own bookkeeping,
``trusted.overlay.origin``/``impure``/``uuid``, is a file handle or random per mount;
``user.*`` and ``security.selinux`` are the host's); no socket; mtimes clamped to the epoch,
never below 0; the runtime's mount points left out. ``overlay_entries`` applies it for a tar
layer; ``normalize_tree`` makes a directory hold exactly that before ``mksquashfs`` copies
it as it is (``layer.squashfs.make`` calls it), so a tar and a squashfs layer of one tree
hold the same entries.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InputError
from .dirfd import DIR_FLAGS, lstat_at, open_regular, remove_at, same_file
from .paths import OPAQUE, WHITEOUT
from .tarstream import (
    BLKTYPE,
    CHRTYPE,
    DIRTYPE,
    FIFOTYPE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    TarEntry,
)

OPAQUE_XATTR = "trusted.overlay.opaque"
OPAQUE_VALUE = b"y"
KEPT_XATTRS = ("security.capability",)  # of a regular file

# a regular file's data, opened on demand; valid until the walk moves on
OpenData = Callable[[], BinaryIO]
_DEVICE_TYPES = {
    stat.S_IFCHR: CHRTYPE,
    stat.S_IFBLK: BLKTYPE,
    stat.S_IFIFO: FIFOTYPE,
}
_LAYER_KINDS = frozenset({stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK, *_DEVICE_TYPES})


def keeps_xattr(mode: int, name: str, value: bytes) -> bool:
    """Whether a layer's entry of this ``mode`` carries the xattr ``name``: a regular file
    its capabilities, a directory the opaque mark; nothing else, whatever the layer type."""
    if stat.S_ISREG(mode):
        return name in KEPT_XATTRS
    if stat.S_ISDIR(mode):
        return name == OPAQUE_XATTR and value == OPAQUE_VALUE
    return False


def in_layer(mode: int) -> bool:
    """Whether a file of this kind is an entry of a layer (a socket is not)."""
    return stat.S_IFMT(mode) in _LAYER_KINDS


def layer_mtime(mtime: float, mtime_max: int | None) -> int:
    """A layer entry's mtime: whole seconds, clamped to ``mtime_max``, never before 1970."""
    seconds = int(mtime) if mtime_max is None else min(int(mtime), mtime_max)
    return max(0, seconds)


def overlay_entries(
    root: Path, drop: frozenset[str] = frozenset(), mtime_max: int | None = None
) -> Iterator[tuple[TarEntry, OpenData | None, dict[str, bytes]]]:
    """(entry, its data for a regular file, its xattrs); ``drop``: top-level names left out;
    ``mtime_max``: mtimes clamped to it. The data is opened only when asked for, and must be
    read before the next entry is taken."""
    inodes: dict[tuple[int, int], str] = {}
    proc = os.path.isdir("/proc/self/fd")

    def xattr_of(dfd: int, dir_path: str, name: str, key: str) -> bytes | None:
        return _xattr(_at(proc, dfd, dir_path, name), key)

    def opener(dfd: int, name: str, st: os.stat_result, full: str) -> OpenData:
        return lambda: os.fdopen(open_regular(name, dfd, st, f"{root}/{full}"), "rb")

    # the directories being read, the root first: (fd, path in the layer, names left,
    # in reverse order); a loop, not recursion: a step may nest directories thousands deep
    stack: list[tuple[int, str, list[str]]] = []
    try:
        root_fd = os.open(root, DIR_FLAGS)
        stack.append((root_fd, "", _names(root_fd, drop)))
        while stack:
            dfd, rel, names = stack[-1]
            if not names:
                stack.pop()
                os.close(dfd)
                continue
            name = names.pop()
            dir_path = os.path.join(root, rel) if rel else str(root)
            full = f"{rel}/{name}" if rel else name
            st = lstat_at(name, dfd)
            if st is None:
                raise InputError(f"{root}/{full}: removed while it was read")
            if not in_layer(st.st_mode):
                continue
            mode = stat.S_IMODE(st.st_mode)
            mtime = layer_mtime(st.st_mtime, mtime_max)
            common: dict[str, Any] = {"uid": st.st_uid, "gid": st.st_gid, "mtime": mtime}
            if stat.S_ISDIR(st.st_mode):
                sub = _open_dir(name, dfd, st, f"{root}/{full}")
                stack.append((sub, full, _names(sub)))
                yield TarEntry(full + "/", DIRTYPE, 0, mode=mode, **common), None, {}
                mark = _xattr(sub, OPAQUE_XATTR)
                if mark is not None and keeps_xattr(st.st_mode, OPAQUE_XATTR, mark):
                    yield TarEntry(f"{full}/{OPAQUE}", REGTYPE, 0, **common), None, {}
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                parent = f"{rel}/" if rel else ""
                yield TarEntry(f"{parent}{WHITEOUT}{name}", REGTYPE, 0, **common), None, {}
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=dfd)
                yield TarEntry(full, SYMTYPE, 0, target, mode, **common), None, {}
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in inodes:
                    link = TarEntry(full, LNKTYPE, 0, inodes[key], mode, **common)
                    yield link, None, {}
                    continue
                inodes[key] = full
                xattrs = {
                    k: v
                    for k in KEPT_XATTRS
                    if (v := xattr_of(dfd, dir_path, name, k)) is not None
                    and keeps_xattr(st.st_mode, k, v)
                }
                entry = TarEntry(full, REGTYPE, st.st_size, mode=mode, **common)
                yield entry, opener(dfd, name, st, full), xattrs
            else:
                kind = _DEVICE_TYPES[stat.S_IFMT(st.st_mode)]
                entry = TarEntry(
                    full,
                    kind,
                    0,
                    mode=mode,
                    devmajor=os.major(st.st_rdev),
                    devminor=os.minor(st.st_rdev),
                    **common,
                )
                yield entry, None, {}
    finally:
        for dfd, _rel, _names_left in stack:
            os.close(dfd)


def normalize_tree(
    root: Path, drop: frozenset[str] = frozenset(), mtime_max: int | None = None
) -> str:
    """Make the directory ``root`` hold what a layer of it holds, by the rules above, for a
    tool that copies a tree as it is (``mksquashfs``): the top-level names ``drop`` removed
    (the runtime's mount points), sockets removed, every xattr ``keeps_xattr`` refuses
    removed, mtimes (the root's too) clamped to ``mtime_max``. Children before their
    directory, so the directory's mtime is set last. Through directory fds, following
    nothing: a step wrote the tree. Returns the longest path in the tree (relative, in
    bytes as the file system has it: the first of those of that length)."""
    proc = os.path.isdir("/proc/self/fd")
    longest = ""

    def fix(where: str | int, st: os.stat_result, what: str) -> None:
        try:
            names = (
                os.listxattr(where)
                if isinstance(where, int)
                else os.listxattr(where, follow_symlinks=False)
            )
            for key in sorted(names):
                value = _xattr(where, key)
                if value is None or not keeps_xattr(st.st_mode, key, value):
                    if isinstance(where, int):
                        os.removexattr(where, key)
                    else:
                        os.removexattr(where, key, follow_symlinks=False)
            mtime = layer_mtime(st.st_mtime, mtime_max)
            if mtime != st.st_mtime:
                if isinstance(where, int):
                    os.utime(where, (mtime, mtime))
                else:
                    os.utime(where, (mtime, mtime), follow_symlinks=False)
        except OSError as e:
            raise InputError(f"{what}: cannot be made a layer's entry: {e.strerror}") from None

    # the directories being fixed, the root first: (fd, path in the tree, names left, in
    # reverse order); each is fixed when its names are done (its mtime after its children's)
    stack: list[tuple[int, str, list[str]]] = []
    try:
        root_fd = os.open(root, DIR_FLAGS)
        stack.append((root_fd, "", _names(root_fd)))
        while stack:
            dfd, rel, names = stack[-1]
            dir_path = f"{root}/{rel}" if rel else str(root)
            if not names:
                stack.pop()
                try:
                    fix(dfd, os.fstat(dfd), dir_path)
                finally:
                    os.close(dfd)
                continue
            name = names.pop()
            path = f"{rel}/{name}" if rel else name
            st = lstat_at(name, dfd)
            if st is None:
                continue
            if not in_layer(st.st_mode) or (not rel and name in drop):
                remove_at(dfd, name)
                continue
            if len(os.fsencode(path)) > len(os.fsencode(longest)):
                longest = path
            if stat.S_ISDIR(st.st_mode):
                sub = _open_dir(name, dfd, st, f"{root}/{path}")
                stack.append((sub, path, _names(sub)))
            else:
                fix(_at(proc, dfd, dir_path, name), st, f"{root}/{path}")
    finally:
        for dfd, _rel, _names_left in stack:
            os.close(dfd)
    return longest


def _names(dfd: int, drop: frozenset[str] = frozenset()) -> list[str]:
    """The names in the directory ``dfd`` but ``drop``, in reverse order (taken from the
    end); ``dfd`` is closed if it cannot be listed."""
    try:
        return sorted((n for n in os.listdir(dfd) if n not in drop), reverse=True)
    except BaseException:
        os.close(dfd)
        raise


def _open_dir(name: str, dfd: int, listed: os.stat_result, what: str) -> int:
    """An fd of the directory ``name`` in ``dfd``, still the one ``listed``; not followed."""
    try:
        sub = os.open(name, DIR_FLAGS, dir_fd=dfd)
    except OSError as e:
        if e.errno in (errno.EMFILE, errno.ENFILE):  # one fd a level: the limit is the depth
            raise InputError(f"{what}: directories nested too deep to read") from None
        raise InputError(f"{what}: replaced while it was read") from None
    if not same_file(os.fstat(sub), listed):
        os.close(sub)
        raise InputError(f"{what}: replaced while it was read")
    return sub


def _at(proc: bool, dfd: int, dir_path: str, name: str) -> str:
    """A path to ``name`` in the directory ``dfd`` for the l*xattr calls: through the fd's
    /proc link, so only ``name`` is resolved, and not followed (``follow_symlinks=False``)."""
    return f"/proc/self/fd/{dfd}/{name}" if proc else os.path.join(dir_path, name)


def _xattr(where: str | int, name: str) -> bytes | None:
    """An xattr of an open fd, or of a path whose last component is not followed."""
    try:
        if isinstance(where, int):
            return os.getxattr(where, name)
        return os.getxattr(where, name, follow_symlinks=False)
    except OSError:
        return None
