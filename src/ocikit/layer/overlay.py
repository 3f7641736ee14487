"""A directory in overlayfs's format (an upper dir, an unsquashed squashfs layer) read as the
tar entries of a layer: a character device 0/0 is a whiteout (``.wh.NAME``), a directory
with ``trusted.overlay.opaque=y`` gets ``.wh..wh..opq``, files sharing an inode become
hardlinks to the first one, sorted depth first. The xattrs that matter (file capabilities)
come along; overlayfs's own are left out."""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

from .paths import OPAQUE, WHITEOUT
from .tarstream import TarEntry

OPAQUE_XATTR = "trusted.overlay.opaque"
KEPT_XATTRS = ("security.capability",)


def overlay_entries(
    root: Path, drop: frozenset[str] = frozenset(), mtime_max: int | None = None
) -> Iterator[tuple[TarEntry, str, dict[str, bytes]]]:
    """(entry, its path on disk, its xattrs); ``drop``: top-level names left out;
    ``mtime_max``: mtimes clamped to it."""
    inodes: dict[tuple[int, int], str] = {}

    def walk(rel: str) -> Iterator[tuple[TarEntry, str, dict[str, bytes]]]:
        directory = os.path.join(root, rel) if rel else str(root)
        for name in sorted(os.listdir(directory)):
            if not rel and name in drop:
                continue
            path = os.path.join(directory, name)
            st = os.lstat(path)
            full = f"{rel}/{name}" if rel else name
            mode = stat.S_IMODE(st.st_mode)
            mtime = int(st.st_mtime) if mtime_max is None else min(int(st.st_mtime), mtime_max)
            common = {"uid": st.st_uid, "gid": st.st_gid, "mtime": max(0, mtime)}
            if stat.S_ISDIR(st.st_mode):
                yield TarEntry(full + "/", tarfile.DIRTYPE, 0, mode=mode, **common), path, {}
                if _xattr(path, OPAQUE_XATTR) == b"y":
                    yield TarEntry(f"{full}/{OPAQUE}", tarfile.REGTYPE, 0, **common), path, {}
                yield from walk(full)
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                parent = f"{rel}/" if rel else ""
                yield TarEntry(f"{parent}{WHITEOUT}{name}", tarfile.REGTYPE, 0, **common), path, {}
            elif stat.S_ISLNK(st.st_mode):
                entry = TarEntry(full, tarfile.SYMTYPE, 0, os.readlink(path), mode, **common)
                yield entry, path, {}
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in inodes:
                    link = TarEntry(full, tarfile.LNKTYPE, 0, inodes[key], mode, **common)
                    yield link, path, {}
                    continue
                inodes[key] = full
                xattrs = {k: v for k in KEPT_XATTRS if (v := _xattr(path, k)) is not None}
                yield TarEntry(full, tarfile.REGTYPE, st.st_size, mode=mode, **common), path, xattrs
            else:
                kind = {
                    stat.S_IFCHR: tarfile.CHRTYPE,
                    stat.S_IFBLK: tarfile.BLKTYPE,
                    stat.S_IFIFO: tarfile.FIFOTYPE,
                }.get(stat.S_IFMT(st.st_mode))
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
                yield entry, path, {}

    return walk("")


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None
