"""Image manifests, indexes and configs.

Parsed objects keep the bytes they were read from: a manifest's digest is the digest of *its
bytes*, so nothing is ever re-serialized unless it is being changed. What ocikit writes is
canonical (compact, fixed key order), so the same content always gives the same digest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from . import mediatypes as mt
from .descriptor import Descriptor, Platform
from .digest import Digest


def canonical_json(obj: Any) -> bytes:
    """Compact JSON in the key order given; what ocikit writes for manifests and indexes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def load_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{what} is not valid JSON: {e}") from None


@dataclass(frozen=True)
class Manifest:
    """An OCI image manifest or a Docker schema 2 manifest."""

    raw: bytes
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw))

    @classmethod
    def parse(cls, raw: bytes, media_type: str | None = None, what: str = "manifest") -> Manifest:
        data = load_json(raw, what)
        if not isinstance(data, Mapping) or data.get("schemaVersion") != 2:
            raise InputError(f"{what}: not a schema 2 image manifest")
        media_type = data.get("mediaType") or media_type or mt.OCI_MANIFEST
        if media_type not in mt.MANIFEST_TYPES:
            raise InputError(f"{what}: unsupported manifest media type {media_type!r}")
        layers = data.get("layers")
        if not isinstance(layers, list):
            raise InputError(f"{what}: 'layers' is missing or not a list")
        return cls(
            raw=raw,
            media_type=media_type,
            config=Descriptor.from_json(data.get("config"), f"{what}: config"),
            layers=tuple(
                Descriptor.from_json(d, f"{what}: layers[{i}]") for i, d in enumerate(layers)
            ),
            annotations=dict(data.get("annotations") or {}),
        )

    @classmethod
    def build(
        cls,
        config: Descriptor,
        layers: Sequence[Descriptor],
        annotations: Mapping[str, str] | None = None,
        media_type: str = mt.OCI_MANIFEST,
    ) -> Manifest:
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config.to_json(),
            "layers": [d.to_json() for d in layers],
        }
        if annotations:
            doc["annotations"] = dict(annotations)
        return cls(canonical_json(doc), media_type, config, tuple(layers), dict(annotations or {}))


@dataclass(frozen=True)
class Index:
    """An OCI image index or a Docker manifest list."""

    raw: bytes
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    @classmethod
    def parse(cls, raw: bytes, media_type: str | None = None, what: str = "index") -> Index:
        data = load_json(raw, what)
        if not isinstance(data, Mapping) or data.get("schemaVersion") != 2:
            raise InputError(f"{what}: not a schema 2 image index")
        manifests = data.get("manifests")
        if not isinstance(manifests, list):
            raise InputError(f"{what}: 'manifests' is missing or not a list")
        return cls(
            raw=raw,
            media_type=data.get("mediaType") or media_type or mt.OCI_INDEX,
            manifests=tuple(
                Descriptor.from_json(d, f"{what}: manifests[{i}]") for i, d in enumerate(manifests)
            ),
            annotations=dict(data.get("annotations") or {}),
        )

    @classmethod
    def build(
        cls,
        manifests: Sequence[Descriptor],
        annotations: Mapping[str, str] | None = None,
        media_type: str = mt.OCI_INDEX,
    ) -> Index:
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [d.to_json() for d in manifests],
        }
        if annotations:
            doc["annotations"] = dict(annotations)
        return cls(canonical_json(doc), media_type, tuple(manifests), dict(annotations or {}))


def parse_manifest_or_index(
    raw: bytes, media_type: str | None = None, what: str = "manifest"
) -> Manifest | Index:
    data = load_json(raw, what)
    declared = (data.get("mediaType") if isinstance(data, Mapping) else None) or media_type
    if declared in mt.INDEX_TYPES or (
        declared is None and isinstance(data, Mapping) and "manifests" in data
    ):
        return Index.parse(raw, media_type, what)
    return Manifest.parse(raw, media_type, what)


@dataclass(frozen=True)
class ImageConfig:
    """An image configuration, read-only; ``raw`` is kept so the image ID never changes."""

    raw: bytes
    data: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: bytes, what: str = "image config") -> ImageConfig:
        data = load_json(raw, what)
        if not isinstance(data, Mapping):
            raise InputError(f"{what}: not a JSON object")
        rootfs = data.get("rootfs")
        if rootfs is not None and not isinstance(rootfs, Mapping):
            raise InputError(f"{what}: 'rootfs' is not an object")
        cfg = cls(raw, data)
        for d in cfg.diff_ids:
            Digest(d)
        return cfg

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    @property
    def diff_ids(self) -> list[Digest]:
        rootfs = self.data.get("rootfs") or {}
        return [Digest(d) for d in rootfs.get("diff_ids") or []]

    @property
    def history(self) -> list[Mapping[str, Any]]:
        return list(self.data.get("history") or [])

    @property
    def platform(self) -> Platform:
        return Platform(
            os=str(self.data.get("os", "")),
            architecture=str(self.data.get("architecture", "")),
            variant=self.data.get("variant"),
            os_version=self.data.get("os.version"),
        )

    @property
    def container_config(self) -> Mapping[str, Any]:
        return self.data.get("config") or {}
