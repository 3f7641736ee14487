"""``export-layers``: the files a build farm uploads, from any ``docker save`` (or any image).

Per image of the source: ``<layer_id>.tar.gz`` for each layer (the layer tar, gzip), the config
as ``<config hex>.json`` (bytes unchanged), and for all of them ``digests.json`` and a legacy
``manifest.json`` whose ``Layers[i]`` is ``<layer_id>/layer.tar``. ``layer_id`` is the legacy
directory name of the layer when the archive has one, else the diff_id's hex.

From a pipe, every member that looks like a tar is compressed while it streams by (the
speculator of ``copy``), so the export is one pass over the input. Everything is written into
a hidden staging directory inside OUTDIR and moved into place only when the whole export
succeeded; ``manifest.json`` comes last, so its presence means the export is complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..errors import DestinationError, InputError
from ..layer.compress import check_level
from ..layer.transcode import transcode
from ..model import Compression, Digest, canonical_json
from ..model.jsondoc import load_json
from ..transports import Image, Layer, Reference, RegistryOptions, as_reference, open_image
from ..transports.archive import TarArchive, normalize
from ..transports.base import BlobWriter
from ..transports.docker_archive import DockerArchiveSource, archive_entries
from ..transports.fsutil import HIDDEN_TMP_PREFIX, PrivateDir, fsync_dir, reclaim, write_error
from ..transports.tempblob import Durability, TempBlob
from .progress import NullProgress, ProgressReporter
from .speculate import Speculator

MANIFEST = "manifest.json"
DIGESTS = "digests.json"
_LEGACY_LAYER = re.compile(r"^([^/]+)/layer\.tar$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
MAX_V2METADATA = 1 << 20


@dataclass(frozen=True)
class ExportedLayer:
    layer_id: str
    diff_id: Digest
    digest: str  # as digests.json says it: the file's sha256 hex, or v2metadata's Digest
    source: str  # v2metadata's SourceRepository, or ""
    file: str  # in OUTDIR
    size: int  # of the file

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer_id": self.layer_id,
            "diff_id": self.diff_id,
            "digest": self.digest,
            "source": self.source,
            "file": self.file,
            "size": self.size,
        }


@dataclass(frozen=True)
class ExportedImage:
    config: str  # file name in OUTDIR
    config_digest: Digest
    repo_tags: list[str]
    layers: list[ExportedLayer]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "config_digest": self.config_digest,
            "repo_tags": self.repo_tags,
            "layers": [layer.to_dict() for layer in self.layers],
        }


@dataclass(frozen=True)
class ExportResult:
    source: str
    outdir: str
    images: list[ExportedImage]
    files: list[str] = field(default_factory=list)  # written into OUTDIR, in this order

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "outdir": self.outdir,
            "images": [image.to_dict() for image in self.images],
            "files": self.files,
        }


def export_layers(
    source: str | Reference | BinaryIO,
    outdir: str | os.PathLike[str],
    *,
    level: int | None = None,
    v2metadata: str | os.PathLike[str] | None = None,
    platform: str | None = None,
    progress: ProgressReporter | None = None,
    registry: RegistryOptions | None = None,
) -> ExportResult:
    """Write the build-farm artifacts of every image of ``source`` into ``outdir``.

    ``source``: a reference (``docker-archive:-`` reads stdin; a docker-archive without a
    name or ``@N`` exports all its images) or a readable binary stream of a docker-archive.
    ``level``: gzip level (0-3 isal on every core, the default 2; 4-9 zlib on one).
    ``v2metadata``: docker's ``v2metadata-by-diffid`` directory (or its ``sha256``
    subdirectory); a layer with a record there takes ``digest`` and ``source`` from it.
    """
    level = check_level(Compression.GZIP, level)
    progress = progress or NullProgress()
    out = os.fspath(outdir)
    metadata = os.fspath(v2metadata) if v2metadata is not None else None
    if metadata is not None and not os.path.isdir(metadata):
        raise InputError(f"{metadata}: not a directory")
    staging = _Staging(out)
    label = str(as_reference(source)) if isinstance(source, str | Reference) else "stream"
    try:
        with _images(source, platform, staging, level, progress, registry) as (images, speculator):
            exporter = _Exporter(staging, level, progress, speculator, metadata)
            for image, layer_ids in images:
                exporter.add(image, layer_ids)
            names = exporter.finish()
        files = staging.publish(names)
    except BaseException:
        staging.discard()
        raise
    finally:
        progress.end()
    return ExportResult(label, out, exporter.images, files)


# -- where the images come from -------------------------------------------------------------


@contextlib.contextmanager
def _images(
    source: str | Reference | BinaryIO,
    platform: str | None,
    staging: _Staging,
    level: int,
    progress: ProgressReporter,
    registry: RegistryOptions | None = None,
) -> Iterator[tuple[list[tuple[Image, list[str]]], Speculator | None]]:
    """Every image to export with its layer ids; a speculator if the input was a pipe."""
    speculator: Speculator | None = None
    archive: TarArchive | None = None
    images: list[tuple[Image, list[str]]] = []
    try:
        if isinstance(source, str | Reference):
            ref = as_reference(source)
            if not ref.properties.docker_save:
                image = open_image(ref, platform, registry=registry)
                try:
                    image.require_tar_layers("export-layers")
                except BaseException:
                    image.close()
                    raise
                images.append((image, [str(layer.diff_id.hex) for layer in _layers(image)]))
                yield images, None
                return
            if ref.is_stdio:
                speculator = Speculator(staging, Compression.GZIP, level, progress)
                progress.begin(0, "reading standard input")
            archive = TarArchive.open(ref.path, tee=speculator)
        else:
            ref = as_reference("docker-archive:-")
            speculator = Speculator(staging, Compression.GZIP, level, progress)
            progress.begin(0, "reading the stream")
            archive = TarArchive.from_stream(source, "stream", speculator)
        if ref.name is not None or ref.index is not None:
            sources = [DockerArchiveSource(ref, archive=archive)]
        else:
            count = len(archive_entries(archive))
            sources = [DockerArchiveSource(ref, archive=archive, entry=i) for i in range(count)]
        for src in sources:
            image = Image(src)
            ids = [
                _layer_id(member, layer)
                for member, layer in zip(src.layer_members, _layers(image), strict=True)
            ]
            images.append((image, ids))
        yield images, speculator
    finally:
        for image, _ids in images:
            image.source.close()
        if speculator is not None:
            speculator.discard()
        if archive is not None:
            archive.close()


def _layers(image: Image) -> list[Layer]:
    for i, layer in enumerate(image.layers):
        if layer.diff_id is None:  # pragma: no cover - Image checks the counts
            raise InputError(f"{image.source.ref}: layer {i} has no diff_id")
    return list(image.layers)


def _layer_id(member: str, layer: Layer) -> str:
    """The legacy directory of ``<id>/layer.tar``, else the diff_id's hex."""
    m = _LEGACY_LAYER.match(normalize(member) or "")
    if m and _SAFE_ID.match(m.group(1)) and m.group(1) not in (".", ".."):
        return m.group(1)
    assert layer.diff_id is not None
    return layer.diff_id.hex


