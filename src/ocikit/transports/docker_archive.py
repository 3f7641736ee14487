"""``docker-archive:``: what ``docker save`` writes, in all its forms.

Reading understands the legacy form (``<v1id>/layer.tar``, repeated layers as symlinks to an
earlier ``layer.tar``, before or after their target in the stream), Docker >= 25's form (an OCI
layout whose ``manifest.json`` points into ``blobs/``, optionally with ``LayerSources``), and
skopeo/podman's (``<hex>.tar`` and ``<hex>.json`` at the top). Only ``manifest.json`` says
which file is a layer. Writing produces the legacy form, which every engine loads.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from tarfile import DIRTYPE, REGTYPE, SYMTYPE
from typing import Any, BinaryIO

from ..errors import (
    AmbiguousImageError,
    DestinationError,
    InputError,
    NotFoundError,
    UsageError,
    VerificationError,
)
from ..layer.streams import CHUNK, HashingReader
from ..layer.tarwriter import BLOCK, RECORD, tar_header
from ..model import Compression, Descriptor, Digest, ImageConfig, Manifest
from ..model import mediatypes as mt
from ..model.jsondoc import (
    ARCHIVE_MANIFEST_LIMIT,
    CONFIG_LIMIT,
    SHOWN_CHOICES,
    counted,
    load_json,
    obj,
    one_line,
    opt_obj,
    opt_str,
    quote,
    req_str,
    show,
    str_list,
    summary,
    wrong,
)
from ..model.mediatypes import detect
from .archive import TarArchive, Tee, image_format
from .base import (
    BlobWriter,
    DestinationProperties,
    Flavor,
    ImageDestination,
    ImageSource,
    SourceProperties,
)
from .fsutil import atomic_output, check_archive_output, private_tmp_dir, write_error
from .reference import Reference, familiar_docker_name, normalize_docker_name
from .tempblob import TempBlob


@dataclass(frozen=True)
class _Entry:
    config: str
    repo_tags: list[str]
    layers: list[str]
    layer_sources: Mapping[str, Descriptor]


class _Parsed:
    """What is learnt once per archive and shared by its images: ``manifest.json``'s entries
    and the descriptors of layer members (an archive of thousands of images sharing layers
    is read in linear time)."""

    def __init__(self, entries: list[_Entry]) -> None:
        self.entries = entries
        self.layers: dict[tuple[str, Digest], Descriptor] = {}  # (member, diff_id) -> it


_PARSED: weakref.WeakKeyDictionary[TarArchive, _Parsed] = weakref.WeakKeyDictionary()


def _parsed(archive: TarArchive) -> _Parsed:
    parsed = _PARSED.get(archive)
    if parsed is None:
        if not archive.exists("manifest.json"):
            if image_format(archive) == "oci-archive":
                path = archive.path or "FILE"
                raise InputError(f"{archive.what} is an OCI archive: use oci-archive:{path}")
            raise InputError(f"{archive.what}: not a docker-archive (no manifest.json)")
        raw = archive.read_small("manifest.json", ARCHIVE_MANIFEST_LIMIT)
        parsed = _PARSED[archive] = _Parsed(_parse_manifest_json(raw, archive.what))
    return parsed


def archive_entries(archive: TarArchive) -> list[_Entry]:
    """The images ``manifest.json`` lists, in its order (parsed once per archive)."""
    return _parsed(archive).entries


class DockerArchiveSource(ImageSource):
    """One image of a docker-archive. ``archive``: an archive already read (then shared: this
    source does not close it) and ``entry``, the image's position in its ``manifest.json``."""

    def __init__(
        self,
        ref: Reference,
        tee: Tee | None = None,
        *,
        archive: TarArchive | None = None,
        entry: int | None = None,
    ) -> None:
        super().__init__(ref)
        # members read with pread, but a pipe is read once; the manifest is ocikit's
        self.properties = SourceProperties(concurrent=not ref.is_stdio, synthesized=True)
        self._owned = archive is None
        self.archive = archive if archive is not None else TarArchive.open(ref.path, tee=tee)
        try:
            self._init(entry)
        except BaseException:
            self.close()
            raise

    def _init(self, index: int | None) -> None:
        what = self.archive.what
        entries = archive_entries(self.archive)
        entry = entries[index] if index is not None else self._select(entries)
        self._tags = list(entry.repo_tags)
        #: the archive member of each layer, as manifest.json names it
        self.layer_members = list(entry.layers)
        self._blobs: dict[str, str] = {}  # digest -> member
        config_raw = self.archive.read_small(entry.config, CONFIG_LIMIT)
        config_digest = Digest.of(config_raw)
        named = _blob_digest(entry.config)
        if named is not None and Digest.of(config_raw, named.algorithm) != named:
            raise VerificationError(
                f"{what}: config {entry.config} does not match its name (its content is "
                f"{Digest.of(config_raw, named.algorithm)})"
            )
        self._blobs[config_digest] = entry.config
        config = ImageConfig.parse(config_raw, f"{what}: {entry.config}")
        diff_ids = config.diff_ids
        if len(diff_ids) != len(entry.layers):
            raise InputError(
                f"{what}: manifest.json lists {counted(len(entry.layers), 'layer')} "
                f"but the config has {counted(len(diff_ids), 'diff_id')}"
            )
        layers = [
            self._layer_descriptor(member, diff_id, entry.layer_sources.get(diff_id))
            for member, diff_id in zip(entry.layers, diff_ids, strict=True)
        ]
        config_desc = Descriptor(mt.DOCKER_CONFIG, config_digest, len(config_raw))
        self._manifest = Manifest.build(config_desc, layers, media_type=mt.DOCKER_MANIFEST)

    def _select(self, entries: list[_Entry]) -> _Entry:
        what = self.archive.what
        if self.ref.index is not None:
            if self.ref.index >= len(entries):
                raise NotFoundError(
                    f"{what}: no image @{self.ref.index}; it has {len(entries)} (0-based)"
                )
            return entries[self.ref.index]
        if self.ref.name is not None:
            want = normalize_docker_name(self.ref.name)
            found = [
                i
                for i, e in enumerate(entries)
                if any(normalize_docker_name(t) == want for t in e.repo_tags)
            ]
            if not found:
                raise NotFoundError(
                    f"{what}: no image named {quote(self.ref.name)}; {_choices(entries)}"
                )
            if len({(entries[i].config, tuple(entries[i].layers)) for i in found}) > 1:
                raise AmbiguousImageError(
                    f"{what}: {len(found)} different images are named {quote(self.ref.name)}; "
                    f"select one as PATH@N: {summary([f'@{i}' for i in found])}"
                )
            return entries[found[0]]
        if len(entries) == 1:
            return entries[0]
        raise AmbiguousImageError(
            f"{what} holds {len(entries)} images; name one: {_choices(entries)}"
        )

    def _layer_descriptor(
        self, member: str, diff_id: Digest, source: Descriptor | None
    ) -> Descriptor:
        if source is not None:
            desc = source
            size = self.archive.size(member)
            if desc.size != size:
                raise InputError(
                    f"{self.archive.what}: {member} is {size} bytes but LayerSources says "
                    f"{desc.size}"
                )
        else:
            desc = self._layer_member(member, diff_id)
        self._blobs[desc.digest] = member
        return desc

    def _layer_member(self, member: str, diff_id: Digest) -> Descriptor:
        """The descriptor of a layer member without ``LayerSources``: learnt once per archive
        (a member shared by every image is looked at, and hashed if compressed, once)."""
        known = _parsed(self.archive).layers
        desc = known.get((member, diff_id))
        if desc is None:
            size = self.archive.size(member)
            compression = detect(self.archive.head(member)) if size else Compression.NONE
            if compression is Compression.NONE:
                desc = Descriptor(mt.DOCKER_LAYER, diff_id, size)
            else:  # a compressed layer.tar, which docker load also accepts: hash it once
                with self.archive.open_member(member) as f:
                    hr = HashingReader(f, what=member)
                    hr.drain()
                desc = Descriptor(mt.docker_layer_type(compression), hr.digest, size)
            known[(member, diff_id)] = desc
        return desc

    def manifest(self) -> Manifest:
        return self._manifest

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        member = self._blobs.get(descriptor.digest)
        if member is None:
            raise NotFoundError(f"{self.archive.what}: no blob {descriptor.digest}")
        actual = self.archive.resolve(member).digest  # known if consumed while streaming
        if actual is not None and actual != descriptor.digest:
            raise VerificationError(
                f"{self.archive.what}: {member}: content digest {actual} does not match "
                f"{descriptor.digest}"
            )
        return self.archive.open_member(member)

    def repo_tags(self) -> list[str]:
        return list(self._tags)

    def close(self) -> None:
        if self._owned:
            self.archive.close()


