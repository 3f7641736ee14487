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
import itertools
import os
import stat
from collections.abc import Iterator

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


class DirChain:
    """The directories along one path below ``root_fd``, each opened from its parent without
    following a symlink (``open_dir``'s rule): the next path opens only what it
    does not share with the last one."""

    def __init__(self, root_fd: int) -> None:
        self._root_fd = root_fd
        self._names: list[str] = []
        self._fds: list[int] = []

    def open(self, path: tuple[str, ...]) -> int | None:
        """An fd of exactly ``path`` (kept: the chain closes it), None if a component is
        missing, a symlink or not a directory."""
        shared = 0
        while shared < min(len(path), len(self._names)) and path[shared] == self._names[shared]:
            shared += 1
        self._drop(shared)
        for name in path[shared:]:
            parent = self._fds[-1] if self._fds else self._root_fd
            try:
                fd = os.open(name, DIR_FLAGS, dir_fd=parent)
            except OSError:
                return None
            self._names.append(name)
            self._fds.append(fd)
        return self._fds[-1] if self._fds else self._root_fd

    def _drop(self, keep: int) -> None:
        while len(self._fds) > keep:
            os.close(self._fds.pop())
            self._names.pop()

    def close(self) -> None:
        self._drop(0)


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


HELD_DIRS = 64  # directories a removal holds open at once, whatever the tree's depth


def rmtree_at(dir_fd: int, name: str) -> None:
    """Remove a directory tree below ``dir_fd`` without following any symlink."""
    remove_at(dir_fd, name)


def remove_at(dir_fd: int, name: str) -> None:
    """Remove ``name`` whatever it is (a directory with its tree), following nothing."""
    remove_tree_at(dir_fd, name, strict=True)


def remove_tree_at(
    dir_fd: int, name: str, *, strict: bool = False, same_mount: bool = False
) -> int:
    """Remove ``name`` below ``dir_fd``, whatever it is, a directory with its whole tree;
    the bytes of the regular files removed. Nothing is followed; any depth is removed
    without recursion and with at most ``HELD_DIRS`` directories open: a directory deeper
    than that is first moved up into the top one (inside the tree being removed).
    ``strict``: an error is raised (else what cannot be removed stays); ``same_mount``: a
    directory on another mount (a bind mount included) is left, with those above it."""
    st = lstat_at(name, dir_fd)
    if st is None:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return _unlink(dir_fd, name, st, strict)
    top = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    mount = _mount_id(top) if same_mount else None
    # only the top directory takes names while it is gone through (what is moved up)
    chain: list[tuple[int, str, int, _Lister]] = [(dir_fd, name, top, _Lister(top, again=True))]
    size = 0
    fresh = itertools.count(1)  # names for directories moved up
    try:
        while chain:
            parent, dname, fd, lister = chain[-1]
            child = lister.next()
            if child is None:
                chain.pop()
                os.close(fd)
                try:
                    os.rmdir(dname, dir_fd=parent)
                except OSError:
                    if strict:
                        raise
                    if chain:
                        chain[-1][3].keep(dname)
                continue
            cst = lstat_at(child, fd)
            if cst is None:
                continue
            if not stat.S_ISDIR(cst.st_mode):
                removed = _unlink(fd, child, cst, strict)
                if removed < 0:
                    lister.keep(child)
                size += max(0, removed)
                continue
            if len(chain) >= HELD_DIRS:  # moved up, removed from there later
                if not _move_up(fd, child, top, fresh, strict):
                    lister.keep(child)
                continue
            try:
                sub = os.open(child, DIR_FLAGS, dir_fd=fd)
            except OSError:
                if strict:
                    raise
                lister.keep(child)
                continue
            if mount is not None and _mount_id(sub) != mount:
                os.close(sub)  # another file system mounted here: it stays, and so do we
                lister.keep(child)
                continue
            chain.append((fd, child, sub, _Lister(sub)))
    finally:
        for _parent, _name, fd, _lister in chain:
            os.close(fd)
    return size


class _Lister:
    """A directory's names but those ``kept`` (what could not be removed, and stays), listed
    once; with ``again``, listed again each time they have been gone through, until a
    listing finds none (names were moved into it meanwhile)."""

    def __init__(self, fd: int, again: bool = False) -> None:
        self.fd = fd
        self.again = again
        self.names: list[str] | None = None  # None: to be listed
        self.kept: set[str] = set()

    def keep(self, name: str) -> None:
        self.kept.add(name)

    def next(self) -> str | None:
        if self.names is None:
            self.names = [n for n in os.listdir(self.fd) if n not in self.kept]
            self.names.reverse()
            if not self.names:
                return None
        if not self.names:
            if not self.again:
                return None
            self.names = None  # look again: what was moved in while these were removed
            return self.next()
        return self.names.pop()


def _unlink(dir_fd: int, name: str, st: os.stat_result, strict: bool) -> int:
    """The bytes of a regular file removed (0 for another kind); -1 if it stays."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        if strict:
            raise
        return -1
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _move_up(fd: int, name: str, top: int, fresh: Iterator[int], strict: bool) -> bool:
    """``name`` moved into ``top`` under a fresh name; False if it could not be (it stays)."""
    for _ in range(100):
        try:
            os.rename(name, f".ocikit-rm-{next(fresh)}", src_dir_fd=fd, dst_dir_fd=top)
            return True
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                if strict:
                    raise
                return False
    if strict:
        raise OSError(errno.EEXIST, "no free name to move a directory to", name)
    return False


def _mount_id(fd: int) -> int | None:
    """The mount an open directory is on (``mnt_id`` in /proc/self/fdinfo): a bind mount
    has its own, whatever its device."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f.read(4096).splitlines():
                if line.startswith(b"mnt_id:"):
                    return int(line.split(b":", 1)[1])
    except (OSError, ValueError):
        return None
    return None


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
