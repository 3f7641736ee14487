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
from .jsondoc import (
    CONFIG_LIMIT,
    MANIFEST_LIMIT,
    load_json,
    obj,
    opt_bool,
    opt_list,
    opt_obj,
    opt_str,
    show,
    str_list,
    str_map,
    wrong,
)

__all__ = ["ImageConfig", "Index", "Manifest", "canonical_json", "load_json"]


def canonical_json(obj: Any, *, sort_keys: bool = False, ascii_only: bool = False) -> bytes:
    """The one way ocikit writes JSON: compact, UTF-8, in the key order given (manifests,
    indexes) or sorted (``sort_keys``: configs the build makes, cache keys, seals).
    ``ascii_only`` escapes every non-ASCII character (``\\u00e9``), as cache keys and seals
    were first written: their bytes must never change. A lone surrogate (kept from an
    escape in a document read) is written back as that escape, never an encoding error."""
    text = json.dumps(obj, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=ascii_only)
    return text.encode("utf-8", "backslashreplace")


def _document(
    data: Any, what: str, kind: str, given: str | None, default: str, known: frozenset[str]
) -> tuple[Mapping[str, Any], str]:
    """The top of a schema 2 manifest or index: an object whose ``schemaVersion`` is 2, and
    its media type (its ``mediaType``, else ``given``: the one it was served with, else
    ``default``), one of ``known``."""
    if not isinstance(data, Mapping):
        raise InputError(f"{what}: not a schema 2 image {kind} (not a JSON object)")
    version = data.get("schemaVersion")
    if type(version) is not int or version != 2:
        raise InputError(f"{what}: not a schema 2 image {kind} (schemaVersion {show(version)})")
    opt_str(data, "artifactType", what)
    if data.get("subject") is not None:
        Descriptor.from_json(data["subject"], f"{what}: subject")
    media_type = opt_str(data, "mediaType", what) or given or default
    if media_type not in known:
        raise InputError(f"{what}: unsupported {kind} media type {show(media_type)}")
    return data, media_type


def _descriptors(data: Mapping[str, Any], key: str, what: str) -> tuple[Descriptor, ...]:
    """The required list of descriptors at ``key`` (``layers``, ``manifests``)."""
    items = opt_list(data, key, what)
    if items is None:
        raise InputError(f"{what}: '{key}' is missing")
    return tuple(Descriptor.from_json(d, f"{what}: {key}[{i}]") for i, d in enumerate(items))


def _written(media_type: str, body: dict[str, Any], annotations: Mapping[str, str] | None) -> bytes:
    """A manifest or index as ocikit writes it: ``schemaVersion``, ``mediaType``, ``body``,
    then the annotations if there are any."""
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, **body}
    if annotations:
        doc["annotations"] = dict(annotations)
    return canonical_json(doc)


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
    def parse(
        cls,
        raw: bytes,
        media_type: str | None = None,
        what: str = "manifest",
        *,
        limit: int = MANIFEST_LIMIT,
    ) -> Manifest:
        """The manifest ``raw`` holds; every field is checked for its type (``InputError``)."""
        return cls._from_data(raw, load_json(raw, what, limit=limit), media_type, what)

    @classmethod
    def _from_data(cls, raw: bytes, data: Any, media_type: str | None, what: str) -> Manifest:
        data, media_type = _document(
            data, what, "manifest", media_type, mt.OCI_MANIFEST, mt.MANIFEST_TYPES
        )
        if "config" not in data:
            raise InputError(f"{what}: missing 'config'")
        layers = _descriptors(data, "layers", what)
        return cls(
            raw=raw,
            media_type=media_type,
            config=Descriptor.from_json(data["config"], f"{what}: config"),
            layers=layers,
            annotations=str_map(data, "annotations", what),
        )

    @classmethod
    def build(
        cls,
        config: Descriptor,
        layers: Sequence[Descriptor],
        annotations: Mapping[str, str] | None = None,
        media_type: str = mt.OCI_MANIFEST,
    ) -> Manifest:
        body = {"config": config.to_dict(), "layers": [d.to_dict() for d in layers]}
        raw = _written(media_type, body, annotations)
        return cls(raw, media_type, config, tuple(layers), dict(annotations or {}))


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
    def parse(
        cls,
        raw: bytes,
        media_type: str | None = None,
        what: str = "index",
        *,
        limit: int = MANIFEST_LIMIT,
    ) -> Index:
        """The index ``raw`` holds; every field is checked for its type (``InputError``).
        ``limit``: a layout's ``index.json`` may be larger than a manifest."""
        return cls._from_data(raw, load_json(raw, what, limit=limit), media_type, what)

    @classmethod
    def _from_data(cls, raw: bytes, data: Any, media_type: str | None, what: str) -> Index:
        data, media_type = _document(data, what, "index", media_type, mt.OCI_INDEX, mt.INDEX_TYPES)
        return cls(
            raw=raw,
            media_type=media_type,
            manifests=_descriptors(data, "manifests", what),
            annotations=str_map(data, "annotations", what),
        )

    @classmethod
    def build(
        cls,
        manifests: Sequence[Descriptor],
        annotations: Mapping[str, str] | None = None,
        media_type: str = mt.OCI_INDEX,
    ) -> Index:
        raw = _written(media_type, {"manifests": [d.to_dict() for d in manifests]}, annotations)
        return cls(raw, media_type, tuple(manifests), dict(annotations or {}))


