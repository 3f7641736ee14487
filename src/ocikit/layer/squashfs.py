"""squashfs layers (stacker's ``application/vnd.stacker.image.layer.squashfs+gzip``), made and
read with squashfs-tools.

A squashfs layer is a filesystem, not a tar: its diff_id is its own digest, and it marks
deletions as overlayfs does (a character device 0/0 where a lower file is deleted, the
``trusted.overlay.opaque=y`` xattr on a directory that hides the lower one). ``mksquashfs``
makes one from a directory (reproducibly: 4.5 writes in a fixed order and time is pinned
with ``-mkfs-time``); ``entries`` lists one as the tar entries it stands for (whiteouts as
``.wh.`` names), so ``check`` judges both kinds of layer by the same rules.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .. import tools
from ..errors import InputError, UsageError
from ..model import Compression, Descriptor, Digest
from ..tempfiles import private_tmp_dir
from .overlay import overlay_entries
from .streams import HashingReader, Progress
from .tarstream import TarEntry

if TYPE_CHECKING:
    from .scan import ScanResult

MKSQUASHFS = "mksquashfs"
UNSQUASHFS = "unsquashfs"


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        raise UsageError(f"{name} is needed for squashfs layers (Debian: squashfs-tools)")
    return path


def make(source: Path, out: Path, *, mkfs_time: int) -> None:
    """``mksquashfs`` of ``source`` (owners, modes, mtimes and xattrs as they are there)."""
    cmd = [
        _tool(MKSQUASHFS),
        str(source),
        str(out),
        "-noappend",
        "-no-progress",
        "-quiet",
        "-comp",
        "gzip",
        "-mkfs-time",
        str(mkfs_time),
    ]
    if os.geteuid() != 0:
        cmd.append("-all-root")  # the caller checked every owner is 0:0
    result = tools.run(cmd, MKSQUASHFS)
    if result.code != 0:
        raise InputError(f"mksquashfs failed: {result.message()}")


def extract(blob: Path, target: Path) -> None:
    """``unsquashfs`` into ``target`` (must not exist); owners and xattrs kept as root."""
    cmd = [_tool(UNSQUASHFS), "-no-progress", "-d", str(target), str(blob)]
    result = tools.run(cmd, f"squashfs {blob}: unsquashfs")
    if result.code != 0:
        raise InputError(f"not a readable squashfs ({result.message()})")


def entries(blob: Path) -> Iterator[TarEntry]:
    """The tar entries the squashfs at ``blob`` stands for, in a fixed (sorted) order."""
    with private_tmp_dir("squashfs", "a squashfs layer") as work:
        root = Path(work.path) / "root"
        extract(blob, root)
        for entry, _path, _xattrs in overlay_entries(root):
            yield entry


def scan(
    raw: BinaryIO,
    descriptor: Descriptor,
    diff_id: Digest | None,
    on_entry: Callable[[int, TarEntry, None], None] | None,
    *,
    strict: bool = False,
    progress: Progress | None = None,
) -> ScanResult:
    """``scan_layer`` for a squashfs layer: the blob is spooled (hashed on the way), its
    entries listed; problems are returned (raised with ``strict``) by the same rule ids."""
    from .scan import ScanResult, blob_problems

    what = f"layer {descriptor.digest}"
    problems: list[tuple[str, str]] = []
    private = private_tmp_dir("squashfs", what)
    spool = os.path.join(private.path, "layer")
    try:
        with open(spool, "xb") as out:
            hashed = HashingReader(raw, what=what, sink=out, progress=progress)  # type: ignore[arg-type]
            hashed.drain()
        with open(spool, "rb") as f:
            head = f.read(4)
        count = 0
        if head != b"hsqs":
            problems.append(("media-type", f"{what}: the media type says squashfs, it is not"))
        else:
            try:
                for entry in entries(Path(spool)):
                    if on_entry is not None:
                        on_entry(count, entry, None)
                    count += 1
            except InputError as e:
                if strict:
                    raise
                problems.append(("layer-unreadable", f"{what}: {e}"))
    finally:
        private.remove()
    result = ScanResult(
        hashed.digest,
        hashed.size,
        Compression.SQUASHFS,
        hashed.digest,
        hashed.size,
        count,
        problems,
    )
    problems += blob_problems(what, result, descriptor)
    if diff_id is not None and result.digest != diff_id:
        problems.append(
            (
                "diff-id",
                f"{what}: a squashfs layer's diff_id is its digest, the config says {diff_id}",
            )
        )
    if strict and problems:
        from ..errors import VerificationError

        raise VerificationError(problems[0][1])
    return result
