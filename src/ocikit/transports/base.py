"""What every transport provides: an ImageSource to read from, an ImageDestination to write to."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO, Self

from ..errors import Option, UsageError
from ..layer.streams import HashingReader
from ..model import Compression, Descriptor, Digest, ImageConfig, Index, Manifest, Platform
from .reference import Reference


class Flavor(StrEnum):
    """The media types a destination stores."""

    OCI = "oci"
    DOCKER = "docker"
    #: as the source has them (a registry-to-registry copy keeps every digest)
    SOURCE = "source"


@dataclass(frozen=True)
class SourceProperties:
    """What a source can do, fixed when it is opened: callers ask this, never a name."""

    #: blobs may be opened and read from several threads at once
    concurrent: bool = False
    #: the manifest was made up by ocikit (docker-archive), not read from the source
    synthesized: bool = False


@dataclass(frozen=True)
class DestinationProperties:
    """What a destination can do, fixed when it is opened: callers ask this, never a name
    (containers/image's ``imagedestination/impl.Properties``)."""

    #: the media types written
    flavor: Flavor = Flavor.OCI
    #: blobs may be written from several threads at once
    concurrent: bool = False
    #: ``put_blob_file`` sends the file itself (no copy): worth it when a source has one
    takes_files: bool = False
    #: ``put_child_manifest`` and ``put_index`` store an image index
    holds_index: bool = False


class ImageSource(ABC):
    """One image (a manifest, its config and blobs) at a reference."""

    properties = SourceProperties()

    def __init__(self, ref: Reference) -> None:
        self.ref = ref

    @abstractmethod
    def manifest(self) -> Manifest:
        """The image manifest (for a multi-platform source, the one selected)."""

    @abstractmethod
    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """The blob's bytes as stored, unverified (``Image.open_blob`` verifies)."""

    def repo_tags(self) -> list[str]:
        """Names the source knows the image by (docker ``RepoTags``), if any."""
        return []

    def blob_file(self, descriptor: Descriptor) -> str | None:
        """A file holding exactly the blob's bytes (unverified), if the source has one."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class IndexSource(ABC):
    """What a reference names before a platform is picked. ``index`` is None when that is
    one image manifest (then open the reference as an image)."""

    ref: Reference
    index: Index | None

    @abstractmethod
    def open_child(self, descriptor: Descriptor) -> ImageSource:
        """One manifest of the index, as an image source."""

    def open_single(self) -> ImageSource | None:
        """With no index: the image, from what was read already (None: open the reference)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> IndexSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobWriter(ABC):
    """A blob being written; nothing is visible at its final place until ``commit``.

    A context manager: leaving the block without ``commit`` (an exception, a return)
    aborts, so ``with dest.new_blob() as w: ...; w.commit(digest)`` is the whole protocol.
    ``commit`` and ``abort`` are each done once; ``abort`` after ``commit`` does nothing, and
    a ``commit`` that fails has aborted."""

    file: BinaryIO
    _state: str | None = None  # None, "committing", "committed", "aborted"

    def commit(self, digest: Digest) -> None:
        """Store the blob as ``digest`` (a mismatch with what was written is an error)."""
        if self._state is not None:
            raise RuntimeError(f"blob writer {self._state} already")
        self._state = "committing"
        try:
            self._commit(digest)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"

    def abort(self) -> None:
        """Remove what was written; never raises for a cleanup that fails."""
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        self._abort()

    @abstractmethod
    def _commit(self, digest: Digest) -> None: ...

    @abstractmethod
    def _abort(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # nothing if committed


class ImageDestination(ABC):
    """Somewhere images are written. Blobs first, then ``put_manifest``, then ``commit``."""

    properties = DestinationProperties()

    def __init__(self, ref: Reference) -> None:
        self.ref = ref

    def layer_compression(self, source: Compression, requested: Compression | None) -> Compression:
        """The compression a layer gets here, given the source's and the user's wish (a
        squashfs layer is a filesystem, not a compressed tar: it is kept as it is)."""
        if source is Compression.SQUASHFS:
            return source
        if requested is not None:
            return requested
        return Compression.GZIP if source is Compression.NONE else source

    def ready(self) -> None:
        """Fail now, in one line, if the destination cannot take an image (a registry or an
        engine that does not answer, credentials refused): called before the source is
        read, so that a long read is not wasted. Local destinations check themselves when
        they are opened."""
        return None  # nothing to reach

    @abstractmethod
    def has_blob(self, digest: Digest) -> bool: ...

    def reuse_blob(self, digest: Digest, size: int) -> bool:
        """Whether the destination holds this blob intact, as far as it can tell cheaply (an
        OCI layout: its size, and its digest if small or opened with ``verify_existing``);
        a copy may then skip it. A damaged blob is not reused: writing it again replaces it."""
        return self.has_blob(digest)

    def known_layers(self, config: Digest) -> Sequence[Descriptor] | None:
        """Layers of an image with this config already here (all present), if any: a copy
        whose layers would come out the same can reuse them instead of recompressing."""
        return None

    @abstractmethod
    def new_blob(self) -> BlobWriter:
        """A blob to write (a context manager: see ``BlobWriter``)."""

    def new_layer_blob(
        self, diff_ids: Sequence[Digest], digest: Digest | None, size: int | None
    ) -> BlobWriter:
        """A blob for the layer at position ``len(diff_ids) - 1`` of the image (``diff_ids``:
        the config's up to it), with its ``digest`` and ``size`` here when known before its
        bytes. A destination that streams one archive writes such a layer in place; the
        others take ``new_blob``."""
        del diff_ids, digest, size
        return self.new_blob()

    def put_blob_file(self, path: str, digest: Digest) -> None:
        """Store the blob in ``path`` (the file stays the caller's). The caller verifies it
        meanwhile and aborts the destination if it fails: nothing may name it until commit.
        Here a copy; ``properties.takes_files`` says that a destination sends the file
        itself, which is then worth it."""
        with open(path, "rb", buffering=0) as f, self.new_blob() as writer:
            HashingReader(f, what=path, expected_digest=digest, sink=writer.file).drain()
            writer.commit(digest)

    def put_blob_bytes(self, data: bytes) -> Digest:
        """Store a small blob (a config, a manifest) from memory, unless it is here; its
        digest."""
        digest = Digest.of(data)
        if not self.reuse_blob(digest, len(data)):
            with self.new_blob() as writer:
                writer.file.write(data)
                writer.commit(digest)
        return digest

    def flush(self) -> None:
        """Every blob committed so far is stored (an OCI layout: fsynced and renamed into
        ``blobs/``, where a reader of the layout finds it); nothing is tagged yet."""
        return None  # stored when committed

    @abstractmethod
    def put_manifest(
        self, manifest: Manifest, config: ImageConfig, tags: Sequence[str]
    ) -> None: ...

    def put_child_manifest(self, manifest: Manifest) -> None:
        """Store an image manifest an index will name (untagged; its blobs are here). Only
        where ``properties.holds_index``: elsewhere a refusal."""
        raise UsageError(f"{self.ref}: cannot hold an image index")

    def put_index(self, index: Index, tags: Sequence[str]) -> None:
        """Store an index whose manifests were stored with ``put_child_manifest``; it gets
        the tags a single image would. Only where ``properties.holds_index``."""
        raise UsageError(f"{self.ref}: cannot hold an image index")

    @abstractmethod
    def commit(self) -> None:
        """Make the image visible (tags, index); until then the destination looks unchanged."""

    @abstractmethod
    def abort(self) -> None:
        """Undo what this copy wrote that nothing references."""


def select_platform(
    candidates: Sequence[Descriptor], platform: Platform | None, what: str
) -> Descriptor:
    """Pick one manifest of an index: by ``platform``, or the only one, or the host's."""
    from ..errors import AmbiguousImageError, NotFoundError
    from ..model.jsondoc import summary

    if platform is not None:
        for d in candidates:
            if d.platform is not None and d.platform.matches(platform):
                return d
        have = summary([str(d.platform) for d in candidates if d.platform])
        raise NotFoundError(f"{what}: no manifest for platform {platform} (available: {have})")
    if len(candidates) == 1:
        return candidates[0]
    host = host_platform()
    for d in candidates:
        if d.platform is not None and d.platform.matches(host):
            return d
    have = summary([str(d.platform) for d in candidates if d.platform])
    raise AmbiguousImageError(
        f"{what}: several platforms ({have}); choose one with ", Option("platform")
    )


def host_platform() -> Platform:
    import platform as _p

    machine = _p.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )
    return Platform("linux", arch)
