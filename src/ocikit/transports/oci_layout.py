"""``oci:`` and ``oci-archive:``: OCI image layouts, as directories or tar archives.

Writing a layout (the rules are spelled out where the writing code starts):

- Each writer works in a private directory of the layout, ``.ocikit-tmp-*``, locked for its
  life; a blob is written there, fsynced and renamed into ``blobs/``. ``index.json`` is
  replaced atomically under an exclusive ``flock`` on the layout directory, once every blob
  the new entries name is there: concurrent writers lose no tag, and a crash never leaves
  ``index.json`` pointing at a missing blob.
- The rule for cleaning up: a writer records each blob it relies on (found present, or put
  in place) in its private directory, under a shared ``flock``, before it checks or renames
  it. A writer that fails removes, under the exclusive lock, only the blobs it put in place
  that ``index.json`` does not reach and no live writer has recorded. A writer killed with
  ``kill -9`` leaves its directory unlocked; the next writer (or ``ocikit gc``) applies the
  same rule to the blobs it recorded, then removes it.
- A blob found present is reused only if its size is right (and its digest, for small blobs
  or with ``verify_existing``); a damaged one is replaced by a rename, a sound one is never
  rewritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO, Protocol

from ..errors import (
    AmbiguousImageError,
    DestinationError,
    InputError,
    NotFoundError,
    OcikitError,
    UsageError,
    VerificationError,
)
from ..layer.dirfd import same_file
from ..layer.streams import CHUNK
from ..model import Compression, Descriptor, Digest, ImageConfig, Index, Manifest, Platform
from ..model import mediatypes as mt
from ..model.jsondoc import (
    INDEX_JSON_LIMIT,
    MANIFEST_LIMIT,
    SHOWN_CHOICES,
    counted,
    load_json,
    obj,
    quote,
    read_limited,
    req_str,
    summary,
)
from ..model.manifest import parse_manifest_or_index
from .base import (
    BlobWriter,
    DestinationProperties,
    ImageDestination,
    ImageSource,
    IndexSource,
    SourceProperties,
    select_platform,
)
from .fsutil import (
    HIDDEN_TMP_PREFIX,
    RUN_PREFIX,
    PrivateDir,
    atomic_output,
    atomic_write_bytes,
    check_archive_output,
    fsync_dir,
    is_held,
    private_tmp_dir,
    reclaim,
    remove_locked,
    try_lock,
    write_error,
)
from .reference import Reference, docker_name_key, familiar_docker_name
from .tempblob import Durability, TempBlob

if TYPE_CHECKING:
    import tarfile

    from .archive import TarArchive

REF_NAME = "org.opencontainers.image.ref.name"
MAX_JSON = INDEX_JSON_LIMIT
OCI_LAYOUT_LIMIT = 64 << 10
LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'


class _Files(Protocol):
    what: str

    def exists(self, name: str) -> bool: ...
    def read_small(self, name: str, limit: int = ...) -> bytes: ...
    def open_member(self, name: str) -> BinaryIO: ...


class _DirFiles:
    def __init__(self, root: str) -> None:
        self.root = root
        self.what = root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def open_member(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb", buffering=0)
        except FileNotFoundError:
            raise NotFoundError(f"{self.what}: {name} is missing") from None

    def read_small(self, name: str, limit: int = MAX_JSON) -> bytes:
        with self.open_member(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InputError(f"{self.what}: {name} is too large")
        return data

    def close(self) -> None:
        pass


def blob_path(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


class OciLayoutSource(ImageSource):
    """Reads an image from a layout directory, or from an archive of one."""

    properties = SourceProperties(concurrent=True)  # a file per blob, or pread of an archive

    def __init__(
        self,
        ref: Reference,
        platform: Platform | None = None,
        *,
        descriptor: Descriptor | None = None,
        files: _DirFiles | TarArchive | None = None,
    ) -> None:
        """``descriptor``: read this manifest (an index's entry) instead of the one
        ``index.json`` names; ``files``: the layout already opened (then not closed here)."""
        super().__init__(ref)
        self._owns_files = files is None
        self.files = files if files is not None else open_layout_files(ref)
        try:
            self._manifest = self._resolve(platform, descriptor)
        except BaseException:
            self.close()
            raise

    def _resolve(self, platform: Platform | None, desc: Descriptor | None) -> Manifest:
        what = self.files.what
        desc = desc or _named(self.files, self.ref)
        for _ in range(8):  # an index may nest indexes; bounded
            doc = parse_manifest_or_index(
                _read_json_blob(self.files, desc), desc.media_type, f"{what}: {desc.digest}"
            )
            if isinstance(doc, Manifest):
                return doc
            desc = select_platform(doc.manifests, platform, f"{what}: {desc.digest}")
        raise InputError(f"{what}: indexes nest too deeply")

    def manifest(self) -> Manifest:
        return self._manifest

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        path = blob_path(descriptor.digest)
        if not self.files.exists(path):
            raise NotFoundError(f"{self.files.what}: blob {descriptor.digest} is missing")
        return self.files.open_member(path)

    def blob_file(self, descriptor: Descriptor) -> str | None:
        if not isinstance(self.files, _DirFiles):
            return None
        path = os.path.join(self.files.root, blob_path(descriptor.digest))
        return path if os.path.isfile(path) else None

    def close(self) -> None:
        if self._owns_files:
            self.files.close()


class OciIndex(IndexSource):
    """The index an ``oci:``/``oci-archive:`` reference names, and each image of it."""

    def __init__(self, ref: Reference) -> None:
        self.ref = ref
        self.files = open_layout_files(ref)
        try:
            self._top = _named(self.files, ref)
            doc = parse_manifest_or_index(
                _read_json_blob(self.files, self._top),
                self._top.media_type,
                f"{ref}: {self._top.digest}",
            )
            self.index = doc if isinstance(doc, Index) else None
        except BaseException:
            self.files.close()
            raise

    def open_child(self, descriptor: Descriptor) -> ImageSource:
        return OciLayoutSource(self.ref, descriptor=descriptor, files=self.files)

    def open_single(self) -> ImageSource | None:
        return self.open_child(self._top)

    def close(self) -> None:
        self.files.close()


def open_layout_files(ref: Reference) -> _DirFiles | TarArchive:
    if ref.properties.layout_directory:
        if os.path.exists(ref.path) and not os.path.isdir(ref.path):
            raise InputError(f"{ref.path}: not an OCI layout directory{_file_hint(ref.path)}")
        if not os.path.isdir(ref.path):
            raise NotFoundError(f"{ref.path}: no such OCI layout directory")
        return _DirFiles(ref.path)
    from .archive import TarArchive  # here: a layout directory is read without the tar reader

    return TarArchive.open(ref.path)


def _file_hint(path: str) -> str:
    """What ``oci:`` says of a file: the transport that reads it, if it is an image archive."""
    from .archive import TarArchive, image_format

    try:
        with TarArchive.open(path) as archive:
            found = image_format(archive)
    except InputError:
        found = None
    if found is None:
        return " (a file; archives are read with oci-archive: or docker-archive:)"
    return f"; it is {_FORMATS[found]}: use {found}:{path}"


_FORMATS = {"oci-archive": "an OCI archive", "docker-archive": "a docker save archive"}


def _not_a_layout(files: _DirFiles | TarArchive, missing: str) -> InputError:
    from .archive import TarArchive, image_format

    what = files.what
    if image_format(files) == "docker-archive":
        if isinstance(files, TarArchive):
            path = files.path or "FILE"
            return InputError(f"{what} is a docker save archive: use docker-archive:{path}")
        return InputError(
            f"{what}: not an OCI layout (no {missing}); its manifest.json is a docker save's: "
            f"docker-archive: reads the archive itself, not a directory"
        )
    return InputError(f"{what}: not an OCI layout (no {missing})")


def _named(files: _DirFiles | TarArchive, ref: Reference) -> Descriptor:
    """The entry of ``index.json`` the reference selects (the only image, if it names none)."""
    what = files.what
    if not files.exists("oci-layout"):
        raise _not_a_layout(files, "oci-layout file")
    where = f"{what}: oci-layout"
    layout = load_json(
        files.read_small("oci-layout", OCI_LAYOUT_LIMIT), where, limit=OCI_LAYOUT_LIMIT
    )
    req_str(obj(layout, where), "imageLayoutVersion", where)
    if not files.exists("index.json"):
        raise _not_a_layout(files, "index.json")
    index = Index.parse(
        files.read_small("index.json", INDEX_JSON_LIMIT),
        what=f"{what}: index.json",
        limit=INDEX_JSON_LIMIT,
    )
    if ref.digest is not None:
        return _by_digest(files, index.manifests, ref.digest)
    return _pick(index.manifests, ref, what)


def _read_json_blob(files: _DirFiles | TarArchive, desc: Descriptor) -> bytes:
    """A manifest or index blob, verified against its descriptor."""
    if desc.size > MANIFEST_LIMIT:
        raise InputError(f"{files.what}: {desc.digest} is too large for a manifest")
    path = blob_path(desc.digest)
    if not files.exists(path):
        raise NotFoundError(f"{files.what}: blob {desc.digest} is missing")
    raw = files.read_small(path, MANIFEST_LIMIT)
    if len(raw) != desc.size or Digest.of(raw, desc.digest.algorithm) != desc.digest:
        raise VerificationError(f"{files.what}: blob {desc.digest} does not match its digest")
    return raw


# -- selecting an image ---------------------------------------------------------------------
#
# index.json may name several entries alike: ``ctr image export`` and Docker >= 25's ``docker
# save`` set ``org.opencontainers.image.ref.name`` to the bare tag (``1`` for ``a:1`` and
# ``b:1``) and the full name in ``io.containerd.image.name``. A name selects every entry whose
# ref name is it, or whose containerd name is it (as written, or in docker's familiar form:
# ``busybox:latest`` for ``docker.io/library/busybox:latest``); entries of one digest are one
# image, entries of several are refused as ambiguous. ``@N`` (index.json's N-th entry) and
# ``@DIGEST`` (an entry, or a manifest an index of the layout lists) select any image.

#: containerd's annotation of an index.json entry: the image's full name
CONTAINERD_NAME = "io.containerd.image.name"
#: manifests and indexes read while looking for a digest below index.json, at most
MAX_DIGEST_SEARCH = 256


def _names(d: Descriptor) -> list[str]:
    return [d.annotations[k] for k in (REF_NAME, CONTAINERD_NAME) if k in d.annotations]


def _is_named(d: Descriptor, name: str, key: str | None) -> bool:
    """Whether entry ``d`` answers to ``name`` (``key``: its docker form, if it has one)."""
    if d.annotations.get(REF_NAME) == name:
        return True
    full = d.annotations.get(CONTAINERD_NAME)
    if full is None:
        return False
    return full == name or (key is not None and docker_name_key(full) == key)


def _named_by(manifests: Sequence[Descriptor], name: str) -> list[int]:
    key = docker_name_key(name)
    return [i for i, d in enumerate(manifests) if _is_named(d, name, key)]


def _shown(name: str) -> str:
    """A name for a message: as is when it is a plain name, quoted when not."""
    return name if _PLAIN_NAME.match(name) else quote(name, 80)


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9._:@/+-]{1,128}$")


def _selecting_name(manifests: Sequence[Descriptor], i: int) -> str | None:
    """A name that selects entry ``i`` (and only entries of its digest), if it has one."""
    d = manifests[i]
    candidates = _names(d)
    full = d.annotations.get(CONTAINERD_NAME)
    if full is not None and docker_name_key(full) is not None:
        candidates.append(familiar_docker_name(full))  # shorter, and selects the same
    for name in sorted(candidates, key=len):
        if {manifests[j].digest for j in _named_by(manifests, name)} == {d.digest}:
            return name
    return None


def _choices(manifests: Sequence[Descriptor], among: Sequence[int]) -> str:
    """``@0 (name, sha256:...), @1 (sha256:...)``: each entry, and how to select it."""
    parts = []
    for i in among[:SHOWN_CHOICES]:
        name = _selecting_name(manifests, i)
        shown = f"{_shown(name)}, " if name is not None else ""
        parts.append(f"@{i} ({shown}{manifests[i].digest})")
    return summary(parts, total=len(among))


def _all_names(manifests: Sequence[Descriptor]) -> str:
    names = sorted({n for d in manifests for n in _names(d)})
    return summary([_shown(n) for n in names])


def _pick(manifests: Sequence[Descriptor], ref: Reference, what: str) -> Descriptor:
    if ref.index is not None:
        if ref.index >= len(manifests):
            last = f" (@0 to @{len(manifests) - 1})" if manifests else ""
            raise NotFoundError(
                f"{what}: no image @{ref.index}; index.json lists "
                f"{counted(len(manifests), 'image')}{last}"
            )
        return manifests[ref.index]
    if ref.name is not None:
        found = _named_by(manifests, ref.name)
        if not found:
            raise NotFoundError(
                f"{what}: no image named {quote(ref.name)} (names: {_all_names(manifests)})"
            )
        if len({manifests[i].digest for i in found}) > 1:
            raise AmbiguousImageError(
                f"{what}: {len(found)} different images are named {quote(ref.name)}; select one "
                f"as PATH@N or PATH@DIGEST: {_choices(manifests, found)}"
            )
        return manifests[found[0]]
    if len(manifests) == 1:
        return manifests[0]
    if not manifests:
        raise NotFoundError(f"{what}: the layout holds no image")
    raise AmbiguousImageError(
        f"{what} holds {len(manifests)} images; select one as PATH:NAME "
        f"(names: {_all_names(manifests)}), PATH@N or PATH@DIGEST: "
        f"{_choices(manifests, range(len(manifests)))}"
    )


def _by_digest(
    files: _DirFiles | TarArchive, manifests: Sequence[Descriptor], digest: str
) -> Descriptor:
    """The entry of that digest, or the manifest of that digest an index of the layout lists
    (a platform's, in a multi-platform index); breadth first, bounded."""
    todo = list(manifests)
    read = 0
    while todo:
        for d in todo:
            if d.digest == digest:
                return d
        indexes = [d for d in todo if d.media_type in mt.INDEX_TYPES]
        todo = []
        for d in indexes:
            read += 1
            if read > MAX_DIGEST_SEARCH:
                raise InputError(
                    f"{files.what}: {digest} not found in the first {MAX_DIGEST_SEARCH} "
                    f"indexes of the layout"
                )
            doc = parse_manifest_or_index(
                _read_json_blob(files, d), d.media_type, f"{files.what}: {d.digest}"
            )
            if isinstance(doc, Index):
                todo.extend(doc.manifests)
    raise NotFoundError(
        f"{files.what}: no image {digest} (neither in index.json nor in an index it lists)"
    )


# -- writing -------------------------------------------------------------------------------
#
# Several writers (processes, or destinations of one process) may write one layout at once.
# The rules, which README.md's "Nothing half-written" states for users:
# - Each writer has a private directory in the layout, ``.ocikit-tmp-*``, locked while it
#   lives (see fsutil). Its blobs are written there, fsynced, then renamed into ``blobs/``.
# - Before a writer relies on a blob (finds it present, or renames its own into place) it
#   records the digest in its directory's ``claims``, holding a shared ``flock`` on the
#   layout directory, and checks or renames under that lock.
# - ``index.json`` is replaced under the exclusive lock, once every blob the new entries
#   name is there.
# - A writer that fails removes, under the exclusive lock, the blobs it renamed into place
#   that index.json does not reach and no live writer has claimed, then its directory.
# - A writer killed (kill -9) leaves its directory unlocked: the next writer of the layout,
#   or ``ocikit gc``, removes by the same rule the blobs its ``claims`` name, then the
#   directory.
# - A blob found present is kept only if it has the expected size; blobs up to SMALL_BLOB
#   (configs, manifests) are re-hashed, and all of them with ``verify_existing``. A bad one
#   is replaced by a rename, so no reader ever sees half of a blob.

CLAIMS = "claims"
#: blobs this small are re-hashed whenever they are found present
SMALL_BLOB = 1 << 20
MAX_CLAIMS = 64 << 20


def _hash_file(path: str, digest: Digest) -> bool:
    """Whether the file's content has this digest."""
    hasher = digest.new_hasher()
    try:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
    except OSError:
        return False
    return hasher.hexdigest() == digest.hex


class _Layout:
    """The locks, claims and reachability of one layout directory (its writers' shared rules)."""

    def __init__(self, root: str, what: str) -> None:
        self.root = root
        self.what = what

    def path(self, digest: Digest) -> str:
        return os.path.join(self.root, blob_path(digest))

    @contextlib.contextmanager
    def locked(self, shared: bool = False) -> Iterator[int]:
        """The layout directory locked for the block; the descriptor the lock is on."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise write_error(self.what, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def read_index(self) -> Index:
        path = os.path.join(self.root, "index.json")
        try:
            with open(path, "rb") as f:
                raw = read_limited(f, path, INDEX_JSON_LIMIT)
        except FileNotFoundError:
            return Index.build([])
        return Index.parse(raw, what=path, limit=INDEX_JSON_LIMIT)

    def reachable(self) -> set[str] | None:
        """Every digest index.json reaches (what a garbage collector keeps); None if some
        manifest on the way cannot be read (then nothing may be removed)."""
        try:
            todo = list(self.read_index().manifests)
        except InputError:
            return None
        seen: set[str] = set()
        while todo:
            d = todo.pop()
            if d.digest in seen:
                continue
            seen.add(d.digest)
            if d.media_type not in mt.MANIFEST_TYPES | mt.INDEX_TYPES:
                continue  # an artifact's own type: its bytes only
            try:
                with open(self.path(d.digest), "rb") as f:
                    raw = read_limited(f, d.digest, MANIFEST_LIMIT)
                doc = parse_manifest_or_index(raw, d.media_type)
            except (OSError, InputError):
                return None
            if isinstance(doc, Manifest):
                seen.add(doc.config.digest)
                seen.update(layer.digest for layer in doc.layers)
            else:
                todo.extend(doc.manifests)
        return seen

    def writer_dirs(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return []
        return [
            os.path.join(self.root, n)
            for n in names
            if n.startswith(HIDDEN_TMP_PREFIX)
            and not n.startswith(RUN_PREFIX)  # a build step's, not a writer's
            and os.path.isdir(os.path.join(self.root, n))
        ]

    def live_claims(self, own: str | None = None) -> set[str] | None:
        """The digests live writers (other than ``own``) rely on; None if one cannot be read."""
        claims: set[str] = set()
        for path in self.writer_dirs():
            if path == own or not is_held(path):
                continue
            found = read_claims(path)
            if found is None:
                return None
            claims |= found
        return claims

    def remove_unwanted(
        self, candidates: set[str], own: str | None = None
    ) -> list[tuple[str, int]]:
        """Under the exclusive lock: remove the candidates index.json does not reach and no
        live writer claims. Returns (path, bytes) removed."""
        if not candidates:
            return []
        reachable = self.reachable()
        live = self.live_claims(own)
        if reachable is None or live is None:
            return []
        removed = []
        for digest in sorted(candidates - reachable - live):
            path = self.path(Digest(digest))
            with contextlib.suppress(OSError):
                size = os.lstat(path).st_size
                os.unlink(path)
                removed.append((path, size))
        return removed

    def reclaim_dead(self) -> list[tuple[str, int]]:
        """Remove what dead writers left: the blobs their claims name (by the rule of
        ``remove_unwanted``), their directories, and dead temporary files."""
        dead = []
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return []
        for name in names:
            # a build step's directory may hold a container and a mount: ops.gc's to reclaim
            if name.startswith(HIDDEN_TMP_PREFIX) and not name.startswith(RUN_PREFIX):
                path = os.path.join(self.root, name)
                fd = try_lock(path)
                if fd is not None:
                    dead.append((path, fd))
        if not dead:
            return []
        removed: list[tuple[str, int]] = []
        try:
            candidates: set[str] = set()
            for path, _fd in dead:
                candidates |= read_claims(path) or set()
            with self.locked():
                removed += self.remove_unwanted(candidates)
        finally:
            for path, fd in dead:
                removed.append((path, remove_locked(path, fd)))
        return removed


def read_claims(directory: str) -> set[str] | None:
    """The digests a writer's ``claims`` file lists (malformed lines skipped)."""
    try:
        with open(os.path.join(directory, CLAIMS), "rb") as f:
            raw = f.read(MAX_CLAIMS)
    except FileNotFoundError:
        return set()
    except OSError:
        return None
    out: set[str] = set()
    for line in raw.decode(errors="replace").splitlines():
        with contextlib.suppress(InputError):
            out.add(Digest(line.strip()))
    return out


def collect_layout(root: str, unreferenced: bool = False) -> list[tuple[str, int]]:
    """``ocikit gc`` of a layout: what dead writers left (as the next writer would remove
    it), temporary files of older versions, and with ``unreferenced`` every blob index.json
    does not reach that no live writer claims. Returns (path, bytes) removed."""
    layout = _Layout(root, root)
    removed = layout.reclaim_dead()
    with layout.locked():
        for algo in _blob_dirs(root):
            # temporary blobs of versions that did not lock them (they are never written now)
            removed += reclaim(algo, (".ocikit-tmp-",))
        removed += reclaim(root, (".index.json.tmp-", ".oci-layout.tmp-"))
        if unreferenced:
            stored: set[str] = set()
            for algo in _blob_dirs(root):
                for name in os.listdir(algo):
                    with contextlib.suppress(InputError):
                        stored.add(Digest(f"{os.path.basename(algo)}:{name}"))
            removed += layout.remove_unwanted(stored)
    return removed


def _same_file(fd: int, path: str) -> bool:
    try:
        return same_file(os.stat(path, follow_symlinks=False), os.fstat(fd))
    except OSError:
        return False


def _blob_dirs(root: str) -> list[str]:
    blobs = os.path.join(root, "blobs")
    try:
        return [os.path.join(blobs, a) for a in sorted(os.listdir(blobs))]
    except OSError:
        return []


class OciLayoutDestination(ImageDestination):
    properties = DestinationProperties(concurrent=True, holds_index=True)

    def __init__(
        self,
        ref: Reference,
        additional_tags: Sequence[str] = (),
        *,
        what: str | None = None,
        verify_existing: bool = False,
    ) -> None:
        """``verify_existing``: re-hash every blob found present before relying on it, not
        only small ones (a damaged one is replaced)."""
        super().__init__(ref)
        if ref.is_stdio:
            raise UsageError(
                "oci: needs a directory; use oci-archive:- to write to standard output"
            )
        self.root = ref.path
        self.what = what or ref.path
        self.layout = _Layout(self.root, self.what)
        self._verify_existing = verify_existing
        self.created: set[Digest] = set()
        self._claimed: set[str] = set()
        self._needs: dict[Digest, int] = {}  # what the new index entries name, and sizes
        self._durability = Durability(self.what)  # blobs on their way to disk
        self._made_root = False
        self._done = False
        self._pending: list[Descriptor] = []
        self._tags = ([ref.name] if ref.name else []) + list(additional_tags)
        try:
            self.work = self._prepare()
            self.layout.reclaim_dead()
            try:
                self._claims = open(  # noqa: SIM115 - open while the writer lives
                    os.path.join(self.work.path, CLAIMS), "ab", buffering=0
                )
            except OSError as e:
                self.work.remove()
                raise write_error(self.what, e) from None
        except BaseException:
            work = getattr(self, "work", None)
            if work is not None:
                work.remove()
            if self._made_root:
                with contextlib.suppress(OSError, OcikitError), self.layout.locked():
                    self._remove_if_empty()
            raise

    def _prepare(self) -> PrivateDir:
        """Create the layout, or check it is one (``oci-layout`` first), and this writer's
        private directory in it, under the lock: a writer that made the layout and fails
        removes it only if nothing else is in it, so from here on it stays. If it went
        between the ``mkdir`` and the lock (such a writer removed it), start again."""
        root = self.root
        for _ in range(20):
            if os.path.exists(root) and not os.path.isdir(root):
                raise DestinationError(f"{root}: exists and is not a directory")
            if not os.path.isdir(root):
                parent = os.path.dirname(os.path.abspath(root))
                if not os.path.isdir(parent):
                    raise DestinationError(f"{root}: parent directory {parent} does not exist")
                try:
                    os.mkdir(root)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise write_error(self.what, e) from None
                else:
                    self._made_root = True
            try:
                with self.layout.locked() as fd:
                    if not _same_file(fd, root):
                        continue  # removed (or replaced) while this writer waited
                    layout = os.path.join(root, "oci-layout")
                    if not os.path.exists(layout):
                        if [n for n in os.listdir(root) if not n.startswith(HIDDEN_TMP_PREFIX)]:
                            raise DestinationError(f"{root}: not empty and not an OCI layout")
                        atomic_write_bytes(layout, LAYOUT_FILE, self.what)
                    return PrivateDir(root, HIDDEN_TMP_PREFIX, self.what)
            except DestinationError:
                if not os.path.isdir(root):
                    continue  # gone between the mkdir and the open
                raise
        raise DestinationError(f"{root}: removed again and again while being opened")

    # -- blobs ---------------------------------------------------------------------------------
    def _claim(self, digest: Digest) -> None:
        """Record that this writer relies on ``digest`` (under the shared lock)."""
        if digest in self._claimed:
            return
        try:
            self._claims.write(f"{digest}\n".encode())
        except OSError as e:
            raise write_error(self.what, e) from None
        self._claimed.add(digest)

    def _intact(self, digest: Digest, size: int | None) -> bool:
        path = self.layout.path(digest)
        try:
            st = os.stat(path)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
            return False
        if st.st_size > SMALL_BLOB and not self._verify_existing:
            return True
        return _hash_file(path, digest)

    def has_blob(self, digest: Digest) -> bool:
        with self.layout.locked(shared=True):
            self._claim(digest)
            return self._intact(digest, None)

    def reuse_blob(self, digest: Digest, size: int) -> bool:
        with self.layout.locked(shared=True):
            self._claim(digest)
            return self._intact(digest, size)

    def _exists(self, digest: Digest) -> bool:
        return os.path.isfile(self.layout.path(digest))

    def place(self, tmp: str, digest: Digest, size: int) -> None:
        """Move a written blob (``tmp``, fsynced) to its place, unless an intact one is
        there; a damaged one is replaced."""
        final = self.layout.path(digest)
        with self.layout.locked(shared=True):
            self._claim(digest)
            if self._intact(digest, size):
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                return
            try:
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.replace(tmp, final)
            except OSError as e:
                raise write_error(self.what, e) from None
            self.created.add(digest)

    def new_blob(self) -> BlobWriter:
        """Written in this writer's directory; at commit flushed, then fsynced and renamed
        into ``blobs/`` (``place``) on the I/O thread while the next blob is written."""
        return TempBlob(self.work.path, self.what, self.place, durable=self._durability)

    def known_layers(self, config: Digest) -> Sequence[Descriptor] | None:
        for manifest in self._manifests():
            if manifest.config.digest == config and all(
                self.reuse_blob(d.digest, d.size) for d in manifest.layers
            ):
                return manifest.layers
        return None

    def _manifests(self) -> Iterator[Manifest]:
        """Every image manifest reachable from index.json that is present and parses."""
        seen: set[str] = set()
        todo = list(self._read_index().manifests)
        while todo:
            d = todo.pop()
            if d.digest in seen or not self._exists(d.digest) or d.size > MANIFEST_LIMIT:
                continue
            seen.add(d.digest)
            if d.media_type not in mt.MANIFEST_TYPES | mt.INDEX_TYPES:
                continue
            with open(os.path.join(self.root, blob_path(d.digest)), "rb") as f:
                try:
                    raw = read_limited(f, d.digest, MANIFEST_LIMIT)
                    doc = parse_manifest_or_index(raw, d.media_type)
                except InputError:
                    continue
            if isinstance(doc, Manifest):
                yield doc
            else:
                todo.extend(doc.manifests)

    def flush(self) -> None:
        """Every blob committed so far is in place (fsynced, renamed); the index is untouched."""
        self._durability.wait()

    def _need(self, manifest: Manifest) -> None:
        self._needs[manifest.digest] = len(manifest.raw)
        for d in (manifest.config, *manifest.layers):
            self._needs[d.digest] = d.size

    def put_manifest(self, manifest: Manifest, config: ImageConfig, tags: Sequence[str]) -> None:
        self.put_blob_bytes(manifest.raw)
        self._need(manifest)
        platform = config.platform if config.platform.os else None
        base = Descriptor(
            manifest.media_type, manifest.digest, len(manifest.raw), platform=platform
        )
        if self._tags:
            self._pending += [base.with_annotations({REF_NAME: t}) for t in self._tags]
        else:
            self._pending.append(base)

    def put_child_manifest(self, manifest: Manifest) -> None:
        self.put_blob_bytes(manifest.raw)
        self._need(manifest)

    def put_index(self, index: Index, tags: Sequence[str]) -> None:
        del tags  # the tags come from the reference
        digest = self.put_blob_bytes(index.raw)
        self._needs[digest] = len(index.raw)
        base = Descriptor(index.media_type, digest, len(index.raw))
        if self._tags:
            self._pending += [base.with_annotations({REF_NAME: t}) for t in self._tags]
        else:
            self._pending.append(base)

    def _read_index(self) -> Index:
        return self.layout.read_index()

    def commit(self) -> None:
        self._durability.wait()  # before the lock: the I/O thread takes it to rename
        try:
            for algo_dir in {d.algorithm for d in self.created}:
                fsync_dir(os.path.join(self.root, "blobs", algo_dir))
        except OSError as e:
            raise write_error(self.what, e) from None
        with self.layout.locked():
            layout = os.path.join(self.root, "oci-layout")
            if not os.path.exists(layout):  # an aborting writer may have removed an empty one
                atomic_write_bytes(layout, LAYOUT_FILE, self.what)
            for digest, size in self._needs.items():
                try:
                    present = os.stat(self.layout.path(digest)).st_size == size
                except OSError:
                    present = False
                if not present:
                    raise DestinationError(
                        f"{self.what}: blob {digest} is missing (removed while this copy ran?); "
                        f"index.json is unchanged"
                    )
            current = self._read_index()
            manifests = list(current.manifests)
            for new in self._pending:
                name = new.annotations.get(REF_NAME)
                if name is None:
                    if any(
                        d.digest == new.digest and REF_NAME not in d.annotations for d in manifests
                    ):
                        continue
                else:
                    manifests = [d for d in manifests if d.annotations.get(REF_NAME) != name]
                manifests.append(new)
            index = Index.build(manifests, current.annotations)
            atomic_write_bytes(os.path.join(self.root, "index.json"), index.raw, self.what)
            self._release()

    def abort(self) -> None:
        """Remove the blobs this writer put in place that index.json does not reach and no
        live writer claims, its private directory, and the layout if it made it and it is
        empty. Never raises for a cleanup that fails (a full disk): the first error stands."""
        if self._done:
            return
        self._durability.settle()
        try:
            if os.path.isdir(self.root):
                with self.layout.locked():
                    self.layout.remove_unwanted(set[str](self.created), own=self.work.path)
                    self._release()
                    if self._made_root and not os.path.exists(
                        os.path.join(self.root, "index.json")
                    ):
                        self._remove_if_empty()
        except OcikitError:
            pass
        finally:
            self._release()

    def _release(self) -> None:
        """Done: this writer's directory (claims, temporary blobs) goes, and its lock."""
        if not self._done:
            self._done = True
            with contextlib.suppress(OSError):
                self._claims.close()
            self.work.remove()

    def _remove_if_empty(self) -> None:
        """Undo a layout this copy created, unless another writer has put anything in it."""
        blobs = os.path.join(self.root, "blobs")
        with contextlib.suppress(OSError):
            for algo in os.listdir(blobs):
                os.rmdir(os.path.join(blobs, algo))
            os.rmdir(blobs)
        with contextlib.suppress(OSError):
            if os.listdir(self.root) == ["oci-layout"]:
                os.unlink(os.path.join(self.root, "oci-layout"))
            os.rmdir(self.root)


class OciArchiveDestination(ImageDestination):
    """Builds a layout in a private directory of ``$TMPDIR``, then writes it as one tar,
    atomically. Beside the layout, docker's ``manifest.json`` (and ``repositories`` when an
    image has a docker name) points into ``blobs/``, as containerd's export and Docker >= 25's
    save write: docker before 25 loads it too, and every OCI tool reads the layout."""

    properties = DestinationProperties(concurrent=True, holds_index=True)

    def __init__(
        self,
        ref: Reference,
        additional_tags: Sequence[str] = (),
        *,
        verify_existing: bool = False,
    ) -> None:
        super().__init__(ref)
        check_archive_output(ref, ref.path, ref.is_stdio, " (did you mean oci:?)")
        self._names = ([ref.name] if ref.name else []) + list(additional_tags)
        self._docker: list[tuple[Manifest, list[str]]] = []  # images for manifest.json
        self._staging = private_tmp_dir("oci-archive", ref.path)
        try:
            staged = Reference("oci", os.path.join(self._staging.path, "layout"), ref.name)
            self.layout = OciLayoutDestination(
                staged, additional_tags, what=self._staging.what, verify_existing=verify_existing
            )
        except BaseException:
            self._staging.remove()
            raise

    def has_blob(self, digest: Digest) -> bool:
        return self.layout.has_blob(digest)

    def reuse_blob(self, digest: Digest, size: int) -> bool:
        return self.layout.reuse_blob(digest, size)

    def new_blob(self) -> BlobWriter:
        return self.layout.new_blob()

    def flush(self) -> None:
        self.layout.flush()

    def put_manifest(self, manifest: Manifest, config: ImageConfig, tags: Sequence[str]) -> None:
        self.layout.put_manifest(manifest, config, tags)
        if all(mt.layer_compression(d.media_type) in _DOCKER_LOADS for d in manifest.layers):
            names = self._names or list(tags)
            self._docker.append((manifest, [n for n in map(_docker_tag, names) if n]))

    def put_child_manifest(self, manifest: Manifest) -> None:
        self.layout.put_child_manifest(manifest)

    def put_index(self, index: Index, tags: Sequence[str]) -> None:
        self.layout.put_index(index, tags)

    def commit(self) -> None:
        try:
            self.layout.commit()
            self._write_docker_files()
            if self.ref.is_stdio:
                with os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=CHUNK) as out:
                    write_layout_tar(self.layout.root, out)
            else:
                with atomic_output(self.ref.path) as out:
                    write_layout_tar(self.layout.root, out)
        finally:
            self._staging.remove()

    def abort(self) -> None:
        try:
            self.layout.abort()
        finally:
            self._staging.remove()

    def _write_docker_files(self) -> None:
        """``manifest.json`` and ``repositories`` in the staged layout, beside ``index.json``."""
        if not self._docker:
            return
        entries: list[dict[str, object]] = []
        repositories: dict[str, dict[str, str]] = {}
        for manifest, names in self._docker:
            entries.append(
                {
                    "Config": blob_path(manifest.config.digest),
                    "RepoTags": names or None,
                    "Layers": [blob_path(d.digest) for d in manifest.layers],
                }
            )
            for name in names:
                repo, _, tag = name.rpartition(":")
                repositories.setdefault(repo, {})[tag] = manifest.config.digest.hex
        root, what = self.layout.root, self._staging.what
        atomic_write_bytes(os.path.join(root, "manifest.json"), json.dumps(entries).encode(), what)
        if repositories:
            data = json.dumps(repositories).encode()
            atomic_write_bytes(os.path.join(root, "repositories"), data, what)


#: layers ``docker load`` takes (it decompresses them); squashfs layers it does not
_DOCKER_LOADS = (Compression.NONE, Compression.GZIP, Compression.ZSTD)


def _docker_tag(name: str) -> str | None:
    """A reference name as docker's ``RepoTags`` has it (``NAME:TAG``, familiar), or None when
    it is not one (``latest``, ``v1``: a tag alone, which docker would take for a name)."""
    from .reference import _DOCKER_NAME_RE

    if not _DOCKER_NAME_RE.match(name):
        return None
    return familiar_docker_name(name)


def write_layout_tar(root: str, out: BinaryIO) -> None:
    """A layout directory as a tar with fixed order and normalized headers (reproducible);
    writers' private directories are left out."""
    import tarfile  # here: only an oci-archive: destination writes one

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
        tar.copybufsize = CHUNK  # type: ignore[attr-defined]
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            if rel == ".":
                dirnames[:] = [d for d in dirnames if not d.startswith(HIDDEN_TMP_PREFIX)]
                filenames = [f for f in filenames if not f.startswith(HIDDEN_TMP_PREFIX)]
            else:
                tar.addfile(_norm(tar.gettarinfo(dirpath, rel)))
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                arc = name if rel == "." else f"{rel}/{name}"
                with open(path, "rb") as f:
                    tar.addfile(_norm(tar.gettarinfo(path, arc, f)), f)


def _norm(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    return info


__all__ = ["OciArchiveDestination", "OciLayoutDestination", "OciLayoutSource"]