def _choices(entries: list[_Entry]) -> str:
    """The images to choose from (and each one's tags), summarized past a few."""
    parts = []
    for i, e in enumerate(entries[:SHOWN_CHOICES]):
        tags = [one_line(t, 80) for t in e.repo_tags[:SHOWN_CHOICES]]
        parts.append(f"@{i}" + (f" ({summary(tags, total=len(e.repo_tags))})" if tags else ""))
    return "choices: " + summary(parts, total=len(entries))


def _parse_manifest_json(raw: bytes, what: str) -> list[_Entry]:
    """The entries of ``manifest.json``, every field checked for its type."""
    data = load_json(raw, f"{what}: manifest.json", limit=ARCHIVE_MANIFEST_LIMIT)
    if not isinstance(data, list) or not data:
        raise InputError(f"{what}: manifest.json is not a non-empty list")
    entries = []
    for i, item in enumerate(data):
        where = f"{what}: manifest.json[{i}]"
        item = obj(item, where)
        config = req_str(item, "Config", where)
        layers = str_list(item, "Layers", where)
        if layers is None:
            raise InputError(f"{where}: missing 'Layers'")
        tags = str_list(item, "RepoTags", where) or []
        opt_str(item, "Parent", where)
        sources: dict[str, Descriptor] = {}
        for diff_id, source in (opt_obj(item, "LayerSources", where) or {}).items():
            place = f"{where}: LayerSources[{show(diff_id)}]"
            if not isinstance(source, Mapping):
                wrong(place, None, "a descriptor object", source)
            sources[diff_id] = Descriptor.from_json(source, place)
        entries.append(_Entry(config, list(tags), list(layers), sources))
    return entries


