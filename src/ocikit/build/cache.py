"""The build cache, and what it trusts.

The cache (``--cache-dir``) is an OCI layout that other processes, or other users, may be
able to write. Nothing in it is used because of its name; what is used proves what it is:

- **Its shape.** When a build opens the cache it checks, under the layout's lock and
  without following anything, ``oci-layout``, ``index.json``, ``blobs/``, ``blobs/sha256/``,
  ``layers/``, ``logs/`` and ``seals/``: a symlink or a wrong type at any of them is removed,
  an ``oci-layout`` or ``index.json`` that does not parse is rewritten (an empty index: every
  entry a miss), and a directory that holds anything else is not taken for a cache at all.
  ``layers/``, ``logs/`` and ``seals/`` are made when first needed, the user's own and
  private (0700); one that is another user's is moved aside.
- **The key.** ``seals/key`` holds 32 random bytes, the user's own and readable by nobody
  else. A key file that is not the user's own private regular file is replaced, and every
  entry sealed with the old one becomes a miss.
- **Image entries** (``cache-<key>``, ``base-...``) are sealed once made: ``seals/<tag>`` names
  the manifest and, for each blob, its digest and the identity its file had when it was
  hashed (device, inode, size, ctime, mtime), with an HMAC of all of it under the key. An
  entry is used only if its seal verifies, ``index.json`` names the same manifest under the
  tag, and every blob is a regular file (a symlink is removed) with that identity, or else
  hashes to its digest (then the seal is renewed). A file's ctime changes with any write,
  truncation, chmod or replacement, and its writer cannot set it back; an identity is only
  trusted when it was recorded ``MARGIN`` after that ctime (the clock that stamps ctimes is
  coarse). So a cached rebuild costs a ``stat`` per blob, not a read.
- **Extracted base layers** (``layers/<name>/root``, the lowers of run steps) are sealed in
  ``layers/<name>/seal`` before they are renamed into place (so a directory there is never
  half made): an HMAC of the layer's digest and of every entry's identity (path, mode,
  owner, size, device number, inode, ctime, mtime). A layer directory is used only when its
  seal verifies, which costs one ``lstat`` per entry and no read; it is then used through
  the descriptor opened for the check, never by path again.
- **Logs** (``logs/``, the user's own, 0700): one new file per run of an image's steps,
  made with ``O_EXCL | O_NOFOLLOW`` (nothing there is followed or appended to), bounded in
  size (``LOG_LIMIT``) and in number (``LOGS_PER_IMAGE``, ``LOGS_TOTAL``).

Anything that fails is a miss: rebuilt and replaced, never used, never a failed build. What
is trusted: the user's account (who can read the key can forge seals), root, and the kernel's
ctimes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import itertools
import json
import os
import queue
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import InputError, Option, UsageError, VerificationError
from ..layer.dirfd import DIR_FLAGS, lstat_at, open_dir, remove_at, same_file
from ..layer.streams import CHUNK
from ..model import Descriptor, Digest, Index, canonical_json
from ..model.jsondoc import INDEX_JSON_LIMIT, load_json, quote
from ..tempfiles import HIDDEN_TMP_PREFIX, reclaim, write_error

if TYPE_CHECKING:
    from ..model.digest import Hasher

#: a file identity recorded sooner than this after the file's ctime is not trusted: ctimes
#: come from a coarse clock (a jiffy, up to 10 ms), so a write in the same tick as the last
#: one could leave the same ctime
MARGIN_NS = 20_000_000
KEY_SIZE = 32
SEAL_LIMIT = 1 << 20
LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'
#: what a build cache holds (besides temporary ``.ocikit-tmp-*`` things)
OWN = frozenset({"oci-layout", "index.json", "blobs", "layers", "logs", "seals"})
PRIVATE = frozenset({"layers", "logs", "seals"})  # the user's own, 0700
#: logs kept: per recipe, image and layer type, and in all; the bytes of one log
LOGS_PER_IMAGE = 10
LOGS_TOTAL = 500
LOG_LIMIT = 16 << 20
LOG_NAME = re.compile(r"[A-Za-z0-9._]+-[0-9a-f]{8}-[a-z0-9._-]+-\d{8}T\d{6}Z-\d+(?:-\d+)?\.log")
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

Identity = tuple[int, int, int, int, int]  # device, inode, size, ctime, mtime (ns)


def _identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns, st.st_mtime_ns)


def _read_hashed_beside(fd: int, hasher: Hasher, sink: Callable[[memoryview], object]) -> None:
    """``fd`` read from its start into ``sink``, each chunk hashed on a thread of its own
    (the GIL released) while the caller hands it to ``sink`` and reads the next: two
    buffers go round, and a chunk is hashed only once the one before it was (in order)."""
    todo: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
    done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()

    def hash_chunks() -> None:
        while (chunk := todo.get()) is not None:
            try:
                hasher.update(chunk)
            except BaseException as e:  # said where the caller waits
                done.put(e)
            else:
                done.put(None)

    def hashed() -> None:
        if (error := done.get()) is not None:
            raise error

    worker = threading.Thread(target=hash_chunks, name="ocikit-hash", daemon=True)
    worker.start()
    buffers = (bytearray(CHUNK), bytearray(CHUNK))
    pending = False
    offset = 0
    try:
        # buffer i % 2 is free: chunk i - 2's hash ended before chunk i - 1's began
        for i in itertools.count():
            buf = buffers[i % 2]
            n = os.preadv(fd, [buf], offset)
            if not n:
                break
            view = memoryview(buf)[:n]
            if pending:
                pending = False
                hashed()
            todo.put(view)
            pending = True
            sink(view)
            offset += n
        if pending:
            pending = False
            hashed()
    finally:
        todo.put(None)
        worker.join()


def _canonical(obj: Any) -> bytes:
    """A seal's bytes, as seals were first written (their MACs cover them)."""
    return canonical_json(obj, sort_keys=True, ascii_only=True)


