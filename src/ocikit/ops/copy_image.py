"""One image copied onto an open destination: its layers, each once, then config and manifest.

``ImageCopier`` is what ``copy`` runs for a single image and for each image of an index, and
what the build engine runs to fill its cache and write its outputs. It never opens, commits
or aborts the destination: its caller does (``ops.copy``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, BinaryIO

from ..layer.streams import HashingReader
from ..model import Compression, Descriptor, Digest, Manifest
from ..model import mediatypes as mt
from ..transports import Image, ImageDestination, Layer
from ..transports.base import BlobWriter, Flavor
from .progress import NullProgress, ProgressReporter

if TYPE_CHECKING:  # the repair, docker's load check and a pipe's speculation load when used
    from ..layer.analyze import Edit
    from ..layer.transcode import EntryWatcher, TranscodeResult
    from .repair import RepairPlan
    from .speculate import Speculator


class Cancellation:
    """Asked at every block a copy moves: once set (by the caller, or by a failed layer of a
    group copied at once), the copies stop with ``CancelledError``. A child is set with its
    parent, not the other way round."""

    def __init__(self, parent: Cancellation | None = None) -> None:
        self._event = threading.Event()
        self._parent = parent

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set() or (self._parent is not None and self._parent.is_set())

    def check(self) -> None:
        if self.is_set():
            raise CancelledError

    def child(self) -> Cancellation:
        return Cancellation(self)


class ImageCopier:
    """Copies one image's blobs, each once, then its manifest (``run``).

    ``compression``/``level``: what the user asked layers to become (the destination has
    the last word: ``layer_compression``); ``jobs``: layers copied at once where both sides
    can; ``speculator``: layers compressed already while a pipe was read; ``plan``: layers to
    rewrite (``repair``); ``cancel``: asked at every block."""

    def __init__(
        self,
        image: Image,
        dest: ImageDestination,
        *,
        compression: Compression | None = None,
        level: int | None = None,
        progress: ProgressReporter | None = None,
        jobs: int = 1,
        speculator: Speculator | None = None,
        plan: RepairPlan | None = None,
        cancel: Cancellation | None = None,
    ) -> None:
        self.image = image
        self.plan = plan
        self.dest = dest
        self.requested = compression
        self.level = level
        self.progress = progress or NullProgress()
        self.speculator = speculator
        self.cancel = cancel or Cancellation()
        self.flavor = _flavor(image, dest)
        both = dest.properties.concurrent and image.source.properties.concurrent
        self.jobs = jobs if both else 1
        self._lock = threading.Lock()
        self._records: dict[str, str] | None = None  # the user's record (layer.verified)
        self._fading: frozenset[str] = frozenset()  # of those, the first it would drop
        self._verified: list[tuple[Digest, Digest]] = []  # by this copy, to record
        self._done: dict[tuple[Digest, Compression], Descriptor] = {}
        self._counted: set[tuple[Digest, Compression]] = set()
        known = dest.known_layers(image.config.digest)
        self._known = list(known) if known and len(known) == len(image.layers) else None
        #: docker loads what this destination holds: what it would refuse is found on the way
        self.load_check = None
        if dest.properties.flavor is Flavor.DOCKER and plan is None:
            live = not (self.jobs > 1 and speculator is None)  # else layers copied at once
            from .loadcheck import LoadCheck  # here: only a docker destination needs it

            self.load_check = LoadCheck(image, live=live)

    def run(self, *, child: bool = False) -> Manifest:
        """Copy the blobs and store the manifest (``child``: for an index, untagged)."""
        image, dest = self.image, self.dest
        self.progress.begin(sum(layer.descriptor.size for layer in image.layers), "copying")
        layers = []
        diff_ids: dict[int, str] = {}
        if self.jobs > 1 and self.speculator is None and self.plan is None:
            self._copy_concurrently()
        for i, layer in enumerate(image.layers):
            self.progress.step(
                f"layer {i + 1}/{len(image.layers)} {layer.descriptor.digest.hex[:12]}"
            )
            target = dest.layer_compression(layer.compression, self.requested)
            if self.plan is not None and i in self.plan.edits:
                desc, diff_id = self._rewrite_layer(layer, target, self.plan.edits[i])
                layers.append(desc)
                diff_ids[i] = diff_id
                continue
            key = (layer.descriptor.digest, target)
            if key not in self._done:  # a layer repeated in one image is copied once
                self._done[key] = self._one(i, target, self.cancel)
            elif key in self._counted:  # copied concurrently, its progress counted then
                self._counted.discard(key)
            else:
                self.progress.advance(layer.descriptor.size)
            layers.append(self._done[key])
            if self.load_check is not None:
                self.load_check.layer_done(i)
        config = image.config
        if diff_ids:  # layers rewritten by a repair
            from .repair import repaired_config  # here: only a repair needs it

            config = repaired_config(image.config, diff_ids)
        config_digest = dest.put_blob_bytes(config.raw)
        config_desc = Descriptor(_config_type(image, self.flavor), config_digest, len(config.raw))
        manifest = _manifest_for(image, self.flavor, config_desc, layers)
        if child:
            dest.put_child_manifest(manifest)
        else:
            dest.put_manifest(manifest, config, image.repo_tags())
        self.config = config
        self.record_verified()
        return manifest

    def _copy_concurrently(self) -> None:
        """Copy the distinct layers ``jobs`` at a time (``run`` then finds them done). On the
        first failure the others stop at their next block and the failure is raised."""
        todo: dict[tuple[Digest, Compression], int] = {}
        for i, layer in enumerate(self.image.layers):
            target = self.dest.layer_compression(layer.compression, self.requested)
            todo.setdefault((layer.descriptor.digest, target), i)
        if len(todo) < 2:
            return
        group = self.cancel.child()  # set on the first failure: the others stop
        pool = ThreadPoolExecutor(min(self.jobs, len(todo)), thread_name_prefix="ocikit-copy")
        # the largest first: the last to start are small, so the copy does not end on one
        # large layer moving alone while the other cores idle
        layers = self.image.layers
        order = sorted(todo.items(), key=lambda item: -layers[item[1]].descriptor.size)
        futures = {pool.submit(self._one, i, key[1], group): key for key, i in order}
        try:
            for future in as_completed(futures):
                self._done[futures[future]] = future.result()
        except BaseException:
            group.set()
            for future in futures:
                future.cancel()
            raise
        finally:
            pool.shutdown(wait=True)
        self._counted = set(todo)

    def _one(self, i: int, target: Compression, cancel: Cancellation) -> Descriptor:
        return self._reuse(i, target) or self._copy_layer(self.image.layers[i], target, i, cancel)

    def _ticker(self, cancel: Cancellation) -> Callable[[int], None]:
        """What a layer copy calls at every block: the cancellation asked, progress told."""
        advance = self.progress.advance

        def tick(n: int) -> None:
            cancel.check()
            advance(n)

        return tick

    def _rewrite_layer(
        self, layer: Layer, target: Compression, edits: dict[int, Edit]
    ) -> tuple[Descriptor, Digest]:
        from .repair import rewrite_layer  # here: only a repair needs it

        with self.dest.new_blob() as writer:
            result = rewrite_layer(
                self.image, layer, edits, writer.file, target, self.level, self.progress
            )
            writer.commit(result.digest)
        media_type = _layer_type(self.flavor, target)
        return Descriptor(media_type, result.digest, result.size), result.diff_id

    def _reuse(self, i: int, target: Compression) -> Descriptor | None:
        """The same image's layer already at the destination, in the compression wanted."""
        if self._known is None:
            return None
        known, src = self._known[i], self.image.layers[i].descriptor
        if mt.layer_compression(known.media_type) is not target:
            return None
        self.progress.advance(src.size)
        return Descriptor(
            _layer_type(self.flavor, target), known.digest, known.size, src.annotations
        )

    def _copy_layer(
        self, layer: Layer, target: Compression, index: int, cancel: Cancellation
    ) -> Descriptor:
        src, dest = layer.descriptor, self.dest
        check = self.load_check
        watch = check.watcher(index) if check is not None else None
        media_type = _layer_type(self.flavor, target)
        if target is layer.compression and dest.reuse_blob(src.digest, src.size):
            self.progress.advance(src.size)
            return Descriptor(media_type, src.digest, src.size, src.annotations)
        if target is layer.compression and dest.properties.takes_files:
            path = self.image.source.blob_file(src)
            if path is not None:
                # sent from the source's own file while it is verified here: a blob that
                # fails stops the copy before any manifest names it
                dest.put_blob_file(path, src.digest)
                with open(path, "rb", buffering=0) as raw:
                    self._verify_file(raw, layer, cancel)
                return Descriptor(media_type, src.digest, src.size, src.annotations)
        sent_as_is = target is layer.compression and watch is None and self.plan is None
        if sent_as_is and self._recorded(src.digest, layer.diff_id):  # verified before
            self._copy_known(layer, index, cancel)
            return Descriptor(media_type, src.digest, src.size, src.annotations)
        result = self._speculated(layer, target) or self._transcode(
            layer, target, index, watch, cancel
        )
        return Descriptor(media_type, result.digest, result.size, src.annotations)

    def _copy_known(self, layer: Layer, index: int, cancel: Cancellation) -> None:
        """A blob the user's record says inflates to the config's diff_id (``_verify_file``),
        sent as it is: its digest and size checked as it streams into the destination, and
        nothing inflated (a pull of layers ocikit has verified before)."""
        with self._layer_writer(index, layer.compression) as writer:
            with self.image.source.open_blob(layer.descriptor) as raw:
                self._check_digest(raw, layer, cancel, writer.file)
            writer.commit(layer.descriptor.digest)

    def _check_digest(
        self, raw: BinaryIO, layer: Layer, cancel: Cancellation, sink: BinaryIO | None = None
    ) -> None:
        """The blob read whole, its digest and size checked, its bytes given to ``sink``."""
        src = layer.descriptor
        HashingReader(
            raw,
            what=f"layer {src.digest}",
            expected_digest=src.digest,
            expected_size=src.size,
            sink=sink,
            progress=self._ticker(cancel),
        ).drain()

    def _verify_file(self, raw: BinaryIO, layer: Layer, cancel: Cancellation) -> None:
        """A layer blob sent as it is, verified: its digest and size, and its diff_id unless
        ocikit has verified already that this blob inflates to the config's diff_id (the
        user's record, ``layer.verified``: then the digest alone proves the content)."""
        src = layer.descriptor
        if self._recorded(src.digest, layer.diff_id):
            self._check_digest(raw, layer, cancel)
            return
        from ..layer.transcode import transcode  # here: a blob that is there needs none

        result = transcode(
            raw,
            src,
            layer.compression,
            _Discard(),  # type: ignore[arg-type]
            layer.compression,
            expected_diff_id=layer.diff_id,
            progress=self._ticker(cancel),
        )
        self._verified_now(src.digest, result.diff_id, layer.compression)

    def _recorded(self, blob: Digest, diff_id: Digest) -> bool:
        """Whether the user's record (read once a copy) says ``blob`` inflates to
        ``diff_id``; relied on, a record about to fade out is written again at the end."""
        with self._lock:
            if self._records is None:
                from ..layer import verified  # here: only a blob sent as it is asks

                self._records = verified.load()
                self._fading = verified.fading(self._records)
            if self._records.get(blob) != diff_id:
                return False
            if blob in self._fading:
                self._verified.append((blob, diff_id))
            return True

    def _verified_now(self, blob: Digest, diff_id: Digest, compression: Compression) -> None:
        """``blob`` was just read whole, its digest and its diff_id verified (or written
        here, compressing content whose digest is ``diff_id``): recorded when the copy ends
        (``record_verified``); an uncompressed blob is its own diff_id, a squashfs one has
        none to prove."""
        if compression in (Compression.GZIP, Compression.ZSTD):
            with self._lock:
                self._verified.append((blob, diff_id))

    def record_verified(self) -> None:
        """What this copy verified, added to the user's record (``layer.verified``)."""
        with self._lock:
            pairs, self._verified = self._verified, []
        if pairs:
            from ..layer import verified  # here: only a copy that verified a layer writes

            verified.remember(pairs)

    def _transcode(
        self,
        layer: Layer,
        target: Compression,
        index: int,
        watch: EntryWatcher | None,
        cancel: Cancellation,
    ) -> TranscodeResult:
        """The layer read from the source, verified, in ``target`` compression, committed."""
        from ..layer.transcode import transcode  # here: a blob that is there needs none

        src = layer.descriptor
        with self._layer_writer(index, target) as writer:
            with self.image.source.open_blob(src) as raw:
                result = transcode(
                    raw,
                    src,
                    layer.compression,
                    writer.file,
                    target,
                    expected_diff_id=layer.diff_id,
                    level=self.level,
                    progress=self._ticker(cancel),
                    watch=watch,
                )
            writer.commit(result.digest)
        self._verified_now(src.digest, result.diff_id, layer.compression)
        if result.digest != src.digest:  # compressed here, from content hashed on the way
            self._verified_now(result.digest, result.diff_id, target)
        return result

    def _layer_writer(self, i: int, target: Compression) -> BlobWriter:
        """Where layer ``i`` goes: the destination is told its place in the image, and its
        digest and size where they are known before its bytes (a repair changes the diff_ids:
        then nothing is told)."""
        if self.plan is not None:
            return self.dest.new_blob()
        layer = self.image.layers[i]
        diff_ids = self.image.config.diff_ids[: i + 1]
        if target is layer.compression:
            src = layer.descriptor
            return self.dest.new_layer_blob(diff_ids, src.digest, src.size)
        if target is Compression.NONE:
            return self.dest.new_layer_blob(diff_ids, layer.diff_id, None)
        return self.dest.new_layer_blob(diff_ids, None, None)

    def _speculated(self, layer: Layer, target: Compression) -> TranscodeResult | None:
        """The blob compressed while the pipe was read, verified like any other, committed."""
        spec = self.speculator
        if spec is None or target is not spec.target:
            return None
        taken = spec.take_layer(layer)
        return taken[0] if taken is not None else None


