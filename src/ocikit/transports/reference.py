"""Image references in the syntax skopeo users type: ``TRANSPORT:DETAILS`` (each transport
parses its own details: ``kinds.py``), and the forms of docker image names."""

from __future__ import annotations

from .kinds import DOCKER_NAME_RE, TRANSPORTS, Reference, parse_reference

_DOCKER_NAME_RE = DOCKER_NAME_RE  # its former name


def normalize_docker_name(name: str) -> str:
    """``busybox`` -> ``docker.io/library/busybox:latest``: the form two names compare in."""
    repo, tag = name, "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
    first, slash, remainder = repo.partition("/")
    if not slash:
        repo = f"docker.io/library/{repo}"
    elif not ("." in first or ":" in first or first == "localhost"):
        repo = f"docker.io/{repo}"
    elif first == "index.docker.io":
        repo = f"docker.io/{remainder}"
    return f"{repo}:{tag}"


def docker_name_key(name: str) -> str | None:
    """The full form of a docker image name (``busybox`` -> ``docker.io/library/busybox:latest``)
    to compare it with another, or None if ``name`` is not a valid ``NAME[:TAG]``."""
    full = name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"
    if not DOCKER_NAME_RE.match(full):
        return None
    return normalize_docker_name(full)


def familiar_docker_name(name: str) -> str:
    """The short form docker writes in ``RepoTags``: ``docker.io/library/x:1`` -> ``x:1``."""
    full = normalize_docker_name(name)
    for prefix in ("docker.io/library/", "docker.io/"):
        if full.startswith(prefix):
            return full[len(prefix) :]
    return full


__all__ = [
    "TRANSPORTS",
    "Reference",
    "docker_name_key",
    "familiar_docker_name",
    "normalize_docker_name",
    "parse_reference",
]
