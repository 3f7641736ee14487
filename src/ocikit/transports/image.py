"""``Image``: a source's manifest, config and blobs, every byte verified as it is read."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError, Option, UsageError, VerificationError
from ..layer.streams import HashingReader, Progress
from ..model import Compression, Descriptor, Digest, ImageConfig, Manifest
from ..model.jsondoc import CONFIG_LIMIT, counted, quote
from ..model.mediatypes import layer_compression
from .base import ImageSource

MAX_CONFIG_SIZE = CONFIG_LIMIT


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    diff_id: Digest
    compression: Compression


class Image:
    """One image, opened for reading. Use as a context manager; blobs stream, verified."""

    def __init__(self, source: ImageSource, *, lenient: bool = False) -> None:
        """``lenient``: a config that does not match its descriptor, diff_ids that do not
        match the layers in number and unknown layer media types are recorded in
        ``problems`` (rule id, message, layer index or None) instead of raised (for ``check``)."""
        self.source = source
        self.problems: list[tuple[str, str, int | None]] = []
        self.manifest: Manifest = source.manifest()
        cfg = self.manifest.config
        if cfg.size > MAX_CONFIG_SIZE:
            raise InputError(f"{source.ref}: config is implausibly large ({cfg.size} bytes)")
        if lenient:
            with source.open_blob(cfg) as f:
                raw = f.read(MAX_CONFIG_SIZE + 1)
            if len(raw) != cfg.size or Digest.of(raw, cfg.digest.algorithm) != cfg.digest:
                self.problems.append(
                    (
                        "config-digest",
                        f"config is {len(raw)} bytes with digest "
                        f"{Digest.of(raw, cfg.digest.algorithm)}, its descriptor says "
                        f"{cfg.size} bytes, {cfg.digest}",
                        None,
                    )
                )
        else:
            with self.open_blob(cfg) as f:
                raw = f.read()
        self.config = ImageConfig.parse(raw, f"{source.ref}: config")
        diff_ids = self.config.diff_ids
        if len(diff_ids) != len(self.manifest.layers):
            message = (
                f"the manifest has {counted(len(self.manifest.layers), 'layer')} "
                f"but the config lists {counted(len(diff_ids), 'diff_id')}"
            )
            if not lenient:
                raise VerificationError(f"{source.ref}: {message}")
            self.problems.append(("diff-id-count", message, None))
        self.layers = []
        for i, d in enumerate(self.manifest.layers):
            diff_id = diff_ids[i] if i < len(diff_ids) else None
            try:
                compression = _compression_of(d)
            except InputError as e:
                if not lenient:
                    raise
                self.problems.append(("media-type", str(e), i))
                compression = Compression.NONE
            self.layers.append(Layer(d, diff_id, compression))  # type: ignore[arg-type]

    @property
    def manifest_bytes(self) -> bytes:
        return self.manifest.raw

    @property
    def config_bytes(self) -> bytes:
        return self.config.raw

    @property
    def digest(self) -> Digest:
        return self.manifest.digest

    def repo_tags(self) -> list[str]:
        return self.source.repo_tags()

    def require_tar_layers(self, what: str) -> None:
        """UsageError if a layer is squashfs (``what`` reads tar layers only)."""
        for i, layer in enumerate(self.layers):
            if layer.compression is Compression.SQUASHFS:
                raise UsageError(
                    f"{self.source.ref}: layer {i} is squashfs; {what} reads tar layers "
                    f"(build the image with ",
                    Option("layer_types"),
                    " tar)",
                )

    def open_blob(
        self,
        descriptor: Descriptor,
        *,
        sink=None,
        progress: Progress | None = None,
    ) -> HashingReader:
        """The blob's stored bytes; its digest and size are checked when the stream ends."""
        raw = self.source.open_blob(descriptor)
        return HashingReader(
            raw,
            what=f"blob {descriptor.digest}",
            expected_digest=descriptor.digest,
            expected_size=descriptor.size,
            sink=sink,
            progress=progress,
        )

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _compression_of(descriptor: Descriptor) -> Compression:
    c = layer_compression(descriptor.media_type)
    if c is None:
        raise InputError(
            f"layer {descriptor.digest}: unsupported media type {quote(descriptor.media_type)}"
        )
    return c
