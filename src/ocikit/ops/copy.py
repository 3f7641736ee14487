"""``copy``: the one place that moves an image between any two transports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import UsageError
from ..layer.analyze import Edit
from ..layer.compress import check_level
from ..layer.transcode import TranscodeResult, transcode
from ..model import Compression, Descriptor, Digest, Manifest
from ..model import mediatypes as mt
from ..transports import (
    Image,
    ImageDestination,
    Layer,
    Reference,
    RegistryOptions,
    as_reference,
    open_destination,
    open_image,
)
from ..transports.base import BlobWriter
from .progress import NullProgress, ProgressReporter
from .repair import RepairPlan, plan_repair, repaired_config, rewrite_layer
from .speculate import Speculator


@dataclass(frozen=True)
class CopyResult:
    source: str
    destination: str
    manifest_digest: Digest
    config_digest: Digest
    media_type: str
    layers: list[Descriptor]
    tags: list[str] = field(default_factory=list)
    bytes_read: int = 0
    repaired: list[dict[str, Any]] | None = None  # with repair: per rewritten layer, what changed

    def to_json(self) -> dict[str, Any]:
        out = {
            "source": self.source,
            "destination": self.destination,
            "digest": self.manifest_digest,
            "config_digest": self.config_digest,
            "media_type": self.media_type,
            "tags": self.tags,
            "layers": [d.to_json() for d in self.layers],
        }
        if self.repaired is not None:
            out["repaired"] = self.repaired
        return out


def copy(
    src: str | Reference,
    dst: str | Reference,
    *,
    dest_compress_format: str | Compression | None = None,
    dest_compress_level: int | None = None,
    platform: str | None = None,
    additional_tags: Sequence[str] = (),
    quiet: bool = True,
    progress: ProgressReporter | None = None,
    repair: bool = False,
    drop_unsafe: bool = False,
    src_registry: RegistryOptions | None = None,
    dest_registry: RegistryOptions | None = None,
) -> CopyResult:
    """Copy one image from ``src`` to ``dst`` (reference strings, skopeo syntax).

    Every blob read is verified (digest, size, diff_id). The destination changes only when
    the whole image has been written: on error it is left as it was.

    ``repair``: layers with duplicate paths, entries through or over symlinked directories
    or absolute names are rewritten (docs/CHECK.md); an entry that cannot be repaired safely
    raises UnsafeInputError unless ``drop_unsafe``, which drops it.

    ``src_registry``/``dest_registry``: credentials, TLS and (destination) repositories to
    mount blobs from, for ``docker://`` references; a source in another repository of the
    destination's registry is a mount candidate anyway.
    """
    if drop_unsafe and not repair:
        raise UsageError("--drop-unsafe only applies with --repair")
    del quiet  # the library never prints; the CLI passes a progress reporter
    src_ref, dst_ref = as_reference(src), as_reference(dst)
    if src_ref.is_stdio and dst_ref.is_stdio and src_ref == dst_ref:
        raise UsageError("source and destination cannot both be the same stream")
    requested = (
        Compression.parse(dest_compress_format)
        if isinstance(dest_compress_format, str)
        else dest_compress_format
    )
    if dest_compress_level is not None:
        check_level(requested or Compression.GZIP, dest_compress_level)
    progress = progress or NullProgress()
    dest = open_destination(dst_ref, additional_tags, _mounting(src_ref, dst_ref, dest_registry))
    speculator = None
    streamed = src_ref.transport == "docker-daemon" or (
        src_ref.transport == "docker-archive" and src_ref.is_stdio
    )
    if streamed and not repair:
        target = dest.layer_compression(Compression.NONE, requested)
        if target is not Compression.NONE:
            speculator = Speculator(dest, target, dest_compress_level, progress)
            progress.begin(0, "reading standard input")
    try:
        with open_image(src_ref, platform, tee=speculator, registry=src_registry) as image:
            plan = (
                plan_repair(image, drop_unsafe=drop_unsafe, progress=progress) if repair else None
            )
            copier = _Copier(
                image, dest, requested, dest_compress_level, progress, speculator, plan
            )
            result = copier.run()
            config_digest = result.config.digest
        if speculator is not None:
            speculator.discard()
        dest.commit()
    except BaseException:
        if speculator is not None:
            speculator.discard()
        dest.abort()
        raise
    finally:
        progress.end()
    return CopyResult(
        source=str(src_ref),
        destination=str(dst_ref),
        manifest_digest=result.digest,
        config_digest=config_digest,
        media_type=result.media_type,
        layers=list(result.layers),
        tags=_tags(dst_ref, additional_tags),
        repaired=plan.summary() if plan is not None else None,
    )


def _mounting(
    src: Reference, dst: Reference, options: RegistryOptions | None
) -> RegistryOptions | None:
    """The source's repository as a mount candidate when it is on the destination's registry."""
    if src.transport != "docker" or dst.transport != "docker":
        return options
    if src.path.partition("/")[0] != dst.path.partition("/")[0] or src.path == dst.path:
        return options
    options = options or RegistryOptions()
    return replace(options, mount_from=(*options.mount_from, src.path))


def _tags(ref: Reference, additional: Sequence[str]) -> list[str]:
    return ([ref.name] if ref.name else []) + list(additional)


class _Copier:
    """Copies one image's blobs, each once, then its manifest."""

    def __init__(
        self,
        image: Image,
        dest: ImageDestination,
        requested: Compression | None,
        level: int | None,
        progress: ProgressReporter,
        speculator: Speculator | None,
        plan: RepairPlan | None = None,
    ) -> None:
        self.image = image
        self.plan = plan
        self.dest = dest
        self.requested = requested
        self.level = level
        self.progress = progress
        self.speculator = speculator
        self._done: dict[tuple[Digest, Compression], Descriptor] = {}
        known = dest.known_layers(image.config.digest)
        self._known = list(known) if known and len(known) == len(image.layers) else None

    def run(self) -> Manifest:
        image, dest = self.image, self.dest
        self.progress.begin(sum(layer.descriptor.size for layer in image.layers), "copying")
        layers = []
        diff_ids: dict[int, str] = {}
        for i, layer in enumerate(image.layers):
            self.progress.step(
                f"layer {i + 1}/{len(image.layers)} {layer.descriptor.digest.hex[:12]}"
            )
            target = dest.layer_compression(layer.compression, self.requested)
            if self.plan is not None and i in self.plan.edits:
                desc, diff_id = self._rewrite_layer(layer, target, self.plan.edits[i])
                layers.append(desc)
                diff_ids[i] = diff_id
                continue
            key = (layer.descriptor.digest, target)
            if key not in self._done:  # a layer repeated in one image is copied once
                self._done[key] = self._reuse(i, target) or self._copy_layer(layer, target)
            else:
                self.progress.advance(layer.descriptor.size)
            layers.append(self._done[key])
        config = repaired_config(image.config, diff_ids) if diff_ids else image.config
        config_desc = _put_bytes(dest, config.raw, _config_type(image, dest))
        manifest = _manifest_for(image, dest, config_desc, layers)
        dest.put_manifest(manifest, config, image.repo_tags())
        self.config = config
        return manifest

    def _rewrite_layer(
        self, layer: Layer, target: Compression, edits: dict[int, Edit]
    ) -> tuple[Descriptor, Digest]:
        writer = self.dest.new_blob()
        try:
            result = rewrite_layer(
                self.image, layer, edits, writer.file, target, self.level, self.progress
            )
        except BaseException:
            writer.abort()
            raise
        writer.commit(result.digest)
        media_type = _layer_type(self.dest, target)
        return Descriptor(media_type, result.digest, result.size), result.diff_id

    def _reuse(self, i: int, target: Compression) -> Descriptor | None:
        """The same image's layer already at the destination, in the compression wanted."""
        if self._known is None:
            return None
        known, src = self._known[i], self.image.layers[i].descriptor
        if mt.layer_compression(known.media_type) is not target:
            return None
        self.progress.advance(src.size)
        return Descriptor(_layer_type(self.dest, target), known.digest, known.size, src.annotations)

    def _copy_layer(self, layer: Layer, target: Compression) -> Descriptor:
        src, dest = layer.descriptor, self.dest
        media_type = _layer_type(dest, target)
        if target is layer.compression and dest.has_blob(src.digest):
            self.progress.advance(src.size)
            return Descriptor(media_type, src.digest, src.size, src.annotations)
        taken = self._speculated(layer, target)
        if taken is not None:
            result, writer = taken
        else:
            writer = dest.new_blob()
            try:
                with self.image.source.open_blob(src) as raw:
                    result = transcode(
                        raw,
                        src,
                        layer.compression,
                        writer.file,
                        target,
                        expected_diff_id=layer.diff_id,
                        level=self.level,
                        progress=self.progress.advance,
                    )
            except BaseException:
                writer.abort()
                raise
        writer.commit(result.digest)
        return Descriptor(media_type, result.digest, result.size, src.annotations)

    def _speculated(
        self, layer: Layer, target: Compression
    ) -> tuple[TranscodeResult, BlobWriter] | None:
        """The blob compressed while the pipe was read, verified like any other."""
        spec = self.speculator
        if spec is None or target is not spec.target:
            return None
        return spec.take_layer(layer)


