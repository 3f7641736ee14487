"""``unpack``: an image's root filesystem, extracted so that nothing lands outside its target.

Three lines of defence: every entry is first judged by the analyzer (ocikit/help/check.md: an unsafe
entry, an absolute name or a bomb stops the unpack); every path is then resolved on the real
filesystem one component at a time, through directory file descriptors opened with
``O_NOFOLLOW``, following symlinks only by reading them and resolving their targets inside the
root (``..`` stops at the root); and everything is written into a private temporary directory
(mode 0700) beside the target, renamed to the target only when the whole image is extracted.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DestinationError, UnsafeInputError, UsageError
from ..layer.analyze import UNSAFE, LayerAnalyzer, Tree
from ..layer.bounds import DEFAULT_MAX_RATIO
from ..layer.dirfd import DIR_FLAGS, DirChain, lstat_at, rmtree_at, walk
from ..layer.paths import OPAQUE, WHITEOUT, clean
from ..layer.scan import scan_layer
from ..layer.streams import CHUNK
from ..layer.tarstream import BLKTYPE, CHRTYPE, FIFOTYPE, XGLTYPE, TarEntry, TarStream
from ..model.jsondoc import quote
from ..tempfiles import HIDDEN_TMP_PREFIX, PrivateDir, reclaim
from ..transports import Image, Reference, RegistryOptions, as_reference, open_image
from .progress import NullProgress, ProgressReporter

REFUSED = UNSAFE | {"absolute-path"}
OPAQUE_XATTR = "trusted.overlay.opaque"


@dataclass
class UnpackResult:
    reference: str
    directory: str
    digest: str
    layers: int
    entries: int = 0
    skipped_devices: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The fields, as ``--json`` prints them."""
        return asdict(self)


def unpack(
    ref: str | Reference,
    directory: str | os.PathLike[str],
    *,
    platform: str | None = None,
    devices: bool = False,
    max_ratio: float = DEFAULT_MAX_RATIO,
    progress: ProgressReporter | None = None,
    registry: RegistryOptions | None = None,
) -> UnpackResult:
    """Extract the image's root filesystem into ``directory`` (absent or empty).

    Whiteouts and opaque directories apply; owners are set only as root, device nodes are
    created only as root with ``devices``. A hostile layer raises UnsafeInputError and leaves
    nothing behind: not in ``directory``, and never anything outside it.
    """
    progress = progress or NullProgress()
    ref = as_reference(ref)
    target = Path(directory)
    _check_target(target)
    parent = target.absolute().parent
    # what a killed unpack left beside its target goes first; this one's staging is locked
    reclaim(str(parent), (STAGING_PREFIX,))
    private = PrivateDir(str(parent), STAGING_PREFIX, f"cannot unpack into {parent}")
    staging = Path(private.path)
    try:
        with open_image(ref, platform, registry=registry) as image:
            image.require_tar_layers("unpack")
            result = UnpackResult(str(ref), str(target), image.digest, len(image.layers))
            with _Extractor(staging, devices, result) as ex:
                _unpack_layers(image, ex, max_ratio, progress)
        _check_target(target)
        if target.exists():
            target.rmdir()
        os.rename(staging, target)
        private.release()
    except BaseException:
        private.remove()
        raise
    finally:
        progress.end()
    return result


def extract_layer(image: Image, index: int, root: Path, root_mtime: int = 0) -> int:
    """Layer ``index`` alone into the empty directory ``root``, its whiteouts as overlayfs
    marks them (for a squashfs layer); unsafe entries refused as ``unpack`` refuses them.
    Needs root (device nodes, owners, trusted xattrs). The root directory gets the layer's
    ``./`` entry's metadata, else 0755 and ``root_mtime``. Returns the number of entries."""
    if os.geteuid() != 0:
        raise UsageError("turning tar layers into squashfs layers needs root")
    result = UnpackResult(str(image.source.ref), str(root), image.digest, 1)
    with _Extractor(root, True, result, overlay=True) as ex:
        entries = _extract(image, index, Tree(), ex, DEFAULT_MAX_RATIO)
        if () not in ex.dirs:
            os.utime(ex.root_fd, (root_mtime, root_mtime))
    return entries


