"""``copy``: the one place that moves an image between any two transports."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import DestinationError, UsageError
from ..layer.analyze import Edit
from ..layer.compress import check_level
from ..layer.streams import HashingReader
from ..layer.transcode import TranscodeResult, transcode
from ..model import Compression, Descriptor, Digest, Index, Manifest
from ..model import mediatypes as mt
from ..transports import (
    Image,
    ImageDestination,
    ImageSource,
    IndexSource,
    Layer,
    Reference,
    RegistryOptions,
    as_reference,
    open_destination,
    open_image,
    open_index,
)
from ..transports.base import BlobWriter
from .loadcheck import LoadCheck
from .progress import NullProgress, ProgressReporter
from .repair import RepairPlan, plan_repair, repaired_config, rewrite_layer
from .speculate import Speculator


@dataclass(frozen=True)
class CopyResult:
    source: str
    destination: str
    manifest_digest: Digest  # of the image manifest, or of the index (``all_platforms``)
    config_digest: Digest | None  # None for an index
    media_type: str
    layers: list[Descriptor]
    tags: list[str] = field(default_factory=list)
    bytes_read: int = 0
    repaired: list[dict[str, Any]] | None = None  # with repair: per rewritten layer, what changed
    manifests: list[Descriptor] | None = None  # an index's manifests, as written
    #: what docker will refuse or extract wrongly (a copy to docker): one line a rule
    warnings: list[str] = field(default_factory=list)

    @property
    def image_id(self) -> Digest | None:
        """The ID docker shows for the image (its config's digest; classic image store)."""
        return self.config_digest

    def to_dict(self) -> dict[str, Any]:
        out = {
            "source": self.source,
            "destination": self.destination,
            "digest": self.manifest_digest,
            "config_digest": self.config_digest,
            "image_id": self.image_id,
            "media_type": self.media_type,
            "tags": self.tags,
            "layers": [d.to_dict() for d in self.layers],
            "warnings": self.warnings,
        }
        if self.repaired is not None:
            out["repaired"] = self.repaired
        if self.manifests is not None:
            out["manifests"] = [d.to_dict() for d in self.manifests]
        return out


def copy(
    src: str | Reference,
    dst: str | Reference,
    *,
    dest_compress_format: str | Compression | None = None,
    dest_compress_level: int | None = None,
    platform: str | None = None,
    additional_tags: Sequence[str] = (),
    quiet: bool = True,
    progress: ProgressReporter | None = None,
    repair: bool = False,
    drop_unsafe: bool = False,
    src_registry: RegistryOptions | None = None,
    dest_registry: RegistryOptions | None = None,
    jobs: int | None = None,
    all_platforms: bool = False,
    verify_existing: bool = False,
    warn: Callable[[str], None] | None = None,
) -> CopyResult:
    """Copy one image from ``src`` to ``dst`` (reference strings, skopeo syntax).

    Every blob read is verified (digest, size, diff_id). The destination changes only when
    the whole image has been written: on error it is left as it was.

    ``repair``: layers with duplicate paths, entries through or over symlinked directories
    or absolute names are rewritten (ocikit/help/check.md); an entry that cannot be repaired safely
    raises UnsafeInputError unless ``drop_unsafe``, which drops it.

    ``src_registry``/``dest_registry``: credentials, TLS and (destination) repositories to
    mount blobs from, for ``docker://`` references; a source in another repository of the
    destination's registry is a mount candidate anyway.

    ``all_platforms``: when the source names an index (a multi-platform image), copy it
    whole: every manifest (images, and artifacts such as attestations, byte for byte), then
    the index, tagged. A source naming one image is copied as usual.

    ``jobs``: layers copied at once, where both sides can (not from a pipe). Default: 4 when
    either side is a registry (network-bound), else 1 (local copies are bound by the CPU,
    and compression is multi-threaded already). A registry destination uploads
    ``dest_registry.jobs`` blobs at once besides.

    ``verify_existing``: re-hash every blob the destination already holds before reusing
    it (an OCI layout always checks their sizes, and re-hashes small ones); a damaged one
    is replaced.

    ``warn``: told, before the destination is committed (before the engine loads it), each
    line of ``CopyResult.warnings``: to ``docker-archive:`` and ``docker-daemon:``, what
    ``check`` finds of severity error in the layers as they stream (ops/loadcheck.py), one
    line a rule, with what ``--repair`` does; the engine's refusal then says it too.
    """
    if drop_unsafe and not repair:
        raise UsageError("--drop-unsafe only applies with --repair")
    if all_platforms and platform:
        raise UsageError("--all copies every platform; it does not go with --platform")
    if all_platforms and repair:
        raise UsageError("--repair works on one image; copy one platform with --platform")
    del quiet  # the library never prints; the CLI passes a progress reporter
    src_ref, dst_ref = as_reference(src), as_reference(dst)
    if src_ref.is_stdio and dst_ref.is_stdio and src_ref == dst_ref:
        raise UsageError("source and destination cannot both be the same stream")
    requested = (
        Compression.parse(dest_compress_format)
        if isinstance(dest_compress_format, str)
        else dest_compress_format
    )
    if dest_compress_level is not None:
        check_level(requested or Compression.GZIP, dest_compress_level)
    progress = progress or NullProgress()
    if jobs is None:
        jobs = 4 if "docker" in (src_ref.transport, dst_ref.transport) else 1
    dest = open_destination(dst_ref, additional_tags, _mounting(src_ref, dst_ref, dest_registry))
    speculator = None
    top = None
    try:  # from here on, whatever happens (an interrupt too), the destination is aborted
        dest.ready()  # before the source is read
        dest.verify_existing = verify_existing
        streamed = src_ref.transport == "docker-daemon" or (
            src_ref.transport == "docker-archive" and src_ref.is_stdio
        )
        if streamed and not repair:
            target = dest.layer_compression(Compression.NONE, requested)
            if target is not Compression.NONE:
                speculator = Speculator(dest, target, dest_compress_level, progress)
                progress.begin(0, "reading standard input")
        if all_platforms:
            top = open_index(src_ref, src_registry)
            if top.index is not None:
                index = _copy_index(top, dest, requested, dest_compress_level, progress, jobs)
                dest.commit()
                return CopyResult(
                    source=str(src_ref),
                    destination=str(dst_ref),
                    manifest_digest=index.digest,
                    config_digest=None,
                    media_type=index.media_type,
                    layers=[],
                    tags=_tags(dst_ref, additional_tags),
                    manifests=list(index.manifests),
                )
        single = top.open_single() if top is not None else None  # the source read once
        opened = (
            Image(single)
            if single is not None
            else open_image(src_ref, platform, tee=speculator, registry=src_registry)
        )
        with opened as image:
            plan = (
                plan_repair(image, drop_unsafe=drop_unsafe, progress=progress) if repair else None
            )
            copier = _Copier(
                image, dest, requested, dest_compress_level, progress, speculator, plan, jobs
            )
            result = copier.run()
            config_digest = result.config.digest
        if speculator is not None:
            speculator.discard()
        warnings = copier.load_check.warnings() if copier.load_check is not None else []
        for line in warnings:
            if warn is not None:
                warn(line)
        try:
            dest.commit()
        except DestinationError as e:
            hint = copier.load_check.hint() if copier.load_check is not None else None
            if hint is None:
                raise
            raise DestinationError(f"{e}; {hint}") from None
    except BaseException:
        if speculator is not None:
            speculator.discard()
        dest.abort()
        raise
    finally:
        if top is not None:
            top.close()
        progress.end()
    return CopyResult(
        source=str(src_ref),
        destination=str(dst_ref),
        manifest_digest=result.digest,
        config_digest=config_digest,
        media_type=result.media_type,
        layers=list(result.layers),
        tags=_tags(dst_ref, additional_tags),
        repaired=plan.summary() if plan is not None else None,
        warnings=warnings,
    )


def _copy_index(
    top: IndexSource,
    dest: ImageDestination,
    requested: Compression | None,
    level: int | None,
    progress: ProgressReporter,
    jobs: int,
) -> Index:
    """Every manifest of the index, then the index: its exact bytes if no manifest changed."""
    index = top.index
    assert index is not None
    written = []
    for desc in index.manifests:
        if desc.media_type in mt.INDEX_TYPES:
            raise UsageError(
                f"{top.ref}: the index names another index ({desc.digest}); ocikit copies "
                f"one level of index"
            )
        child = top.open_child(desc)
        owned: ImageSource | None = child  # closed here unless an Image takes it
        try:
            if _is_image(child.manifest()):
                image = Image(child)
                owned = None  # the image closes it
                with image:
                    copier = _Copier(image, dest, requested, level, progress, None, None, jobs)
                    manifest = copier.run(child=True)
            else:  # an artifact (an attestation, a signature): its blobs as they are
                manifest = _copy_artifact(child, dest, progress)
        finally:
            if owned is not None:
                owned.close()
        written.append(
            Descriptor(
                manifest.media_type,
                manifest.digest,
                len(manifest.raw),
                desc.annotations,
                desc.platform,
                desc.urls,
                desc.extra,
            )
        )
    if written == list(index.manifests):
        result = index
    else:
        docker = all(d.media_type == mt.DOCKER_MANIFEST for d in written)
        media_type = mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX
        if dest.flavor == "oci":
            media_type = mt.OCI_INDEX
        result = Index.build(written, index.annotations, media_type)
    dest.put_index(result, [])
    return result


def _is_image(manifest: Manifest) -> bool:
    """A container image (a config ocikit reads, layers it can verify), not an artifact."""
    return manifest.config.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG) and all(
        mt.layer_compression(d.media_type) is not None for d in manifest.layers
    )


