"""The root filesystem of a ``run`` step, as an overlay, and its changes as a layer.

Each base layer is extracted once into the cache (``layers/<digest>``), on its own, by the
``unpack`` rules, its whiteouts as overlayfs marks them; a squashfs layer is unsquashed
(already in that form). A step's root is an overlay of those directories (read-only
lowers, never copied) under a fresh upper directory: what the step changes lands in the
upper directory, deletions as character devices 0/0 and replaced directories as opaque.
That upper directory is the new layer, read by ``layer.overlay``. Paths written through
a symlink of the base (``/bin/x`` with ``bin -> usr/bin``) land where the kernel resolved
them, so the layer is usrmerge-safe as the imports are.

After a step, the upper directory holds whatever the step left: symlinks to anywhere on the
host, fifos, device nodes, a mount point's parent replaced by a symlink. Everything ocikit
does there (removing mount points, reading the layer, preparing it for mksquashfs) goes
through directory file descriptors, one component at a time, following no symlink
(``layer.dirfd``), and opens only regular files, only if they are still the file listed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from .. import tools
from ..errors import InputError, UsageError
from ..layer.dirfd import DIR_FLAGS, lstat_at
from ..layer.overlay import normalize_tree, overlay_entries
from ..layer.streams import CHUNK
from ..layer.tarwriter import TarOutput, tar_header
from ..model import Compression
from ..model.jsondoc import one_line
from ..ops.unpack import extract_layer
from ..tempfiles import HIDDEN_TMP_PREFIX, PrivateDir, reclaim
from ..transports import Image
from .cache import Cache

# directories the runtime creates as mount points: left out of the layer unless the base
# has them (then they were not created by the step)
MOUNT_POINTS = frozenset({"proc", "dev", "tmp", "sys", "ocikit"})
MNT_DETACH, UMOUNT_NOFOLLOW = 2, 8  # umount2(2)'s flags
#: the overlay is ``volatile`` (Linux >= 5.10; else mounted without): neither its unmount
#: nor a step's fsync or sync flushes the upper directory's whole filesystem to disk (every
#: dirty page of it, the host's included: tens of ms a step, or seconds). The upper
#: directory is read through the page cache once the step ended, and thrown away; a crash
#: meanwhile ends the build (its directory is reclaimed, never mounted again)
VOLATILE = (",volatile", "")
OVERLAY_OPTIONS = "index=off,metacopy=off,redirect_dir=off,xino=off"
MOUNT_DATA_LIMIT = 4096  # mount(2) reads its options from one page, their NUL included
_LIBC = ctypes.CDLL(None, use_errno=True)


def layer_dirs(image: Image, cache: Cache, epoch: int) -> list[int]:
    """Each layer of ``image`` extracted (once) under ``layers/`` of the cache, bottom first,
    as descriptors of directories whose seals were verified (the caller closes them): a
    directory there is used only if it proves to be that layer extracted (``build.cache``),
    and is then reached through that descriptor, never by its name again.

    A layer the image lists more than once (``docker save``'s symlinked ``layer.tar``) gets
    a directory per position (``<hex>``, ``<hex>.1``...): overlayfs refuses one directory
    as two lowers, and the copies cannot be merged into one position, since a layer between
    them may change the same paths."""
    reclaim(cache.layers_path, (HIDDEN_TMP_PREFIX,))  # what a killed build left half made
    fds: list[int] = []
    seen: dict[str, int] = {}
    try:
        for i, layer in enumerate(image.layers):
            hexd = layer.descriptor.digest.hex
            copy = seen[hexd] = seen.get(hexd, -1) + 1
            name = hexd if copy == 0 else f"{hexd}.{copy}"
            fd = cache.open_layer(name, layer.descriptor.digest)
            if fd is None:
                fd = _extract(image, i, cache, name, epoch)
            fds.append(fd)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _extract(image: Image, i: int, cache: Cache, name: str, epoch: int) -> int:
    """Layer ``i`` extracted into a private directory, sealed, renamed to ``layers/<name>``
    whole; a descriptor of its root."""
    layer = image.layers[i]
    what = f"build cache {cache.path}"
    with PrivateDir(cache.layers_path, f"{HIDDEN_TMP_PREFIX}extract-", what) as staging_dir:
        staging = Path(staging_dir.path)
        if layer.compression is Compression.SQUASHFS:
            from ..layer import squashfs  # here: a tar base's step loads no squashfs tool

            blob = staging / "blob"
            with image.open_blob(layer.descriptor) as src, open(blob, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            squashfs.extract(blob, staging / "root")
            blob.unlink()
        else:
            (staging / "root").mkdir()
            extract_layer(image, i, staging / "root", epoch)
        staging_fd = os.open(staging, DIR_FLAGS)
        try:
            cache.seal_layer(staging_fd, name, layer.descriptor.digest)
            root = os.open("root", DIR_FLAGS, dir_fd=staging_fd)
        finally:
            os.close(staging_fd)
        for _ in range(2):
            try:
                os.rename(
                    staging.name, name, src_dir_fd=cache.layers_fd, dst_dir_fd=cache.layers_fd
                )
                return root
            except OSError:  # another build may have won: its directory, if it proves sound
                theirs = cache.open_layer(name, layer.descriptor.digest)
                if theirs is not None:
                    os.close(root)
                    return theirs
        os.close(root)
        raise InputError(f"{what}: layers/{name} keeps changing; is another tool using it?")


@contextlib.contextmanager
def overlay(lowers: Sequence[Path | int], upper: Path, work: Path, merged: Path) -> Iterator[Path]:
    """``merged``, an overlay of ``lowers`` (bottom first; directories, or descriptors of
    directories, which the mount takes as they are, whatever their names lead to by then)
    under ``upper``, for the block.

    The mount options name short symlinks (``l0``, ``upper``...) in a private directory,
    each to an absolute, resolved path (``_mount``): the options never hold a cache path's
    ``,`` or ``:`` (overlayfs's separators), and stay below the kernel's page-sized limit
    whatever the number of layers."""
    if os.geteuid() != 0:
        raise UsageError("run steps need root (an overlay mount, a container)")
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    links = Path(tempfile.mkdtemp(prefix="ocikit-overlay-", dir=work.parent)).resolve()
    try:
        names = []
        for i, lower in enumerate(lowers):
            source = (
                f"/proc/{os.getpid()}/fd/{lower}"
                if isinstance(lower, int)
                else lower.resolve(strict=True)
            )
            os.symlink(source, links / f"l{i}")
            names.append(f"l{i}")
        if not names:  # overlayfs needs a lower directory
            (links / "empty").mkdir()
            names.append("empty")
        os.symlink(upper.resolve(strict=True), links / "upper")
        os.symlink(work.resolve(strict=True), links / "work")
        target = merged.resolve(strict=True)
        _mount(links, names, target)
        try:
            yield target
        finally:
            unmount(target)
    finally:
        shutil.rmtree(links, ignore_errors=True)


def _mount(links: Path, names: Sequence[str], target: Path) -> None:
    """The overlay of the lowers ``names`` (bottom first) mounted on ``target``, ``volatile``
    where the kernel knows it: by ``mount(2)`` itself, its paths reached through a
    descriptor of ``links`` (``/proc/self/fd/N/l0``: no process, no working directory of
    this one changed); by ``mount`` run in ``links`` (the bare names) where those paths
    would not fit in the page the kernel reads the options from (hundreds of layers)."""

    def options(at: str) -> str:
        lowers = ":".join(at + n for n in reversed(names))
        return f"lowerdir={lowers},upperdir={at}upper,workdir={at}work,{OVERLAY_OPTIONS}"

    fd = os.open(links, os.O_PATH | os.O_DIRECTORY)
    try:
        error = ""
        for extra in VOLATILE:
            through_fd = options(f"/proc/self/fd/{fd}/") + extra
            if len(through_fd) < MOUNT_DATA_LIMIT:
                error = _mount_call(through_fd, target)
            else:
                error = _mount_command(options("") + extra, links, target)
            if not error:
                return
    finally:
        os.close(fd)
    raise InputError(f"cannot mount the step's overlay: {error}")


def _mount_call(options: str, target: Path) -> str:
    """``mount(2)`` of an overlay on ``target``; its error ("": none)."""
    if _LIBC.mount(b"overlay", os.fsencode(target), b"overlay", 0, options.encode()) == 0:
        return ""
    return os.strerror(ctypes.get_errno())


def _mount_command(options: str, links: Path, target: Path) -> str:
    """``mount`` of an overlay on ``target``, run in ``links``; its error ("": none)."""
    proc = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(target)],
        cwd=links,
        capture_output=True,
        check=False,
        env=tools.environment(),
    )
    if proc.returncode == 0:
        return ""
    return one_line(proc.stderr.decode(errors="replace")) or f"exit {proc.returncode}"


def unmount(target: Path) -> None:
    """``umount2(2)`` of ``target`` itself (a symlink there is not followed), as ``umount``
    does without its start-up (a few ms per step); still busy, it is detached now and freed
    when unused (``umount -l``). Failures are ignored: nothing is mounted there any more,
    or ``ocikit gc`` detaches it."""
    path = os.fsencode(target)
    if _LIBC.umount2(path, UMOUNT_NOFOLLOW) != 0:
        _LIBC.umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW)


def remove_mount_point(
    upper: Path, parts: Sequence[str], in_base: Callable[[tuple[str, ...]], bool]
) -> None:
    """Remove what the runtime made in ``upper`` for a bind at ``parts``: the empty
    directory (or empty file) there, and the directories above it that the base does not
    have (``in_base``) and that are empty now. Resolved from a directory fd, following
    nothing: where a step moved or replaced any of them (a symlink to the host included),
    what the step left stays as it is."""
    fds = [os.open(upper, DIR_FLAGS)]
    try:
        for part in parts[:-1]:
            try:
                fds.append(os.open(part, DIR_FLAGS, dir_fd=fds[-1]))
            except OSError:
                return  # missing, a symlink or not a directory: not what the runtime made
        for depth in range(len(parts), 0, -1):
            name, parent = parts[depth - 1], fds[depth - 1]
            if in_base(tuple(parts[:depth])):
                return
            st = lstat_at(name, parent)
            if st is None:
                return
            if stat.S_ISDIR(st.st_mode):
                try:
                    os.rmdir(name, dir_fd=parent)
                except OSError:
                    return  # not empty: the step wrote in it
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0 and depth == len(parts):
                os.unlink(name, dir_fd=parent)  # a file bind's mount point
            else:
                return
    finally:
        for fd in fds:
            os.close(fd)


def write_upper_tar(
    upper: Path,
    out: BinaryIO,
    base_top: set[str],
    mtime_max: int | None,
    on_entry: Callable[..., None] | None = None,
) -> int:
    """The upper directory as a layer tar (sorted, mtimes clamped); returns the entry count.
    Mount points the runtime created (not in ``base_top``, the base's top-level names) are
    left out. ``on_entry``: told each entry's name, type, link target, owner and device
    numbers as it is written (``build.placement.EntryHook``)."""
    drop = dropped_names(base_top)
    tar = TarOutput(out)
    count = 0
    for entry, data, xattrs in overlay_entries(upper, drop, mtime_max):
        count += 1
        tar.header(
            tar_header(
                entry.name,
                entry.type,
                entry.size,
                entry.mode,
                entry.uid,
                entry.gid,
                int(entry.mtime),
                entry.linkname,
                xattrs,
                entry.devmajor,
                entry.devminor,
            )
        )
        if on_entry is not None:
            on_entry(
                entry.name,
                entry.type,
                entry.linkname,
                entry.uid,
                entry.gid,
                entry.devmajor,
                entry.devminor,
            )
        if data is not None and entry.size:
            with data() as f:
                tar.data(f, entry.size, entry.name)
    tar.finish()
    return count


def prepare_upper_for_squashfs(upper: Path, base_top: set[str], mtime_max: int | None) -> None:
    """The upper directory made into what the squashfs layer holds: the runtime's mount
    points removed (whatever a step made of them: the tar layer leaves out the same names),
    then the rules of every layer entry (``overlay.normalize_tree``: overlayfs's own xattrs,
    user xattrs and sockets removed, mtimes clamped); nothing followed. ``squashfs.make``
    does this itself, given ``dropped_names``."""
    normalize_tree(upper, dropped_names(base_top), mtime_max)


def dropped_names(base_top: set[str]) -> frozenset[str]:
    """The top-level names of the upper directory that are not the layer's: the mount
    points the runtime made where the base has none."""
    return frozenset(MOUNT_POINTS - base_top)
