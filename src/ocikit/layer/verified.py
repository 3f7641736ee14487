"""What ocikit itself has verified of layers: blob ``X`` inflates to diff_id ``D``.

When a copy (a pull too) has read a layer blob whose bytes hashed to its digest ``X`` and
whose uncompressed content hashed to ``D``, that fact is recorded here, in the user's own
cache (``${XDG_CACHE_HOME:-~/.cache}/ocikit/verified/layers``; the build cache's parent), as
docker's layer store records each blob's diff_id. A later copy that sends blob ``X`` as it
is (a push from an OCI layout, a pull, a copy between layouts and archives) and whose config
says ``D`` then only checks the blob's digest as it reads it (``X`` is content-addressed:
bytes that hash to ``X`` are the bytes that were inflated), not its diff_id again; a config
that says another diff_id is verified in full (and fails as before). A copy that must see
the tar (to a docker engine, whose load is checked entry by entry) or changes the layer (a
repair, another compression) reads it whole as ever.

The record is trusted only from where no one but the user can write: a directory of mode
0700 and a file of mode 0600 or stricter, both owned by this process's user, opened without
following a symlink; anything else is ignored (never an error), and never read from an
input (an image, a layout, an archive cannot carry it). It is replaced atomically (a temp
file renamed over it, under a lock) and bounded (``MAX_RECORDS`` lines, the newest kept).
Any failure to read or write it only costs the saving: a copy never fails for it. A record
a copy relied on is written again (moved last) when it was among the first the bound would
drop (``fading``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
from collections.abc import Iterable, Mapping

from ..model.digest import Digest
from ..tempfiles import HIDDEN_TMP_PREFIX, user_cache_dir

MAX_RECORDS = 10_000  # lines kept (~1.4 MB at most); the oldest go first
_LINE = re.compile(rb"^((?:sha256:[0-9a-f]{64})|(?:sha512:[0-9a-f]{128})) (sha256:[0-9a-f]{64})$")
_MAX_BYTES = MAX_RECORDS * 210  # a line: 137 bytes (201 for a sha512 blob)
_NAME = "layers"
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def records_dir() -> str:
    """Where the record lives: ``${XDG_CACHE_HOME:-~/.cache}/ocikit/verified``."""
    return user_cache_dir("verified")


def _private(st: os.stat_result, kind: int) -> bool:
    """Owned by this process's user, of the kind asked, and no one else's to read or write."""
    return stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _open_dir(path: str) -> int | None:
    """The record's directory, if it is private (see the module's docstring)."""
    try:
        fd = os.open(path, _OPEN_DIR)
    except OSError:
        return None
    if _private(os.fstat(fd), stat.S_IFDIR):
        return fd
    os.close(fd)
    return None


def _read(dir_fd: int) -> dict[str, str]:
    """The records of the file in ``dir_fd``, if it is private; bad lines are skipped."""
    try:
        fd = os.open(_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return {}
    try:
        if not _private(os.fstat(fd), stat.S_IFREG):
            return {}
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(_MAX_BYTES + 1)
    except OSError:
        return {}
    finally:
        os.close(fd)
    records: dict[str, str] = {}
    for line in data[:_MAX_BYTES].split(b"\n"):
        m = _LINE.match(line)
        if m is not None:
            records[m.group(1).decode()] = m.group(2).decode()
    return records


def load() -> dict[str, str]:
    """Every trusted record: a blob's digest to the diff_id ocikit verified it inflates to
    (a ``Digest`` looks them up: it is a ``str``)."""
    fd = _open_dir(records_dir())
    if fd is None:
        return {}
    try:
        return _read(fd)
    finally:
        os.close(fd)


def fading(records: Mapping[str, str]) -> frozenset[str]:
    """The blobs of ``records`` that fewer than half of ``MAX_RECORDS`` new records would push
    out. A copy that relies on one of them records it again (it moves last), so a layer in
    use stays known however many others are verified after it; relying on any other writes
    nothing."""
    keep = MAX_RECORDS // 2
    if len(records) <= keep:
        return frozenset()
    return frozenset(list(records)[: len(records) - keep])


def remember(pairs: Iterable[tuple[Digest, Digest]]) -> None:
    """Record that each blob (its digest) was verified to inflate to the diff_id beside it."""
    new = {str(b): str(d) for b, d in pairs if _LINE.match(f"{b} {d}".encode())}
    if new:
        with contextlib.suppress(OSError):
            _write(records_dir(), new)


def _write(path: str, new: dict[str, str]) -> None:
    """Merge ``new`` into the file under its lock; the file replaced atomically."""
    parent = os.path.dirname(path)
    os.makedirs(parent, 0o700, exist_ok=True)
    if os.lstat(parent).st_uid != os.geteuid():  # another user's cache (sudo, HOME kept)
        return
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    dir_fd = _open_dir(path)
    if dir_fd is None:  # not private: never written (nor read)
        return
    try:
        lock = os.open(
            ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
        )
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = _read(dir_fd)
            for blob in new:  # the newest last: the bound drops the oldest
                records.pop(blob, None)
            records.update(new)
            lines = [f"{b} {d}\n" for b, d in records.items()][-MAX_RECORDS:]
            tmp = HIDDEN_TMP_PREFIX + _NAME  # one writer at a time (the lock)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)  # a killed writer's
            fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "w", encoding="ascii", closefd=False) as f:
                    f.writelines(lines)
                os.replace(tmp, _NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
            finally:
                os.close(fd)
        finally:
            os.close(lock)
    finally:
        os.close(dir_fd)