# -- the export itself -----------------------------------------------------------------------


@dataclass
class _Blob:
    path: str  # in the staging directory
    digest: Digest
    size: int


class _Exporter:
    def __init__(
        self,
        staging: _Staging,
        level: int,
        progress: ProgressReporter,
        speculator: Speculator | None,
        v2metadata: str | None,
    ) -> None:
        self.staging = staging
        self.level = level
        self.progress = progress
        self.speculator = speculator
        self.v2metadata = v2metadata
        self.images: list[ExportedImage] = []
        self._blobs: dict[Digest, _Blob] = {}  # diff_id -> its gzip file
        self._ids: dict[str, Digest] = {}  # layer_id -> diff_id
        self._files: list[str] = []  # layer files and configs, in order
        self._configs: set[str] = set()  # config files written
        self._manifest: list[dict[str, Any]] = []
        self._digests: list[dict[str, Any]] = []

    def add(self, image: Image, layer_ids: list[str]) -> None:
        if self.speculator is None:  # from a pipe, the layers were compressed while read
            todo = [layer for layer in image.layers if layer.diff_id not in self._blobs]
            self.progress.begin(sum(layer.descriptor.size for layer in todo), "exporting")
        exported = []
        digests: dict[str, Any] = {}
        for i, (layer, layer_id) in enumerate(zip(image.layers, layer_ids, strict=True)):
            self.progress.step(f"layer {i + 1}/{len(image.layers)} {layer_id[:12]}")
            diff_id = layer.diff_id
            assert diff_id is not None
            known = self._ids.get(layer_id)
            if known is not None and known != diff_id:
                raise InputError(
                    f"{image.source.ref}: layer id {layer_id} names two different layers "
                    f"({known} and {diff_id})"
                )
            blob = self._blobs.get(diff_id)
            if blob is None:
                blob = self._blobs[diff_id] = self._compress(image, layer)
            name = f"{layer_id}.tar.gz"
            if known is None:
                self._ids[layer_id] = diff_id
                self.staging.link(blob.path, name)
                self._files.append(name)
            digest, source = self._registry_record(diff_id) or (blob.digest.hex, "")
            digests[str(diff_id)] = {"digest": digest, "source": source, "layer_id": layer_id}
            exported.append(ExportedLayer(layer_id, diff_id, digest, source, name, blob.size))
        config_digest = image.config.digest
        config_name = f"{config_digest.hex}.json"
        if config_name not in self._configs:
            self.staging.write(config_name, image.config_bytes)
            self._files.append(config_name)
            self._configs.add(config_name)
        tags = image.repo_tags()
        self._manifest.append(
            {
                "Config": config_name,
                "RepoTags": tags or None,
                "Layers": [f"{layer_id}/layer.tar" for layer_id in layer_ids],
            }
        )
        self._digests.append(digests)
        self.images.append(ExportedImage(config_name, config_digest, tags, exported))

    def finish(self) -> list[str]:
        """Write digests.json and manifest.json; every file to publish, in order."""
        self.staging.write(DIGESTS, json.dumps(self._digests).encode())
        self.staging.write(MANIFEST, canonical_json(self._manifest, ascii_only=True))
        return [*self._files, DIGESTS, MANIFEST]

    def _compress(self, image: Image, layer: Layer) -> _Blob:
        taken = self.speculator.take_layer(layer) if self.speculator is not None else None
        if taken is not None:  # committed, verified
            result, writer = taken
        else:
            desc = layer.descriptor
            with self.staging.new_blob() as writer, image.source.open_blob(desc) as raw:
                result = transcode(
                    raw,
                    desc,
                    layer.compression,
                    writer.file,
                    Compression.GZIP,
                    expected_diff_id=layer.diff_id,
                    level=self.level,
                    progress=self.progress.advance,
                )
                writer.commit(result.digest)
        assert isinstance(writer, TempBlob)
        return _Blob(writer.path, result.digest, result.size)

    def _registry_record(self, diff_id: Digest) -> tuple[str, str] | None:
        """``(Digest, SourceRepository)`` of docker's first v2metadata record for the layer."""
        if self.v2metadata is None:
            return None
        for path in (
            os.path.join(self.v2metadata, diff_id.algorithm, diff_id.hex),
            os.path.join(self.v2metadata, diff_id.hex),
        ):
            try:
                with open(path, "rb") as f:
                    raw = f.read(MAX_V2METADATA + 1)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:
                raise InputError(f"{path}: {e.strerror}") from None
            try:
                records = load_json(raw, path, limit=MAX_V2METADATA)
            except InputError:
                records = None
            if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
                raise InputError(f"{path}: not a v2metadata file (a JSON list of records)")
            if not records:
                return None
            first = records[0]
            digest, source = first.get("Digest"), first.get("SourceRepository")
            if not isinstance(digest, str) or not isinstance(source, str):
                raise InputError(f"{path}: the record has no Digest or SourceRepository")
            return digest, source
        return None


