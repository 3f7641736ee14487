"""``copy``: the one place that moves an image between any two transports.

This module is the public entry: the options (``CopyOptions``, checked in the library's own
words: ``CopyOptionsError`` names the fields, and the CLI says them as its flags), the
destination opened, committed or aborted, and the result. The work is in parts:
``copy_image`` (one image's layers, config and manifest), ``copy_index`` (an index whole:
each image, each artifact, then the index) and ``copy_blob`` (blobs as they are).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import DestinationError, Option, UsageError
from ..model import Compression, Descriptor, Digest, Platform
from ..transports import (
    Image,
    ImageDestination,
    IndexSource,
    Reference,
    RegistryOptions,
    as_reference,
    open_destination,
    open_image,
    open_index,
)
from .copy_image import Cancellation, ImageCopier
from .copy_index import copy_index
from .progress import NullProgress, ProgressReporter

if TYPE_CHECKING:
    from .speculate import Speculator


class CopyOptionsError(UsageError):
    """Options that do not go together, or a value out of range; the ``CopyOptions`` fields
    at fault are its ``options`` (the CLI says its flags)."""


@dataclass(frozen=True)
class CopyOptions:
    """How ``copy`` copies (every field has a default: ``CopyOptions()`` is a plain copy).

    ``compression``/``compression_level``: what layers become where the destination lets
    the user choose (a name such as ``"zstd"`` is accepted). ``platform``: the image of a
    multi-platform source to copy. ``additional_tags``: names besides the destination's.

    ``repair``: layers with duplicate paths, entries through or over symlinked directories
    or absolute names are rewritten (ocikit/help/check.md); an entry that cannot be repaired
    safely raises UnsafeInputError unless ``drop_unsafe``, which drops it.

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

    ``progress``: told what is copied (the library never prints). ``warn``: told, before the
    destination is committed (before the engine loads it), each line of
    ``CopyResult.warnings``: to ``docker-archive:`` and ``docker-daemon:``, what ``check``
    finds of severity error in the layers as they stream (ops/loadcheck.py), one line a
    rule, with what ``repair`` does; the engine's refusal then says it too.
    """

    compression: Compression | None = None
    compression_level: int | None = None
    platform: Platform | None = None
    all_platforms: bool = False
    additional_tags: tuple[str, ...] = ()
    repair: bool = False
    drop_unsafe: bool = False
    src_registry: RegistryOptions | None = None
    dest_registry: RegistryOptions | None = None
    jobs: int | None = None
    verify_existing: bool = False
    progress: ProgressReporter | None = None
    warn: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        """Names parsed, then every rule checked: a CopyOptions that exists is valid."""
        if isinstance(self.compression, str):
            object.__setattr__(self, "compression", Compression.parse(self.compression))
        if isinstance(self.platform, str):
            object.__setattr__(self, "platform", Platform.parse(self.platform))
        object.__setattr__(self, "additional_tags", tuple(self.additional_tags))
        if self.compression_level is not None:
            from ..layer.compress import check_level  # here: a level alone needs it

            check_level(self.compression or Compression.GZIP, self.compression_level)
        if self.drop_unsafe and not self.repair:
            raise CopyOptionsError(Option("drop_unsafe"), " only applies with ", Option("repair"))
        if self.all_platforms and self.platform is not None:
            raise CopyOptionsError(
                Option("all_platforms"),
                " copies every platform; it does not go with ",
                Option("platform"),
            )
        if self.all_platforms and self.repair:
            raise CopyOptionsError(
                Option("repair"), " works on one image; copy one platform with ", Option("platform")
            )
        if self.jobs is not None and self.jobs < 1:
            raise CopyOptionsError(Option("jobs"), f" must be at least 1, got {self.jobs}")


# the keyword arguments ``copy`` took before CopyOptions, and the fields they are now
_OLD_NAMES = {"dest_compress_format": "compression", "dest_compress_level": "compression_level"}


@dataclass(frozen=True)
class CopyResult:
    source: str
    destination: str
    manifest_digest: Digest  # of the image manifest, or of the index (``all_platforms``)
    config_digest: Digest | None  # None for an index
    media_type: str
    layers: list[Descriptor]
    tags: list[str] = field(default_factory=list)
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
    options: CopyOptions | None = None,
    *,
    cancel: Cancellation | None = None,
    **settings: Any,
) -> CopyResult:
    """Copy one image (or with ``all_platforms`` an index) from ``src`` to ``dst``
    (reference strings, skopeo syntax), as ``options`` say (``CopyOptions``; keyword
    arguments are its fields: ``copy(a, b, repair=True)``).

    Every blob read is verified (digest, size, diff_id). The destination changes only when
    the whole image has been written: on error, or when ``cancel`` is set, it is left as it
    was (a cancelled copy raises ``concurrent.futures.CancelledError``).
    """
    settings = {_OLD_NAMES.get(k, k): v for k, v in settings.items()}
    options = replace(options, **settings) if options is not None else CopyOptions(**settings)
    src_ref, dst_ref = as_reference(src), as_reference(dst)
    if src_ref.is_stdio and dst_ref.is_stdio and src_ref == dst_ref:
        raise UsageError("source and destination cannot both be the same stream")
    return _Copy(src_ref, dst_ref, options, cancel or Cancellation()).run()


class _Copy:
    """One call of ``copy``: the destination opened, the source copied, then committed; on
    any failure (an interrupt too) the destination is aborted."""

    def __init__(
        self, src: Reference, dst: Reference, options: CopyOptions, cancel: Cancellation
    ) -> None:
        self.src, self.dst, self.options, self.cancel = src, dst, options, cancel
        self.progress = options.progress or NullProgress()
        jobs = options.jobs
        if jobs is None:
            jobs = max(src.properties.default_jobs, dst.properties.default_jobs)
        self.jobs = jobs
        self.speculator: Speculator | None = None

    def run(self) -> CopyResult:
        o = self.options
        dest = open_destination(
            self.dst,
            o.additional_tags,
            _mounting(self.src, self.dst, o.dest_registry),
            verify_existing=o.verify_existing,
        )
        top = None
        try:  # from here on, whatever happens (an interrupt too), the destination is aborted
            dest.ready()  # before the source is read
            self.speculator = self._speculator(dest)
            if o.all_platforms:
                top = open_index(self.src, o.src_registry)
                if top.index is not None:
                    return self._index(top, dest)
            single = top.open_single() if top is not None else None  # the source read once
            result = self._image(Image(single) if single is not None else None, dest)
        except BaseException:
            if self.speculator is not None:
                self.speculator.discard()
            dest.abort()
            raise
        finally:
            if top is not None:
                top.close()
            self.progress.end()
        return result

    def _speculator(self, dest: ImageDestination) -> Speculator | None:
        """From a pipe (a docker-archive on standard input, an engine's save): layers are
        compressed while it is read (``ops.speculate``)."""
        src = self.src
        if not src.streamed or self.options.repair:
            return None
        target = dest.layer_compression(Compression.NONE, self.options.compression)
        if target is Compression.NONE:
            return None
        self.progress.begin(0, "reading standard input")
        from .speculate import Speculator  # here: only a copy from a pipe speculates

        return Speculator(dest, target, self.options.compression_level, self.progress)

    def _index(self, top: IndexSource, dest: ImageDestination) -> CopyResult:
        if not dest.properties.holds_index:
            raise CopyOptionsError(
                f"{dest.ref}: cannot hold an image index; copy one platform with ",
                Option("platform"),
            )
        o = self.options
        index = copy_index(
            top,
            dest,
            compression=o.compression,
            level=o.compression_level,
            progress=self.progress,
            jobs=self.jobs,
            cancel=self.cancel,
        )
        dest.commit()
        return CopyResult(
            source=str(self.src),
            destination=str(self.dst),
            manifest_digest=index.digest,
            config_digest=None,
            media_type=index.media_type,
            layers=[],
            tags=_tags(self.dst, o.additional_tags),
            manifests=list(index.manifests),
        )

    def _image(self, opened: Image | None, dest: ImageDestination) -> CopyResult:
        """One image (``opened``: read already, from an index reference), then the commit."""
        o = self.options
        if opened is None:
            opened = open_image(self.src, o.platform, tee=self.speculator, registry=o.src_registry)
        with opened as image:
            plan = None
            if o.repair:
                from .repair import plan_repair  # here: a copy without repair needs none of it

                plan = plan_repair(image, drop_unsafe=o.drop_unsafe, progress=self.progress)
            copier = ImageCopier(
                image,
                dest,
                compression=o.compression,
                level=o.compression_level,
                progress=self.progress,
                jobs=self.jobs,
                speculator=self.speculator,
                plan=plan,
                cancel=self.cancel,
            )
            manifest = copier.run()
        if self.speculator is not None:
            self.speculator.discard()
        check = copier.load_check
        warnings = check.warnings() if check is not None else []
        if o.warn is not None:
            for line in warnings:
                o.warn(line)
        try:
            dest.commit()
        except DestinationError as e:
            hint = check.hint() if check is not None else None
            if hint is None:
                raise
            raise DestinationError(*e.parts, f"; {hint}") from None
        return CopyResult(
            source=str(self.src),
            destination=str(self.dst),
            manifest_digest=manifest.digest,
            config_digest=copier.config.digest,
            media_type=manifest.media_type,
            layers=list(manifest.layers),
            tags=_tags(self.dst, o.additional_tags),
            repaired=plan.summary() if plan is not None else None,
            warnings=warnings,
        )


def _mounting(
    src: Reference, dst: Reference, options: RegistryOptions | None
) -> RegistryOptions | None:
    """The source's repository as a mount candidate when it is on the destination's registry."""
    host = src.registry_host
    if host is None or host != dst.registry_host or src.path == dst.path:
        return options
    options = options or RegistryOptions()
    return replace(options, mount_from=(*options.mount_from, src.path))


def _tags(ref: Reference, additional: Sequence[str]) -> list[str]:
    return ([ref.name] if ref.name else []) + list(additional)


__all__ = ["Cancellation", "CopyOptions", "CopyOptionsError", "CopyResult", "copy"]