def _copy_artifact(
    source: ImageSource, dest: ImageDestination, progress: ProgressReporter
) -> Manifest:
    """A manifest whose blobs are not image layers: each verified and copied byte for byte."""
    manifest = source.manifest()
    seen: set[Digest] = set()
    for desc in (manifest.config, *manifest.layers):
        if desc.digest in seen or dest.reuse_blob(desc.digest, desc.size):
            seen.add(desc.digest)
            continue
        seen.add(desc.digest)
        writer = dest.new_blob()
        try:
            with source.open_blob(desc) as raw:
                HashingReader(
                    raw,
                    what=f"{source.ref}: blob {desc.digest}",
                    expected_digest=desc.digest,
                    expected_size=desc.size,
                    sink=writer.file,
                    progress=progress.advance,
                ).drain()
        except BaseException:
            writer.abort()
            raise
        writer.commit(desc.digest)
    dest.put_child_manifest(manifest)
    return manifest


def _mounting(
    src: Reference, dst: Reference, options: RegistryOptions | None
) -> RegistryOptions | None:
    """The source's repository as a mount candidate when it is on the destination's registry."""
    if src.transport != "docker" or dst.transport != "docker":
        return options
    if src.path.partition("/")[0] != dst.path.partition("/")[0] or src.path == dst.path:
        return options
    options = options or RegistryOptions()
    return replace(options, mount_from=(*options.mount_from, src.path))


