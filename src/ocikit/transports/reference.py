"""Image references in the syntax skopeo users type: ``TRANSPORT:DETAILS``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError
from ..model.jsondoc import quote

TRANSPORTS = ("oci", "oci-archive", "docker-archive", "docker-daemon", "docker")

_INDEX_RE = re.compile(r"^(?P<path>.+?):?@(?P<index>\d+)$")
#: ``PATH@N``, ``PATH@DIGEST`` (or ``PATH:@...``, skopeo's form) of an ``oci:``/``oci-archive:``
#: reference. The path holds no ``:`` (the first one ends it), so ``PATH:NAME@1`` stays a name:
#: OCI's ref name grammar allows ``@`` after the first character.
#: Without the ``:``, a selector is digits or ``sha...:``, so a directory ``my@dir`` stays one.
_LOOKS_SELECTED = re.compile(r"^(?:\d+$|sha\d+:)")
_OCI_SELECT_RE = re.compile(r"^(?P<path>[^:]+?)(?P<sep>:?@)(?P<select>[^:@/]*(?::[^:@/]*)?)$")
_SELECT_DIGEST_RE = re.compile(r"^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
# A first component is a registry host only when it looks like one (a dot, a port or
# ``localhost``), as skopeo and docker decide; otherwise it is part of the lowercase path.
_DOCKER_NAME_RE = re.compile(
    r"^(?:(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+(?::[0-9]+)?|[a-zA-Z0-9.-]+:[0-9]+|localhost)/)?"
    r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*:[\w][\w.-]{0,127}$"
)
_OCI_REF_RE = re.compile(r"^[A-Za-z0-9._:@/+-]+$")


@dataclass(frozen=True)
class Reference:
    """Where an image lives. ``path`` ``-`` is standard input (source) or output (destination)."""

    transport: str
    path: str
    name: str | None = None  # oci ref name, or NAME:TAG in a docker-archive
    index: int | None = None  # @N: the N-th entry (0-based) of index.json or manifest.json
    digest: str | None = None  # @DIGEST: the manifest (or index) of that digest in a layout

    def __str__(self) -> str:
        if self.transport == "docker":
            sep = "@" if self.name and ":" in self.name else ":"
            return f"docker://{self.path}{sep}{self.name}" if self.name else f"docker://{self.path}"
        s = f"{self.transport}:{self.path}"
        if self.name is not None:
            s += f":{self.name}"
        if self.index is not None:
            s += f"@{self.index}"
        if self.digest is not None:
            s += f"@{self.digest}"
        return s

    @property
    def selects(self) -> bool:
        """Whether the reference selects a stored image by position or digest (a source's
        business: a destination cannot be written at ``@N`` or ``@DIGEST``)."""
        return self.index is not None or self.digest is not None

    @property
    def is_stdio(self) -> bool:
        return self.path == "-"


def parse_reference(text: str) -> Reference:
    transport, sep, rest = text.partition(":")
    if not sep:
        raise UsageError(
            f"invalid reference {quote(text)}: expected TRANSPORT:DETAILS "
            f"(transports: {', '.join(TRANSPORTS)})"
        )
    if transport == "docker":
        return _parse_registry(text, rest)
    if transport not in TRANSPORTS:
        hint = ""
        raise UsageError(
            f"unknown transport {quote(transport)} in {quote(text)}{hint}; known: "
            f"{', '.join(TRANSPORTS)}"
        )
    if not rest:
        raise UsageError(f"invalid reference {quote(text)}: missing path")
    if transport == "docker-archive":
        return _parse_docker_archive(text, rest)
    if transport == "docker-daemon":
        from .daemon import parse_daemon

        return parse_daemon(text, rest)
    m = _OCI_SELECT_RE.match(rest)
    if m and (m.group("sep") == ":@" or _LOOKS_SELECTED.match(m.group("select"))):
        return _oci_selection(text, transport, m.group("path"), m.group("select"))
    path, _, name = rest.partition(":")
    if not path:
        raise UsageError(f"invalid reference {quote(text)}: missing path")
    if name == "":
        return Reference(transport, path)
    if not _OCI_REF_RE.match(name):
        raise UsageError(f"invalid reference {quote(text)}: bad image name {quote(name)}")
    return Reference(transport, path, name)


def _oci_selection(text: str, transport: str, path: str, select: str) -> Reference:
    if select.isdigit():
        return Reference(transport, path, index=int(select))
    if _SELECT_DIGEST_RE.match(select):
        return Reference(transport, path, digest=select)
    raise UsageError(
        f"invalid reference {quote(text)}: after @ comes a position (@0, @1, ...) "
        f"or a digest (@sha256:<64 hex digits>), not {quote(select)}"
    )


def _parse_docker_archive(text: str, rest: str) -> Reference:
    m = _INDEX_RE.match(rest)
    if m:
        return Reference("docker-archive", m.group("path"), index=int(m.group("index")))
    path, _, name = rest.partition(":")
    if not path:
        raise UsageError(f"invalid reference {quote(text)}: missing path")
    if not name:
        return Reference("docker-archive", path)
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    if not _DOCKER_NAME_RE.match(name):
        raise UsageError(f"invalid reference {quote(text)}: {quote(name)} is not a valid NAME:TAG")
    return Reference("docker-archive", path, name)


_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO_RE = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_HOST_RE = re.compile(r"^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")


def _parse_registry(text: str, rest: str) -> Reference:
    """``docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]``; path is ``HOST/REPO`` (``docker.io``
    and ``library/`` filled in as docker does), name the tag or the digest."""
    if not rest.startswith("//"):
        raise UsageError(f"invalid reference {quote(text)}: expected docker://HOST/REPO[:TAG]")
    body = rest[2:]
    name: str | None
    if "@" in body:
        body, _, name = body.partition("@")
        if not _DIGEST_RE.match(name):
            raise UsageError(f"invalid reference {quote(text)}: bad digest {quote(name)}")
    else:
        last = body.rsplit("/", 1)[-1]
        name = "latest"
        if ":" in last:
            body, _, name = body.rpartition(":")
            if not _TAG_RE.match(name):
                raise UsageError(f"invalid reference {quote(text)}: bad tag {quote(name)}")
    first, slash, remainder = body.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, repo = first, remainder
    else:
        host, repo = "docker.io", body
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = "docker.io"
    if host == "docker.io" and "/" not in repo:
        repo = f"library/{repo}"
    if not _HOST_RE.match(host) or not _REPO_RE.match(repo):
        raise UsageError(f"invalid reference {quote(text)}: expected docker://HOST/REPO[:TAG]")
    return Reference("docker", f"{host}/{repo}", name)


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
    if not _DOCKER_NAME_RE.match(full):
        return None
    return normalize_docker_name(full)


def familiar_docker_name(name: str) -> str:
    """The short form docker writes in ``RepoTags``: ``docker.io/library/x:1`` -> ``x:1``."""
    full = normalize_docker_name(name)
    for prefix in ("docker.io/library/", "docker.io/"):
        if full.startswith(prefix):
            return full[len(prefix) :]
    return full