@dataclass
class _Known:
    """A blob whose file had ``identity`` when it was found to hash to its digest."""

    identity: Identity
    hashed: int  # time_ns when that hashing (or the record it came from) began


class Cache:
    """A build cache opened for one build (see the module's docstring). ``close`` it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, DIR_FLAGS)
        self._known: dict[str, _Known] = {}
        self._dirs: dict[str, int] = {}  # seals, layers, logs: opened (made) when needed
        self._key: bytes | None = None
        self.why = ""  # why the last lookup missed
        try:
            with self._locked():
                self._check_shape()
            if lstat_at("seals", self.fd) is not None:
                reclaim(str(path / "seals"), (HIDDEN_TMP_PREFIX,))  # what killed builds left
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for fd in [*self._dirs.values(), self.fd]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._dirs, self.fd = {}, -1

    # -- the shape -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The layout's exclusive lock (the one its writers take to change index.json)."""
        fd = os.open(".", DIR_FLAGS, dir_fd=self.fd)  # its own open file: its own lock
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _check_shape(self) -> None:
        if lstat_at("oci-layout", self.fd) is None:  # new, or its oci-layout was removed
            foreign = sorted(
                n
                for n in os.listdir(self.fd)
                if n not in OWN and not n.startswith(HIDDEN_TMP_PREFIX)
            )
            if foreign:  # someone's directory, not a cache: nothing is written there
                raise UsageError(
                    f"build cache {self.path}: not empty and not an OCI layout "
                    f"(it holds {quote(foreign[0])}); choose another ",
                    Option("cache_dir"),
                )
        for name in ("blobs", "layers", "logs", "seals"):  # checked if there, made when needed
            self._ensure_dir(self.fd, name, private=name in PRIVATE, make=False)
        blobs = open_dir(self.fd, ("blobs",))
        if blobs is not None:
            try:
                self._ensure_dir(blobs, "sha256", private=False, make=False)
            finally:
                os.close(blobs)
        layout = self._read_file(self.fd, "oci-layout", 64 << 10)
        try:
            ok = layout is not None and "imageLayoutVersion" in load_json(
                layout, "oci-layout", limit=64 << 10
            )
        except (InputError, TypeError):
            ok = False
        if not ok:
            self._replace_file("oci-layout", LAYOUT_FILE)
        raw = self._read_file(self.fd, "index.json", INDEX_JSON_LIMIT)
        if raw is not None:
            try:
                Index.parse(raw, what="index.json", limit=INDEX_JSON_LIMIT)
            except InputError:
                raw = None
        if raw is None and lstat_at("index.json", self.fd) is not None:
            self._replace_file("index.json", Index.build([]).raw)

    def _ensure_dir(self, parent: int, name: str, private: bool, make: bool = True) -> None:
        """``name`` in ``parent``: a real directory (not a symlink), made if missing (and
        ``make``); when ``private``, the user's own with mode 0700 (another's is moved aside)."""
        for _ in range(3):
            st = lstat_at(name, parent)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                remove_at(parent, name)  # a symlink (never followed) or a file
                st = None
            if st is not None and private and st.st_uid != os.geteuid():
                self._move_aside(parent, name)
                st = None
            if st is None and not make:
                return
            if st is None:
                try:
                    os.mkdir(name, 0o700 if private else 0o755, dir_fd=parent)
                except FileExistsError:
                    continue
                except OSError as e:
                    raise write_error(f"build cache {self.path}", e) from None
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if private and st.st_mode & 0o077:
                fd = os.open(name, DIR_FLAGS, dir_fd=parent)
                try:
                    os.fchmod(fd, 0o700)
                finally:
                    os.close(fd)
            return
        raise UsageError(
            f"build cache {self.path}: {name} keeps changing; is another tool using it?"
        )

    def _move_aside(self, parent: int, name: str) -> None:
        aside = f"{HIDDEN_TMP_PREFIX}untrusted-{secrets.token_hex(8)}"
        try:
            os.rename(name, aside, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError as e:
            raise UsageError(
                f"build cache {self.path}: {name} is not this user's and cannot be moved "
                f"aside ({e.strerror}); remove it"
            ) from None
        with contextlib.suppress(OSError):
            remove_at(parent, aside)

    def _read_file(self, dir_fd: int, name: str, limit: int) -> bytes | None:
        """A regular file's bytes (at most ``limit``), never through a symlink; None if it
        is missing, not a regular file, or larger."""
        try:
            fd = os.open(name, _READ, dir_fd=dir_fd)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = f.read(limit + 1)
        return data if len(data) <= limit else None

    def _replace_file(self, name: str, data: bytes, dir_fd: int | None = None) -> None:
        """``name`` replaced atomically by ``data`` (a locked temporary file renamed over
        it: a symlink there is replaced, never followed)."""
        dir_fd = self.fd if dir_fd is None else dir_fd
        for _ in range(100):
            tmp = f"{HIDDEN_TMP_PREFIX}{name}-{secrets.token_hex(8)}"
            try:
                fd = os.open(
                    tmp,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600 if dir_fd != self.fd else 0o644,
                    dir_fd=dir_fd,
                )
            except FileExistsError:
                continue
            except OSError as e:
                raise write_error(f"build cache {self.path}", e) from None
            try:
                if not _lock_fresh(tmp, dir_fd, fd):
                    continue
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException as e:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                if isinstance(e, OSError):
                    raise write_error(f"build cache {self.path}", e) from None
                raise
            finally:
                os.close(fd)
            return
        raise UsageError(f"build cache {self.path}: cannot write {name}")

    def _dir(self, name: str, make: bool = True) -> int | None:
        """An fd of the cache's directory ``name`` (checked when the cache was opened; made
        now if missing and ``make``), or None."""
        if name not in self._dirs:
            if make:
                self._ensure_dir(self.fd, name, private=name in PRIVATE)
            fd = open_dir(self.fd, (name,))
            if fd is None:
                if make:
                    raise UsageError(f"build cache {self.path}: {name} keeps changing")
                return None
            self._dirs[name] = fd
        return self._dirs[name]

    @property
    def seals_fd(self) -> int:
        return self._dir("seals")  # type: ignore[return-value]

    @property
    def layers_fd(self) -> int:
        return self._dir("layers")  # type: ignore[return-value]

    @staticmethod
    def _fd_path(fd: int) -> str:
        """A path to the directory ``fd`` holds, whatever happens to its name meanwhile (for
        the code and the tools that take paths; this process's own, valid while it lives)."""
        return f"/proc/{os.getpid()}/fd/{fd}"

    def _load_key(self) -> bytes:
        for _ in range(10):
            try:
                fd = os.open("key", _READ, dir_fd=self.seals_fd)
            except FileNotFoundError:
                self._make_key()
                continue
            except OSError:  # a symlink, a fifo...
                remove_at(self.seals_fd, "key")
                continue
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(fd)
                key = f.read(KEY_SIZE + 1)
            private = not st.st_mode & 0o077 and st.st_uid == os.geteuid()
            if stat.S_ISREG(st.st_mode) and private and len(key) == KEY_SIZE:
                return key
            remove_at(self.seals_fd, "key")  # not ours, not private, not a key: not trusted
        raise UsageError(f"build cache {self.path}: cannot make its key (seals/key)")

    def _make_key(self) -> None:
        """A new key, published whole (linked into place: a reader never sees half)."""
        tmp = f"{HIDDEN_TMP_PREFIX}key-{secrets.token_hex(8)}"
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=self.seals_fd,
        )
        try:
            os.write(fd, secrets.token_bytes(KEY_SIZE))
            with contextlib.suppress(FileExistsError):  # another build made one: theirs
                os.link(tmp, "key", src_dir_fd=self.seals_fd, dst_dir_fd=self.seals_fd)
        finally:
            os.close(fd)
            os.unlink(tmp, dir_fd=self.seals_fd)

    def _mac(self, data: bytes) -> str:
        if self._key is None:
            self._key = self._load_key()
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    # -- image entries ---------------------------------------------------------------------------
    def lookup(self, tag: str) -> Descriptor | None:
        """The manifest the cache's entry ``tag`` holds, if its seal proves it; else None
        (``why`` says what failed; what is not a blob in ``blobs/`` is removed)."""
        self.why = ""
        seals = self._dir("seals", make=False)
        raw = None if seals is None else self._read_file(seals, tag, SEAL_LIMIT)
        if raw is None:
            return None  # never sealed (or not any more): an ordinary miss
        try:
            record = json.loads(raw)
            mac = record.pop("mac")
            ok = isinstance(mac, str) and hmac.compare_digest(mac, self._mac(_canonical(record)))
        except (ValueError, TypeError, AttributeError, KeyError):
            ok = False
        if not ok or record.get("tag") != tag:
            self.why = "its seal does not verify"
            return None
        try:
            desc = Descriptor.from_json(record["manifest"])
            blobs = [
                (Digest(b["digest"]), int(b["size"]), _Known(tuple(b["id"]), int(b["hashed"])), b)
                for b in record["blobs"]
            ]
        except (InputError, KeyError, TypeError, ValueError):
            self.why = "its seal does not verify"
            return None
        named = self._named(tag)
        if named is None or (named.digest, named.size) != (desc.digest, desc.size):
            self.why = (
                "index.json does not name it"
                if named is None
                else "index.json names another image under its tag"
            )
            return None
        renewed = False
        for digest, size, recorded, b in blobs:
            state = self._check_blob(digest, size, recorded)
            if state is None:
                return None
            renewed |= state is not recorded
            b["id"], b["hashed"] = list(state.identity), state.hashed
        if renewed:
            self._write_seal(record)
        return desc

    def _named(self, tag: str) -> Descriptor | None:
        raw = self._read_file(self.fd, "index.json", INDEX_JSON_LIMIT)
        if raw is None:
            return None
        try:
            index = Index.parse(raw, what="index.json", limit=INDEX_JSON_LIMIT)
        except InputError:
            return None
        for d in index.manifests:
            if d.annotations.get("org.opencontainers.image.ref.name") == tag:
                return d
        return None

    def _blob_dir(self) -> int | None:
        return open_dir(self.fd, ("blobs", "sha256"))

    def _check_blob(self, digest: Digest, size: int, recorded: _Known | None) -> _Known | None:
        """``recorded`` if the blob's file still has that identity (and it was recorded late
        enough to mean something); else what hashing it finds; None if it does not hash to
        its digest (``why`` says so)."""
        blobs = self._blob_dir()
        if blobs is None:
            self.why = "blobs/sha256 is missing"
            return None
        try:
            try:
                fd = os.open(digest.hex, _READ, dir_fd=blobs)
            except FileNotFoundError:
                self.why = f"blob {digest} is missing"
                return None
            except OSError:
                remove_at(blobs, digest.hex)  # a symlink where a blob belongs
                self.why = f"blob {digest} is not a file"
                return None
        finally:
            os.close(blobs)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                self.why = f"blob {digest} is not the size its descriptor says"
                return None
            identity = _identity(st)
            for known in (recorded, self._known.get(str(digest))):
                if (
                    known is not None
                    and known.identity == identity
                    and known.hashed - st.st_ctime_ns >= MARGIN_NS
                ):
                    self._known[str(digest)] = known
                    return known
            known = self._hash_file(fd, digest, identity)
            if known is None:
                self.why = f"blob {digest} does not match its digest"
            return known
        finally:
            os.close(fd)

    def _hash_file(
        self,
        fd: int,
        digest: Digest,
        identity: Identity,
        sink: Callable[[memoryview], object] | None = None,
    ) -> _Known | None:
        """Hash the blob's file ``fd`` (of ``identity``) from its start, every byte also
        to ``sink``: recorded (and given) if it hashes to ``digest`` and its identity did
        not change meanwhile; None if it does not hash to it or its identity changed."""
        began = time.time_ns()
        hasher = digest.new_hasher()
        if sink is not None and identity[2] > 2 * CHUNK:
            _read_hashed_beside(fd, hasher, sink)
        else:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            size = 0
            while n := os.preadv(fd, [buf], size):
                hasher.update(view[:n])
                if sink is not None:
                    sink(view[:n])
                size += n
        if hasher.hexdigest() != digest.hex or _identity(os.fstat(fd)) != identity:
            return None
        known = _Known(identity, began)
        self._known[str(digest)] = known
        return known

    def copy_blob(self, digest: Digest, size: int, sink: Callable[[memoryview], object]) -> bool:
        """The blob ``digest``'s file (a regular file of ``size`` bytes, never followed)
        read once into ``sink``, hashed on the way: whether it was there and what went to
        ``sink`` is ``size`` bytes that hash to ``digest`` (else ``sink`` got nothing or
        what is to be thrown away). Such a read is this process's hashing of that file,
        as ``seal`` would do it: it is not hashed again while its identity stays."""
        fd = self.open_blob(digest, size)
        if fd is None:
            return False
        try:
            identity = _identity(os.fstat(fd))
            return self._hash_file(fd, digest, identity, sink) is not None
        finally:
            os.close(fd)

    def open_blob(self, digest: Digest, size: int) -> int | None:
        """A descriptor of the blob ``digest``'s file, if it is a regular file of ``size``
        bytes (never followed); None otherwise. What it holds is for the caller to verify."""
        blobs = self._blob_dir()
        if blobs is None:
            return None
        try:
            fd = os.open(digest.hex, _READ, dir_fd=blobs)
        except OSError:
            return None
        finally:
            os.close(blobs)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            os.close(fd)
            return None
        return fd

    def hash_ahead(self, blobs: Sequence[Descriptor]) -> None:
        """Hash now what ``seal`` will hash of ``blobs``: those whose files' ctimes are old
        enough to mean something and that this process has not hashed (at that identity,
        late enough after that ctime: as ``seal`` asks), while the caller waits for
        something else (an output's fsync). What does not hash to its digest is left to
        ``seal``, which says so."""
        now = time.time_ns()
        for d in {d.digest: d for d in blobs}.values():
            fd = self.open_blob(d.digest, d.size)
            if fd is None:
                continue
            try:
                st = os.fstat(fd)
                identity, ctime = _identity(st), st.st_ctime_ns
                known = self._known.get(str(d.digest))
                trusted = (
                    known is not None
                    and known.identity == identity
                    and known.hashed - ctime >= MARGIN_NS
                )
                if not trusted and now - ctime >= MARGIN_NS:
                    self._hash_file(fd, d.digest, identity)
            finally:
                os.close(fd)

    def seal(self, entries: Sequence[tuple[str, Descriptor, Sequence[Descriptor]]]) -> None:
        """Seal image entries just made: (tag, manifest, blobs: config and layers) each.
        Every blob is hashed from its file (unless this process already did, for that same
        file), once its ctime is old enough for its identity to mean something."""
        if not entries:
            return
        newest = 0
        blobs = self._blob_dir()
        if blobs is not None:
            try:
                for _tag, manifest, descs in entries:
                    for d in (manifest, *descs):
                        with contextlib.suppress(OSError):
                            st = os.stat(d.digest.hex, dir_fd=blobs, follow_symlinks=False)
                            newest = max(newest, st.st_ctime_ns)
            finally:
                os.close(blobs)
        wait = newest + MARGIN_NS - time.time_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        for tag, manifest, descs in entries:
            record_blobs = []
            for d in {d.digest: d for d in (manifest, *descs)}.values():
                known = self._check_blob(d.digest, d.size, None)
                if known is None:
                    raise VerificationError(
                        f"build cache {self.path}: {self.why} (changed while the build wrote it)"
                    )
                record_blobs.append(
                    {
                        "digest": str(d.digest),
                        "size": d.size,
                        "id": list(known.identity),
                        "hashed": known.hashed,
                    }
                )
            self._write_seal(
                {
                    "tag": tag,
                    "manifest": {
                        "mediaType": manifest.media_type,
                        "digest": str(manifest.digest),
                        "size": manifest.size,
                    },
                    "blobs": record_blobs,
                }
            )

    def _write_seal(self, record: dict[str, Any]) -> None:
        record = {k: v for k, v in record.items() if k != "mac"}
        record["mac"] = self._mac(_canonical(record))
        self._replace_file(record["tag"], _canonical(record), self.seals_fd)

    # -- extracted layers ------------------------------------------------------------------------
    @property
    def layers_path(self) -> str:
        """``layers/`` as a path that stays this cache's whatever its name becomes."""
        return self._fd_path(self.layers_fd)

    def open_layer(self, name: str, digest: Digest) -> int | None:
        """An fd of ``layers/<name>/root`` if its seal proves it is ``digest`` extracted;
        else None, and what was there is gone."""
        st = lstat_at(name, self.layers_fd)
        if st is None:
            return None
        fd = None
        try:
            if stat.S_ISDIR(st.st_mode):
                with contextlib.suppress(OSError):
                    fd = os.open(name, DIR_FLAGS, dir_fd=self.layers_fd)
            if fd is not None:
                seal = self._read_file(fd, "seal", 4096)
                with contextlib.suppress(OSError):
                    root = os.open("root", DIR_FLAGS, dir_fd=fd)
                    try:
                        expected = self._layer_mac(name, digest, _tree_digest(root)[0])
                    except OSError:
                        expected = ""
                    if (
                        seal is not None
                        and expected
                        and hmac.compare_digest(seal, expected.encode())
                    ):
                        return root
                    os.close(root)
        finally:
            if fd is not None:
                os.close(fd)
        self._discard(name)
        return None

    def _discard(self, name: str) -> None:
        """``layers/<name>`` moved aside (a reclaimable name), then removed, nothing followed."""
        aside = f"{HIDDEN_TMP_PREFIX}discarded-{secrets.token_hex(8)}"
        try:
            os.rename(name, aside, src_dir_fd=self.layers_fd, dst_dir_fd=self.layers_fd)
        except FileNotFoundError:
            return
        with contextlib.suppress(OSError):  # else reclaimed later: a reclaimable name
            remove_at(self.layers_fd, aside)

    def seal_layer(self, staging: int, name: str, digest: Digest) -> None:
        """Write ``seal`` beside ``root`` in ``staging`` (a private directory, before it is
        renamed to ``layers/<name>``)."""
        root = os.open("root", DIR_FLAGS, dir_fd=staging)
        try:
            listing, newest = _tree_digest(root)
            wait = newest + MARGIN_NS - time.time_ns()
            if wait > 0:  # identities recorded from now on are ones a later change alters
                time.sleep(wait / 1e9)
                again, _ = _tree_digest(root)
                if again != listing:
                    raise InputError(f"build cache {self.path}: {name} changed while extracted")
        finally:
            os.close(root)
        self._replace_file("seal", self._layer_mac(name, digest, listing).encode(), staging)

    def _layer_mac(self, name: str, digest: Digest, listing: str) -> str:
        return self._mac(f"layer\0{name}\0{digest}\0{listing}".encode())

    # -- logs --------------------------------------------------------------------------------------
    def open_log(self, recipe: str, image: str, layer_type: str) -> tuple[Path, StepLog]:
        """A new log for one run of ``image``'s steps: ``logs/<recipe>-<image>-<layer
        type>-<UTC time>-<pid>.log`` (``recipe``: a label of the recipe, ``recipe_label``),
        made here (``O_EXCL``: nothing there is followed or reused). The oldest logs of the
        same recipe, image and layer type past ``LOGS_PER_IMAGE``, the oldest of all past
        ``LOGS_TOTAL``, and the logs of older ocikit versions (``NAME.log``) are removed."""
        logs = self._dir("logs")
        assert logs is not None
        when = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        prefix = f"{recipe}-{image}-{layer_type}-"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
        for n in range(100):
            name = f"{prefix}{when}-{os.getpid()}{f'-{n}' if n else ''}.log"
            try:
                fd = os.open(name, flags, 0o644, dir_fd=logs)
            except FileExistsError:
                continue
            except OSError as e:
                raise write_error(f"build cache {self.path}: logs/{name}", e) from None
            break
        else:
            raise UsageError(f"build cache {self.path}: logs/{prefix}{when}-*: too many")
        try:
            self._prune_logs(logs, prefix, keep=name)
        except BaseException:
            os.close(fd)
            raise
        return self.path / "logs" / name, StepLog(os.fdopen(fd, "w", errors="surrogateescape"))

    def _prune_logs(self, logs: int, prefix: str, keep: str) -> None:
        mine = re.compile(re.escape(prefix) + r"\d{8}T\d{6}Z-\d+(?:-\d+)?\.log")
        found: list[tuple[int, str]] = []  # (mtime, name) of the logs this ocikit writes
        with os.scandir(logs) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed by another build meanwhile
                    continue
                if entry.name == keep:
                    continue
                if not LOG_NAME.fullmatch(entry.name):  # an older ocikit's NAME.log, or junk
                    remove_at(logs, entry.name)
                    continue
                found.append((st.st_mtime_ns, entry.name))
        found.sort(reverse=True)  # newest first
        same = [name for _t, name in found if mine.fullmatch(name)]
        drop = set(same[LOGS_PER_IMAGE - 1 :])
        drop.update(name for _t, name in found[LOGS_TOTAL - 1 :])
        for name in drop:
            with contextlib.suppress(FileNotFoundError):
                remove_at(logs, name)


