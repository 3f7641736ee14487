"""Trees that hostile input wrote (an extracted layer, the upper directory a ``run`` step
left), reached only through directory file descriptors, one component at a time: what
``unpack``, the run steps and the overlay reader share. The kernel never follows a symlink
here (``O_NOFOLLOW``); where a path must go through one (``walk``, ``land``), ocikit reads
it and resolves it inside the root, as the image's own processes would see it.

Nothing here follows a symlink it did not resolve itself, and nothing reads what is not a
regular file: a file is opened without following a symlink and without waiting, then
checked to be the regular file that was listed before a byte is read (a fifo would hang
the reader, a device is the host's).
"""

from __future__ import annotations

import errno
import os
import stat

from ..errors import InputError, UnsafeInputError
from .paths import split_target

MAX_LINKS = 40
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: the open of a fifo does not wait for a writer (no effect on a regular file)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    """``name`` in ``dir_fd``, not followed; None if it is missing."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_dir(root_fd: int, parts: tuple[str, ...] | list[str]) -> int | None:
    """An fd of exactly ``parts`` below ``root_fd``, a directory reached through no symlink;
    None if a component is missing, a symlink or not a directory."""
    fd = os.dup(root_fd)
    try:
        for p in parts:
            nfd = os.open(p, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError:
        os.close(fd)
        return None
    return fd


def walk(root_fd: int, parts: list[str], create: bool = True) -> tuple[int, tuple[str, ...]]:
    """An fd of the directory ``parts`` resolves to inside the root, and its path there:
    symlinks (absolute or relative) are read and resolved from the root, ``..`` stops at
    the root. Missing directories are made (``create``) or FileNotFoundError is raised; a
    component that is not a directory, or too many symlinks, raise UnsafeInputError."""
    fd, resolved, _name, _st = _resolve(root_fd, parts, create, land=False)
    return fd, resolved


def land(
    root_fd: int, parts: list[str]
) -> tuple[int, tuple[str, ...], str | None, os.stat_result | None]:
    """Where the path ``parts`` lands inside the root, every symlink followed there (the
    last one too), as the kernel would with this root as ``/``: an fd of the directory it
    lands in (the caller closes it), that directory's path, the name there and its lstat.
    The stat is None where the path is missing, or goes through something that is not a
    directory (the name is then the first component missing). The name is None where the
    path is a directory itself (``..``); then the stat is that directory's."""
    return _resolve(root_fd, parts, False, land=True)


def _resolve(
    root_fd: int, parts: list[str], create: bool, land: bool
) -> tuple[int, tuple[str, ...], str | None, os.stat_result | None]:
    todo = list(reversed(parts))
    fds = [os.dup(root_fd)]
    cur: list[str] = []
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if cur:
                    cur.pop()
                    os.close(fds.pop())
                continue
            st = lstat_at(name, fds[-1])
            if st is None:
                if land:
                    return fds.pop(), tuple(cur), name, None
                if not create:
                    raise FileNotFoundError(f"{'/'.join(parts)}: {'/'.join([*cur, name])}")
                os.mkdir(name, 0o755, dir_fd=fds[-1])
                st = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise UnsafeInputError(f"{'/'.join(parts)}: too many levels of symlinks")
                absolute, target = split_target(os.readlink(name, dir_fd=fds[-1]))
                if absolute:
                    for fd in fds[1:]:
                        os.close(fd)
                    del fds[1:]
                    cur = []
                todo.extend(reversed(target))
                continue
            if land and not todo:
                return fds.pop(), tuple(cur), name, st
            if not stat.S_ISDIR(st.st_mode):
                if land:
                    return fds.pop(), tuple(cur), name, None
                raise UnsafeInputError(
                    f"{'/'.join(parts)}: {'/'.join([*cur, name])} is not a directory"
                )
            fds.append(os.open(name, DIR_FLAGS, dir_fd=fds[-1]))
            cur.append(name)
        fd = fds.pop()
        return fd, tuple(cur), None, os.fstat(fd) if land else None
    finally:
        for fd in fds:
            os.close(fd)


def rmtree_at(dir_fd: int, name: str) -> None:
    """Remove a directory tree below ``dir_fd`` without following any symlink."""
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        for child in os.listdir(fd):
            remove_at(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def remove_at(dir_fd: int, name: str) -> None:
    """Remove ``name`` whatever it is (a directory with its tree), following nothing."""
    st = lstat_at(name, dir_fd)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        rmtree_at(dir_fd, name)
    else:
        os.unlink(name, dir_fd=dir_fd)


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def kind(mode: int) -> str:
    """What a file is, for a message."""
    for test, what in (
        (stat.S_ISREG, "a file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "a socket"


def open_regular(name: str, dir_fd: int, listed: os.stat_result | None, what: str) -> int:
    """An fd for reading the regular file ``name`` in ``dir_fd``, which must still be the
    file ``listed`` (same device and inode) when given. Opened without following a symlink
    and without waiting (a fifo's open would block until a writer comes); then anything
    but that regular file (a symlink, a fifo, a device, another file put there since it was
    listed) is closed unread and raises InputError naming ``what``."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise InputError(f"{what}: removed while it was read") from None
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise InputError(f"{what}: a symlink where a file was listed") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{what}: {kind(st.st_mode)} where a file was listed")
        if listed is not None and not same_file(st, listed):
            raise InputError(f"{what}: replaced by another file while it was read")
    except BaseException:
        os.close(fd)
        raise
    return fd