def parse_manifest_or_index(
    raw: bytes, media_type: str | None = None, what: str = "manifest"
) -> Manifest | Index:
    """A manifest or an index, as its ``mediaType`` (else ``media_type``, else its shape)
    says; parsed once, every field checked."""
    data = load_json(raw, what, limit=MANIFEST_LIMIT)
    declared = opt_str(data, "mediaType", what) if isinstance(data, Mapping) else None
    declared = declared or media_type
    if declared in mt.INDEX_TYPES or (
        not declared and isinstance(data, Mapping) and "manifests" in data
    ):
        return Index._from_data(raw, data, media_type, what)
    return Manifest._from_data(raw, data, media_type, what)


@dataclass(frozen=True)
class ImageConfig:
    """An image configuration, read-only; ``raw`` is kept so the image ID never changes."""

    raw: bytes
    data: Mapping[str, Any]

    @classmethod
    def parse(
        cls, raw: bytes, what: str = "image config", *, limit: int = CONFIG_LIMIT
    ) -> ImageConfig:
        """The config ``raw`` holds. Every field ocikit reads, prints or builds on is checked
        for the type the image-spec gives it (``InputError`` naming it); others are kept."""
        data = obj(load_json(raw, what, limit=limit), what)
        for key in ("created", "author", "architecture", "os", "variant", "os.version"):
            opt_str(data, key, what)
        str_list(data, "os.features", what)
        container = opt_obj(data, "config", what)
        if container is not None:
            _check_container_config(container, f"{what}: config")
        rootfs = opt_obj(data, "rootfs", what)
        if rootfs is not None:
            opt_str(rootfs, "type", f"{what}: rootfs")
            for i, d in enumerate(opt_list(rootfs, "diff_ids", f"{what}: rootfs") or ()):
                if not isinstance(d, str):
                    wrong(f"{what}: rootfs: diff_ids[{i}]", None, "a digest string", d)
                try:
                    Digest(d)
                except InputError:
                    raise InputError(
                        f"{what}: rootfs: diff_ids[{i}]: invalid digest {show(d)}"
                    ) from None
        for i, entry in enumerate(opt_list(data, "history", what) or ()):
            where = f"{what}: history[{i}]"
            entry = obj(entry, where)
            for key in ("created", "created_by", "author", "comment"):
                opt_str(entry, key, where)
            opt_bool(entry, "empty_layer", where)
        return cls(raw, data)

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


def _check_container_config(c: Mapping[str, Any], where: str) -> None:
    """The fields of a config's ``config`` that ocikit reads, prints or changes."""
    for key in ("User", "WorkingDir", "StopSignal"):
        opt_str(c, key, where)
    str_list(c, "Env", where)
    str_map(c, "Labels", where)
    for key in ("Entrypoint", "Cmd"):  # docker accepts a string too
        if not isinstance(c.get(key), str):
            str_list(c, key, where)
    for key in ("ExposedPorts", "Volumes"):
        opt_obj(c, key, where)
