"""Execute a plan: each image, for each layer type, from the cache or built, then written out.

The cache is an OCI layout (``--cache-dir``): bases are copied into it once (verified,
uncompressed layers compressed as the build asks) under ``base-<manifest hex>``, and every
image built is stored in it under ``cache-<key>``. A lookup is for one key: the key names
the layer type, so it never picks "any" entry. An entry is used only when its seal proves
it (``build.cache``), and from then on through the manifest descriptor that was proved,
never by its tag again (``build.store``). A base is copied from the very read that gave
the digest in the key. Outputs are copied from the cache by ``ops.copy_image``'s copier, so every
byte written was verified. The pieces: the image's config (``build.config``, edits of
``model.mutate``), its user (``build.users``), squashfs layers (``build.squashfs_layers``),
imports placed on the base (``build.placement``), run steps (``build.rootfs``,
``build.sandbox``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import OcikitError, Option, UsageError
from ..layer.analyze import Tree
from ..layer.compress import check_level
from ..layer.transcode import LayerEncoder
from ..model import Compression, Descriptor, Digest, Manifest, canonical_json, mutate
from ..model import mediatypes as mt
from ..model.jsondoc import quote
from ..ops.check import LowerLayers, analyze_lower, check_image
from ..ops.copy_image import ImageCopier
from ..ops.gc import reclaim_runs
from ..ops.progress import NullProgress, ProgressReporter
from ..tempfiles import user_cache_dir
from ..transports import Image, RegistryOptions, as_reference, open_destination, open_image
from ..transports.fsutil import private_tmp_dir
from ..transports.reference import Reference
from .cache import recipe_label
from .config import host_arch, image_config
from .imports import INLINE_BUDGET, ImportContent, read_import
from .judge import LayerJudge
from .placement import EntryHook, place, write_tar
from .plan import BuildPlan, PlannedImage, plan_build
from .recipe import BuildError, Built, ImageSpec, Import, LoadedRecipe, load_recipe
from .schema import dump
from .steps import StepRun, TarLayerWriter, bind_source
from .store import BuildCache, EntryWriter

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
    return user_cache_dir("build")


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
    if ref.properties.registry:  # a repository prefix: no tag or digest written
        tagged = "@" in output or ":" in output.rsplit("/", 1)[-1]
    p = ref.properties
    if not (p.layout_directory or p.registry) or ref.is_stdio or tagged:
        raise UsageError(
            Option("output"),
            f" {output}: builds go to an OCI layout (oci:DIR) or a registry "
            f"repository prefix (docker://HOST/PREFIX), each image tagged by name; "
            f"copy them elsewhere with ocikit copy",
        )
    return ref


def _destination(output: Reference, tag: str) -> str:
    if output.properties.layout_directory:
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
            raise UsageError(
                Option("layer_types"), f" {t}: expected one of {', '.join(LAYER_TYPES)}"
            )
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
        store = BuildCache(cache)
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


class _Counted:
    """A layer's uncompressed bytes on their way to the encoder, counted for the bar
    (``TarOutput`` writes 1 MiB at a time: one call per MiB)."""

    def __init__(self, out: LayerEncoder, advance: Callable[[int], None]) -> None:
        self._out = out
        self._advance = advance
        self.head = b""  # the tar's first bytes

    def write(self, chunk: bytes | memoryview) -> None:
        if not self.head:
            self.head = bytes(chunk[:4])
        self._out.write(chunk)
        self._advance(len(chunk))


class _Builder:
    def __init__(
        self,
        recipe: LoadedRecipe,
        plan: BuildPlan,
        options: BuildOptions,
        store: BuildCache,
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
        self._bases: dict[str, tuple[str, str]] = {}  # reference -> (manifest digest, store tag)
        self._keys: dict[tuple[str, str], str] = {}  # (image, layer type) -> key
        self._digests: dict[tuple[str, str], Digest] = {}  # (image, layer type) -> manifest
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
        self.store.seal()

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
            found = self.store.lookup(cache_tag)
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
        with self.store.open(cache_tag) as image:
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

    def _copy_out(self, tag: str, destination: str) -> None:
        """The entry copied to an output (every blob verified on the way: to an OCI layout,
        the blobs kept as they are by their digests alone, ``BuildCache.copy_blobs``)."""
        ref = as_reference(destination)
        dest = open_destination(ref, (), self.options.dest_registry or self.options.registry)
        try:
            with self.store.open(tag) as image:
                self.store.copy_blobs(image, dest)
                jobs = ref.properties.default_jobs  # as copy's default
                ImageCopier(image, dest, progress=self._counted(), jobs=jobs).run()
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
            if self.store.lookup(tag) is None:
                jobs = as_reference(ref).properties.default_jobs  # as copy's default
                self._store_base(image, tag, bool(self.store.why), jobs)
        self._bases[ref] = (digest, tag)
        return digest, tag

    def _store_base(self, image: Image, tag: str, damaged: bool, jobs: int) -> None:
        """The base (opened once: the read its digest came from) copied into the cache."""
        with self.store.entry(tag, damaged) as entry:  # a damaged blob is replaced, not reused
            requested = None if self.options.compress is Compression.GZIP else self.options.compress
            copier = ImageCopier(
                image, entry.destination, compression=requested, progress=self._counted(), jobs=jobs
            )
            entry.commit(copier.run())

    def _resolve_path(self, text: str) -> str:
        ref = as_reference(text)
        if ref.properties.local_path and not os.path.isabs(ref.path):
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
            "image": dump(spec),
            "base": base_id,
            "imports": [c.digest for c in imports],
            "binds": [None if c is None else c.digest for c in binds],
            "layer_type": layer_type,
            "compress": self.options.compress.value,
            "level": self.options.level,
            "epoch": self.options.epoch,
            "arch": None if spec.arch else host_arch(),
        }
        if spec.run is not None:  # steps see a tarball itself, not its members
            data["tarballs"] = [c.raw.sha256 if c.raw else None for c in imports]
        raw = canonical_json(data, sort_keys=True, ascii_only=True)  # as keys always were
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
                src = os.path.realpath(bind_source(bind, self.recipe.context))  # as mounted
                probe = Import(src=src, dest="/", extract=False, mode=None, owner=None, sha256=None)
                where = f"images.{name}.binds[{i}] ({bind.src})"
                binds.append(read_import(probe, where, Path("/"), None, [0]))
        return self._binds[name]

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
        if layer_type == "squashfs" and base_tag is not None and base_tag.startswith("base-"):
            from . import squashfs_layers  # here: a tar build loads no squashfs tool

            self._phase("base as squashfs")
            base_tag = squashfs_layers.base_as_squashfs(self.store, base_tag, self._epoch())
        placed_imports = [c for c in imports if c.spec.dest is not None]
        with self.store.entry(cache_tag, damaged) as entry:
            base_image = self.store.open(base_tag) if base_tag else None
            reading: _BaseRead | None = None
            try:
                base_config = dict(base_image.config.data) if base_image else {}
                base_layers = list(base_image.manifest.layers) if base_image else []
                # the base's layers read once: the tree imports are placed on, and the
                # base's part of the final check. Steps with nothing placed before them
                # need it only once they ran: it is read meanwhile, in a thread
                lower = LowerLayers(0, Tree(), [], 0)  # scratch's (or: being read)
                if base_image is not None and spec.run is not None and not placed_imports:
                    reading = _BaseRead(base_image)  # it closes the base once it is read
                    base_image = None
                elif base_image is not None:
                    self._phase("reading the base")
                    lower = analyze_lower(base_image)
            finally:
                if base_image is not None:
                    base_image.close()
            new_layer = None
            judges: list[LayerJudge] = []  # a tar layer's check, as it is written
            if spec.run is not None:

                def writing() -> tuple[LowerLayers, TarLayerWriter, EntryHook]:
                    nonlocal lower
                    if reading is not None:
                        lower = reading.result()
                    judges.append(LayerJudge(lower))
                    judge = judges[-1]
                    return lower, lambda e, w: self._write_layer(e, w, judge), judge.entry

                entries = place(placed_imports, lower.tree.copy())
                steps = StepRun(
                    name,
                    spec,
                    layer_type,
                    self._epoch(),
                    self.store,
                    self.options.runtime,
                    recipe_label(self.recipe.path),
                    self.recipe.context,
                    self._phase,
                    self.step_output,
                    writing,
                )
                new_layer = steps.layer(base_tag, entries, imports, binds, entry)
            else:
                judges.append(LayerJudge(lower))
                if any(c.entries for c in placed_imports):
                    entries = place(placed_imports, lower.tree.copy())
                    self._phase("writing layer")
                    if layer_type == "squashfs":
                        from . import squashfs_layers

                        new_layer = squashfs_layers.from_entries(
                            self.store, entry, entries, self._epoch()
                        )
                    else:
                        judge = judges[0]
                        new_layer = self._write_layer(
                            entry, lambda out: write_tar(entries, out, judge.entry), judge
                        )
            config = image_config(base_config, spec, new_layer, self.options.epoch, name)
            config_raw = mutate.encode(config)
            config_digest = entry.put_bytes(config_raw)
            layers = base_layers + ([new_layer[0]] if new_layer else [])
            manifest = Manifest.build(
                Descriptor(mt.OCI_CONFIG, config_digest, len(config_raw)),
                layers,
                spec.annotations or None,
            )
            entry.put_image(manifest, mutate.to_config(config_raw))
            # checked before the cache names it: what the cache holds passed, outputs are copies
            self._phase("checking")
            checked: LowerLayers | None = lower
            if judges and judges[0].used:  # the base's tree is the new layer's: judged, or
                checked = judges[0].lower(len(layers))  # read back whole
            with entry.staged(manifest) as image:
                report = check_image(image, f"images.{name} ({layer_type})", lower=checked)
            if report.errors:
                raise BuildError(
                    f"images.{name}: the built image fails ocikit check: {report.findings[0]}"
                )
            entry.commit(manifest)

    def _epoch(self) -> int:
        """The build's time: ``--timestamp``'s epoch, or now."""
        return self.options.epoch if self.options.epoch is not None else int(time.time())

    def _write_layer(
        self,
        entry: EntryWriter,
        write: Callable[[BinaryIO], object],
        judge: LayerJudge | None = None,
    ) -> tuple[Descriptor, Digest]:
        """A tar layer blob: ``write`` writes the tar, compressed and hashed on the way
        (``judge``: told what was written)."""
        with entry.new_blob() as writer:
            encoder = LayerEncoder(writer.file, self.options.compress, level=self.options.level)
            try:
                counted = _Counted(encoder, self.progress.advance)
                write(counted)  # type: ignore[arg-type]
                result = encoder.finish()
                if judge is not None:
                    judge.written(result, self.options.compress, counted.head)
            except BaseException:
                encoder.abort()  # its compressing threads stop now, not at some GC
                raise
            writer.commit(result.digest)
        media_type = mt.oci_layer_type(self.options.compress)
        return Descriptor(media_type, result.digest, result.size), result.diff_id


class _BaseRead:
    """``analyze_lower`` of an open base in a thread of its own, which closes the base when
    done: the base is read while the steps run (it is needed only once they ran). A step
    that fails or an interruption does not wait for it; an error reading it is raised by
    ``result``."""

    def __init__(self, image: Image) -> None:
        self._lower: LowerLayers | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._read, args=(image,), name="ocikit-base-read", daemon=True
        )
        self._thread.start()

    def _read(self, image: Image) -> None:
        try:
            with image:
                self._lower = analyze_lower(image)
        except BaseException as e:  # raised where the result is asked for
            self._error = e

    def result(self) -> LowerLayers:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._lower is not None
        return self._lower


__all__ = ["BuildOptions", "BuildResult", "ImageResult", "build", "source_date_epoch"]
