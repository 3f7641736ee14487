"""Descriptors and platforms, with exact JSON round trips (unknown fields are kept)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, UsageError
from .digest import Digest


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, as ``--platform`` takes it."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r} (expected OS/ARCH[/VARIANT])")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Platform:
        return cls(
            os=str(data.get("os", "")),
            architecture=str(data.get("architecture", "")),
            variant=data.get("variant"),
            os_version=data.get("os.version"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
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
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


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
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: not a JSON object")
        try:
            media_type = data["mediaType"]
            digest = Digest(data["digest"])
            size = data["size"]
        except KeyError as e:
            raise InputError(f"{where}: missing {e.args[0]!r}") from None
        if not isinstance(media_type, str) or not isinstance(size, int) or size < 0:
            raise InputError(f"{where}: invalid mediaType or size")
        platform = data.get("platform")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations=dict(data.get("annotations") or {}),
            platform=Platform.from_json(platform) if isinstance(platform, Mapping) else None,
            urls=tuple(data.get("urls") or ()),
            extra={k: v for k, v in data.items() if k not in _KNOWN},
        )

    def to_json(self) -> dict[str, Any]:
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
            out["platform"] = self.platform.to_json()
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