def _check_target(target: Path) -> None:
    if target.is_symlink():
        raise DestinationError(f"{target} is a symlink; unpack into a new or empty directory")
    if target.exists():
        if not target.is_dir():
            raise DestinationError(f"{target} exists and is not a directory")
        if any(target.iterdir()):
            raise DestinationError(f"{target} is not empty; unpack into a new or empty directory")


def _unpack_layers(
    image: Image, ex: _Extractor, max_ratio: float, progress: ProgressReporter
) -> None:
    tree = Tree()
    progress.begin(sum(layer.descriptor.size for layer in image.layers), "unpacking")
    for i, layer in enumerate(image.layers):
        desc = layer.descriptor
        progress.step(f"layer {i + 1}/{len(image.layers)} {desc.digest.hex[:12]}")
        ex.result.entries += _extract(image, i, tree, ex, max_ratio, progress.advance)


def _extract(
    image: Image,
    index: int,
    tree: Tree,
    ex: _Extractor,
    max_ratio: float | None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """One layer read once, every entry judged by the analyzer (on ``tree``) before ``ex``
    writes it; an entry ``unpack`` refuses stops it. Returns the number of entries."""
    layer = image.layers[index]
    desc = layer.descriptor
    analyzer = LayerAnalyzer(tree, index, desc.digest)
    ex.begin_layer()

    def on_entry(n: int, entry: TarEntry, stream: TarStream) -> None:
        before = len(analyzer.findings)
        analyzer.feed(n, entry)
        for f in analyzer.findings[before:]:
            if f.rule in REFUSED:
                raise UnsafeInputError(f"layer {f.layer}: {f.rule}: {f.message}")
        ex.entry(entry, stream)

    with image.source.open_blob(desc) as raw:
        scan_layer(
            raw,
            desc,
            layer.compression,
            layer.diff_id,
            on_entry,
            max_ratio=max_ratio,
            strict=True,
            progress=progress,
        )
    analyzer.finish()
    return analyzer.entries


class _Extractor:
    """Writes entries under ``root``; resolves every path itself, inside the root."""

    def __init__(
        self, root: Path, devices: bool, result: UnpackResult, overlay: bool = False
    ) -> None:
        """``overlay``: one layer on its own, whiteouts written as overlayfs marks them (a
        character device 0/0, the opaque xattr) instead of applied."""
        self.overlay = overlay
        self.root_fd = os.open(root, DIR_FLAGS)
        self.devices = devices
        self.result = result
        self.as_root = os.geteuid() == 0
        self.dirs: dict[tuple[str, ...], TarEntry] = {}  # metadata applied at the end
        self.created: set[tuple[str, ...]] = set()  # paths this layer wrote
        # parent directories resolved lately: their names -> (fd, path inside the root), the
        # most recent last; all forgotten when the tree changes shape (``_invalidate``)
        self._parents: dict[tuple[str, ...], tuple[int, tuple[str, ...]]] = {}
        self._stale = False
        self._buf = bytearray(CHUNK)

    def __enter__(self) -> _Extractor:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                self._finish_dirs()
        finally:
            self._forget()
            os.close(self.root_fd)

    def begin_layer(self) -> None:
        self.created = set()

    # -- resolution ----------------------------------------------------------------------------
    def _forget(self) -> None:
        for fd, _ in self._parents.values():
            os.close(fd)
        self._parents.clear()
        self._stale = False

    def _invalidate(self) -> None:
        """The tree changed shape (a symlink made, anything removed): no remembered parent
        answers for its name any more. Their fds stay open, and right, for the entry being
        written; the next entry forgets them."""
        self._stale = True

    def _parent(self, parts: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
        """An fd of the directory ``parts`` resolves to (created if missing), and its path."""
        if self._stale:
            self._forget()
        known = self._parents.pop(parts, None)
        if known is None:
            known = self._walk(list(parts))
        self._remember(parts, known)
        return known

    def _remember(self, parts: tuple[str, ...], known: tuple[int, tuple[str, ...]]) -> None:
        """``parts`` resolves to ``known``, until the tree changes shape; the least recent of
        more than ``PARENTS`` is closed."""
        self._parents[parts] = known
        while len(self._parents) > PARENTS:
            oldest = next(iter(self._parents))
            os.close(self._parents.pop(oldest)[0])

    def _entered(self, parts: tuple[str, ...], pfd: int, resolved: tuple[str, ...]) -> None:
        """The directory entry ``parts`` is a directory now (made, or found one) in ``pfd``:
        remembered as a parent, its entries most likely next (a tar lists a directory's
        entries after it), unless the tree changed shape meanwhile."""
        if self._stale or parts in self._parents:
            return
        try:
            fd = os.open(parts[-1], DIR_FLAGS, dir_fd=pfd)
        except OSError:
            return  # resolved by a walk when an entry needs it, with that walk's errors
        self._remember(parts, (fd, (*resolved, parts[-1])))

    def _walk(self, parts: list[str], create: bool = True) -> tuple[int, tuple[str, ...]]:
        """Resolve ``parts`` inside the root (``layer.dirfd.walk``); missing directories are
        made (``create``) or FileNotFoundError is raised."""
        return walk(self.root_fd, parts, create)

    # -- entries -------------------------------------------------------------------------------
    def entry(self, entry: TarEntry, stream: TarStream) -> None:
        if entry.type == XGLTYPE:
            return  # a global PAX header: extraction ignores it, as docker's does
        cn = clean(entry.name)
        if cn.escapes or cn.absolute:  # the analyzer refused these already
            raise UnsafeInputError(f"{quote(entry.name)} leads outside the root")
        if not cn.parts:
            if entry.isdir():
                self.dirs[()] = entry
            return
        *parent_parts, base = cn.parts
        if base.startswith(WHITEOUT):
            if self.overlay:
                self._overlay_whiteout(tuple(parent_parts), base, entry)
            else:
                self._whiteout(tuple(parent_parts), base)
            return
        pfd, resolved = self._parent(tuple(parent_parts))
        path = (*resolved, base)
        self.created.add(path)
        existing = lstat_at(base, pfd)
        if entry.isdir():
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                self._remove(base, pfd, existing)
                existing = None
            if existing is None:
                os.mkdir(base, 0o700, dir_fd=pfd)
            self.dirs[path] = entry
            self._entered(cn.parts, pfd, resolved)
            return
        if existing is not None:
            self._remove(base, pfd, existing)
        if entry.issym():
            os.symlink(entry.linkname, base, dir_fd=pfd)
            self._invalidate()  # a new symlink may change how cached parents resolve
        elif entry.islnk():
            self._hardlink(entry, base, pfd)
        elif entry.type in (CHRTYPE, BLKTYPE):
            if not (self.devices and self.as_root):
                self.result.skipped_devices += 1
                return
            if not (0 <= entry.devmajor <= MAX_DEVICE and 0 <= entry.devminor <= MAX_DEVICE):
                raise UnsafeInputError(
                    f"{quote(entry.name)}: device numbers {entry.devmajor}, {entry.devminor} are "
                    f"out of range"
                )
            kind = stat.S_IFCHR if entry.type == CHRTYPE else stat.S_IFBLK
            dev = os.makedev(entry.devmajor, entry.devminor)
            os.mknod(base, kind | (entry.mode & 0o7777), dev, dir_fd=pfd)
        elif entry.type == FIFOTYPE:
            os.mkfifo(base, entry.mode & 0o7777, dir_fd=pfd)
        else:
            self._file(entry, stream, base, pfd)
            return
        self._owner_and_time(entry, base, pfd)

    def _file(self, entry: TarEntry, stream: TarStream, base: str, pfd: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(base, flags, 0o600, dir_fd=pfd)
        try:
            view = memoryview(self._buf)
            while n := stream.readinto(view):
                _write_all(fd, view[:n])
            if self.as_root:
                os.fchown(fd, entry.uid, entry.gid)
            os.fchmod(fd, entry.mode & (0o7777 if self.as_root else 0o777))
            mtime_ns = applied_mtime_ns(entry)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)

    def _hardlink(self, entry: TarEntry, base: str, pfd: int) -> None:
        cl = clean(entry.linkname)
        if cl.escapes or not cl.parts:
            raise UnsafeInputError(f"{quote(entry.name)} links outside the root")
        tfd, _ = self._walk(list(cl.parts[:-1]))
        try:
            st = lstat_at(cl.parts[-1], tfd)
            if st is None or stat.S_ISDIR(st.st_mode):
                raise UnsafeInputError(
                    f"{quote(entry.name)} links to {quote(entry.linkname)}, which is "
                    "missing or a directory"
                )
            os.link(cl.parts[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _owner_and_time(self, entry: TarEntry, base: str, pfd: int) -> None:
        if self.as_root:
            os.chown(base, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
        if not entry.issym() and not entry.islnk():  # a fifo or device we just made
            os.chmod(base, entry.mode & (0o7777 if self.as_root else 0o777), dir_fd=pfd)
        if not entry.islnk():
            mtime_ns = applied_mtime_ns(entry)
            os.utime(base, ns=(mtime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _remove(self, base: str, pfd: int, st: os.stat_result) -> None:
        self._invalidate()
        if stat.S_ISDIR(st.st_mode):
            rmtree_at(pfd, base)
        else:
            os.unlink(base, dir_fd=pfd)

    def _whiteout(self, parent_parts: tuple[str, ...], base: str) -> None:
        self._forget()
        try:
            pfd, resolved = self._walk(list(parent_parts), create=False)
        except (FileNotFoundError, UnsafeInputError):
            return  # nothing there to hide
        try:
            if base == OPAQUE:
                self._opaque(pfd, resolved)
                return
            hidden = base[len(WHITEOUT) :]
            if (*resolved, hidden) in self.created:  # whiteouts hide lower layers only
                return
            st = lstat_at(hidden, pfd)
            if st is not None:
                self._remove(hidden, pfd, st)
        finally:
            os.close(pfd)

    def _overlay_whiteout(self, parent_parts: tuple[str, ...], base: str, entry: TarEntry) -> None:
        pfd, resolved = self._parent(parent_parts)
        if base == OPAQUE:
            os.setxattr(pfd, OPAQUE_XATTR, b"y")
            return
        hidden = base[len(WHITEOUT) :]
        if lstat_at(hidden, pfd) is not None:  # this layer wrote it: the whiteout hides nothing
            return
        os.mknod(hidden, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=pfd)
        mtime_ns = applied_mtime_ns(entry)  # the whiteout entry's time: reproducible
        os.utime(hidden, ns=(mtime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=False)
        self.created.add((*resolved, hidden))

    def _opaque(self, dfd: int, resolved: tuple[str, ...]) -> None:
        """Remove what lower layers put in the directory; keep what this layer wrote."""
        for name in os.listdir(dfd):
            path = (*resolved, name)
            st = lstat_at(name, dfd)
            if st is None:
                continue
            if path not in self.created:
                self._remove(name, dfd, st)
            elif stat.S_ISDIR(st.st_mode):
                sub = os.open(name, DIR_FLAGS, dir_fd=dfd)
                try:
                    self._opaque(sub, path)
                finally:
                    os.close(sub)

    def _finish_dirs(self) -> None:
        """Directory modes, owners and times, each directory after all those below it
        (children touch their parents, and a parent's mode may close it to the children's
        opening): in reverse order of their paths, along one chain of open directories."""
        self._forget()
        chain = DirChain(self.root_fd)
        try:
            for path in sorted(self.dirs, reverse=True):  # below a directory: before it
                fd = chain.open(path)  # exactly there, through no symlink
                if fd is None:  # replaced or removed by a later layer
                    continue
                entry = self.dirs[path]
                if self.as_root:
                    os.fchown(fd, entry.uid, entry.gid)
                mode = entry.mode & (0o7777 if self.as_root else 0o777)
                os.fchmod(fd, mode if path else mode | 0o700)  # the root stays usable
                mtime_ns = applied_mtime_ns(entry)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            chain.close()
        if () not in self.dirs:
            os.fchmod(self.root_fd, 0o755)


STAGING_PREFIX = f"{HIDDEN_TMP_PREFIX}unpack-"
PARENTS = 64  # parent directories an extraction keeps open
MAX_DEVICE = (1 << 32) - 1
#: the latest time docker sets (Go's time.Unix(0, 1<<63-1)); outside [epoch, this] it sets the
#: epoch, and so does unpack
MAX_TIME_NS = (1 << 63) - 1


def applied_mtime_ns(entry: TarEntry) -> int:
    """The modification time extraction gives the entry, as docker gives it."""
    ns = entry.mtime * 1_000_000_000 + entry.mtime_nsec
    return ns if 0 <= ns <= MAX_TIME_NS else 0


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]
