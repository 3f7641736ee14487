"""``gc``: reclaim what interrupted or killed runs left behind.

Every temporary file and directory ocikit makes is locked by its maker while it lives (see
``transports.fsutil``), so what can be locked without waiting belongs to no live process
and goes. The next run that writes the same place reclaims the same things on its own;
``gc`` is for places no run will write again soon, and for ``$TMPDIR``.

- ``$TMPDIR``: staging of oci-archive, docker-archive, registry pushes and ``build
  --no-cache`` (``ocikit-tmp-*``).
- An OCI layout (``oci:DIR``): the private directories of dead writers and the blobs
  they put in place that ``index.json`` does not reach and no live writer relies on; with
  ``unreferenced``, every blob ``index.json`` does not reach (as ``umoci gc`` does).
- Any other directory (an ``export-layers`` OUTDIR, where archives are written): dead
  ``.ocikit-tmp-*`` staging and temporary files. ``oci-archive:FILE`` and
  ``docker-archive:FILE``: the temporary files of that archive.

Older versions of ocikit did not lock their temporary files; ``gc`` removes those too
(``ocikit-oci-archive-*``, ``.ocikit-export-*``...), so run it while no older ocikit runs.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import NotFoundError, UsageError
from ..tempfiles import (
    HIDDEN_TMP_PREFIX,
    RUN_PREFIX,
    TMP_PREFIX,
    mount_points,
    reclaim,
    remove_locked,
    temp_root,
    try_lock,
)
from ..transports.kinds import find_transport, parse_reference

if TYPE_CHECKING:
    from pathlib import Path

#: what versions that did not lock their temporary files named them
_LEGACY_TMP = (
    "ocikit-oci-archive-",
    "ocikit-docker-archive-",
    "ocikit-push-",
    "ocikit-build-cache-",
)
_LEGACY_OUTDIR = (".ocikit-export-",)


@dataclass
class GcResult:
    removed: list[str] = field(default_factory=list)  # files and directories (a blob: its path)
    bytes: int = 0

    def add(self, entries: list[tuple[str, int]]) -> None:
        for path, size in entries:
            self.removed.append(path)
            self.bytes += size

    def to_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "bytes": self.bytes}


def gc(paths: list[str] | tuple[str, ...] = (), *, unreferenced: bool = False) -> GcResult:
    """Reclaim what dead ocikit processes left in ``$TMPDIR`` and in each of ``paths``: an
    OCI layout (``oci:DIR`` or its directory), an ``oci-archive:``/``docker-archive:``
    file, or a directory ocikit writes into. ``unreferenced``: also remove every blob of a
    layout that index.json does not reach (no live writer claims)."""
    result = GcResult()
    tmp = temp_root()
    result.add(reclaim(tmp, (TMP_PREFIX, *_LEGACY_TMP)))
    for text in paths:
        _one(text, unreferenced, result)
    return result


def _one(text: str, unreferenced: bool, result: GcResult) -> None:
    name, sep, _ = text.partition(":")
    kind = find_transport(name) if sep else None
    if kind is not None and kind.properties.local_path:
        ref = parse_reference(text)
        if ref.is_stdio:
            raise UsageError(f"{text}: gc takes a directory or a file, not a stream")
        if ref.properties.layout_directory:
            _layout(ref.path, unreferenced, result)
            return
        directory = os.path.dirname(os.path.abspath(ref.path))
        base = os.path.basename(ref.path)
        if not os.path.isdir(directory):
            raise NotFoundError(f"{text}: no such directory {directory}")
        result.add(reclaim(directory, (f"{HIDDEN_TMP_PREFIX}{base}-", f".{base}.tmp-")))
        return
    if not os.path.isdir(text):
        if os.path.lexists(text):
            raise UsageError(f"{text}: not a directory (gc takes a directory or a reference)")
        raise NotFoundError(f"{text}: no such directory")
    if os.path.isfile(os.path.join(text, "oci-layout")):
        _layout(text, unreferenced, result)
    else:
        result.add(reclaim(text, (HIDDEN_TMP_PREFIX, *_LEGACY_OUTDIR)))


def _layout(path: str, unreferenced: bool, result: GcResult) -> None:
    if not os.path.isdir(path):
        raise NotFoundError(f"{path}: no such OCI layout directory")
    if not os.path.isfile(os.path.join(path, "oci-layout")):
        raise UsageError(f"{path}: not an OCI layout (no oci-layout file)")
    result.add(reclaim_runs(path))  # a build cache: before its private directories go
    result.add(reclaim(os.path.join(path, "layers"), (HIDDEN_TMP_PREFIX,)))
    from ..transports.oci_layout import collect_layout  # here: `gc` alone reads no layout

    result.add(collect_layout(path, unreferenced))


# -- run steps of builds ---------------------------------------------------------------------
# A build runs each step of an image in a private directory of its cache (``RUN_PREFIX``):
# the overlay of the step's root is mounted there, and ``step-N/`` holds the runtime's bundle,
# its state (``state/``) and the runtime's name (``runtime``). A killed build leaves the
# container running and the overlay mounted; reclaiming stops the one and detaches the other
# before the directory goes.

RUNTIMES = ("runc", "crun")
_CONTAINER = re.compile(r"ocikit-[0-9]+-[0-9]+")


def reclaim_runs(directory: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """What killed builds left in ``directory`` (a build cache): their run directories
    (``RUN_PREFIX``) that no live process holds, with the containers still running there
    (deleted by force: killed) and the overlays still mounted there (detached). Returns
    (path, bytes) removed."""
    removed: list[tuple[str, int]] = []
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith(RUN_PREFIX))
    except OSError:
        return removed
    for name in names:
        path = os.path.join(directory, name)
        fd = try_lock(path)
        if fd is None:
            continue  # a live build's
        from pathlib import Path  # here: only a dead run needs it

        try:
            _stop_containers(Path(path))
            _detach_mounts(path)
        except BaseException:
            os.close(fd)
            raise
        removed.append((path, remove_locked(path, fd)))
    return removed


def _stop_containers(run: Path) -> None:
    """Delete, by force, the containers of a dead run directory. The directory is in the
    build cache, which its user can write: only a runtime ocikit knows, found on PATH as
    ocikit found it, is ever run, and only for container names ocikit gives."""
    import subprocess  # here: only a dead run needs a process run

    from .. import tools

    for step in sorted(run.glob("step-*")):
        state = step / "state"
        if step.is_symlink() or not state.is_dir() or state.is_symlink():
            continue
        name = _small_file(step / "runtime") or "runc"
        binary = shutil.which(name) if name in RUNTIMES else None
        if binary is None:
            continue
        for container in sorted(os.listdir(state)):
            if _CONTAINER.fullmatch(container):
                subprocess.run(
                    [binary, "--root", str(state), "delete", "--force", container],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                    env=tools.environment(),
                    umask=tools.UMASK,
                )


def _small_file(path: Path) -> str:
    """The first bytes of a regular file, never through a symlink, never waiting on a fifo."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, 64).decode(errors="replace").strip()
    finally:
        os.close(fd)


def _detach_mounts(path: str) -> None:
    """Unmount what is mounted below ``path``, deepest first (lazily: a busy one is
    detached now and freed when unused)."""
    import subprocess  # here: only a dead run needs a process run

    from .. import tools

    path = os.path.realpath(path)
    below = [m for m in mount_points() if m.startswith(path + "/")]
    for point in sorted(below, key=len, reverse=True):
        env = tools.environment()
        done = subprocess.run(["umount", point], capture_output=True, check=False, env=env)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False, env=env)


__all__ = ["RUN_PREFIX", "GcResult", "gc", "reclaim_runs"]