def _tags(ref: Reference, additional: Sequence[str]) -> list[str]:
    return ([ref.name] if ref.name else []) + list(additional)


class _Copier:
    """Copies one image's blobs, each once, then its manifest."""

    def __init__(
        self,
        image: Image,
        dest: ImageDestination,
        requested: Compression | None,
        level: int | None,
        progress: ProgressReporter,
        speculator: Speculator | None,
        plan: RepairPlan | None = None,
        jobs: int = 1,
    ) -> None:
        self.image = image
        self.plan = plan
        self.dest = dest
        self.requested = requested
        self.level = level
        self.progress = progress
        self.speculator = speculator
        self.flavor = _flavor(image, dest)
        self.jobs = jobs if dest.concurrent and image.source.concurrent else 1
        self._done: dict[tuple[Digest, Compression], Descriptor] = {}
        self._cancelled = threading.Event()
        self._counted: set[tuple[Digest, Compression]] = set()
        known = dest.known_layers(image.config.digest)
        self._known = list(known) if known and len(known) == len(image.layers) else None
        #: docker loads what this destination holds: what it would refuse is found on the way
        self.load_check = None
        if dest.flavor == "docker" and plan is None:
            live = not (self.jobs > 1 and speculator is None)  # else layers copied at once
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
                self._done[key] = self._reuse(i, target) or self._copy_layer(layer, target, i)
            elif key in self._counted:  # copied concurrently, its progress counted then
                self._counted.discard(key)
            else:
                self.progress.advance(layer.descriptor.size)
            layers.append(self._done[key])
            if self.load_check is not None:
                self.load_check.layer_done(i)
        config = repaired_config(image.config, diff_ids) if diff_ids else image.config
        config_desc = _put_bytes(dest, config.raw, _config_type(image, self.flavor))
        manifest = _manifest_for(image, self.flavor, config_desc, layers)
        if child:
            dest.put_child_manifest(manifest)
        else:
            dest.put_manifest(manifest, config, image.repo_tags())
        self.config = config
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
        progress = self.progress
        self.progress = _Cancellable(progress, self._cancelled)
        pool = ThreadPoolExecutor(min(self.jobs, len(todo)), thread_name_prefix="ocikit-copy")
        futures = {pool.submit(self._one, i, key[1]): key for key, i in todo.items()}
        try:
            for future in as_completed(futures):
                self._done[futures[future]] = future.result()
        except BaseException:
            self._cancelled.set()
            for future in futures:
                future.cancel()
            raise
        finally:
            pool.shutdown(wait=True)
            self.progress = progress
        self._counted = set(todo)

    def _one(self, i: int, target: Compression) -> Descriptor:
        return self._reuse(i, target) or self._copy_layer(self.image.layers[i], target, i)

    def _rewrite_layer(
        self, layer: Layer, target: Compression, edits: dict[int, Edit]
    ) -> tuple[Descriptor, Digest]:
        writer = self.dest.new_blob()
        try:
            result = rewrite_layer(
                self.image, layer, edits, writer.file, target, self.level, self.progress
            )
        except BaseException:
            writer.abort()
            raise
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

    def _copy_layer(self, layer: Layer, target: Compression, index: int) -> Descriptor:
        src, dest = layer.descriptor, self.dest
        check = self.load_check
        watch = check.watcher(index) if check is not None else None
        media_type = _layer_type(self.flavor, target)
        if target is layer.compression and dest.reuse_blob(src.digest, src.size):
            self.progress.advance(src.size)
            return Descriptor(media_type, src.digest, src.size, src.annotations)
        if target is layer.compression and dest.takes_files:
            path = self.image.source.blob_file(src)
            if path is not None:
                # sent from the source's own file while it is verified here: a blob that
                # fails stops the copy before any manifest names it
                dest.put_blob_file(path, src.digest)
                with open(path, "rb", buffering=0) as raw:
                    transcode(
                        raw,  # type: ignore[arg-type]
                        src,
                        layer.compression,
                        _Discard(),  # type: ignore[arg-type]
                        target,
                        expected_diff_id=layer.diff_id,
                        progress=self.progress.advance,
                    )
                return Descriptor(media_type, src.digest, src.size, src.annotations)
        taken = self._speculated(layer, target)
        if taken is not None:
            result, writer = taken
        else:
            writer = self._layer_writer(index, target)
            try:
                with self.image.source.open_blob(src) as raw:
                    result = transcode(
                        raw,
                        src,
                        layer.compression,
                        writer.file,
                        target,
                        expected_diff_id=layer.diff_id,
                        level=self.level,
                        progress=self.progress.advance,
                        watch=watch,
                    )
            except BaseException:
                writer.abort()
                raise
        writer.commit(result.digest)
        return Descriptor(media_type, result.digest, result.size, src.annotations)

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

    def _speculated(
        self, layer: Layer, target: Compression
    ) -> tuple[TranscodeResult, BlobWriter] | None:
        """The blob compressed while the pipe was read, verified like any other."""
        spec = self.speculator
        if spec is None or target is not spec.target:
            return None
        return spec.take_layer(layer)


