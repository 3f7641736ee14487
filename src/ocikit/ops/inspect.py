"""``inspect``: what an image is, as JSON-ready data.

``name`` means one thing for every transport: the name docker knows the image by, as
``docker images`` shows it (``busybox:latest``, ``localhost:5000/app:1``): the NAME:TAG a
``docker-archive:``/``docker-daemon:`` reference gives, else the first name the source tags
the image with (a docker archive's ``RepoTags``, a registry's ``REPO:TAG``); the name a copy to
``docker-archive:`` without a NAME:TAG writes. None when nothing names it that way: an OCI
layout's ref name (``oci:DIR:1``) is a name inside the layout, not a docker name; an image
fetched by digest or by image ID has no tag.
"""

from __future__ import annotations

from typing import Any

from ..transports import Image, Reference, RegistryOptions, as_reference, open_image
from ..transports.reference import familiar_docker_name, normalize_docker_name


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
            "name": docker_name(ref, image),
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


def docker_name(ref: Reference, image: Image) -> str | None:
    """The name docker knows the image by (see the module's docstring), or None."""
    tags = [normalize_docker_name(t) for t in image.repo_tags()]
    if ref.name and ":" in ref.name and normalize_docker_name(ref.name) in tags:
        return familiar_docker_name(ref.name)  # the one the reference chose
    return familiar_docker_name(tags[0]) if tags else None