class StepLog:
    """A step's log: text written until ``LOG_LIMIT`` bytes, then one line saying it was
    cut (the output still streams); the bytes not logged are counted at ``close``."""

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self.size = 0
        self.dropped = 0

    def write(self, text: str) -> None:
        size = len(text.encode("utf-8", "surrogateescape"))
        if self.size + size <= LOG_LIMIT:
            self.file.write(text)
            self.size += size
            return
        if not self.dropped:
            self.file.write(f"--- ocikit: log cut at {LOG_LIMIT >> 20} MiB; the output went on\n")
        self.dropped += size

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        try:
            if self.dropped:
                self.file.write(f"--- ocikit: {self.dropped} bytes of output not logged\n")
        finally:
            self.file.close()

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def recipe_label(path: Path) -> str:
    """The recipe in a log's name: its file's stem (``ocikit``, letters, digits, ``.``,
    ``_`` kept, 40 at most) and 8 hex digits of the sha256 of its absolute path, so that
    two recipes called ``ocikit.yaml`` have different logs."""
    stem = re.sub(r"[^A-Za-z0-9._]", "_", path.stem)[:40] or "recipe"
    where = os.path.abspath(path).encode(errors="surrogateescape")
    return f"{stem}-{hashlib.sha256(where).hexdigest()[:8]}"


