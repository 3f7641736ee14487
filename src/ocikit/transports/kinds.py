"""The transports ocikit knows, as types: each parses its own reference text, says what it
is (``TransportProperties``, which callers ask instead of comparing names) and opens its own
image source, index source and destination.

One registry holds them by name (``transport_named``, ``TRANSPORTS`` in registration order);
``parse_reference`` looks the name up and lets that transport parse the rest. This module is
light on purpose: parsing a reference imports no transport's implementation (the registry
client pulls in httpx); each ``open_*`` imports its module when first called (``Implementation``).
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import UsageError
from ..model.jsondoc import quote, show

if TYPE_CHECKING:
    from ..model import Descriptor, Platform
    from .archive import Tee
    from .base import ImageDestination, ImageSource, IndexSource
    from .registry import RegistryOptions


@dataclass(frozen=True, slots=True)
class TransportProperties:
    """What a transport is, in the words its callers ask (never its name)."""

    #: ``path`` names a local file or directory: relative to the current directory (in a
    #: recipe, to the recipe's directory); what a killed run left beside it is reclaimable
    local_path: bool = False
    #: ``path`` is an OCI image layout directory (``gc`` collects its unreferenced blobs; a
    #: build writes its outputs there)
    layout_directory: bool = False
    #: ``path`` is a ``docker save`` tarball (``manifest.json``, legacy layer directories),
    #: a file or standard input: ``export-layers`` reads its images member by member
    docker_save: bool = False
    #: what a reference names may be an image index (a platform is picked from it; ``--all``)
    holds_index: bool = False
    #: a repository on a registry, over the network (``path`` is ``HOST/REPO``): a build
    #: names a repository prefix; blobs can be mounted across repositories of one host
    registry: bool = False
    #: how many blobs a copy moves at once when not told (the larger of both ends')
    default_jobs: int = 1
    #: a source is always one stream of ``docker save`` format, read once in order (layers
    #: arrive uncompressed: a copy compresses them while they stream)
    streamed: bool = False
    #: the same, when ``path`` is ``-`` (standard input)
    streamed_from_stdin: bool = False


@dataclass(frozen=True)
class Reference:
    """Where an image lives: the transport's name, and details whose meaning is the
    transport's (each transport's class says what ``path`` and ``name`` are). ``path`` ``-``
    is standard input (source) or output (destination)."""

    transport: str  # the name, for display; ``kind`` is the transport itself
    path: str
    name: str | None = None
    index: int | None = None  # @N: the N-th entry (0-based) of index.json or manifest.json
    digest: str | None = None  # @DIGEST: the manifest (or index) of that digest in a layout

    def __str__(self) -> str:
        kind = _KNOWN.get(self.transport)
        return kind.format(self) if kind is not None else _format(self)

    @property
    def kind(self) -> Transport:
        """The transport this reference belongs to."""
        return transport_named(self.transport)

    @property
    def properties(self) -> TransportProperties:
        return self.kind.properties

    @property
    def selects(self) -> bool:
        """Whether the reference selects a stored image by position or digest (a source's
        business: a destination cannot be written at ``@N`` or ``@DIGEST``)."""
        return self.index is not None or self.digest is not None

    @property
    def is_stdio(self) -> bool:
        return self.path == "-"

    @property
    def streamed(self) -> bool:
        """Read as one stream of ``docker save`` format, once, in order (an engine's
        ``save``, or a docker-archive on standard input)."""
        p = self.properties
        return p.streamed or (p.streamed_from_stdin and self.is_stdio)

    @property
    def registry_host(self) -> str | None:
        """``HOST[:PORT]`` of a registry reference (None for any other transport)."""
        return self.path.partition("/")[0] if self.properties.registry else None

    @property
    def manifest_digest(self) -> str | None:
        """The digest the reference names its manifest (or index) by, if it names one:
        a layout's ``@DIGEST``, a registry's ``REPO@DIGEST`` (an engine's image ID is its
        config's digest: not one)."""
        return self.kind.manifest_digest(self)


@dataclass(frozen=True, slots=True)
class Implementation:
    """Where a transport's source, index or destination class lives (imported when first
    opened, so that naming a transport costs nothing) and which of the opening's arguments
    it takes after the reference, in order (``verify_existing`` by keyword)."""

    module: str
    cls: str
    takes: tuple[str, ...] = ()

    def open(self, ref: Reference, **opening: object) -> Any:
        module = importlib.import_module(f".{self.module}", __package__)
        args = [opening[n] for n in self.takes if n != "verify_existing"]
        keywords = {n: opening[n] for n in self.takes if n == "verify_existing"}
        return getattr(module, self.cls)(ref, *args, **keywords)


def _format(ref: Reference) -> str:
    s = f"{ref.transport}:{ref.path}"
    if ref.name is not None:
        s += f":{ref.name}"
    if ref.index is not None:
        s += f"@{ref.index}"
    if ref.digest is not None:
        s += f"@{ref.digest}"
    return s


class Transport(ABC):
    """One kind of place images live, registered by ``name``."""

    name: ClassVar[str]
    properties: ClassVar[TransportProperties]

    @abstractmethod
    def parse(self, text: str, rest: str) -> Reference:
        """The reference ``text`` names; ``rest`` is what follows ``NAME:``."""

    def format(self, ref: Reference) -> str:
        """The text ``parse`` reads back as ``ref``."""
        return _format(ref)

    def manifest_digest(self, ref: Reference) -> str | None:
        """See ``Reference.manifest_digest``."""
        return ref.digest

    #: the classes that open it (``index`` None: it holds one image per reference)
    source: ClassVar[Implementation]
    index: ClassVar[Implementation | None] = None
    destination: ClassVar[Implementation]

    def open_source(
        self,
        ref: Reference,
        platform: Platform | None,
        tee: Tee | None,
        registry: RegistryOptions | None,
    ) -> ImageSource:
        """One image: ``platform`` picks it from an index; ``tee`` sees the members of an
        archive read from a pipe; ``registry``: credentials and TLS for a registry."""
        source: ImageSource = self.source.open(ref, platform=platform, tee=tee, registry=registry)
        return source

    def open_index(self, ref: Reference, registry: RegistryOptions | None) -> IndexSource:
        """What the reference names before a platform is picked (``index`` None: one image)."""
        if self.index is None:
            return _no_index_class()(ref)
        index: IndexSource = self.index.open(ref, registry=registry)
        return index

    def open_destination(
        self,
        ref: Reference,
        additional_tags: Sequence[str],
        registry: RegistryOptions | None,
        verify_existing: bool = False,
    ) -> ImageDestination:
        """Where an image is written (``ref`` selects no stored image: checked before);
        ``verify_existing``: blobs found there are re-hashed before they are relied on (a
        destination that keeps no blobs ignores it)."""
        destination: ImageDestination = self.destination.open(
            ref,
            additional_tags=additional_tags,
            registry=registry,
            verify_existing=verify_existing,
        )
        return destination

    def __repr__(self) -> str:
        return f"<transport {self.name}>"


@cache
def _no_index_class() -> Callable[[Reference], IndexSource]:
    from .base import IndexSource

    class NoIndex(IndexSource):
        """A transport that holds one image per reference, never an index."""

        def __init__(self, ref: Reference) -> None:
            self.ref = ref
            self.index = None

        def open_child(self, descriptor: Descriptor) -> ImageSource:  # pragma: no cover
            raise AssertionError("no index")

    return NoIndex


# -- the grammar the transports share --------------------------------------------------------

#: ``PATH@N``, ``PATH@DIGEST`` (or ``PATH:@...``, skopeo's form) of an ``oci:``/``oci-archive:``
#: reference. The path holds no ``:`` (the first one ends it), so ``PATH:NAME@1`` stays a name:
#: OCI's ref name grammar allows ``@`` after the first character.
#: Without the ``:``, a selector is digits or ``sha...:``, so a directory ``my@dir`` stays one.
_LOOKS_SELECTED = re.compile(r"^(?:\d+$|sha\d+:)")
_OCI_SELECT_RE = re.compile(r"^(?P<path>[^:]+?)(?P<sep>:?@)(?P<select>[^:@/]*(?::[^:@/]*)?)$")
_SELECT_DIGEST_RE = re.compile(r"^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
_OCI_REF_RE = re.compile(r"^[A-Za-z0-9._:@/+-]+$")
_INDEX_RE = re.compile(r"^(?P<path>.+?):?@(?P<index>\d+)$")
#: a docker ``NAME:TAG``. A first component is a registry host only when it looks like one
#: (a dot, a port or ``localhost``), as skopeo and docker decide; otherwise it is part of the
#: lowercase path.
DOCKER_NAME_RE = re.compile(
    r"^(?:(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+(?::[0-9]+)?|[a-zA-Z0-9.-]+:[0-9]+|localhost)/)?"
    r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*:[\w][\w.-]{0,127}$"
)
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO_RE = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_HOST_RE = re.compile(r"^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")


def _missing_path(text: str) -> UsageError:
    return UsageError(f"invalid reference {quote(text)}: missing path")


# -- the transports --------------------------------------------------------------------------


class _Layout(Transport):
    """What ``oci:`` and ``oci-archive:`` share: ``PATH[:NAME]``, ``PATH@N``, ``PATH@DIGEST``.
    ``name`` is an image's ``org.opencontainers.image.ref.name`` in ``index.json`` (None:
    the only image); ``index`` and ``digest`` select an entry of ``index.json``."""

    source = Implementation("oci_layout", "OciLayoutSource", ("platform",))
    index = Implementation("oci_layout", "OciIndex")

    def parse(self, text: str, rest: str) -> Reference:
        if not rest:
            raise _missing_path(text)
        m = _OCI_SELECT_RE.match(rest)
        if m and (m.group("sep") == ":@" or _LOOKS_SELECTED.match(m.group("select"))):
            return self._selection(text, m.group("path"), m.group("select"))
        path, _, name = rest.partition(":")
        if not path:
            raise _missing_path(text)
        if name == "":
            return Reference(self.name, path)
        if not _OCI_REF_RE.match(name):
            raise UsageError(f"invalid reference {quote(text)}: bad image name {quote(name)}")
        return Reference(self.name, path, name)

    def _selection(self, text: str, path: str, select: str) -> Reference:
        if select.isdigit():
            return Reference(self.name, path, index=int(select))
        if _SELECT_DIGEST_RE.match(select):
            return Reference(self.name, path, digest=select)
        raise UsageError(
            f"invalid reference {quote(text)}: after @ comes a position (@0, @1, ...) "
            f"or a digest (@sha256:<64 hex digits>), not {quote(select)}"
        )


class OciTransport(_Layout):
    """``oci:DIR[:NAME]``: an OCI image layout directory; ``path`` is the directory."""

    name = "oci"
    properties = TransportProperties(local_path=True, layout_directory=True, holds_index=True)
    destination = Implementation(
        "oci_layout", "OciLayoutDestination", ("additional_tags", "verify_existing")
    )


class OciArchiveTransport(_Layout):
    """``oci-archive:FILE[:NAME]``: an OCI layout in a tar file; ``path`` is the file
    (``-``: standard input or output)."""

    name = "oci-archive"
    properties = TransportProperties(local_path=True, holds_index=True)
    destination = Implementation(
        "oci_layout", "OciArchiveDestination", ("additional_tags", "verify_existing")
    )


class DockerArchiveTransport(Transport):
    """``docker-archive:FILE[:NAME[:TAG]]`` or ``FILE@N``: a ``docker save`` tarball;
    ``path`` is the file (``-``: standard input or output), ``name`` a ``NAME:TAG`` of its
    ``RepoTags`` (``:latest`` added), ``index`` the N-th entry of ``manifest.json``."""

    name = "docker-archive"
    properties = TransportProperties(local_path=True, docker_save=True, streamed_from_stdin=True)
    source = Implementation("docker_archive", "DockerArchiveSource", ("tee",))
    destination = Implementation("docker_archive", "DockerArchiveDestination", ("additional_tags",))

    def parse(self, text: str, rest: str) -> Reference:
        if not rest:
            raise _missing_path(text)
        m = _INDEX_RE.match(rest)
        if m:
            return Reference(self.name, m.group("path"), index=int(m.group("index")))
        path, _, name = rest.partition(":")
        if not path:
            raise _missing_path(text)
        if not name:
            return Reference(self.name, path)
        if ":" not in name.rsplit("/", 1)[-1]:
            name += ":latest"
        if not DOCKER_NAME_RE.match(name):
            raise UsageError(
                f"invalid reference {quote(text)}: {quote(name)} is not a valid NAME:TAG"
            )
        return Reference(self.name, path, name)


class DaemonTransport(Transport):
    """``docker-daemon:NAME[:TAG]`` or ``docker-daemon:sha256:<id>``: an image of the docker
    engine (its API); ``path`` is the ``NAME:TAG`` (``:latest`` added) or the image ID,
    ``name`` is None. Read through the engine's ``save`` stream, written through ``load``."""

    name = "docker-daemon"
    properties = TransportProperties(streamed=True)
    source = Implementation("daemon", "DaemonSource", ("tee",))
    destination = Implementation("daemon", "DaemonDestination", ("additional_tags",))

    def parse(self, text: str, rest: str) -> Reference:
        if not rest:
            raise _missing_path(text)
        if rest.startswith("sha256:"):
            if len(rest) != 71 or any(c not in "0123456789abcdef" for c in rest[7:]):
                raise UsageError(f"invalid reference {show(text)}: bad image ID")
            return Reference(self.name, rest)
        name = rest if ":" in rest.rsplit("/", 1)[-1] else rest + ":latest"
        if not DOCKER_NAME_RE.match(name):
            raise UsageError(
                f"invalid reference {show(text)}: {show(rest)} is not a valid NAME[:TAG]"
            )
        return Reference(self.name, name)


#: blobs a copy moves at once to or from a registry when not told (``RegistryOptions.jobs``)
REGISTRY_JOBS = 4


class DockerTransport(Transport):
    """``docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]``: a repository on a registry; ``path`` is
    ``HOST/REPO`` (``docker.io`` and ``library/`` filled in as docker does), ``name`` the tag
    (``latest`` when none is given) or the digest."""

    name = "docker"
    properties = TransportProperties(holds_index=True, registry=True, default_jobs=REGISTRY_JOBS)
    source = Implementation("registry", "RegistrySource", ("platform", "registry"))
    index = Implementation("registry", "RegistryIndex", ("registry",))
    destination = Implementation("registry", "RegistryDestination", ("additional_tags", "registry"))

    def parse(self, text: str, rest: str) -> Reference:
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
        return Reference(self.name, f"{host}/{repo}", name)

    def format(self, ref: Reference) -> str:
        if not ref.name:
            return f"docker://{ref.path}"
        sep = "@" if ":" in ref.name else ":"
        return f"docker://{ref.path}{sep}{ref.name}"

    def manifest_digest(self, ref: Reference) -> str | None:
        return ref.name if ref.name and ":" in ref.name else None  # a tag holds no ':'


# -- the registry ----------------------------------------------------------------------------

_KNOWN: dict[str, Transport] = {}


def register(transport: Transport) -> None:
    """Add a transport; a name is registered once."""
    if transport.name in _KNOWN:
        raise ValueError(f"transport {transport.name!r} is registered already")
    _KNOWN[transport.name] = transport


for _transport in (
    OciTransport(),
    OciArchiveTransport(),
    DockerArchiveTransport(),
    DaemonTransport(),
    DockerTransport(),
):
    register(_transport)

#: the names of the transports, in the order they are listed to users
TRANSPORTS: tuple[str, ...] = tuple(_KNOWN)


def find_transport(name: str) -> Transport | None:
    """The transport registered as ``name``, if any."""
    return _KNOWN.get(name)


def transport_named(name: str) -> Transport:
    """The transport registered as ``name`` (a UsageError names the known ones)."""
    try:
        return _KNOWN[name]
    except KeyError:
        raise UsageError(f"unknown transport {quote(name)}; known: {', '.join(_KNOWN)}") from None


def parse_reference(text: str) -> Reference:
    """``TRANSPORT:DETAILS``, parsed by the transport it names."""
    name, sep, rest = text.partition(":")
    if not sep:
        raise UsageError(
            f"invalid reference {quote(text)}: expected TRANSPORT:DETAILS "
            f"(transports: {', '.join(_KNOWN)})"
        )
    transport = _KNOWN.get(name)
    if transport is None:
        raise UsageError(
            f"unknown transport {quote(name)} in {quote(text)}; known: {', '.join(_KNOWN)}"
        )
    return transport.parse(text, rest)
