"""The native core of builds (src/native/filecore.c): the per-file work of build/imports.py
and layer/tarwriter.py, in C. Optional: ``ocikit.native.load("_filecore")`` gives it, or None
(then the pure-Python path runs)."""

import os

STREAM_CHUNK: int

#: per name: (lstat, done); done is (size, sha256 hex, content or None) for a regular file
#: read, a symlink's target, or None (the caller does it: a directory, a special file, or
#: anything not as listed); (None, None) where even the lstat is left to the caller
Scanned = tuple[os.stat_result | None, tuple[int, str, bytes | None] | str | None]

def scan(
    dir_fd: int,
    names: list[str],
    inline_max: int,
    budget: int,
    listed: list[os.stat_result | None] | None = None,
    /,
) -> list[Scanned]: ...
def read_again(
    dir_fd: int, name: str, dev: int, ino: int, size: int, sha256: str, /
) -> bytes | None: ...
def tar_header(
    name: str,
    kind: bytes,
    size: int,
    mode: int,
    uid: int,
    gid: int,
    mtime: int,
    linkname: str,
    devmajor: int,
    devminor: int,
    /,
) -> bytes | None: ...
def put(
    buf: bytearray,
    limit: int,
    name: str,
    kind: bytes,
    size: int,
    mode: int,
    uid: int,
    gid: int,
    mtime: int,
    linkname: str,
    content: bytes | None,
    /,
) -> bool: ...
