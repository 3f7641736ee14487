"""Files a reader never sees half of, and private places a crash never leaves for good.

- ``atomic_output``: a temporary file beside the target, fsynced and renamed into place.
- ``private_dir`` / the temporary files of ``atomic_output``: every temporary thing ocikit
  makes is named ``ocikit-tmp-*`` (in ``$TMPDIR``) or ``.ocikit-tmp-*`` (in a destination
  directory), and its maker holds an exclusive ``flock`` on it for as long as it lives. A
  process killed with ``kill -9`` loses its locks with it, so ``reclaim`` (run by the next
  writer of the same place, and by ``ocikit gc``) removes exactly what it can lock without
  waiting: what no live process holds. Nothing else may use these names.
- ``GuardedFile``: a destination's file whose write errors (a full disk) become one line
  naming the destination.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import DestinationError
from ..layer.streams import CHUNK

#: the names of ocikit's temporary files and directories (``.`` first inside a destination)
TMP_PREFIX = "ocikit-tmp-"
HIDDEN_TMP_PREFIX = "." + TMP_PREFIX


def describe(error: OSError) -> str:
    """An OSError as the end of a message: ``no space left on device``."""
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


def write_error(what: str, error: OSError) -> DestinationError:
    return DestinationError(f"{what}: {describe(error)}")


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_root() -> str:
    return tempfile.gettempdir()


# -- locked private files and directories ------------------------------------------------------


def _lock_fresh(path: str, fd: int) -> bool:
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
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                raise write_error(what, e) from None
            if _lock_fresh(path, fd):
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
    directories above it. Returns the bytes of the files removed."""
    try:
        device = os.lstat(path).st_dev
    except OSError:
        return 0
    mounts = _mount_points()
    files, dirs = [], []
    for dirpath, dirnames, filenames in os.walk(path):
        dirs.append(dirpath)
        descend = []
        for name in dirnames:
            child = os.path.join(dirpath, name)
            try:
                st = os.lstat(child)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                files.append(child)
            elif st.st_dev == device and os.path.realpath(child) not in mounts:
                descend.append(name)
        dirnames[:] = descend
        files += [os.path.join(dirpath, name) for name in filenames]
    size = 0
    for name in files:
        with contextlib.suppress(OSError):
            size += os.lstat(name).st_size
            os.unlink(name)
    for name in reversed(dirs):
        with contextlib.suppress(OSError):
            os.rmdir(name)
    return size


def _mount_points() -> set[str]:
    """Where file systems are mounted (a bind mount keeps its device: only the kernel's
    table tells)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            table = f.read(16 << 20).decode(errors="replace")
    except OSError:
        return set()
    points = set()
    for line in table.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:  # octal escapes: \040 is a space
            points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
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
        if not name.startswith(prefixes):
            continue
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


# -- writing -------------------------------------------------------------------------------------


class GuardedFile:
    """A file being written for a destination: an OSError (a full disk, a quota) becomes a
    ``DestinationError`` naming ``what``, in one line."""

    def __init__(self, file: BinaryIO, what: str) -> None:
        self._file = file
        self.what = what

    def write(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return self._file.write(data)
        except OSError as e:
            raise write_error(self.what, e) from None

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            raise write_error(self.what, e) from None

    def fileno(self) -> int:
        return self._file.fileno()

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as e:
            raise write_error(self.what, e) from None

    def discard(self) -> None:
        """Close, whatever the buffered bytes (they are not wanted): never raises."""
        with contextlib.suppress(OSError, ValueError):
            self._file.close()  # closes the descriptor even when the flush fails


@contextlib.contextmanager
def atomic_output(path: str, mode: int = 0o644, what: str | None = None) -> Iterator[BinaryIO]:
    """Yield a file that appears at ``path`` only when the block ends without error. Until
    then it is ``.ocikit-tmp-NAME-*`` beside it, locked; a run that writes ``path`` again
    removes such files that dead processes left."""
    what = what or path
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f"{HIDDEN_TMP_PREFIX}{os.path.basename(path)}-"
    reclaim(directory, (prefix,))
    for _ in range(100):
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix)
        except OSError as e:
            raise write_error(what, e) from None
        if _lock_fresh(tmp, fd):
            break
        os.close(fd)
    else:  # pragma: no cover - a reclaimer took a hundred in a row
        raise DestinationError(f"{what}: cannot make a temporary file")
    raw = os.fdopen(fd, "wb", buffering=CHUNK)
    f = GuardedFile(raw, what)
    try:
        yield f  # type: ignore[misc]
        f.flush()
        try:
            os.fchmod(fd, mode)
            os.fsync(fd)
            os.replace(tmp, path)  # still locked: nobody reclaims it meanwhile
        except OSError as e:
            raise write_error(what, e) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # first: closing may fail again on a full disk
        f.discard()
        raise
    f.discard()
    try:
        fsync_dir(directory)
    except OSError as e:
        raise write_error(what, e) from None


def atomic_write_bytes(path: str, data: bytes, what: str | None = None) -> None:
    with atomic_output(path, what=what) as f:
        f.write(data)
