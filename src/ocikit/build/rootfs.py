"""The root filesystem of a ``run`` step, as an overlay, and its changes as a layer.

Each base layer is extracted once into the cache (``layers/<digest>``), on its own, by the
``unpack`` rules, its whiteouts as overlayfs marks them; a squashfs layer is unsquashed
(already in that form). A step's root is an overlay of those directories (read-only
lowers, never copied) under a fresh upper directory: what the step changes lands in the
upper directory, deletions as character devices 0/0 and replaced directories as opaque.
That upper directory is the new layer, read by ``layer.overlay``. Paths written through
a symlink of the base (``/bin/x`` with ``bin -> usr/bin``) land where the kernel resolved
them, so the layer is usrmerge-safe as the imports are.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import InputError, UsageError
from ..layer import squashfs
from ..layer.overlay import overlay_entries
from ..layer.streams import CHUNK
from ..layer.tarwriter import TarOutput, tar_header
from ..model import Compression
from ..ops.unpack import extract_layer
from ..transports import Image

# directories the runtime creates as mount points: left out of the layer unless the base
# has them (then they were not created by the step)
MOUNT_POINTS = frozenset({"proc", "dev", "tmp", "sys", "ocikit"})


def layer_dirs(image: Image, cache: Path, epoch: int) -> list[Path]:
    """Each layer of ``image`` extracted (once) under ``cache/layers``, bottom first."""
    root = cache / "layers"
    root.mkdir(parents=True, exist_ok=True)
    dirs = []
    for i, layer in enumerate(image.layers):
        final = root / layer.descriptor.digest.hex
        if not final.exists():
            staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
            try:
                if layer.compression is Compression.SQUASHFS:
                    with tempfile.NamedTemporaryFile(dir=root, prefix=".blob-") as blob:
                        with image.open_blob(layer.descriptor) as src:
                            shutil.copyfileobj(src, blob, CHUNK)  # type: ignore[misc]
                        blob.flush()
                        squashfs.extract(Path(blob.name), staging / "root")
                else:
                    (staging / "root").mkdir()
                    extract_layer(image, i, staging / "root", epoch)
                with contextlib.suppress(FileExistsError, OSError):
                    os.rename(staging / "root", final)  # another build may have won
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        dirs.append(final)
    return dirs


@contextlib.contextmanager
def overlay(lowers: Sequence[Path], upper: Path, work: Path, merged: Path) -> Iterator[Path]:
    """``merged``, an overlay of ``lowers`` (bottom first) under ``upper``, for the block."""
    if os.geteuid() != 0:
        raise UsageError("run steps need root (an overlay mount, a container)")
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    empty = None
    if not lowers:  # overlayfs needs a lower directory
        empty = Path(tempfile.mkdtemp(prefix="ocikit-empty-", dir=work.parent))
        lowers = [empty]
    # relative lower paths from their common directory keep the option string short
    common = Path(os.path.commonpath([str(p) for p in lowers]))
    lower_option = ":".join(os.path.relpath(p, common) for p in reversed(lowers))
    options = (
        f"lowerdir={lower_option},upperdir={upper},workdir={work},"
        "index=off,metacopy=off,redirect_dir=off,xino=off"
    )
    proc = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
        cwd=common,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise InputError(f"cannot mount the step's overlay: {proc.stderr.decode().strip()}")
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], capture_output=True, check=False)
        if empty is not None:
            shutil.rmtree(empty, ignore_errors=True)


def write_upper_tar(upper: Path, out: BinaryIO, base_top: set[str], mtime_max: int | None) -> int:
    """The upper directory as a layer tar (sorted, mtimes clamped); returns the entry count.
    Mount points the runtime created (not in ``base_top``, the base's top-level names) are
    left out."""
    drop = frozenset(MOUNT_POINTS - base_top)
    tar = TarOutput(out)
    count = 0
    for entry, path, xattrs in overlay_entries(upper, drop, mtime_max):
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
        if entry.isreg() and entry.size:
            with open(path, "rb") as f:
                tar.data(f, entry.size, entry.name)
    tar.finish()
    return count


def prepare_upper_for_squashfs(upper: Path, base_top: set[str], mtime_max: int | None) -> None:
    """The upper directory made into what the squashfs layer holds: runtime mount points
    removed, mtimes clamped."""
    for name in MOUNT_POINTS - base_top:
        path = upper / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
    if mtime_max is None:
        return
    for current, dirs, files in os.walk(upper, topdown=False):
        for name in [*files, *dirs]:
            path = os.path.join(current, name)
            st = os.lstat(path)
            if st.st_mtime > mtime_max:
                os.utime(path, (mtime_max, mtime_max), follow_symlinks=False)
    st = os.lstat(upper)
    if st.st_mtime > mtime_max:
        os.utime(upper, (mtime_max, mtime_max))
