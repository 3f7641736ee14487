"""``oci:`` and ``oci-archive:``: OCI image layouts, as directories or tar archives.

Writing a layout: blobs go to a temporary file beside their final place, are fsynced and
renamed (a blob already present is never rewritten); ``index.json`` is replaced atomically
while holding an exclusive ``flock`` on the layout directory, so concurrent writers lose no
tag, and a crash never leaves ``index.json`` pointing at a missing blob.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Protocol

from ..errors import (
    AmbiguousImageError,
    DestinationError,
    InputError,
    NotFoundError,
    UsageError,
    VerificationError,
)
from ..layer.streams import CHUNK
from ..model import Descriptor, Digest, ImageConfig, Index, Manifest, Platform
from ..model import mediatypes as mt
from ..model.jsondoc import (
    INDEX_JSON_LIMIT,
    MANIFEST_LIMIT,
    load_json,
    obj,
    one_line,
    read_limited,
    req_str,
)
from ..model.manifest import parse_manifest_or_index
from .archive import TarArchive
from .base import BlobWriter, ImageDestination, ImageSource, IndexSource, select_platform
from .fsutil import atomic_output, atomic_write_bytes, fsync_dir
from .reference import Reference

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

    concurrent = True  # files opened per blob, or an archive read with pread

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
    if ref.transport == "oci":
        if not os.path.isdir(ref.path):
            raise NotFoundError(f"{ref.path}: no such OCI layout directory")
        return _DirFiles(ref.path)
    return TarArchive.open(ref.path)


def _named(files: _DirFiles | TarArchive, ref: Reference) -> Descriptor:
    """The entry of ``index.json`` the reference names (the only one, if it names none)."""
    what = files.what
    if not files.exists("oci-layout"):
        raise InputError(f"{what}: not an OCI layout (no oci-layout file)")
    where = f"{what}: oci-layout"
    layout = load_json(
        files.read_small("oci-layout", OCI_LAYOUT_LIMIT), where, limit=OCI_LAYOUT_LIMIT
    )
    req_str(obj(layout, where), "imageLayoutVersion", where)
    if not files.exists("index.json"):
        raise InputError(f"{what}: not an OCI layout (no index.json)")
    index = Index.parse(
        files.read_small("index.json", INDEX_JSON_LIMIT),
        what=f"{what}: index.json",
        limit=INDEX_JSON_LIMIT,
    )
    return _pick(index.manifests, ref.name, what)


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


def _pick(manifests: Sequence[Descriptor], name: str | None, what: str) -> Descriptor:
    names = sorted(
        {one_line(d.annotations[REF_NAME], 80) for d in manifests if REF_NAME in d.annotations}
    )
    if name is not None:
        for d in manifests:
            if d.annotations.get(REF_NAME) == name:
                return d
        raise NotFoundError(
            f"{what}: no image named {name!r} (names: {', '.join(names) or 'none'})"
        )
    if len(manifests) == 1:
        return manifests[0]
    if not manifests:
        raise NotFoundError(f"{what}: the layout holds no image")
    raise AmbiguousImageError(
        f"{what} holds {len(manifests)} images; name one as PATH:NAME "
        f"(names: {', '.join(names) or 'none'})"
    )


# -- writing -------------------------------------------------------------------------------


class _LayoutBlob(BlobWriter):
    def __init__(self, dest: OciLayoutDestination, algorithm: str = "sha256") -> None:
        self._dest = dest
        directory = os.path.join(dest.root, "blobs", algorithm)
        os.makedirs(directory, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=".ocikit-tmp-")
        os.fchmod(fd, 0o644)  # blobs are world-readable, as every OCI tool writes them
        self.file = os.fdopen(fd, "wb", buffering=CHUNK)

    def commit(self, digest: Digest) -> None:
        """Flush now; fsync and rename on the destination's I/O thread (overlaps the next blob)."""
        self.file.flush()
        self._dest.background(self._finish, digest)

    def _finish(self, digest: Digest) -> None:
        os.fsync(self.file.fileno())
        self.file.close()
        final = os.path.join(self._dest.root, blob_path(digest))
        if os.path.exists(final):  # never rewrite a blob: same digest, same bytes
            os.unlink(self._tmp)
            return
        os.replace(self._tmp, final)
        self._dest.created.append(digest)

    def abort(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


class OciLayoutDestination(ImageDestination):
    concurrent = True

    def __init__(self, ref: Reference, additional_tags: Sequence[str] = ()) -> None:
        super().__init__(ref)
        if ref.is_stdio:
            raise UsageError(
                "oci: needs a directory; use oci-archive:- to write to standard output"
            )
        self.root = ref.path
        self.created: list[Digest] = []
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocikit-fsync")
        self._io_pending: list[Future[None]] = []
        self._made_root = False
        self._pending: list[Descriptor] = []
        self._tags = ([ref.name] if ref.name else []) + list(additional_tags)
        self._prepare()

    def _prepare(self) -> None:
        """Create the layout, or check it is one; ``oci-layout`` comes first, under the lock."""
        root = self.root
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
            else:
                self._made_root = True
        with self._locked():
            layout = os.path.join(root, "oci-layout")
            if not os.path.exists(layout):
                if os.listdir(root):
                    raise DestinationError(f"{root}: not empty and not an OCI layout")
                atomic_write_bytes(layout, LAYOUT_FILE)

    def has_blob(self, digest: Digest) -> bool:
        return os.path.isfile(os.path.join(self.root, blob_path(digest)))

    def new_blob(self) -> BlobWriter:
        return _LayoutBlob(self)

    def known_layers(self, config: Digest) -> Sequence[Descriptor] | None:
        for manifest in self._manifests():
            if manifest.config.digest == config and all(
                self.has_blob(d.digest) for d in manifest.layers
            ):
                return manifest.layers
        return None

    def _manifests(self) -> Iterator[Manifest]:
        """Every image manifest reachable from index.json that is present and parses."""
        seen: set[str] = set()
        todo = list(self._read_index().manifests)
        while todo:
            d = todo.pop()
            if d.digest in seen or not self.has_blob(d.digest) or d.size > MAX_JSON:
                continue
            seen.add(d.digest)
            if d.media_type not in mt.MANIFEST_TYPES | mt.INDEX_TYPES:
                continue
            with open(os.path.join(self.root, blob_path(d.digest)), "rb") as f:
                try:
                    doc = parse_manifest_or_index(f.read(MAX_JSON + 1), d.media_type)
                except InputError:
                    continue
            if isinstance(doc, Manifest):
                yield doc
            else:
                todo.extend(doc.manifests)

    def background(self, fn: Callable[[Digest], None], digest: Digest) -> None:
        self._io_pending.append(self._io.submit(fn, digest))

    def _drain_io(self) -> None:
        """Wait for every blob's fsync and rename; the first failure is raised."""
        pending, self._io_pending = self._io_pending, []
        errors = [f.exception() for f in pending]
        for e in errors:
            if e is not None:
                raise DestinationError(f"{self.root}: cannot write a blob: {e}") from e

    def flush(self) -> None:
        """Every blob written so far is in place (fsynced, renamed); the index is untouched."""
        self._drain_io()

    def put_blob_bytes(self, data: bytes) -> Digest:
        digest = Digest.of(data)
        if not self.has_blob(digest):
            w = self.new_blob()
            w.file.write(data)
            w.commit(digest)
        return digest

    def put_manifest(self, manifest: Manifest, config: ImageConfig, tags: Sequence[str]) -> None:
        self.put_blob_bytes(manifest.raw)
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

    def put_index(self, index: Index, tags: Sequence[str]) -> None:
        del tags  # the tags come from the reference
        self.put_blob_bytes(index.raw)
        base = Descriptor(index.media_type, Digest.of(index.raw), len(index.raw))
        if self._tags:
            self._pending += [base.with_annotations({REF_NAME: t}) for t in self._tags]
        else:
            self._pending.append(base)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_index(self) -> Index:
        path = os.path.join(self.root, "index.json")
        try:
            with open(path, "rb") as f:
                raw = read_limited(f, path, INDEX_JSON_LIMIT)  # type: ignore[arg-type]
            return Index.parse(raw, what=path, limit=INDEX_JSON_LIMIT)
        except FileNotFoundError:
            return Index.build([])

    def commit(self) -> None:
        self._drain_io()
        self._io.shutdown()
        for algo_dir in {d.algorithm for d in self.created}:
            fsync_dir(os.path.join(self.root, "blobs", algo_dir))
        with self._locked():
            layout = os.path.join(self.root, "oci-layout")
            if not os.path.exists(layout):  # an aborting writer may have removed an empty one
                atomic_write_bytes(layout, LAYOUT_FILE)
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
            atomic_write_bytes(os.path.join(self.root, "index.json"), index.raw)

    def abort(self) -> None:
        with contextlib.suppress(DestinationError):
            self._drain_io()
        self._io.shutdown()
        if not os.path.isdir(self.root):
            return
        with self._locked():
            referenced = self._referenced()
            for digest in self.created:
                if digest not in referenced:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.root, blob_path(digest)))
            if self._made_root and not os.path.exists(os.path.join(self.root, "index.json")):
                self._remove_if_empty()

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

    def _referenced(self) -> set[str]:
        """Every digest reachable from index.json (what a garbage collector would keep)."""
        seen: set[str] = {d.digest for d in self._read_index().manifests}
        for manifest in self._manifests():
            seen.add(manifest.digest)
            seen.add(manifest.config.digest)
            seen.update(layer.digest for layer in manifest.layers)
        return seen