def _put_bytes(dest: ImageDestination, data: bytes, media_type: str) -> Descriptor:
    digest = Digest.of(data)
    if not dest.has_blob(digest):
        writer = dest.new_blob()
        try:
            writer.file.write(data)
            writer.commit(digest)
        except BaseException:
            writer.abort()
            raise
    return Descriptor(media_type, digest, len(data))


def _layer_type(dest: ImageDestination, compression: Compression) -> str:
    if dest.flavor == "docker":
        return mt.docker_layer_type(compression)
    return mt.oci_layer_type(compression)


def _config_type(image: Image, dest: ImageDestination) -> str:
    if dest.flavor == "docker":
        return mt.DOCKER_CONFIG
    current = image.manifest.config.media_type
    return mt.OCI_CONFIG if current == mt.DOCKER_CONFIG else current


def _manifest_for(
    image: Image, dest: ImageDestination, config: Descriptor, layers: list[Descriptor]
) -> Manifest:
    """The source manifest's exact bytes when nothing changed, else a canonical new one."""
    src = image.manifest
    media_type = mt.DOCKER_MANIFEST if dest.flavor == "docker" else mt.OCI_MANIFEST
    if src.media_type == media_type and src.config == config and list(src.layers) == layers:
        return src
    return Manifest.build(config, layers, src.annotations, media_type)
