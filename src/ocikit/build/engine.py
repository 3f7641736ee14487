"""Execute a plan: each image, for each layer type, from the cache or built, then written out.

The cache is an OCI layout (``--cache-dir``): bases are copied into it once (verified,
uncompressed layers compressed as the build asks) under ``base-<manifest hex>``, and every
image built is stored in it under ``cache-<key>``. A lookup is for one key: the key names
the layer type, so it never picks "any" entry. An entry is used only when its seal proves
it (``build.cache``), and from then on through the manifest descriptor that was proved,
never by its tag again. A base is copied from the very read that gave the digest in the
key. Outputs are copied from the cache by ``ops.copy``'s copier, so every byte written was
verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform as _platform
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import OcikitError, UsageError
from ..layer import squashfs
from ..layer.analyze import Tree
from ..layer.compress import check_level
from ..layer.dirfd import DIR_FLAGS, land, open_regular
from ..layer.overlay import overlay_entries
from ..layer.streams import HashingReader, copy_stream
from ..layer.transcode import LayerEncoder
from ..model import Compression, Descriptor, Digest, ImageConfig, Manifest
from ..model import mediatypes as mt
from ..model.jsondoc import quote
from ..ops.check import LowerLayers, analyze_lower, check_image
from ..ops.copy import _Copier
from ..ops.gc import RUN_PREFIX, reclaim_runs
from ..ops.progress import NullProgress, ProgressReporter
from ..ops.unpack import extract_layer
from ..transports import Image, RegistryOptions, as_reference, open_destination, open_image
from ..transports.fsutil import HIDDEN_TMP_PREFIX, PrivateDir, private_tmp_dir
from ..transports.oci_layout import OciLayoutDestination, OciLayoutSource
from ..transports.reference import Reference
from . import rootfs, sandbox
from .cache import Cache, recipe_label
from .imports import INLINE_BUDGET, ImportContent, changed, read_import
from .layer import BuildError, Placed, materialize, place, stage_for_steps, write_tar
from .plan import BuildPlan, PlannedImage, plan_build
from .recipe import Bind, Built, ImageSpec, Import, LoadedRecipe, load_recipe

CACHE_FORMAT = 3  # 3: the default shell is /bin/sh -e -c (a failing command fails a step)
DEFAULT_EPOCH = 0  # SOURCE_DATE_EPOCH when unset: 1970-01-01T00:00:00Z
LAYER_TYPES = ("tar", "squashfs")


@dataclass
class ImageResult:
    name: str
    layer_type: str
    key: str
    digest: Digest  # the manifest's
    cached: bool
    why: str  # why it was built (or "cached")
    tag: str | None  # at the output; None for build_only
    layers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layer_type": self.layer_type,
            "key": self.key,
            "digest": self.digest,
            "cached": self.cached,
            "why": self.why,
            "tag": self.tag,
            "layers": self.layers,
        }


@dataclass
class BuildResult:
    recipe: str
    output: str
    images: list[ImageResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "output": self.output,
            "images": [i.to_dict() for i in self.images],
        }


@dataclass(frozen=True)
class BuildOptions:
    output: str = "oci:oci"
    layer_types: tuple[str, ...] = ("tar",)
    compress: Compression = Compression.GZIP
    level: int | None = None
    targets: tuple[str, ...] = ()
    cache_dir: str | None = None
    no_cache: bool = False
    epoch: int | None = DEFAULT_EPOCH  # None: --timestamp now
    registry: RegistryOptions | None = None  # bases; the output too unless dest_registry
    dest_registry: RegistryOptions | None = None  # a docker:// output (credentials, TLS)
    runtime: str = "runc"  # the OCI runtime of run steps: runc or crun


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ocikit", "build")


def source_date_epoch() -> int:
    """``SOURCE_DATE_EPOCH`` if set (a decimal number of seconds), else the fixed default."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return DEFAULT_EPOCH
    if not value.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH must be a number of seconds, got {quote(value)}")
    return int(value)


def _output_ref(output: str) -> Reference:
    ref = as_reference(output)
    tagged = ref.name is not None or ref.selects
    if ref.transport == "docker":  # a repository prefix: no tag or digest written
        tagged = "@" in output or ":" in output.rsplit("/", 1)[-1]
    if ref.transport not in ("oci", "docker") or ref.is_stdio or tagged:
        raise UsageError(
            f"--output {output}: builds go to an OCI layout (oci:DIR) or a registry "
            f"repository prefix (docker://HOST/PREFIX), each image tagged by name; "
            f"copy them elsewhere with ocikit copy"
        )
    return ref


def _destination(output: Reference, tag: str) -> str:
    if output.transport == "oci":
        return f"oci:{output.path}:{tag}"
    return f"docker://{output.path}/{tag}:latest"


