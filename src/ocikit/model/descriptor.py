"""Descriptors and platforms, with exact JSON round trips (unknown fields are kept)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, UsageError
from .digest import Digest
from .jsondoc import obj, one_line, opt_str, quote, req_str, show, size, str_list, str_map


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, as ``--platform`` takes it."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {quote(text)} (expected OS/ARCH[/VARIANT])")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, data: Any, where: str = "platform") -> Platform:
        """A descriptor's ``platform``; every field it has is of its type (``InputError``)."""
        data = obj(data, where)
        return cls(
            os=opt_str(data, "os", where) or "",
            architecture=opt_str(data, "architecture", where) or "",
            variant=opt_str(data, "variant", where),
            os_version=opt_str(data, "os.version", where),
            features=tuple(str_list(data, "os.features", where) or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.features:
            out["os.features"] = list(self.features)
        if self.variant:
            out["variant"] = self.variant
        return out

    def matches(self, wanted: Platform) -> bool:
        """True if this platform satisfies ``wanted`` (a variant is only compared if asked)."""
        return (
            self.os == wanted.os
            and self.architecture == wanted.architecture
            and (wanted.variant is None or self.variant == wanted.variant)
        )

    def __str__(self) -> str:
        return "/".join(one_line(p, 40) for p in (self.os, self.architecture, self.variant) if p)


_KNOWN = ("mediaType", "digest", "size", "urls", "annotations", "platform")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, where: str = "descriptor") -> Descriptor:
        """A descriptor, every field of the type the image-spec gives it (``InputError``
        naming ``where`` and the field otherwise); unknown fields are kept in ``extra``."""
        data = obj(data, where)
        media_type = req_str(data, "mediaType", where)
        digest_text = req_str(data, "digest", where)
        try:
            digest = Digest(digest_text)
        except InputError:
            raise InputError(f"{where}: invalid digest {show(digest_text)}") from None
        platform = data.get("platform")
        opt_str(data, "artifactType", where)
        opt_str(data, "data", where)
        return cls(
            media_type=media_type,
            digest=digest,
            size=size(data, "size", where),
            annotations=str_map(data, "annotations", where),
            platform=None
            if platform is None
            else Platform.from_json(platform, f"{where}: platform"),
            urls=tuple(str_list(data, "urls", where) or ()),
            extra={k: v for k, v in data.items() if k not in _KNOWN},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        out.update(self.extra)
        if self.platform is not None:
            out["platform"] = self.platform.to_dict()
        return out

    def with_annotations(self, annotations: Mapping[str, str]) -> Descriptor:
        return Descriptor(
            self.media_type,
            self.digest,
            self.size,
            dict(annotations),
            self.platform,
            self.urls,
            self.extra,
        )
