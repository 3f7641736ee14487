"""``copy``: the one place that moves an image between any two transports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..layer.compress import check_level
from ..layer.transcode import transcode
from ..model import Compression, Descriptor, Digest, Manifest
from ..model import mediatypes as mt
from ..transports import (
    Image,
    ImageDestination,
    Layer,
    Reference,
    as_reference,
    open_destination,
    open_image,
)
from .progress import NullProgress, ProgressReporter


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

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "digest": self.manifest_digest,
            "config_digest": self.config_digest,
            "media_type": self.media_type,
            "tags": self.tags,
            "layers": [d.to_json() for d in self.layers],
        }


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
) -> CopyResult:
    """Copy one image from ``src`` to ``dst`` (reference strings, skopeo syntax).

    Every blob read is verified (digest, size, diff_id). The destination changes only when
    the whole image has been written: on error it is left as it was.
    """
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
    with open_image(src_ref, platform) as image:
        dest = open_destination(dst_ref, additional_tags)
        try:
            result = _copy_image(image, dest, requested, dest_compress_level, progress)
            dest.commit()
        except BaseException:
            dest.abort()
            raise
        finally:
            progress.end()
    return CopyResult(
        source=str(src_ref),
        destination=str(dst_ref),
        manifest_digest=result.digest,
        config_digest=image.config.digest,
        media_type=result.media_type,
        layers=list(result.layers),
        tags=_tags(dst_ref, additional_tags),
    )


def _tags(ref: Reference, additional: Sequence[str]) -> list[str]:
    return ([ref.name] if ref.name else []) + list(additional)


def _copy_image(
    image: Image,
    dest: ImageDestination,
    requested: Compression | None,
    level: int | None,
    progress: ProgressReporter,
) -> Manifest:
    progress.begin(sum(layer.descriptor.size for layer in image.layers), "copying")
    layers = []
    for i, layer in enumerate(image.layers):
        progress.step(f"layer {i + 1}/{len(image.layers)} {layer.descriptor.digest.hex[:12]}")
        target = dest.layer_compression(layer.compression, requested)
        layers.append(_copy_layer(image, layer, dest, target, level, progress))
    config_desc = _put_bytes(dest, image.config_bytes, _config_type(image, dest))
    manifest = _manifest_for(image, dest, config_desc, layers)
    dest.put_manifest(manifest, image.config, image.repo_tags())
    return manifest


def _copy_layer(
    image: Image,
    layer: Layer,
    dest: ImageDestination,
    target: Compression,
    level: int | None,
    progress: ProgressReporter,
) -> Descriptor:
    src = layer.descriptor
    media_type = _layer_type(dest, target)
    if target is layer.compression and dest.has_blob(src.digest):
        progress.advance(src.size)
        return Descriptor(media_type, src.digest, src.size, src.annotations)
    writer = dest.new_blob()
    try:
        with image.source.open_blob(src) as raw:
            result = transcode(
                raw,
                src,
                layer.compression,
                writer.file,
                target,
                expected_diff_id=layer.diff_id,
                level=level,
                progress=progress.advance,
            )
        writer.commit(result.digest)
    except BaseException:
        writer.abort()
        raise
    return Descriptor(media_type, result.digest, result.size, src.annotations)


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