class _Discard:
    """Where a verified-only blob's bytes go."""

    def write(self, data: bytes | memoryview) -> int:
        return len(data)


def _flavor(image: Image, dest: ImageDestination) -> Flavor:
    """The media types written: the destination's, or (``SOURCE``) the source manifest's,
    unless that manifest was made up from a docker-archive's manifest.json (then OCI)."""
    flavor = dest.properties.flavor
    if flavor is not Flavor.SOURCE:
        return flavor
    synthesized = image.source.properties.synthesized
    docker = image.manifest.media_type == mt.DOCKER_MANIFEST and not synthesized
    return Flavor.DOCKER if docker else Flavor.OCI


def _layer_type(flavor: Flavor, compression: Compression) -> str:
    if flavor is Flavor.DOCKER:
        return mt.docker_layer_type(compression)
    return mt.oci_layer_type(compression)


def _config_type(image: Image, flavor: Flavor) -> str:
    if flavor is Flavor.DOCKER:
        return mt.DOCKER_CONFIG
    current = image.manifest.config.media_type
    return mt.OCI_CONFIG if current == mt.DOCKER_CONFIG else current


def _manifest_for(
    image: Image, flavor: Flavor, config: Descriptor, layers: list[Descriptor]
) -> Manifest:
    """The source manifest's exact bytes when nothing changed, else a canonical new one."""
    src = image.manifest
    media_type = mt.DOCKER_MANIFEST if flavor is Flavor.DOCKER else mt.OCI_MANIFEST
    if src.media_type == media_type and src.config == config and list(src.layers) == layers:
        return src
    return Manifest.build(config, layers, src.annotations, media_type)