class OciArchiveDestination(ImageDestination):
    """Builds a layout in a private directory, then writes it as one tar, atomically."""

    concurrent = True

    def __init__(self, ref: Reference, additional_tags: Sequence[str] = ()) -> None:
        super().__init__(ref)
        if not ref.is_stdio:
            parent = os.path.dirname(os.path.abspath(ref.path))
            if not os.path.isdir(parent):
                raise DestinationError(f"{ref.path}: directory {parent} does not exist")
            if os.path.isdir(ref.path):
                raise DestinationError(f"{ref.path}: is a directory (did you mean oci:?)")
        self._staging = tempfile.mkdtemp(prefix="ocikit-oci-archive-")
        staged = Reference("oci", os.path.join(self._staging, "layout"), ref.name)
        self.layout = OciLayoutDestination(staged, additional_tags)

    def has_blob(self, digest: Digest) -> bool:
        return self.layout.has_blob(digest)

    def new_blob(self) -> BlobWriter:
        return self.layout.new_blob()

    def put_manifest(self, manifest: Manifest, config: ImageConfig, tags: Sequence[str]) -> None:
        self.layout.put_manifest(manifest, config, tags)

    def put_child_manifest(self, manifest: Manifest) -> None:
        self.layout.put_child_manifest(manifest)

    def put_index(self, index: Index, tags: Sequence[str]) -> None:
        self.layout.put_index(index, tags)

    def commit(self) -> None:
        try:
            self.layout.commit()
            if self.ref.is_stdio:
                with os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=CHUNK) as out:
                    write_layout_tar(self.layout.root, out)
            else:
                with atomic_output(self.ref.path) as out:
                    write_layout_tar(self.layout.root, out)
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)


def write_layout_tar(root: str, out: BinaryIO) -> None:
    """A layout directory as a tar with fixed order and normalized headers (reproducible)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
        tar.copybufsize = CHUNK  # type: ignore[attr-defined]
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            if rel != ".":
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