# -- the staging directory ---------------------------------------------------------------------


class _Staging:
    """A hidden directory inside OUTDIR (so that moving files out of it is a rename):
    ``.ocikit-tmp-export-*``, locked while the export runs, so that one killed is
    reclaimed by the next export into OUTDIR (or ``ocikit gc OUTDIR``)."""

    def __init__(self, outdir: str) -> None:
        self.outdir = outdir
        self._made = not os.path.lexists(outdir)  # removed again if the export fails
        try:
            os.makedirs(outdir, exist_ok=True)
            if not stat.S_ISDIR(os.stat(outdir).st_mode):
                raise DestinationError(f"{outdir}: not a directory")
        except FileExistsError:
            raise DestinationError(f"{outdir}: not a directory") from None
        except OSError as e:
            raise write_error(outdir, e) from None
        reclaim(outdir, (HIDDEN_TMP_PREFIX,))
        try:
            self._dir = PrivateDir(outdir, f"{HIDDEN_TMP_PREFIX}export-", outdir)
        except BaseException:
            self._remove_outdir()
            raise
        self.path = self._dir.path
        self._durability = Durability(outdir)  # layers' fsyncs, off the hot path

    def new_blob(self) -> BlobWriter:
        """A blob in the staging directory; at commit flushed, then fsynced on the I/O
        thread. It keeps its temporary name: only its links are published."""
        return TempBlob(self.path, self.outdir, durable=self._durability, prefix=".blob-")

    def link(self, blob: str, name: str) -> None:
        """``name`` in the staging directory: the blob's file under another name."""
        target = os.path.join(self.path, name)
        try:
            try:
                os.link(blob, target)
            except OSError as e:  # a file system without hard links
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                shutil.copyfile(blob, target)
        except OSError as e:
            raise write_error(self.outdir, e) from None

    def write(self, name: str, data: bytes) -> None:
        path = os.path.join(self.path, name)
        try:
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(path, 0o644)
        except OSError as e:
            raise write_error(self.outdir, e) from None

    def publish(self, names: list[str]) -> list[str]:
        """Move ``names`` into OUTDIR in order (an earlier export's manifest.json and
        digests.json are removed first: no stale manifest ever describes new files)."""
        try:
            self._durability.wait()
            for stale in (MANIFEST, DIGESTS):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.outdir, stale))
            fsync_dir(self.path)
            for name in names:
                if name == DIGESTS:  # every layer and config is in place before the metadata
                    fsync_dir(self.outdir)
                os.replace(os.path.join(self.path, name), os.path.join(self.outdir, name))
            fsync_dir(self.outdir)
        except OSError as e:
            raise write_error(self.outdir, e) from None
        finally:
            self.discard(failed=False)
        return names

    def discard(self, failed: bool = True) -> None:
        self._durability.settle()
        self._dir.remove()
        if failed:
            self._remove_outdir()

    def _remove_outdir(self) -> None:
        if self._made:
            with contextlib.suppress(OSError):
                os.rmdir(self.outdir)  # only if empty
