"""squashfs layers (stacker's ``application/vnd.stacker.image.layer.squashfs+gzip``), made and
read with squashfs-tools.

A squashfs layer is a filesystem, not a tar: its diff_id is its own digest, and it marks
deletions as overlayfs does (a character device 0/0 where a lower file is deleted, the
``trusted.overlay.opaque=y`` xattr on a directory that hides the lower one). ``mksquashfs``
makes one from a directory (reproducibly: 4.5 writes in a fixed order and time is pinned
with ``-mkfs-time``), after ``overlay.normalize_tree`` made the directory hold exactly what
a tar layer of it would (the same xattrs, kinds of file and mtimes: one rule for both).
``squashfs_format`` reads one as the tar entries it stands for
(whiteouts as ``.wh.`` names) from its own tables, without extracting it, so ``check``
judges both kinds of layer by the same rules and bounds (``decompression-bomb``,
``layer-unreadable``); ``extract`` judges it the same way before ``unsquashfs`` writes
anything, and gives ``unsquashfs`` a time limit.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .. import tools
from ..errors import DestinationError, InputError, UsageError
from ..model import Compression, Descriptor, Digest
from ..model.jsondoc import printable
from ..tempfiles import private_tmp_dir
from .bounds import BOMB_FLOOR, DEFAULT_MAX_RATIO
from .overlay import normalize_tree
from .scan import DecompressionBomb, ScanResult, blob_problems
from .squashfs_format import MAGIC, SquashfsImage
from .squashfs_format import entries as format_entries
from .streams import HashingReader, Progress
from .tarstream import TarEntry

MKSQUASHFS = "mksquashfs"
# mksquashfs reads "./PATH" (run in the tree): the kernel takes 4095 bytes, and mksquashfs
# skips (exit 0, a warning) a file it cannot stat, so a longer path would silently be lost
MAX_PATH = 4095 - len("./")
UNSQUASHFS = "unsquashfs"


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        raise UsageError(f"{name} is needed for squashfs layers (Debian: squashfs-tools)")
    return path


def make(source: Path, out: Path, *, mkfs_time: int, drop: frozenset[str] = frozenset()) -> None:
    """``mksquashfs`` of ``source``, made first to hold what a layer holds
    (``overlay.normalize_tree``: the xattrs a tar layer of it would carry and no other,
    no socket, mtimes clamped to ``mkfs_time``, the top-level names ``drop`` removed);
    owners, modes and hardlinks as they are there. In place: ``source`` is the caller's
    scratch copy."""
    longest = normalize_tree(source, drop, mkfs_time)
    if len(os.fsencode(longest)) > MAX_PATH:
        shown = printable(longest, 60)
        raise InputError(
            f"{source}/{shown}: a path of {len(os.fsencode(longest))} bytes; mksquashfs "
            f"skips paths over {MAX_PATH} bytes, so it cannot be a squashfs layer (tar can)"
        )
    cmd = [  # run in source, as ".": what it reads does not depend on where source is
        _tool(MKSQUASHFS),
        ".",
        os.path.abspath(out),
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
    result = tools.run(cmd, MKSQUASHFS, cwd=source)
    if result.code != 0:
        raise InputError(f"mksquashfs failed: {result.message()}")


def extract(blob: Path, target: Path, *, max_ratio: float | None = DEFAULT_MAX_RATIO) -> None:
    """``unsquashfs`` into ``target`` (must not exist); owners and xattrs kept as root.

    The image is judged first, from its own tables, with the bounds of a tar layer: one
    whose entries stand for more than ``max_ratio`` times its size (and more than
    ``BOMB_FLOOR``) is a ``DecompressionBomb``, a malformed one an ``InputError``, and
    nothing is written; the file system must have room for its files; ``unsquashfs`` then
    runs with a time limit that grows with their size."""
    what = f"squashfs {blob}"
    with open(blob, "rb") as f:
        image = SquashfsImage(f.fileno(), what)
        budget = _budget(max_ratio, os.fstat(f.fileno()).st_size)
        expands = sum(entry.size for entry in format_entries(image, budget))
    free = _free_space(target.parent)
    if free is not None and expands > free:
        raise DestinationError(f"{target.parent}: no space left on device")
    seconds = extract_deadline(expands)
    cmd = [_tool(UNSQUASHFS), "-no-progress", "-d", str(target), str(blob)]
    result = tools.run(cmd, f"{what}: unsquashfs", timeout=seconds)
    if result.code != 0:
        raise InputError(f"not a readable squashfs ({result.message()})")


def extract_deadline(size: int) -> int:
    """Seconds ``unsquashfs`` may take for ``size`` bytes of files: 60, and one more per
    8 MiB (it writes hundreds of MB/s; only a hostile image makes it crawl)."""
    return 60 + size // (8 << 20)


def _budget(max_ratio: float | None, blob_size: int) -> int | None:
    """The tar rule: a layer may expand to ``max_ratio`` times its size, ``BOMB_FLOOR`` at
    least (None: no limit)."""
    return None if max_ratio is None else max(BOMB_FLOOR, int(max_ratio * blob_size))


def _free_space(where: Path) -> int | None:
    try:
        st = os.statvfs(where)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def scan(
    raw: BinaryIO,
    descriptor: Descriptor,
    diff_id: Digest | None,
    on_entry: Callable[[int, TarEntry, None], None] | None,
    *,
    max_ratio: float | None = DEFAULT_MAX_RATIO,
    strict: bool = False,
    progress: Progress | None = None,
) -> ScanResult:
    """``scan_layer`` for a squashfs layer: the blob is spooled to ``$TMPDIR`` (hashed on
    the way: random access needs a file), its entries read from its tables, every data block
    decompressed once, nothing extracted; problems are returned (raised with ``strict``) by
    the rule ids of tar layers, ``decompression-bomb`` by the same ``max_ratio``."""

    what = f"layer {descriptor.digest}"
    problems: list[tuple[str, str]] = []
    private = private_tmp_dir("squashfs", what)
    spool = os.path.join(private.path, "layer")
    try:
        with open(spool, "xb") as out:
            hashed = HashingReader(raw, what=what, sink=out, progress=progress)
            hashed.drain()
        count = 0
        with open(spool, "rb") as f:
            if f.read(4) != MAGIC:
                problems.append(("media-type", f"{what}: the media type says squashfs, it is not"))
            else:
                budget = _budget(max_ratio, hashed.size)
                try:
                    image = SquashfsImage(f.fileno(), what)
                    for entry in format_entries(image, budget, verify_data=True):
                        if on_entry is not None:
                            on_entry(count, entry, None)
                        count += 1
                except DecompressionBomb as e:
                    if strict:
                        raise
                    problems.append(("decompression-bomb", str(e)))
                except InputError as e:
                    if strict:
                        raise
                    problems.append(("layer-unreadable", str(e)))
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