# -- writing -------------------------------------------------------------------------------
#
# The archive is written as the layers come, in the order of their positions: a layer whose
# digest and size are known before its bytes (an uncompressed source layer) goes straight
# into the archive; one whose size is known only at its end (being decompressed) is staged
# in a private directory of $TMPDIR, then copied in and removed as soon as its turn comes,
# so that a serial copy stages at most one layer. Configs, manifest.json and repositories
# come last: docker load, podman, skopeo and ocikit read manifest.json wherever it is, and a
# stream cut short never has one (no loader takes it for an image).


def _v1_ids(diff_ids: Sequence[Digest]) -> list[str]:
    """The directory of each layer position: a chain over the diff_ids, bottom first."""
    ids, parent = [], ""
    for diff_id in diff_ids:
        parent = Digest.of(f"{parent} {diff_id}".encode()).hex
        ids.append(parent)
    return ids


# the end of a stream that failed: a header block that is not one (see ``_TarSink.poison``)
POISON = b"ocikit: this archive is incomplete: the copy that wrote it failed\n".ljust(BLOCK, b"!")


class _TarSink:
    """The archive's bytes: deterministic headers, data pushed or copied, written in pieces
    of at least ``CHUNK``."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._buf = bytearray()
        self._offset = 0

    def header(self, name: str, kind: bytes = REGTYPE, size: int = 0, link: str = "") -> None:
        mode = 0o755 if kind == DIRTYPE else 0o777 if kind == SYMTYPE else 0o644
        self._put(tar_header(name, kind, size, mode, 0, 0, 0, link))

    def data(self, data: bytes | bytearray | memoryview) -> None:
        if len(self._buf) + len(data) < CHUNK:
            self._put(data)
        else:
            self.flush()
            self._out.write(data)
            self._offset += len(data)

    def pad(self, size: int) -> None:
        self._put(bytes(-size % BLOCK))

    def small(self, name: str, data: bytes) -> None:
        self.header(name, size=len(data))
        self._put(data)
        self.pad(len(data))

    def copy(self, f: BinaryIO, size: int, what: str) -> None:
        left = size
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                raise DestinationError(f"{what}: a staged layer shrank")
            self.data(chunk)
            left -= len(chunk)
        self.pad(size)

    def poison(self) -> None:
        """End a stream cut short by a failure with a block no tar reader takes for a header
        (its checksum field is not a number), whatever was written so far: a loader fails
        on it rather than take what went out for an archive. (A stream that merely stopped
        between two members reads as a complete tar: docker 20.10 then loads every
        ``<id>/json`` with its legacy loader, as untagged images.) What is buffered goes."""
        self._buf.clear()
        self._out.write(POISON)
        self._out.flush()

    def finish(self) -> None:
        self._put(bytes(2 * BLOCK))
        self._put(bytes(-self._offset % RECORD))
        self.flush()

    def flush(self) -> None:
        if self._buf:
            self._out.write(self._buf)
            self._buf = bytearray()

    def _put(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data
        self._offset += len(data)
        if len(self._buf) >= CHUNK:
            self.flush()


class _StreamedLayer(BlobWriter):
    """A layer written straight into the archive: its ``layer.tar`` header (with the size
    announced) is out already; exactly that many bytes must follow."""

    def __init__(self, dest: DockerArchiveDestination, diff_ids: tuple[Digest, ...], size: int):
        self._dest, self._diff_ids, self._size = dest, diff_ids, size
        self._written = 0
        self.file = self  # type: ignore[assignment]

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if self._written + n > self._size:
            raise DestinationError(
                f"{self._dest.ref}: layer {self._diff_ids[-1]} is longer than its "
                f"{self._size} bytes"
            )
        self._dest.sink().data(data)
        self._written += n
        return n

    def _commit(self, digest: Digest) -> None:
        if digest != self._diff_ids[-1] or self._written != self._size:
            raise DestinationError(
                f"{self._dest.ref}: layer {self._diff_ids[-1]}: got {digest}, "
                f"{self._written} of {self._size} bytes"
            )
        self._dest.sink().pad(self._size)
        self._dest.placed(self._diff_ids)
        self._dest.release()

    def _abort(self) -> None:
        self._dest.broken = True  # the archive ends inside this member: it is lost
        self._dest.release()


class DockerArchiveDestination(ImageDestination):
    """Writes the legacy ``docker save`` form (``<v1id>/layer.tar``, ``<imageid>.json``,
    ``manifest.json``, ``repositories``), streamed; ``docker load`` gives the same image ID."""

    #: a layer that cannot go into the archive at once is staged: several may be written
    properties = DestinationProperties(flavor=Flavor.DOCKER, concurrent=True)
    #: the archive is written as the copy goes (False: staged whole, then ``_write_tar``)
    _streams = True
    #: the archive goes to the file or stdout ref names (False: to an engine)
    _writes_output = True

    def __init__(self, ref: Reference, additional_tags: Sequence[str] = ()) -> None:
        super().__init__(ref)
        if ref.index is not None:
            raise UsageError(f"{ref}: @N selects an image to read; it cannot name one to write")
        if self._writes_output:
            check_archive_output(ref, ref.path, ref.is_stdio, "; name a file in it")
        self._tags = [ref.name] if ref.name else []
        self._tags += [_check_tag(t) for t in additional_tags]
        #: a layer that waits is staged in a private directory of $TMPDIR, reclaimed if
        #: this process dies
        self.staging_dir = private_tmp_dir("docker-archive", ref.path)
        self.staging = self.staging_dir.path
        self._have: set[Digest] = set()  # blobs in the archive or staged
        self._staged: dict[Digest, str] = {}  # staged, not in the archive yet: digest -> file
        self._waiting: list[tuple[Digest, ...]] = []  # staged layers whose place is known
        self._paths: set[str] = set()  # members written
        self._layer_at: dict[Digest, str] = {}  # diff_id -> the layer.tar that holds it
        self._busy = False  # a thread is writing the archive
        self._cond = threading.Condition()
        self._output = contextlib.ExitStack()
        self._sink: _TarSink | None = None
        self.broken = False
        self._images: list[tuple[Manifest, ImageConfig, list[str]]] = []
        self._manifest_json: list[dict[str, Any]] = []
        self._repositories: dict[str, dict[str, str]] = {}

    def layer_compression(self, source: Compression, requested: Compression | None) -> Compression:
        if source is Compression.SQUASHFS:
            raise UsageError(
                f"{self.ref}: Docker cannot load squashfs layers; copy the tar image instead"
            )
        if requested not in (None, Compression.NONE):
            raise UsageError("docker-archive layers are stored uncompressed; drop the compression")
        return Compression.NONE

    def has_blob(self, digest: Digest) -> bool:
        return digest in self._have

    def new_blob(self) -> BlobWriter:
        return self._staged_blob(None)

    def _staged_blob(self, chain: tuple[Digest, ...] | None) -> BlobWriter:
        """A blob written in the staging directory (``chain``: a layer's place, if known)."""

        def store(path: str, digest: Digest, size: int) -> None:
            del size
            final = os.path.join(self.staging, digest.replace(":", "-"))
            try:
                os.replace(path, final)
            except OSError as e:
                raise write_error(self.staging_dir.what, e) from None
            self.staged(digest, final, chain)

        return TempBlob(self.staging, self.staging_dir.what, store)

    def new_layer_blob(
        self, diff_ids: Sequence[Digest], digest: Digest | None, size: int | None
    ) -> BlobWriter:
        chain = tuple(diff_ids)
        if self._streams and digest == chain[-1] and size is not None:
            with self._cond:
                take = (
                    not self._busy
                    and not self.broken
                    and chain[-1] not in self._layer_at
                    and self._turn(chain)
                )
                self._busy = self._busy or take
            if take:
                try:
                    path = self._open_position(chain)
                    self.sink().header(path, size=size)
                except BaseException:
                    self.broken = True
                    self.release()
                    raise
                return _StreamedLayer(self, chain, size)
        return self._staged_blob(chain)

    # -- the archive, written by one thread at a time (the one that set ``_busy``) ----------

    def sink(self) -> _TarSink:
        if self._sink is None:
            if self.ref.is_stdio:
                out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=CHUNK)
                self._output.callback(out.close)
                self._sink = _TarSink(out)  # a reader gone: BrokenPipeError, as the CLI expects
            else:
                self._sink = _TarSink(self._output.enter_context(atomic_output(self.ref.path)))
        return self._sink

    def _turn(self, chain: tuple[Digest, ...]) -> bool:
        """Whether every position below this layer's is in the archive, or can be written
        now (a layer seen already: a symlink)."""
        ids = _v1_ids(chain)
        return all(
            f"{v1id}/layer.tar" in self._paths or diff_id in self._layer_at
            for v1id, diff_id in zip(ids[:-1], chain[:-1], strict=True)
        )

    def _open_position(self, chain: tuple[Digest, ...]) -> str:
        """Write the positions below this layer's (symlinks to layers written), then its
        directory; returns the path of its ``layer.tar``, to be written next."""
        ids = _v1_ids(chain)
        sink = self.sink()
        for i, (v1id, diff_id) in enumerate(zip(ids, chain, strict=True)):
            path = f"{v1id}/layer.tar"
            if path in self._paths:
                continue
            sink.header(v1id, DIRTYPE)
            sink.small(f"{v1id}/VERSION", b"1.0")
            v1 = {"id": v1id, **({"parent": ids[i - 1]} if i else {})}
            sink.small(f"{v1id}/json", json.dumps(v1).encode())
            self._paths.add(path)
            if i == len(chain) - 1:
                return path
            sink.header(path, SYMTYPE, link=f"../{self._layer_at[diff_id]}")
        raise AssertionError("the position was written already")  # pragma: no cover

    def placed(self, chain: tuple[Digest, ...]) -> None:
        """The layer at the top of ``chain`` is in the archive."""
        path = f"{_v1_ids(chain)[-1]}/layer.tar"
        with self._cond:
            self._have.add(chain[-1])
            self._layer_at.setdefault(chain[-1], path)

    def _write_staged(self, chain: tuple[Digest, ...]) -> None:
        digest = chain[-1]
        staged = self._staged[digest]
        if f"{_v1_ids(chain)[-1]}/layer.tar" not in self._paths:  # else: written meanwhile
            path = self._open_position(chain)
            if digest in self._layer_at:  # written meanwhile, at another position
                self.sink().header(path, SYMTYPE, link=f"../{self._layer_at[digest]}")
            else:
                with open(staged, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    self.sink().header(path, size=size)
                    self.sink().copy(f, size, self.staging_dir.what)
                self.placed(chain)
        with self._cond:
            del self._staged[digest]
        with contextlib.suppress(OSError):
            os.unlink(staged)

    def staged(self, digest: Digest, path: str, chain: tuple[Digest, ...] | None) -> None:
        """A staged blob is complete: into the archive now if its turn has come."""
        with self._cond:
            self._have.add(digest)
            self._staged[digest] = path
            if chain is None or digest != chain[-1] or not self._streams:
                return  # placed by put_manifest (or _write_tar), if a layer
            self._waiting.append(chain)
            if self._busy or self.broken:
                return
            self._busy = True
        self.release()

    def release(self) -> None:
        """Done writing: first the staged layers whose turn has come, then let go."""
        while True:
            with self._cond:
                ready = None
                if not self.broken:
                    ready = next((c for c in self._waiting if self._turn(c)), None)
                if ready is None:
                    self._busy = False
                    self._cond.notify_all()
                    return
                self._waiting.remove(ready)
            try:
                self._write_staged(ready)
            except BaseException:
                with self._cond:
                    self.broken = True
                    self._busy = False
                    self._cond.notify_all()
                raise

    def _acquire(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._busy)
            if self.broken:
                raise DestinationError(f"{self.ref}: a layer failed while it was written")
            self._busy = True

    # -- the image, then the archive's end ---------------------------------------------------

    def put_manifest(self, manifest: Manifest, config: ImageConfig, tags: Sequence[str]) -> None:
        names = [familiar_docker_name(t) for t in (self._tags or list(tags))]
        self._images.append((manifest, config, names))
        if self._streams:
            self._acquire()
            try:
                self._write_image(manifest, config, names)
            except BaseException:
                self.broken = True
                raise
            finally:
                self.release()

    def _write_image(self, manifest: Manifest, config: ImageConfig, names: list[str]) -> None:
        """The image's positions not written yet, in order, then its config."""
        diff_ids = list(config.diff_ids)
        ids = _v1_ids(diff_ids)
        for i, layer in enumerate(manifest.layers):
            chain = tuple(diff_ids[: i + 1])
            if f"{ids[i]}/layer.tar" in self._paths:
                continue
            if chain in self._waiting:
                self._waiting.remove(chain)
            if diff_ids[i] in self._layer_at:
                self._open_position(chain)  # then a symlink, below
                link = f"../{self._layer_at[diff_ids[i]]}"
                self.sink().header(f"{ids[i]}/layer.tar", SYMTYPE, link=link)
                continue
            if layer.digest != diff_ids[i] or layer.digest not in self._staged:
                raise DestinationError(f"{self.ref}: layer {layer.digest} was not written")
            self._write_staged(chain)
        config_name = f"{config.digest.hex}.json"
        if config_name not in self._paths:
            self.sink().small(config_name, config.raw)
            self._paths.add(config_name)
        self._manifest_json.append(
            {
                "Config": config_name,
                "RepoTags": names or None,
                "Layers": [f"{v1id}/layer.tar" for v1id in ids],
            }
        )
        for tag in names:
            repo, _, t = tag.rpartition(":")
            self._repositories.setdefault(repo, {})[t] = ids[-1] if ids else ""

    def _write_end(self) -> None:
        sink = self.sink()
        sink.small("manifest.json", json.dumps(self._manifest_json).encode())
        if self._repositories:
            sink.small("repositories", json.dumps(self._repositories).encode())
        sink.finish()

    def _write_tar(self, out: BinaryIO) -> None:
        """The whole archive to ``out`` at once (a destination that does not stream:
        everything was staged)."""
        self._sink = _TarSink(out)
        for image in self._images:
            self._write_image(*image)
        self._write_end()

    def commit(self) -> None:
        try:
            self._acquire()
            self._write_end()
            self._output.close()  # the file appears (renamed into place, synced)
        except BaseException:
            self.abort()
            raise
        finally:
            self.staging_dir.remove()

    def abort(self) -> None:
        self.broken = True
        try:
            if self._sink is not None and self.ref.is_stdio:  # a file never appears
                with contextlib.suppress(Exception):
                    self._sink.poison()
            aborted = DestinationError(f"{self.ref}: copy aborted")
            with contextlib.suppress(Exception):
                self._output.__exit__(DestinationError, aborted, None)  # the partial file goes
        finally:
            self.staging_dir.remove()


def _check_tag(tag: str) -> str:
    from .reference import _DOCKER_NAME_RE

    full = tag if ":" in tag.rsplit("/", 1)[-1] else tag + ":latest"
    if not _DOCKER_NAME_RE.match(full):
        raise UsageError(f"invalid tag {quote(tag)}: expected NAME:TAG")
    return full


_BLOB_PATH_RE = re.compile(r"^(?:\./)?blobs/(sha256|sha512)/([0-9a-f]{64,128})$")


def _blob_digest(member: str) -> Digest | None:
    """The digest a content-addressed member (``blobs/ALGO/HEX``) claims, else None."""
    m = _BLOB_PATH_RE.match(member)
    return Digest(f"{m.group(1)}:{m.group(2)}") if m else None