def build(
    recipe: LoadedRecipe | str | os.PathLike[str],
    options: BuildOptions | None = None,
    progress: ProgressReporter | None = None,
    log: Callable[[str], None] | None = None,
    step_output: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build the recipe's images (``options.targets`` and their bases, or all). ``log`` gets
    a line per image (cached or built, and why); ``step_output`` each line run steps write,
    prefixed with the image's name (they also go to a log in ``CACHE/logs/``, one per run of
    an image's steps, named in a failed step's error).

    ``progress`` gets a ``begin`` for each phase of each image (``[K/N] NAME (TYPE): base
    REF``, ``imports``, ``reading the base``, ``unpacking the base``, ``run N steps``,
    ``writing layer``, ``checking``, ``output TAG``), bytes where they are known, and one
    ``end``, at the end, whether the build succeeded or not; it changes nothing built."""
    if not isinstance(recipe, LoadedRecipe):
        recipe = load_recipe(recipe, targets=(options or BuildOptions()).targets)
    options = options or BuildOptions()
    progress = progress or NullProgress()
    log = log or (lambda _m: None)
    for t in options.layer_types:
        if t not in LAYER_TYPES:
            raise UsageError(f"--layer-type {t}: expected one of {', '.join(LAYER_TYPES)}")
    if options.level is not None:
        check_level(options.compress, options.level)
    output = _output_ref(options.output)
    plan = plan_build(recipe, options.targets)
    # --no-cache: nothing read from the cache, nothing left in it (a private one, removed)
    # (in $TMPDIR, locked: if this process dies, the next run or ocikit gc removes it)
    temp_cache = private_tmp_dir("build-cache", "--no-cache") if options.no_cache else None
    cache_dir = (  # a directory in it: the private directory's lock is not the layout's
        os.path.join(temp_cache.path, "cache")
        if temp_cache
        else options.cache_dir or default_cache_dir()
    )
    try:
        os.makedirs(cache_dir, exist_ok=True)
        # absolute and resolved: paths under it go to mount and runc, from other directories
        cache = Path(cache_dir).resolve(strict=True)
        store = Cache(cache)
        try:
            builder = _Builder(recipe, plan, options, store, progress, log, step_output)
            return builder.run(output)
        finally:
            try:
                progress.end()  # once, whatever happened: the bar is gone before anything said
            finally:
                store.close()
    finally:
        if temp_cache is not None:
            temp_cache.remove()


class _Phase:
    """The reporter a part of a phase (a copy) is given: its bar keeps the phase's
    description (a copy's own "copying", "layer 1/3" are left out), its bytes are counted,
    and the phase's end is the build's to say."""

    def __init__(self, progress: ProgressReporter, description: str) -> None:
        self._progress = progress
        self._description = description

    def begin(self, total: int, description: str) -> None:
        self._progress.begin(total, self._description)

    def step(self, description: str) -> None:
        pass

    def advance(self, n: int) -> None:
        self._progress.advance(n)

    def end(self) -> None:
        pass


def _tail(text: str, limit: int = 40) -> str:
    """The end of a long reference (its repository and tag) for the bar's description."""
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def _run_text(spec: ImageSpec) -> str:
    """The run steps' phase: how many there are."""
    count = 1 if isinstance(spec.run, str) else len(spec.run or [])
    return "run 1 step" if count == 1 else f"run {count} steps"


class _Counted:
    """A layer's uncompressed bytes on their way to the encoder, counted for the bar
    (``TarOutput`` writes 1 MiB at a time: one call per MiB)."""

    def __init__(self, out: LayerEncoder, advance: Callable[[int], None]) -> None:
        self._out = out
        self._advance = advance

    def write(self, chunk: bytes | memoryview) -> None:
        self._out.write(chunk)
        self._advance(len(chunk))


class _Builder:
    def __init__(
        self,
        recipe: LoadedRecipe,
        plan: BuildPlan,
        options: BuildOptions,
        store: Cache,
        progress: ProgressReporter,
        log: Callable[[str], None],
        step_output: Callable[[str], None] | None = None,
    ) -> None:
        self.recipe = recipe
        self.plan = plan
        self.options = options
        self.store = store
        self.cache = store.path
        self.progress = progress
        self._where = ""  # "[K/N] NAME (TYPE)": the image being made, for the bar
        self._description = ""  # the phase the bar shows
        self.log = log
        self._imports: dict[str, list[ImportContent]] = {}
        self._binds: dict[str, list[ImportContent | None]] = {}  # read-only ones: hashed
        self._entries: dict[str, Descriptor] = {}  # cache tag -> its manifest, proved
        self._unsealed: list[tuple[str, Descriptor, list[Descriptor]]] = []  # made here
        self._bases: dict[str, tuple[str, str]] = {}  # reference -> (manifest digest, store tag)
        self._keys: dict[tuple[str, str], str] = {}  # (image, layer type) -> key
        self._digests: dict[tuple[str, str], Digest] = {}  # (image, layer type) -> manifest
        self._layer_type = "tar"  # of the image being made
        self.step_output = step_output or (lambda _line: None)

    def run(self, output: Reference) -> BuildResult:
        result = BuildResult(str(self.recipe.path), str(output))
        reclaim_runs(self.cache)  # what killed builds left: containers, mounts, files
        count = len(self.plan.order) * len(self.options.layer_types)
        try:
            for image in self.plan.order:
                for layer_type in self.options.layer_types:
                    number = len(result.images) + 1
                    self._where = f"[{number}/{count}] {image.name} ({layer_type})"
                    result.images.append(self._image(image, layer_type, output))
                for content in self._done_with(image.name):
                    content.close()
        except Exception:
            with contextlib.suppress(OcikitError):  # what succeeded stays usable
                self._seal()
            raise
        finally:
            for name in list(self._imports) + list(self._binds):
                for content in self._done_with(name):
                    content.close()
        self._seal()
        return result

    def _done_with(self, name: str) -> list[ImportContent]:
        binds = [c for c in self._binds.pop(name, []) if c is not None]
        return self._imports.pop(name, []) + binds

    def _seal(self) -> None:
        """Seal the entries this build made (once, at the end: one wait for their files'
        ctimes to be old enough to mean something, see ``build.cache``)."""
        entries, self._unsealed = self._unsealed, []
        self.store.seal(entries)

    def _phase(self, what: str, total: int = 0) -> None:
        """The bar restarted for the next phase of the image being made (``total`` bytes;
        0: not known)."""
        self._description = f"{self._where}: {what}"
        self.progress.begin(total, self._description)

    def _counted(self) -> ProgressReporter:
        """The reporter a copy in the current phase is given: its bytes on the bar."""
        return _Phase(self.progress, self._description)

    # -- one image ---------------------------------------------------------------------------
    def _image(self, planned: PlannedImage, layer_type: str, output: Reference) -> ImageResult:
        name, spec = planned.name, planned.spec
        base_id, base_tag = self._base(spec, layer_type)
        if spec.imports or spec.binds:
            self._phase("imports")
        imports = self._read_imports(name, spec)
        binds = self._read_binds(name, spec)
        key = self._key(spec, base_id, imports, binds, layer_type)
        self._keys[(name, layer_type)] = key
        cache_tag = f"cache-{key}"
        found = None
        if not self.options.no_cache and spec.cache:
            found = self._lookup(cache_tag)
        cached = found is not None
        if cached:
            why = "cached"
        else:
            why = "--no-cache" if self.options.no_cache else "not in the cache"
            if not spec.cache:
                why = "cache: false"
            damaged = bool(self.store.why) and spec.cache and not self.options.no_cache
            if damaged:
                why = f"the cache entry failed verification: {self.store.why}"
            self._make(name, spec, base_tag, imports, binds, layer_type, cache_tag, damaged)
        with self._open_entry(cache_tag) as image:
            digest = image.digest
            layers = len(image.layers)
        self._digests[(name, layer_type)] = digest
        tag = None
        if not spec.build_only:
            tag = name if layer_type == "tar" else f"{name}-{layer_type}"
            self._phase(f"output {tag}")
            self._copy_out(cache_tag, _destination(output, tag))
        self.log(
            f"{name} ({layer_type}): {'cached' if cached else 'built'}"
            + ("" if cached else f" ({why})")
            + f" {digest}"
        )
        return ImageResult(name, layer_type, key, digest, cached, why, tag, layers)

    def _stored(self, tag: str) -> Reference:
        """The cache's image ``tag`` (a Reference: the cache's path may hold a ``:``)."""
        return Reference("oci", str(self.cache), tag)

    def _lookup(self, tag: str) -> Descriptor | None:
        """The manifest of the cache's entry ``tag``, if its seal proves it (``store.why``
        says why not, when it was there and failed)."""
        self.store.why = ""
        if tag not in self._entries:
            found = self.store.lookup(tag)
            if found is None:
                return None
            self._entries[tag] = found
        return self._entries[tag]

    def _open_entry(self, tag: str) -> Image:
        """The cache's entry ``tag`` (proved or made by this build), by its manifest's
        descriptor: what the tag names meanwhile does not matter."""
        source = OciLayoutSource(Reference("oci", str(self.cache)), descriptor=self._entries[tag])
        try:
            return Image(source)
        except BaseException:
            source.close()
            raise

    def _stored_entry(self, tag: str, descriptor: Descriptor, blobs: Sequence[Descriptor]) -> None:
        """An entry this build just committed: used from now on, sealed at the end."""
        self._entries[tag] = Descriptor(descriptor.media_type, descriptor.digest, descriptor.size)
        self._unsealed.append((tag, self._entries[tag], list(blobs)))

    def _copy_out(self, tag: str, destination: str) -> None:
        """The entry copied to an output (every blob verified on the way)."""
        ref = as_reference(destination)
        dest = open_destination(ref, (), self.options.dest_registry or self.options.registry)
        try:
            with self._open_entry(tag) as image:
                jobs = 4 if ref.transport == "docker" else 1
                _Copier(image, dest, None, None, self._counted(), None, jobs=jobs).run()
            dest.commit()
        except BaseException:
            dest.abort()
            raise

    def _base(self, spec: ImageSpec, layer_type: str) -> tuple[str, str | None]:
        """The base's identity for the key, and its tag in the store (None: scratch)."""
        base = spec.from_
        if isinstance(base, Built):  # what it is, not how it was made (run steps may differ)
            key = self._keys[(base.built, layer_type)]
            return f"built:{self._digests[(base.built, layer_type)]}", f"cache-{key}"
        if base == "scratch":
            return "scratch", None
        ref = self._resolve_path(base)
        if ref in self._bases:
            digest, tag = self._bases[ref]
            return digest, tag
        # read once: the digest in the key is the manifest of this very read, and what
        # goes into the cache is copied from it (a tag moved meanwhile changes nothing)
        self._phase(f"base {_tail(base)}")
        with open_image(ref, spec.platform, registry=self.options.registry) as image:
            digest = image.digest
            tag = f"base-{self.options.compress.value}-{digest.hex}"
            if self._lookup(tag) is None:
                jobs = 4 if as_reference(ref).transport == "docker" else 1  # as copy's default
                self._store_base(image, tag, bool(self.store.why), jobs)
        self._bases[ref] = (digest, tag)
        return digest, tag

    def _store_base(self, image: Image, tag: str, damaged: bool, jobs: int) -> None:
        """The base (opened once: the read its digest came from) copied into the cache."""
        dest = OciLayoutDestination(self._stored(tag))
        try:
            dest.verify_existing = damaged  # a damaged blob is replaced, not reused
            requested = None if self.options.compress is Compression.GZIP else self.options.compress
            copier = _Copier(image, dest, requested, None, self._counted(), None, jobs=jobs)
            manifest = copier.run()
            dest.commit()
        except BaseException:
            dest.abort()
            raise
        self._stored_entry(tag, manifest.descriptor, [manifest.config, *manifest.layers])

    def _resolve_path(self, text: str) -> str:
        ref = as_reference(text)
        if ref.transport in ("oci", "oci-archive", "docker-archive") and not os.path.isabs(
            ref.path
        ):
            path = str(self.recipe.directory / ref.path)  # as validation found it
            return str(replace(ref, path=path))
        return text

    def _read_imports(self, name: str, spec: ImageSpec) -> list[ImportContent]:
        if name not in self._imports:
            budget = [INLINE_BUDGET]  # small files kept from the hashing read, per image
            contents: list[ImportContent] = []
            self._imports[name] = contents  # closed by run(), whatever happens
            for i, imp in enumerate(spec.imports):
                where = f"images.{name}.imports[{i}] ({imp.src})"
                contents.append(
                    read_import(imp, where, self.recipe.context, self.options.epoch, budget)
                )
        return self._imports[name]

    def _key(
        self,
        spec: ImageSpec,
        base_id: str,
        imports: Sequence[ImportContent],
        binds: Sequence[ImportContent | None],
        layer_type: str,
    ) -> str:
        data = {
            "format": CACHE_FORMAT,
            "image": spec.model_dump(mode="json", by_alias=True),
            "base": base_id,
            "imports": [c.digest for c in imports],
            "binds": [None if c is None else c.digest for c in binds],
            "layer_type": layer_type,
            "compress": self.options.compress.value,
            "level": self.options.level,
            "epoch": self.options.epoch,
            "arch": None if spec.arch else _host_arch(),
        }
        if spec.run is not None:  # steps see a tarball itself, not its members
            data["tarballs"] = [c.raw.sha256 if c.raw else None for c in imports]
        raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(raw).hexdigest()

    def _read_binds(self, name: str, spec: ImageSpec) -> list[ImportContent | None]:
        """Each read-only bind, read (hashed) once: an input of the steps, in the key, and
        what the steps see (``stage_for_steps``). None for a writable one."""
        if name not in self._binds:
            binds: list[ImportContent | None] = []
            self._binds[name] = binds
            for i, bind in enumerate(spec.binds):
                if bind.rw:
                    binds.append(None)
                    continue
                src = os.path.realpath(self._bind_source(bind))  # what a mount would take
                probe = Import(src=src, dest="/", extract=False, mode=None, owner=None, sha256=None)
                where = f"images.{name}.binds[{i}] ({bind.src})"
                binds.append(read_import(probe, where, Path("/"), None, [0]))
        return self._binds[name]

    def _bind_source(self, bind: Bind) -> Path:
        src = Path(bind.src)
        return src if src.is_absolute() else (self.recipe.context / src).absolute()

    # -- building ------------------------------------------------------------------------------
    def _make(
        self,
        name: str,
        spec: ImageSpec,
        base_tag: str | None,
        imports: Sequence[ImportContent],
        binds: Sequence[ImportContent | None],
        layer_type: str,
        cache_tag: str,
        damaged: bool = False,
    ) -> None:
        """Build the image into the cache as ``cache_tag`` (``damaged``: the entry there
        failed verification; blobs found present are re-hashed, a damaged one replaced)."""
        self._layer_type = layer_type
        if layer_type == "squashfs" and base_tag is not None and base_tag.startswith("base-"):
            self._phase("base as squashfs")
            base_tag = self._squashfs_base(base_tag)
        dest = OciLayoutDestination(Reference("oci", str(self.cache), cache_tag))
        try:
            dest.verify_existing = damaged
            base_image = self._open_entry(base_tag) if base_tag else None
            if base_image is not None:
                self._phase("reading the base")
            try:
                # the base's layers read once: the tree imports are placed on, and the
                # base's part of the final check
                lower = (
                    analyze_lower(base_image)
                    if base_image is not None
                    else LowerLayers(0, Tree(), [], 0)
                )
                tree = lower.tree.copy()
                base_config = dict(base_image.config.data) if base_image else {}
                base_layers = list(base_image.manifest.layers) if base_image else []
            finally:
                if base_image is not None:
                    base_image.close()
            new_layer = None
            placed_imports = [c for c in imports if c.spec.dest is not None]
            if spec.run is not None:
                entries = place(placed_imports, tree)
                new_layer = self._run(name, spec, base_tag, lower, entries, imports, binds, dest)
            elif any(c.entries for c in placed_imports):
                entries = place(placed_imports, tree)
                self._phase("writing layer")
                if layer_type == "squashfs":
                    new_layer = self._write_squashfs(dest, entries)
                else:
                    new_layer = self._write_layer(dest, lambda out: write_tar(entries, out))
            config = _config(base_config, spec, new_layer, self.options.epoch, name)
            config_raw = canonical_json_sorted(config)
            config_digest = dest.put_blob_bytes(config_raw)
            layers = base_layers + ([new_layer[0]] if new_layer else [])
            manifest = Manifest.build(
                Descriptor(mt.OCI_CONFIG, config_digest, len(config_raw)),
                layers,
                spec.annotations or None,
            )
            dest.put_manifest(manifest, ImageConfig.parse(config_raw), [])
            # checked before the cache names it: what the cache holds passed, outputs are copies
            dest.flush()
            source = OciLayoutSource(
                Reference("oci", str(self.cache)), descriptor=manifest.descriptor
            )
            self._phase("checking")
            with Image(source) as image:
                report = check_image(image, f"images.{name} ({layer_type})", lower=lower)
            if report.errors:
                raise BuildError(
                    f"images.{name}: the built image fails ocikit check: {report.findings[0]}"
                )
            dest.commit()
        except BaseException:
            dest.abort()
            raise
        self._stored_entry(cache_tag, manifest.descriptor, [manifest.config, *layers])

    def _write_layer(
        self, dest: OciLayoutDestination, write: Callable[[BinaryIO], object]
    ) -> tuple[Descriptor, Digest]:
        """A tar layer blob: ``write`` writes the tar, compressed and hashed on the way."""
        writer = dest.new_blob()
        encoder = None
        try:
            encoder = LayerEncoder(writer.file, self.options.compress, level=self.options.level)
            write(_Counted(encoder, self.progress.advance))  # type: ignore[arg-type]
            result = encoder.finish()
        except BaseException:
            if encoder is not None:  # its compressing threads stop now, not at some GC
                encoder.abort()
            writer.abort()
            raise
        writer.commit(result.digest)
        media_type = mt.oci_layer_type(self.options.compress)
        return Descriptor(media_type, result.digest, result.size), result.diff_id

    # -- run steps ------------------------------------------------------------------------------
    def _run(
        self,
        name: str,
        spec: ImageSpec,
        base_tag: str | None,
        lower: LowerLayers,
        entries: Sequence[Placed],
        imports: Sequence[ImportContent],
        binds: Sequence[ImportContent | None],
        dest: OciLayoutDestination,
    ) -> tuple[Descriptor, Digest] | None:
        """The imports, then the steps in a container on an overlay of the base's layers;
        the upper directory becomes the layer (None: nothing changed)."""
        epoch = self.options.epoch if self.options.epoch is not None else int(time.time())
        private = PrivateDir(str(self.cache), RUN_PREFIX, f"build cache {self.cache}")
        work = Path(private.path)
        lowers: list[int] = []
        try:
            base = self._open_entry(base_tag) if base_tag else None
            try:
                self._phase("unpacking the base")  # once per base layer, kept in the cache
                lowers = rootfs.layer_dirs(base, self.store, epoch) if base else []
                base_config = dict(base.config.data) if base else {}
            finally:
                if base is not None:
                    base.close()
            upper = work / "upper"
            upper.mkdir()
            materialize(entries, upper, epoch)
            mounts = self._step_mounts(spec, imports, binds, work, epoch)
            runtime_config = _config(base_config, spec, None, epoch, name)["config"]
            with rootfs.overlay(lowers, upper, work / "work", work / "merged") as merged:
                _check_user_tables(merged, f"images.{name}.run")
                uid, gid, groups = _user(merged, runtime_config.get("User") or "", name)
                self._phase(_run_text(spec))
                self._steps(name, spec, merged, runtime_config, uid, gid, groups, mounts, work)
            self._phase("writing layer")
            self._drop_mount_points(spec, upper, lower)
            base_top = set((lower.tree.root.children or {}).keys())
            return self._upper_layer(dest, upper, base_top, epoch)
        finally:
            for fd in lowers:
                os.close(fd)
            private.remove()

    def _step_mounts(
        self,
        spec: ImageSpec,
        imports: Sequence[ImportContent],
        binds: Sequence[ImportContent | None],
        work: Path,
        epoch: int,
    ) -> list[sandbox.Mount]:
        """What the steps mount: each read-only bind and each import as it was hashed
        (made in the step's private directory from the bytes the key saw, never the live
        path), each writable bind as the host path it is."""
        mounts = []
        for i, (bind, content) in enumerate(zip(spec.binds, binds, strict=True)):
            if content is None:
                mounts.append(sandbox.Mount(str(self._bind_source(bind)), bind.dest, True))
                continue
            staged = stage_for_steps(content, work / f"bind-{i}", epoch)
            if staged is None:  # it was resolved: a symlink now means it was swapped
                raise changed(content.origin)
            mounts.append(sandbox.Mount(str(staged), bind.dest))
        for i, c in enumerate(imports):
            staged = stage_for_steps(c, work / f"import-{i}", epoch)
            if staged is not None:
                target = f"{sandbox.IMPORTS_DIR}/{c.spec.src.strip('/')}"
                mounts.append(sandbox.Mount(str(staged), target))
        return mounts

    def _steps(
        self,
        name: str,
        spec: ImageSpec,
        merged: Path,
        config: Mapping[str, Any],
        uid: int,
        gid: int,
        groups: Sequence[int],
        mounts: Sequence[sandbox.Mount],
        work: Path,
    ) -> None:
        commands = [spec.run] if isinstance(spec.run, str) else list(spec.run or [])
        shell = spec.shell or DEFAULT_SHELL
        env = list(config.get("Env") or []) or [f"PATH={DEFAULT_PATH}"]
        if not any(e.startswith("PATH=") for e in env):
            env.append(f"PATH={DEFAULT_PATH}")
        path = next(e for e in env if e.startswith("PATH=")).removeprefix("PATH=")
        cwd = config.get("WorkingDir") or "/"

        def check_shell(where: str) -> None:
            if not sandbox.has_program(merged, shell[0], path, cwd):
                scratch = " (from: scratch has no shell)" if spec.from_ == "scratch" else ""
                raise BuildError(
                    f"{where}: the image has no {quote(shell[0])[1:-1]}{scratch}; import a "
                    "shell (a static busybox) or set shell:"
                )

        check_shell(f"images.{name}.run")  # before a log is made for nothing
        log_path, log = self.store.open_log(recipe_label(self.recipe.path), name, self._layer_type)
        with log:
            for i, command in enumerate(commands):
                if len(commands) > 1:
                    self._phase(f"run step {i + 1}/{len(commands)}")
                where = f"images.{name}.run" + (f"[{i}]" if len(commands) > 1 else "")
                shown = quote(command, STEP_QUOTE)
                if i:  # the step before may have changed them
                    _check_user_tables(merged, where)
                    check_shell(where)
                log.write(f"--- {where}: {shown}\n")

                def line(text: str, log: Any = log) -> None:
                    log.write(text + "\n")
                    self.step_output(f"{name} | {text}")

                result = sandbox.run_step(
                    merged,
                    [*shell, command],
                    env=env,
                    cwd=cwd,
                    uid=uid,
                    gid=gid,
                    groups=groups,
                    mounts=list(mounts),
                    network_host=spec.network == "host",
                    runtime=self.options.runtime,
                    on_line=line,
                    bundle=work / f"step-{i}",
                )
                if result.runtime_error is not None:
                    log.write(f"--- {self.options.runtime}: {result.runtime_error}\n")
                    raise BuildError(
                        f"{where} ({shown}): {self.options.runtime} could not start the step "
                        f"(exit code {result.exit_code}, log: {log_path}): {result.runtime_error}"
                    )
                if result.exit_code != 0:
                    log.write(f"--- exit code {result.exit_code}\n")
                    tail = " | ".join(result.tail[-5:]) or "no output"
                    raise BuildError(
                        f"{where} ({shown}) failed with exit code {result.exit_code} "
                        f"(log: {log_path}): {tail}"
                    )

    def _drop_mount_points(self, spec: ImageSpec, upper: Path, lower: LowerLayers) -> None:
        """What the runtime made for binds (empty directories, an empty file), where the
        base has nothing; following no symlink a step may have put on the way."""
        for bind in spec.binds:
            parts = [p for p in bind.dest.split("/") if p]
            rootfs.remove_mount_point(upper, parts, lambda p: lower.tree.lookup(p) is not None)

    def _upper_layer(
        self, dest: OciLayoutDestination, upper: Path, base_top: set[str], epoch: int
    ) -> tuple[Descriptor, Digest] | None:
        """The upper directory as the layer; None if the steps and imports changed nothing."""
        drop = frozenset(rootfs.MOUNT_POINTS - base_top)
        if next(iter(overlay_entries(upper, drop)), None) is None:
            return None
        if self._layer_type == "squashfs":
            out = upper.parent / "layer.sqfs"  # the upper directory made a layer's tree first
            squashfs.make(upper, out, mkfs_time=epoch, drop=rootfs.dropped_names(base_top))
            return self._store_squashfs(dest, out)
        return self._write_layer(
            dest, lambda out: rootfs.write_upper_tar(upper, out, base_top, epoch)
        )

    # -- squashfs ------------------------------------------------------------------------------
    def _write_squashfs(
        self, dest: OciLayoutDestination, entries: Sequence[Placed]
    ) -> tuple[Descriptor, Digest]:
        epoch = self.options.epoch if self.options.epoch is not None else int(time.time())
        with self._work_dir() as private:
            work = Path(private.path)
            root = work / "root"
            root.mkdir()
            materialize(entries, root, epoch)
            squashfs.make(root, work / "layer.sqfs", mkfs_time=epoch)
            return self._store_squashfs(dest, work / "layer.sqfs")

    def _work_dir(self) -> PrivateDir:
        """A private directory in the cache (``.ocikit-tmp-squashfs-*``), locked: if this
        process dies, the next writer of the cache or ocikit gc removes it."""
        return PrivateDir(str(self.cache), f"{HIDDEN_TMP_PREFIX}squashfs-", str(self.cache))

    def _store_squashfs(self, dest: OciLayoutDestination, path: Path) -> tuple[Descriptor, Digest]:
        writer = dest.new_blob()
        try:
            with open(path, "rb") as f:
                reader = HashingReader(f, what=str(path), sink=writer.file)  # type: ignore[arg-type]
                reader.drain()
        except BaseException:
            writer.abort()
            raise
        writer.commit(reader.digest)
        return Descriptor(mt.SQUASHFS_LAYER_GZIP, reader.digest, reader.size), reader.digest

    def _keep_squashfs(
        self, dest: OciLayoutDestination, image: Image, index: int
    ) -> tuple[Descriptor, Digest]:
        """A base layer that is squashfs already, in ``dest`` (the cache: there already,
        unless it is damaged; then copied again, verified)."""
        layer = image.layers[index]
        desc = layer.descriptor
        if not dest.reuse_blob(desc.digest, desc.size):
            writer = dest.new_blob()
            try:
                with image.open_blob(desc) as src:
                    copy_stream(src, writer.file)
            except BaseException:
                writer.abort()
                raise
            writer.commit(desc.digest)
        return desc, layer.diff_id

    def _squashfs_base(self, base_tag: str) -> str:
        """The base (in the store) with each tar layer made a squashfs layer, its whiteouts
        as overlayfs marks them, and squashfs layers kept: stored once as ``BASE-squashfs``."""
        tag = f"{base_tag}-squashfs"
        if self._lookup(tag) is not None:
            return tag
        epoch = self.options.epoch if self.options.epoch is not None else int(time.time())
        dest = OciLayoutDestination(Reference("oci", str(self.cache), tag))
        try:
            dest.verify_existing = bool(self.store.why)
            with self._open_entry(base_tag) as image:
                layers = []
                for i, layer in enumerate(image.layers):
                    if layer.compression is Compression.SQUASHFS:  # one already: as it is
                        layers.append(self._keep_squashfs(dest, image, i))
                        continue
                    with self._work_dir() as private:
                        work = Path(private.path)
                        (work / "root").mkdir()
                        extract_layer(image, i, work / "root", epoch)
                        squashfs.make(work / "root", work / "layer.sqfs", mkfs_time=epoch)
                        layers.append(self._store_squashfs(dest, work / "layer.sqfs"))
                config = dict(image.config.data)
                rootfs = dict(config.get("rootfs") or {})
                rootfs["diff_ids"] = [str(diff_id) for _desc, diff_id in layers]
                config["rootfs"] = rootfs
                raw = canonical_json_sorted(config)
                config_digest = dest.put_blob_bytes(raw)
                manifest = Manifest.build(
                    Descriptor(mt.OCI_CONFIG, config_digest, len(raw)),
                    [desc for desc, _ in layers],
                    image.manifest.annotations or None,
                )
            dest.put_manifest(manifest, ImageConfig.parse(raw), [])
            dest.commit()
        except BaseException:
            dest.abort()
            raise
        self._stored_entry(tag, manifest.descriptor, [manifest.config, *manifest.layers])
        return tag


DEFAULT_SHELL = ["/bin/sh", "-e", "-c"]  # a failing command fails the step, as in stacker
STEP_QUOTE = 60  # characters of a step's command in its error message
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _user(root: Path, user: str, name: str) -> tuple[int, int, list[int]]:
    """uid, gid and groups of the config's ``User`` (``uid[:gid]`` or names, looked up in
    the image's /etc/passwd and /etc/group, read without following a symlink out)."""
    if not user:
        return 0, 0, []
    who, _, group = user.partition(":")
    passwd = _table(root, "etc/passwd")
    uid = gid = None
    if who.isdigit():
        uid = int(who)
        gid = next((int(r[3]) for r in passwd if len(r) > 3 and r[2] == who), 0)
    else:
        for row in passwd:
            if len(row) > 3 and row[0] == who:
                uid, gid = int(row[2]), int(row[3])
        if uid is None:
            raise BuildError(f"images.{name}.config.user: no user {quote(who)} in the image")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = [int(r[2]) for r in _table(root, "etc/group") if len(r) > 2 and r[0] == group]
            if not found:
                raise BuildError(f"images.{name}.config.user: no group {quote(group)} in the image")
            gid = found[0]
    groups = sorted(
        {
            int(r[2])
            for r in _table(root, "etc/group")
            if len(r) > 3 and r[2].isdigit() and who in r[3].split(",")
        }
    )
    return uid, gid or 0, groups


def _check_user_tables(root: Path, where: str) -> None:
    problem = sandbox.user_table_problem(root)
    if problem is not None:
        raise BuildError(
            f"{where}: {problem}; the runtime reads it to set the step's user (refused: "
            "it would hang or read a device)"
        )


def _table(root: Path, rel: str) -> list[list[str]]:
    """Rows of a colon-separated file of the image, its symlinks followed inside the root;
    empty if absent or not a regular file (a fifo would hang the build, a device is the
    host's: neither is ever opened)."""
    root_fd = os.open(root, DIR_FLAGS)
    try:
        dir_fd, _parent, leaf, st = land(root_fd, rel.split("/"))
    finally:
        os.close(root_fd)
    try:
        if leaf is None or st is None or not stat.S_ISREG(st.st_mode):
            return []
        ffd = open_regular(leaf, dir_fd, st, f"/{rel}")
    finally:
        os.close(dir_fd)
    with os.fdopen(ffd, "rb") as f:
        text = f.read(1 << 20).decode(errors="replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def canonical_json_sorted(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _host_arch() -> str:
    machine = _platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )


def _iso(epoch: int | None) -> str:
    when = datetime.now(UTC) if epoch is None else datetime.fromtimestamp(epoch, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _config(
    base: Mapping[str, Any],
    spec: ImageSpec,
    layer: tuple[Descriptor, Digest] | None,
    epoch: int | None,
    name: str,
) -> dict[str, Any]:
    """The image config: the base's, changed as the recipe says, the new layer appended."""
    created = _iso(epoch)
    cfg: dict[str, Any] = dict(base.get("config") or {})
    c = spec.config
    if c.env is not None:
        env = list(cfg.get("Env") or [])
        for k, v in c.env.items():
            env = [e for e in env if e.partition("=")[0] != k]
            env.append(f"{k}={v}")
        cfg["Env"] = env
    if c.entrypoint is not None:
        cfg["Entrypoint"] = list(c.entrypoint)
    if c.cmd is not None:
        cfg["Cmd"] = list(c.cmd)
    if c.user is not None:
        cfg["User"] = c.user
    if c.working_dir is not None:
        cfg["WorkingDir"] = c.working_dir
    if c.labels is not None:
        cfg["Labels"] = {**(cfg.get("Labels") or {}), **c.labels}
    if c.exposed_ports is not None:
        ports = dict(cfg.get("ExposedPorts") or {})
        for p in c.exposed_ports:
            ports[p if "/" in p else f"{p}/tcp"] = {}
        cfg["ExposedPorts"] = ports
    if c.volumes is not None:
        cfg["Volumes"] = {**(cfg.get("Volumes") or {}), **{v: {} for v in c.volumes}}
    if c.stop_signal is not None:
        cfg["StopSignal"] = c.stop_signal
    rootfs = dict(base.get("rootfs") or {"type": "layers", "diff_ids": []})
    diff_ids = list(rootfs.get("diff_ids") or [])
    history = list(base.get("history") or [])
    entry: dict[str, Any] = {"created": created, "created_by": f"ocikit build {name}"}
    if layer is not None:
        diff_ids.append(str(layer[1]))
    else:
        entry["empty_layer"] = True
    history.append(entry)
    out: dict[str, Any] = {
        "architecture": spec.arch or base.get("architecture") or _host_arch(),
        "os": spec.os or base.get("os") or "linux",
        "created": created,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    variant = spec.variant or base.get("variant")
    if variant:
        out["variant"] = variant
    return out


__all__ = ["BuildOptions", "BuildResult", "ImageResult", "build", "source_date_epoch"]
