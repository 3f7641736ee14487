"""``inspect``: what an image is, as JSON-ready data."""

from __future__ import annotations

from typing import Any

from ..transports import Reference, RegistryOptions, as_reference, open_image


def inspect(
    ref: str | Reference,
    *,
    platform: str | None = None,
    registry: RegistryOptions | None = None,
) -> dict[str, Any]:
    ref = as_reference(ref)
    with open_image(ref, platform, registry=registry) as image:
        cfg = image.config
        c = cfg.container_config
        tags = image.repo_tags()
        return {
            "name": ref.name or (tags[0] if tags else None),
            "reference": str(ref),
            "digest": image.digest,
            "media_type": image.manifest.media_type,
            "config_digest": cfg.digest,
            "repo_tags": tags,
            "created": cfg.data.get("created"),
            "os": cfg.platform.os,
            "architecture": cfg.platform.architecture,
            "variant": cfg.platform.variant,
            "layers": [
                {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
                for d in image.manifest.layers
            ],
            "diff_ids": cfg.diff_ids,
            "env": list(c.get("Env") or []),
            "labels": dict(c.get("Labels") or {}),
            "entrypoint": c.get("Entrypoint"),
            "cmd": c.get("Cmd"),
            "user": c.get("User") or None,
            "working_dir": c.get("WorkingDir") or None,
            "annotations": dict(image.manifest.annotations),
        }
