"""Temporary files and directories that a crash never leaves for good.

Every temporary thing ocikit makes is named ``ocikit-tmp-*`` (in ``$TMPDIR``) or
``.ocikit-tmp-*`` (in a destination directory: a layout, beside an archive, an export's
OUTDIR, beside an unpack target, a build cache), and its maker holds an exclusive ``flock``
on it for as long as it lives. A process killed with ``kill -9`` loses its locks with it, so
``reclaim`` (run by the next user of the same place, and by ``ocikit gc``) removes exactly
what it can lock without waiting: what no live process holds. Nothing else may use these
names. Removal never follows a symlink and never enters a mount point.

Below every other module but ``errors``: the layers, transports, operations and builds all
make temporary things.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import tempfile

from .errors import DestinationError

#: the names of ocikit's temporary files and directories (``.`` first inside a destination)
TMP_PREFIX = "ocikit-tmp-"
HIDDEN_TMP_PREFIX = "." + TMP_PREFIX
#: a build step's private directory in a build cache: a dead one may still hold a running
#: container and an overlay mount, so only ``ops.gc.reclaim_runs`` (which stops and detaches
#: them first) removes it; ``reclaim`` leaves it unless asked for this prefix
RUN_PREFIX = HIDDEN_TMP_PREFIX + "run-"


def describe(error: OSError) -> str:
    """An OSError as the end of a message: ``no space left on device``."""
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


def write_error(what: str, error: OSError) -> DestinationError:
    return DestinationError(f"{what}: {describe(error)}")


def temp_root() -> str:
    """``$TMPDIR`` (else ``$TEMP``, ``$TMP``, else /tmp), as ``tempfile.gettempdir`` chooses
    it but without its probe: it creates a randomly named file in each candidate to see that
    it can, and a process killed before that file is removed leaves it there, a name no
    reclaimer can tell from another program's. A directory that cannot be written is said
    where ocikit first writes in it."""
    for name in ("TMPDIR", "TEMP", "TMP"):
        if value := os.environ.get(name):
            return os.path.abspath(value)
    return "/tmp"


def user_cache_dir(name: str) -> str:
    """``${XDG_CACHE_HOME:-~/.cache}/ocikit/NAME``: what ocikit keeps for the user beyond a
    run (the build cache, the record of verified layers)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ocikit", name)


# -- locked private files and directories ------------------------------------------------------


def lock_fresh(path: str, fd: int) -> bool:
    """Lock what ``fd`` opened at ``path``, just made: False if a reclaimer got to it first
    (it is gone, or about to be: make another)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


class PrivateDir:
    """A directory only this object's owner uses, locked while it lives (see the module's
    docstring); ``remove`` deletes it, then lets go of the lock. Never an OCI layout's root
    itself: its lock would be the layout's (put the layout in a directory inside it)."""

    def __init__(self, parent: str, prefix: str, what: str) -> None:
        self.what = what
        for _ in range(100):
            try:
                path = tempfile.mkdtemp(prefix=prefix, dir=parent)
            except OSError as e:
                raise write_error(what, e) from None
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # a reclaimer (another process, or thread) took it before the lock
            except OSError as e:
                raise write_error(what, e) from None
            if lock_fresh(path, fd):
                self.path, self._fd = path, fd
                return
            os.close(fd)
        raise DestinationError(f"{what}: cannot make a private directory in {parent}")

    def remove(self) -> None:
        if self._fd < 0:
            return
        remove_tree(self.path)
        os.close(self._fd)
        self._fd = -1

    def release(self) -> None:
        """Keep the directory (renamed into place: it is a result now) and let go of it."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PrivateDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


_reclaimed_tmp = False


def private_tmp_dir(kind: str, what: str) -> PrivateDir:
    """A private directory in ``$TMPDIR`` (``ocikit-tmp-KIND-*``). The first one a process
    makes reclaims what dead processes left there."""
    global _reclaimed_tmp
    root = temp_root()
    if not _reclaimed_tmp:
        _reclaimed_tmp = True
        reclaim(root, (TMP_PREFIX,))
    return PrivateDir(root, f"{TMP_PREFIX}{kind}-", f"{what} (temporary files in {root})")


def try_lock(path: str) -> int | None:
    """An fd holding the exclusive lock of ``path`` (a file or a directory, never followed
    through a symlink), or None: it is held by a live process, gone, or not ours to open."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
            raise OSError(errno.ESTALE, "replaced")
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_locked(path: str, fd: int) -> int:
    """Remove ``path`` (locked through ``fd``, then closed); the bytes it held."""
    size = 0
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            size = remove_tree(path)
        else:
            size = st.st_size
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        os.close(fd)
    return size


def remove_tree(path: str) -> int:
    """Remove a directory tree without ever following a symlink or entering another file
    system: a mount a killed process left (an overlay of a build step) stays, with the
    directories above it. Any depth, no recursion (``dirfd.remove_tree_at``). Returns the
    bytes of the files removed."""
    from .layer.dirfd import DIR_FLAGS, remove_tree_at

    parent, name = os.path.split(os.path.abspath(path))
    try:
        parent_fd = os.open(parent, DIR_FLAGS & ~os.O_NOFOLLOW)
    except OSError:
        return 0
    try:
        return remove_tree_at(parent_fd, name, same_mount=True)
    except OSError:
        return 0
    finally:
        os.close(parent_fd)


def mount_points() -> set[str]:
    """Where file systems are mounted (a bind mount keeps its device: only the kernel's
    table tells)."""
    points: set[str] = set()
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for raw in f:  # one line at a time: no table-sized read
                fields = raw.decode(errors="replace").split(" ")
                if len(fields) > 4:  # octal escapes: \040 is a space
                    point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                    points.add(point)
    except OSError:
        return points
    return points


def reclaim(directory: str, prefixes: tuple[str, ...]) -> list[tuple[str, int]]:
    """Remove the entries of ``directory`` named with one of ``prefixes`` that no live
    process holds. Returns (path, bytes) removed."""
    removed: list[tuple[str, int]] = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return removed
    for name in names:
        if not name.startswith(prefixes) or (
            name.startswith(RUN_PREFIX) and not any(p.startswith(RUN_PREFIX) for p in prefixes)
        ):
            continue  # a build step's directory goes only through ops.gc.reclaim_runs
        path = os.path.join(directory, name)
        fd = try_lock(path)
        if fd is None:
            continue
        removed.append((path, remove_locked(path, fd)))
    return removed


def is_held(path: str) -> bool:
    """Whether a live process holds ``path``'s lock."""
    fd = try_lock(path)
    if fd is None:
        return os.path.lexists(path)
    os.close(fd)
    return False