def _lock_fresh(name: str, dir_fd: int, fd: int) -> bool:
    """``tempfiles.lock_fresh`` for a file named in ``dir_fd``: locked, and still there."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return same_file(os.stat(name, dir_fd=dir_fd, follow_symlinks=False), os.fstat(fd))
    except OSError:
        return False


def _tree_digest(root: int) -> tuple[str, int]:
    """The sha256 of the identity of ``root`` and of every entry below it (path, mode,
    owner, size, device number, inode, ctime, mtime), depth first in sorted order, nothing
    followed; and the newest ctime seen."""
    h = hashlib.sha256()
    newest = 0

    def add(path: str, st: os.stat_result) -> None:
        nonlocal newest
        newest = max(newest, st.st_ctime_ns)
        h.update(
            f"{path}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0{st.st_rdev}\0"
            f"{st.st_ino}\0{st.st_ctime_ns}\0{st.st_mtime_ns}\n".encode(errors="surrogateescape")
        )

    def children(fd: int) -> Iterator[tuple[str, os.stat_result]]:
        with os.scandir(fd) as it:
            return iter(sorted((e.name, e.stat(follow_symlinks=False)) for e in it))

    add("", os.fstat(root))
    top = os.dup(root)
    stack = [(top, "", children(top))]  # the open directories down to the current one
    try:
        while stack:
            fd, path, rest = stack[-1]
            for name, st in rest:
                add(f"{path}/{name}", st)
                if stat.S_ISDIR(st.st_mode):
                    sub = os.open(name, DIR_FLAGS, dir_fd=fd)
                    stack.append((sub, f"{path}/{name}", iter(())))
                    if not same_file(os.fstat(sub), st):
                        raise OSError(errno.ESTALE, "changed while read")
                    stack[-1] = (sub, f"{path}/{name}", children(sub))
                    break
            else:
                os.close(fd)
                stack.pop()
    finally:
        for fd, _path, _rest in stack:
            os.close(fd)
    return h.hexdigest(), newest


__all__ = ["Cache", "StepLog", "recipe_label"]
