"""A directory in overlayfs's format (an upper dir, an unsquashed squashfs layer) read as the
tar entries of a layer: a character device 0/0 is a whiteout (``.wh.NAME``), a directory
with ``trusted.overlay.opaque=y`` gets ``.wh..wh..opq``, files sharing an inode become
hardlinks to the first one, sorted depth first. The xattrs that matter (file capabilities)
come along; overlayfs's own are left out.

The directory was written by hostile input (a ``run`` step, a squashfs layer), so it is read
through directory file descriptors (``layer.dirfd``): a symlink is read, never followed; a
fifo or a device is listed, never opened; a file is opened for its data only if it is still
the regular file that was listed.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InputError
from .dirfd import DIR_FLAGS, lstat_at, open_regular, same_file
from .paths import OPAQUE, WHITEOUT
from .tarstream import TarEntry

OPAQUE_XATTR = "trusted.overlay.opaque"
KEPT_XATTRS = ("security.capability",)

# a regular file's data, opened on demand; valid until the walk moves on
OpenData = Callable[[], BinaryIO]
_DEVICE_TYPES = {
    stat.S_IFCHR: tarfile.CHRTYPE,
    stat.S_IFBLK: tarfile.BLKTYPE,
    stat.S_IFIFO: tarfile.FIFOTYPE,
}


def overlay_entries(
    root: Path, drop: frozenset[str] = frozenset(), mtime_max: int | None = None
) -> Iterator[tuple[TarEntry, OpenData | None, dict[str, bytes]]]:
    """(entry, its data for a regular file, its xattrs); ``drop``: top-level names left out;
    ``mtime_max``: mtimes clamped to it. The data is opened only when asked for, and must be
    read before the next entry is taken."""
    inodes: dict[tuple[int, int], str] = {}
    proc = os.path.isdir("/proc/self/fd")

    def xattr_of(dfd: int, dir_path: str, name: str, key: str) -> bytes | None:
        # lgetxattr through the directory's fd: the name itself is not followed
        where = f"/proc/self/fd/{dfd}/{name}" if proc else os.path.join(dir_path, name)
        return _xattr(where, key)

    def opener(dfd: int, name: str, st: os.stat_result, full: str) -> OpenData:
        return lambda: os.fdopen(open_regular(name, dfd, st, f"{root}/{full}"), "rb")

    def walk(dfd: int, rel: str) -> Iterator[tuple[TarEntry, OpenData | None, dict[str, bytes]]]:
        dir_path = os.path.join(root, rel) if rel else str(root)
        for name in sorted(os.listdir(dfd)):
            if not rel and name in drop:
                continue
            full = f"{rel}/{name}" if rel else name
            st = lstat_at(name, dfd)
            if st is None:
                raise InputError(f"{root}/{full}: removed while it was read")
            mode = stat.S_IMODE(st.st_mode)
            mtime = int(st.st_mtime) if mtime_max is None else min(int(st.st_mtime), mtime_max)
            common: dict[str, Any] = {"uid": st.st_uid, "gid": st.st_gid, "mtime": max(0, mtime)}
            if stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(name, DIR_FLAGS, dir_fd=dfd)
                except OSError:
                    raise InputError(f"{root}/{full}: replaced while it was read") from None
                try:
                    if not same_file(os.fstat(sub), st):
                        raise InputError(f"{root}/{full}: replaced while it was read")
                    yield TarEntry(full + "/", tarfile.DIRTYPE, 0, mode=mode, **common), None, {}
                    if _xattr(sub, OPAQUE_XATTR) == b"y":
                        yield TarEntry(f"{full}/{OPAQUE}", tarfile.REGTYPE, 0, **common), None, {}
                    yield from walk(sub, full)
                finally:
                    os.close(sub)
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                parent = f"{rel}/" if rel else ""
                yield TarEntry(f"{parent}{WHITEOUT}{name}", tarfile.REGTYPE, 0, **common), None, {}
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=dfd)
                yield TarEntry(full, tarfile.SYMTYPE, 0, target, mode, **common), None, {}
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in inodes:
                    link = TarEntry(full, tarfile.LNKTYPE, 0, inodes[key], mode, **common)
                    yield link, None, {}
                    continue
                inodes[key] = full
                xattrs = {
                    k: v for k in KEPT_XATTRS if (v := xattr_of(dfd, dir_path, name, k)) is not None
                }
                entry = TarEntry(full, tarfile.REGTYPE, st.st_size, mode=mode, **common)
                yield entry, opener(dfd, name, st, full), xattrs
            else:
                kind = _DEVICE_TYPES.get(stat.S_IFMT(st.st_mode))
                if kind is None:
                    continue  # a socket: not in a layer
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

    root_fd = os.open(root, DIR_FLAGS)
    try:
        yield from walk(root_fd, "")
    finally:
        os.close(root_fd)


def _xattr(where: str | int, name: str) -> bytes | None:
    """An xattr of an open fd, or of a path whose last component is not followed."""
    try:
        if isinstance(where, int):
            return os.getxattr(where, name)
        return os.getxattr(where, name, follow_symlinks=False)
    except OSError:
        return None
