"""``validate_image``: the structural invariants every consumer of an image relies on.

``check`` judges what a consumer does with a layer's *entries* (duplicate paths, symlinked
directories, hostile names); this judges the *image*: that its pieces describe each other.

- The manifest: its bytes hash to the digest it is known by (a digest in the reference, an
  index's entry), with the entry's size and media type.
- The config: its bytes match its descriptor (digest, size) and parse as an image config,
  ``rootfs.type`` is ``layers``, ``os`` and ``architecture`` are set.
- The layers: as many as the config's ``diff_ids``; each blob is there, of its descriptor's
  size and digest, its content compressed as its media type says, and its uncompressed
  content hashes to the config's ``diff_id`` (a squashfs layer: its own digest).
- Media types agree: an OCI manifest names an OCI config and OCI layers, a Docker schema 2
  manifest a Docker config and Docker layers; every layer type is one ocikit knows.
- Annotations have names; an index's entries name manifests, and an image entry's platform
  (required in a Docker manifest list, and in an OCI index of several images) is the one its
  config declares. Every image the index lists is validated; an artifact (an attestation, a
  signature: a config that is not an image's) has its blobs' digests and sizes checked.

Each layer is read once, through the readers ``check`` and ``copy`` use (``scan_layer``:
hashed as read, decompressed within ``max_ratio``); nothing is held in memory. Problems are
collected, not raised: ``require_valid`` raises one ``ValidationError`` listing them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import InputError, NotFoundError, VerificationError
from ..layer.bounds import DEFAULT_MAX_RATIO
from ..layer.streams import HashingReader
from ..model import Descriptor, Digest, Index, Manifest, Platform
from ..model import mediatypes as mt
from ..model.jsondoc import counted, quote
from ..transports import (
    Image,
    ImageSource,
    IndexSource,
    Reference,
    RegistryOptions,
    as_reference,
    open_index,
    open_source,
)
from .check import recording_verified, scan_image_layer, verified_pair

IMAGE_CONFIGS = frozenset({mt.OCI_CONFIG, mt.DOCKER_CONFIG})


@dataclass(frozen=True)
class Problem:
    """One broken invariant: ``rule`` (a short id), ``where`` (``manifest``, ``config``,
    ``layers[2]``, ``manifests[1]: layers[0]``...) and what is wrong."""

    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "where": self.where, "message": self.message}


class ValidationError(VerificationError):
    """An image that breaks invariants: every problem found, one per line."""

    def __init__(self, what: str, problems: Sequence[Problem]) -> None:
        self.what = what
        self.problems = list(problems)
        first = self.problems[0] if self.problems else "no problem"
        more = len(self.problems) - 1
        tail = f" (and {counted(more, 'other problem')})" if more > 0 else ""
        super().__init__(f"{what}: {first}{tail}")

    def lines(self, names: Mapping[str, str] | None = None) -> list[str]:
        del names  # the problems name no option
        header = f"{self.what}: {counted(len(self.problems), 'problem')}"
        return [header, *(f"  {p}" for p in self.problems)]


def validate_image(
    target: str | Reference | Image,
    *,
    platform: str | Platform | None = None,
    registry: RegistryOptions | None = None,
    max_ratio: float | None = DEFAULT_MAX_RATIO,
) -> list[Problem]:
    """Every broken invariant of ``target`` (none: a list that is empty).

    ``target``: an image already open (its source is read again, not closed), or a reference:
    an index it names is validated whole (every image it lists) unless ``platform`` picks one.
    Raises only when the reference cannot be opened at all (no such image, a usage error)."""
    with recording_verified() as verified:  # the layers it read whole, recorded once
        return _validate(target, platform, registry, max_ratio, verified)


def _validate(
    target: str | Reference | Image,
    platform: str | Platform | None,
    registry: RegistryOptions | None,
    max_ratio: float | None,
    verified: list[tuple[Digest, Digest]],
) -> list[Problem]:
    if isinstance(target, Image):
        return _Validator(max_ratio, verified).image(target, "")
    ref = as_reference(target)
    if isinstance(platform, str):
        platform = Platform.parse(platform)
    checker = _Validator(max_ratio, verified)
    if platform is None:
        try:
            top = open_index(ref, registry)
        except VerificationError as e:  # the manifest (or index) it names is not its digest's
            return [Problem("manifest-digest", "manifest", str(e))]
        with top:  # its children are read through it: used inside
            if top.index is not None:
                return checker.index(top, top.index, ref)
            single = top.open_single()
            if single is not None:
                return checker.source(single, _known_digest(ref), "")
    try:
        source = open_source(ref, platform, registry=registry)
    except VerificationError as e:
        return [Problem("manifest-digest", "manifest", str(e))]
    return checker.source(source, _known_digest(ref) if platform is None else None, "")


def require_valid(
    target: str | Reference | Image,
    *,
    platform: str | Platform | None = None,
    registry: RegistryOptions | None = None,
    max_ratio: float | None = DEFAULT_MAX_RATIO,
) -> None:
    """``validate_image``, raising one ``ValidationError`` with every problem found."""
    problems = validate_image(target, platform=platform, registry=registry, max_ratio=max_ratio)
    if problems:
        what = str(target.source.ref) if isinstance(target, Image) else str(target)
        raise ValidationError(what, problems)


def _known_digest(ref: Reference) -> Digest | None:
    """The digest the reference names its manifest by, if it names one."""
    text = ref.manifest_digest
    if text and text.startswith(("sha256:", "sha512:")):
        return Digest(text)
    return None


class _Validator:
    def __init__(self, max_ratio: float | None, verified: list[tuple[Digest, Digest]]) -> None:
        self.max_ratio = max_ratio
        self.problems: list[Problem] = []
        self.verified = verified  # (blob, diff_id) of each layer read whole, to record

    def add(self, rule: str, where: str, message: str) -> None:
        self.problems.append(Problem(rule, where or "image", message))

    # -- an index ------------------------------------------------------------------------------
    def index(self, top: IndexSource, index: Index, ref: Reference) -> list[Problem]:
        known = _known_digest(ref)
        if known is not None and index.digest != known:
            self.add("manifest-digest", "index", f"its bytes hash to {index.digest}, not {known}")
        self._annotations(index.annotations, "index")
        images = [d for d in index.manifests if d.media_type in mt.MANIFEST_TYPES]
        for i, desc in enumerate(index.manifests):
            where = f"manifests[{i}]"
            self._annotations(desc.annotations, where)
            if desc.media_type in mt.INDEX_TYPES:
                continue  # a nested index: its bytes are verified when opened; not descended
            if desc.media_type not in mt.MANIFEST_TYPES:
                self.add(
                    "media-type",
                    where,
                    f"{quote(desc.media_type)} is neither an image manifest nor an index",
                )
                continue
            try:
                child = top.open_child(desc)
            except NotFoundError as e:
                self.add("manifest-missing", where, str(e))
                continue
            except VerificationError as e:
                self.add("manifest-digest", where, str(e))
                continue
            except InputError as e:
                self.add("manifest-unreadable", where, str(e))
                continue
            needs_platform = index.media_type == mt.DOCKER_MANIFEST_LIST or len(images) > 1
            self._child(child, desc, where, needs_platform)
        return self.problems

    def _child(
        self, child: ImageSource, desc: Descriptor, where: str, needs_platform: bool
    ) -> None:
        try:
            manifest = child.manifest()
            if manifest.config.media_type not in IMAGE_CONFIGS:
                self._entry(manifest, desc, where)
                self._artifact(child, manifest, where)
                return
        except BaseException:
            child.close()
            raise
        image = self._open(child, desc.digest, where)
        if image is None:
            return
        with image:
            self._entry(manifest, desc, where)
            if desc.platform is None:
                if needs_platform:
                    self.add("platform", where, "an image in an index of several has no platform")
            else:
                self._platform(desc.platform, image.config.platform, where)
            self.image(image, where)

    def _entry(self, manifest: Manifest, desc: Descriptor, where: str) -> None:
        """The manifest against the index entry that names it."""
        if len(manifest.raw) != desc.size:
            self.add(
                "manifest-size",
                where,
                f"the manifest is {len(manifest.raw)} bytes, its entry says {desc.size}",
            )
        if manifest.media_type != desc.media_type:
            self.add(
                "media-type",
                where,
                f"the entry says {quote(desc.media_type)}, the manifest is "
                f"{quote(manifest.media_type)}",
            )

    def _platform(self, declared: Platform, config: Platform, where: str) -> None:
        if not declared.os or not declared.architecture:
            self.add("platform", where, f"the entry's platform {quote(str(declared))} is partial")
        pairs = [
            ("os", declared.os, config.os),
            ("architecture", declared.architecture, config.architecture),
        ]
        if declared.variant and config.variant:
            pairs.append(("variant", declared.variant, config.variant))
        if declared.os_version and config.os_version:
            pairs.append(("os.version", declared.os_version, config.os_version))
        for field, want, have in pairs:
            if want != have:
                self.add(
                    "platform",
                    where,
                    f"the entry's {field} is {quote(want)}, the config's {quote(have)}",
                )

    def _artifact(self, source: ImageSource, manifest: Manifest, where: str) -> None:
        """An artifact's blobs: there, of their size and digest (their content is not an
        image's)."""
        try:
            self._annotations(manifest.annotations, _at(where, "manifest"))
            for name, desc in [("config", manifest.config)] + [
                (f"layers[{i}]", d) for i, d in enumerate(manifest.layers)
            ]:
                self._blob(source, desc, _at(where, name))
        finally:
            source.close()

    def _blob(self, source: ImageSource, desc: Descriptor, where: str) -> None:
        try:
            with source.open_blob(desc) as raw:
                HashingReader(
                    raw,
                    what=f"blob {desc.digest}",
                    expected_digest=desc.digest,
                    expected_size=desc.size,
                ).drain()
        except NotFoundError as e:
            self.add("blob-missing", where, str(e))
        except VerificationError as e:
            self.add("blob-digest", where, str(e))

    # -- one image -----------------------------------------------------------------------------
    def source(self, source: ImageSource, known: Digest | None, where: str) -> list[Problem]:
        manifest = source.manifest()
        if known is not None and manifest.digest != known:
            self.add(
                "manifest-digest",
                _at(where, "manifest"),
                f"its bytes hash to {manifest.digest}, not {known}",
            )
        image = self._open(source, known, where)
        if image is None:
            return self.problems
        with image:
            return self.image(image, where)

    def _open(self, source: ImageSource, known: Digest | None, where: str) -> Image | None:
        """The image over ``source`` (which it then owns), or None with the problem said."""
        try:
            return Image(source, lenient=True)
        except NotFoundError as e:
            self.add("config-missing", _at(where, "config"), str(e))
        except InputError as e:
            self.add("config", _at(where, "config"), str(e))
        source.close()
        return None

    def image(self, image: Image, where: str) -> list[Problem]:
        manifest, config = image.manifest, image.config
        for rule, message, n in image.problems:  # what reading the config found
            self.add(rule, _at(where, "config" if n is None else f"layers[{n}]"), message)
        self._annotations(manifest.annotations, _at(where, "manifest"))
        docker = manifest.media_type == mt.DOCKER_MANIFEST
        flavor = "Docker" if docker else "OCI"
        want = mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG
        if manifest.config.media_type != want:
            self.add(
                "media-type",
                _at(where, "config"),
                f"a {flavor} manifest's config is {quote(want)}, not "
                f"{quote(manifest.config.media_type)}",
            )
        rootfs = config.data.get("rootfs")
        kind = rootfs.get("type") if isinstance(rootfs, dict) else None
        if kind != "layers":
            self.add(
                "config", _at(where, "config"), f"rootfs.type is {quote(str(kind))}, not 'layers'"
            )
        for key in ("os", "architecture"):
            if not config.data.get(key):
                self.add("config", _at(where, "config"), f"{key} is not set")
        for i, layer in enumerate(image.layers):
            here = _at(where, f"layers[{i}]")
            media_type = layer.descriptor.media_type
            if (
                mt.is_layer(media_type)
                and media_type.startswith("application/vnd.docker.") != docker
            ):
                self.add(
                    "media-type",
                    here,
                    f"{quote(media_type)} in a {flavor} manifest",
                )
            self._annotations(layer.descriptor.annotations, here)
            self._layer(image, i, here)
        return self.problems

    def _layer(self, image: Image, i: int, where: str) -> None:
        """Layer ``i`` read once: blob digest and size, compression, diff_id."""
        layer = image.layers[i]
        desc = layer.descriptor
        known = mt.is_layer(desc.media_type)
        try:
            result = scan_image_layer(
                image,
                i,
                None,
                declared=layer.compression if known else None,
                max_ratio=self.max_ratio,
            )
        except NotFoundError as e:
            self.add("blob-missing", where, str(e))
            return
        except InputError as e:
            self.add("layer-unreadable", where, str(e))
            return
        pair = verified_pair(image, i, result)
        if pair is not None:
            self.verified.append(pair)
        for rule, message in result.problems:
            self.add(rule, where, message)

    def _annotations(self, annotations: Mapping[str, str], where: str) -> None:
        if any(not k for k in annotations):
            self.add("annotations", where, "an annotation has an empty name")


def _at(where: str, part: str) -> str:
    return f"{where}: {part}" if where else part


__all__ = ["Problem", "ValidationError", "require_valid", "validate_image"]
