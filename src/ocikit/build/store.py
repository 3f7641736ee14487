"""The build cache as the engine uses it: a store of image entries, each named by a tag
(``cache-<key>``, ``base-...``), over the OCI layout API and ``build.cache``'s seals.

- ``lookup(tag)``: the entry's manifest if its seal proves it (``why`` says why not, when
  there was one and it failed), else None. Asked once per tag per build: the answer is kept.
- ``open(tag)``: the entry (proved, or made by this build) as an ``Image``, through the
  manifest descriptor that was proved; what the tag names meanwhile does not matter.
- ``entry(tag, damaged)``: an entry being written (``EntryWriter``): blobs, an image, then
  ``commit``; nothing is named before it, and leaving the block without it removes what was
  written that nothing references.
- ``seal()``: seals the entries this build made (once, at the end: one wait for their
  files' ctimes to be old enough to mean something, see ``build.cache``).

Nothing outside reads the layout's ``index.json`` or holds its destination: what the cache
trusts is decided here and in ``build.cache`` alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..model import Descriptor, Digest, ImageConfig, Manifest
from ..tempfiles import PrivateDir
from ..transports import Image
from ..transports.base import BlobWriter, ImageDestination
from ..transports.oci_layout import OciLayoutDestination, OciLayoutSource
from ..transports.reference import Reference
from .cache import Cache, StepLog

NewLayer = tuple[Descriptor, Digest]  # a layer written: its descriptor and its diff_id

__all__ = ["BuildCache", "EntryWriter"]


class BuildCache:
    """A build cache opened for one build (``close`` it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: the trusted part: the cache's shape, its key, seals, extracted layers and logs
        self.layers = Cache(path)
        self.why = ""  # why the last lookup missed, if an entry was there and failed
        self._entries: dict[str, Descriptor] = {}  # tag -> its manifest, proved or made here
        self._unsealed: list[tuple[str, Descriptor, list[Descriptor]]] = []  # made here

    def close(self) -> None:
        self.layers.close()

    def lookup(self, tag: str) -> Descriptor | None:
        """The manifest of the entry ``tag``, if its seal proves it (or this build made it)."""
        self.why = ""
        if tag not in self._entries:
            found = self.layers.lookup(tag)
            self.why = self.layers.why
            if found is None:
                return None
            self._entries[tag] = found
        return self._entries[tag]

    def open(self, tag: str) -> Image:
        """The entry ``tag`` (proved or made by this build), by its manifest's descriptor."""
        source = OciLayoutSource(Reference("oci", str(self.path)), descriptor=self._entries[tag])
        try:
            return Image(source)
        except BaseException:
            source.close()
            raise

    @contextlib.contextmanager
    def entry(self, tag: str, damaged: bool = False) -> Iterator[EntryWriter]:
        """An entry written as ``tag`` (``damaged``: the entry there failed verification;
        blobs found present are re-hashed, a damaged one replaced). Committed or removed."""
        writer = EntryWriter(self, tag, damaged)
        try:
            yield writer
        finally:
            writer.abort()  # nothing once committed

    def seal(self) -> None:
        """Seal the entries this build made (and not yet sealed)."""
        entries, self._unsealed = self._unsealed, []
        self.layers.seal(entries)

    def _made(self, tag: str, manifest: Manifest) -> None:
        """An entry this build just committed: used from now on, sealed at ``seal``."""
        desc = manifest.descriptor
        self._entries[tag] = Descriptor(desc.media_type, desc.digest, desc.size)
        self._unsealed.append((tag, self._entries[tag], [manifest.config, *manifest.layers]))

    def copy_blobs(self, image: Image, dest: ImageDestination) -> None:
        """The blobs of ``image`` (an entry of this cache) that a copy to ``dest`` keeps as
        they are (its config, its layers in their compression) copied into ``dest`` when
        that is an OCI layout, each hashed on the way and stored only if it is its digest:
        the copy then finds them there, verified, without inflating them again (the entry's
        layers were checked, diff_ids included, before the cache named it). One that is
        not its digest is left to the copy, which says so."""
        if not isinstance(dest, OciLayoutDestination):
            return
        blobs = [image.manifest.config] + [
            layer.descriptor
            for layer in image.layers
            if dest.layer_compression(layer.compression, None) is layer.compression
        ]
        done: set[Digest] = set()
        for desc in blobs:
            if desc.digest in done or desc.digest.algorithm != "sha256":
                continue
            done.add(desc.digest)
            if dest.reuse_blob(desc.digest, desc.size):
                continue
            with dest.new_blob() as writer:
                # that read is the cache's hashing of the file: the seal need not hash it again
                if self.layers.copy_blob(desc.digest, desc.size, writer.file.write):
                    writer.commit(desc.digest)
        # while the blobs are fsynced: what the seal would hash (a copy that came too soon
        # after a blob was made does not count for it)
        self.layers.hash_ahead(blobs)
        dest.flush()  # in place: the copy finds them

    def private_dir(self, prefix: str, what: str) -> PrivateDir:
        """A private directory in the cache, locked: if this process dies, the next writer
        of the cache or ocikit gc removes it."""
        return PrivateDir(str(self.path), prefix, what)

    def open_log(self, recipe: str, image: str, layer_type: str) -> tuple[Path, StepLog]:
        return self.layers.open_log(recipe, image, layer_type)


class EntryWriter:
    """One entry on its way into the cache (``BuildCache.entry``)."""

    def __init__(self, cache: BuildCache, tag: str, damaged: bool) -> None:
        self._cache = cache
        self._tag = tag
        # damaged: a blob found present is re-hashed, and replaced if damaged, not reused
        ref = Reference("oci", str(cache.path), tag)
        self._dest = OciLayoutDestination(ref, verify_existing=damaged)
        self._done = False

    @property
    def destination(self) -> ImageDestination:
        """Where a copy into this entry writes (``ops.copy``'s copier)."""
        return self._dest

    def new_blob(self) -> BlobWriter:
        """A blob writer: ``with entry.new_blob() as w: ...; w.commit(digest)``."""
        return self._dest.new_blob()

    def has(self, digest: Digest, size: int) -> bool:
        """Whether the cache holds that blob intact already (then it is this entry's too)."""
        return self._dest.reuse_blob(digest, size)

    def put_bytes(self, data: bytes) -> Digest:
        return self._dest.put_blob_bytes(data)

    def put_image(self, manifest: Manifest, config: ImageConfig) -> None:
        """The entry's image (its blobs written before): named by the tag at ``commit``."""
        self._dest.put_manifest(manifest, config, [])

    def staged(self, manifest: Manifest) -> Image:
        """The image ``put_image`` was given, as it is on disk before anything names it
        (every blob in place), to be checked before it is committed."""
        self._dest.flush()
        source = OciLayoutSource(
            Reference("oci", str(self._cache.path)), descriptor=manifest.descriptor
        )
        try:
            return Image(source)
        except BaseException:
            source.close()
            raise

    def commit(self, manifest: Manifest) -> None:
        """The tag names ``manifest`` (the image put); the build uses it from now on."""
        self._dest.commit()
        self._done = True
        self._cache._made(self._tag, manifest)

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._dest.abort()