class _Discard:
    """Where a verified-only blob's bytes go."""

    def write(self, data: bytes | memoryview) -> int:
        return len(data)


class _Cancellable:
    """The progress reporter, through which a layer copy learns that another one failed."""

    def __init__(self, progress: ProgressReporter, cancelled: threading.Event) -> None:
        self._progress = progress
        self._cancelled = cancelled

    def begin(self, total: int, description: str) -> None:
        self._progress.begin(total, description)

    def step(self, description: str) -> None:
        self._progress.step(description)

    def advance(self, n: int) -> None:
        if self._cancelled.is_set():
            raise CancelledError
        self._progress.advance(n)

    def end(self) -> None:
        self._progress.end()


def _put_bytes(dest: ImageDestination, data: bytes, media_type: str) -> Descriptor:
    digest = Digest.of(data)
    if dest.takes_files:
        dest.put_small_blob(data, digest)
    elif not dest.reuse_blob(digest, len(data)):
        writer = dest.new_blob()
        try:
            writer.file.write(data)
            writer.commit(digest)
        except BaseException:
            writer.abort()
            raise
    return Descriptor(media_type, digest, len(data))


def _flavor(image: Image, dest: ImageDestination) -> str:
    """The media types written: the destination's, or (``source``) the source manifest's,
    unless that manifest was made up from a docker-archive's manifest.json (then OCI)."""
    if dest.flavor != "source":
        return dest.flavor
    docker = image.manifest.media_type == mt.DOCKER_MANIFEST and not image.source.synthesized
    return "docker" if docker else "oci"


def _layer_type(flavor: str, compression: Compression) -> str:
    if flavor == "docker":
        return mt.docker_layer_type(compression)
    return mt.oci_layer_type(compression)


def _config_type(image: Image, flavor: str) -> str:
    if flavor == "docker":
        return mt.DOCKER_CONFIG
    current = image.manifest.config.media_type
    return mt.OCI_CONFIG if current == mt.DOCKER_CONFIG else current


def _manifest_for(
    image: Image, flavor: str, config: Descriptor, layers: list[Descriptor]
) -> Manifest:
    """The source manifest's exact bytes when nothing changed, else a canonical new one."""
    src = image.manifest
    media_type = mt.DOCKER_MANIFEST if flavor == "docker" else mt.OCI_MANIFEST
    if src.media_type == media_type and src.config == config and list(src.layers) == layers:
        return src
    return Manifest.build(config, layers, src.annotations, media_type)
