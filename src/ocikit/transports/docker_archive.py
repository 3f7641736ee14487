"""``docker-archive:``: what ``docker save`` writes, in all its forms.

Reading understands the legacy form (``<v1id>/layer.tar``, repeated layers as symlinks to an
earlier ``layer.tar``, before or after their target in the stream), Docker >= 25's form (an OCI
layout whose ``manifest.json`` points into ``blobs/``, optionally with ``LayerSources``), and
skopeo/podman's (``<hex>.tar`` and ``<hex>.json`` at the top). Only ``manifest.json`` says
which file is a layer. Writing produces the legacy form, which every engine loads.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tarfile
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..errors import (
    AmbiguousImageError,
    InputError,
    NotFoundError,
    UsageError,
    VerificationError,
)
from ..layer.compress import detect
from ..layer.streams import CHUNK, HashingReader
from ..model import Compression, Descriptor, Digest, ImageConfig, Manifest
from ..model import mediatypes as mt
from ..model.jsondoc import (
    ARCHIVE_MANIFEST_LIMIT,
    CONFIG_LIMIT,
    SHOWN_CHOICES,
    counted,
    load_json,
    obj,
    one_line,
    opt_obj,
    opt_str,
    quote,
    req_str,
    show,
    str_list,
    summary,
    wrong,
)
from .archive import TarArchive, Tee, image_format
from .base import BlobWriter, ImageDestination, ImageSource
from .fsutil import GuardedFile, atomic_output, check_archive_output, private_tmp_dir, write_error
from .reference import Reference, familiar_docker_name, normalize_docker_name


@dataclass(frozen=True)
class _Entry:
    config: str
    repo_tags: list[str]
    layers: list[str]
    layer_sources: Mapping[str, Descriptor]


class _Parsed:
    """What is learnt once per archive and shared by its images: ``manifest.json``'s entries
    and the descriptors of layer members (an archive of thousands of images sharing layers
    is read in linear time)."""

    def __init__(self, entries: list[_Entry]) -> None:
        self.entries = entries
        self.layers: dict[tuple[str, Digest], Descriptor] = {}  # (member, diff_id) -> it


_PARSED: weakref.WeakKeyDictionary[TarArchive, _Parsed] = weakref.WeakKeyDictionary()


def _parsed(archive: TarArchive) -> _Parsed:
    parsed = _PARSED.get(archive)
    if parsed is None:
        if not archive.exists("manifest.json"):
            if image_format(archive) == "oci-archive":
                path = archive.path or "FILE"
                raise InputError(f"{archive.what} is an OCI archive: use oci-archive:{path}")
            raise InputError(f"{archive.what}: not a docker-archive (no manifest.json)")
        raw = archive.read_small("manifest.json", ARCHIVE_MANIFEST_LIMIT)
        parsed = _PARSED[archive] = _Parsed(_parse_manifest_json(raw, archive.what))
    return parsed


def archive_entries(archive: TarArchive) -> list[_Entry]:
    """The images ``manifest.json`` lists, in its order (parsed once per archive)."""
    return _parsed(archive).entries


class DockerArchiveSource(ImageSource):
    """One image of a docker-archive. ``archive``: an archive already read (then shared: this
    source does not close it) and ``entry``, the image's position in its ``manifest.json``."""

    def __init__(
        self,
        ref: Reference,
        tee: Tee | None = None,
        *,
        archive: TarArchive | None = None,
        entry: int | None = None,
    ) -> None:
        super().__init__(ref)
        self.synthesized = True
        self.concurrent = not ref.is_stdio  # members read with pread; a pipe is read once
        self._owned = archive is None
        self.archive = archive if archive is not None else TarArchive.open(ref.path, tee=tee)
        try:
            self._init(entry)
        except BaseException:
            self.close()
            raise

    def _init(self, index: int | None) -> None:
        what = self.archive.what
        entries = archive_entries(self.archive)
        entry = entries[index] if index is not None else self._select(entries)
        self._tags = list(entry.repo_tags)
        #: the archive member of each layer, as manifest.json names it
        self.layer_members = list(entry.layers)
        self._blobs: dict[str, str] = {}  # digest -> member
        config_raw = self.archive.read_small(entry.config, CONFIG_LIMIT)
        config_digest = Digest.of(config_raw)
        named = _blob_digest(entry.config)
        if named is not None and Digest.of(config_raw, named.algorithm) != named:
            raise VerificationError(
                f"{what}: config {entry.config} does not match its name (its content is "
                f"{Digest.of(config_raw, named.algorithm)})"
            )
        self._blobs[config_digest] = entry.config
        config = ImageConfig.parse(config_raw, f"{what}: {entry.config}")
        diff_ids = config.diff_ids
        if len(diff_ids) != len(entry.layers):
            raise InputError(
                f"{what}: manifest.json lists {counted(len(entry.layers), 'layer')} "
                f"but the config has {counted(len(diff_ids), 'diff_id')}"
            )
        layers = [
            self._layer_descriptor(member, diff_id, entry.layer_sources.get(diff_id))
            for member, diff_id in zip(entry.layers, diff_ids, strict=True)
        ]
        config_desc = Descriptor(mt.DOCKER_CONFIG, config_digest, len(config_raw))
        self._manifest = Manifest.build(config_desc, layers, media_type=mt.DOCKER_MANIFEST)

    def _select(self, entries: list[_Entry]) -> _Entry:
        what = self.archive.what
        if self.ref.index is not None:
            if self.ref.index >= len(entries):
                raise NotFoundError(
                    f"{what}: no image @{self.ref.index}; it has {len(entries)} (0-based)"
                )
            return entries[self.ref.index]
        if self.ref.name is not None:
            want = normalize_docker_name(self.ref.name)
            found = [
                i
                for i, e in enumerate(entries)
                if any(normalize_docker_name(t) == want for t in e.repo_tags)
            ]
            if not found:
                raise NotFoundError(
                    f"{what}: no image named {quote(self.ref.name)}; {_choices(entries)}"
                )
            if len({(entries[i].config, tuple(entries[i].layers)) for i in found}) > 1:
                raise AmbiguousImageError(
                    f"{what}: {len(found)} different images are named {quote(self.ref.name)}; "
                    f"select one as PATH@N: {summary([f'@{i}' for i in found])}"
                )
            return entries[found[0]]
        if len(entries) == 1:
            return entries[0]
        raise AmbiguousImageError(
            f"{what} holds {len(entries)} images; name one: {_choices(entries)}"
        )

    def _layer_descriptor(
        self, member: str, diff_id: Digest, source: Descriptor | None
    ) -> Descriptor:
        if source is not None:
            desc = source
            size = self.archive.size(member)
            if desc.size != size:
                raise InputError(
                    f"{self.archive.what}: {member} is {size} bytes but LayerSources says "
                    f"{desc.size}"
                )
        else:
            desc = self._layer_member(member, diff_id)
        self._blobs[desc.digest] = member
        return desc

    def _layer_member(self, member: str, diff_id: Digest) -> Descriptor:
        """The descriptor of a layer member without ``LayerSources``: learnt once per archive
        (a member shared by every image is looked at, and hashed if compressed, once)."""
        known = _parsed(self.archive).layers
        desc = known.get((member, diff_id))
        if desc is None:
            size = self.archive.size(member)
            compression = detect(self.archive.head(member)) if size else Compression.NONE
            if compression is Compression.NONE:
                desc = Descriptor(mt.DOCKER_LAYER, diff_id, size)
            else:  # a compressed layer.tar, which docker load also accepts: hash it once
                with self.archive.open_member(member) as f:
                    hr = HashingReader(f, what=member)  # type: ignore[arg-type]
                    hr.drain()
                desc = Descriptor(mt.docker_layer_type(compression), hr.digest, size)
            known[(member, diff_id)] = desc
        return desc

    def manifest(self) -> Manifest:
        return self._manifest

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        member = self._blobs.get(descriptor.digest)
        if member is None:
            raise NotFoundError(f"{self.archive.what}: no blob {descriptor.digest}")
        actual = self.archive.resolve(member).digest  # known if consumed while streaming
        if actual is not None and actual != descriptor.digest:
            raise VerificationError(
                f"{self.archive.what}: {member}: content digest {actual} does not match "
                f"{descriptor.digest}"
            )
        return self.archive.open_member(member)

    def repo_tags(self) -> list[str]:
        return list(self._tags)

    def close(self) -> None:
        if self._owned:
            self.archive.close()


def _choices(entries: list[_Entry]) -> str:
    """The images to choose from (and each one's tags), summarized past a few."""
    parts = []
    for i, e in enumerate(entries[:SHOWN_CHOICES]):
        tags = [one_line(t, 80) for t in e.repo_tags[:SHOWN_CHOICES]]
        parts.append(f"@{i}" + (f" ({summary(tags, total=len(e.repo_tags))})" if tags else ""))
    return "choices: " + summary(parts, total=len(entries))


def _parse_manifest_json(raw: bytes, what: str) -> list[_Entry]:
    """The entries of ``manifest.json``, every field checked for its type."""
    data = load_json(raw, f"{what}: manifest.json", limit=ARCHIVE_MANIFEST_LIMIT)
    if not isinstance(data, list) or not data:
        raise InputError(f"{what}: manifest.json is not a non-empty list")
    entries = []
    for i, item in enumerate(data):
        where = f"{what}: manifest.json[{i}]"
        item = obj(item, where)
        config = req_str(item, "Config", where)
        layers = str_list(item, "Layers", where)
        if layers is None:
            raise InputError(f"{where}: missing 'Layers'")
        tags = str_list(item, "RepoTags", where) or []
        opt_str(item, "Parent", where)
        sources: dict[str, Descriptor] = {}
        for diff_id, source in (opt_obj(item, "LayerSources", where) or {}).items():
            place = f"{where}: LayerSources[{show(diff_id)}]"
            if not isinstance(source, Mapping):
                wrong(place, None, "a descriptor object", source)
            sources[diff_id] = Descriptor.from_json(source, place)
        entries.append(_Entry(config, list(tags), list(layers), sources))
    return entries


# -- writing -------------------------------------------------------------------------------


class _StagedBlob(BlobWriter):
    def __init__(self, dest: DockerArchiveDestination) -> None:
        self._dest = dest
        what = dest.staging_dir.what
        try:
            fd, self._path = tempfile.mkstemp(dir=dest.staging, prefix="blob-")
        except OSError as e:
            raise write_error(what, e) from None
        self._file = GuardedFile(os.fdopen(fd, "wb", buffering=CHUNK), what)
        self.file = self._file  # type: ignore[assignment]

    def commit(self, digest: Digest) -> None:
        self._file.close()
        final = os.path.join(self._dest.staging, digest.replace(":", "-"))
        os.replace(self._path, final)
        self._dest.blobs[digest] = final

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._path)  # first: closing may fail again on a full disk
        self._file.discard()


class DockerArchiveDestination(ImageDestination):
    """Writes the legacy ``docker save`` form; ``docker load`` gives the same image ID."""

    flavor = "docker"
    concurrent = True  # each blob staged in its own file
    writes_output = True  # the archive goes to the file or stdout ref names (not an engine)

    def __init__(self, ref: Reference, additional_tags: Sequence[str] = ()) -> None:
        super().__init__(ref)
        if ref.index is not None:
            raise UsageError(f"{ref}: @N selects an image to read; it cannot name one to write")
        if self.writes_output:
            check_archive_output(ref, ref.path, ref.is_stdio, "; name a file in it")
        self._tags = [ref.name] if ref.name else []
        self._tags += [_check_tag(t) for t in additional_tags]
        #: blobs are staged in a private directory of $TMPDIR, reclaimed if this process dies
        self.staging_dir = private_tmp_dir("docker-archive", ref.path)
        self.staging = self.staging_dir.path
        self.blobs: dict[Digest, str] = {}
        self._images: list[tuple[Manifest, ImageConfig, list[str]]] = []

    def layer_compression(self, source: Compression, requested: Compression | None) -> Compression:
        if source is Compression.SQUASHFS:
            raise UsageError(
                f"{self.ref}: Docker cannot load squashfs layers; copy the tar image instead"
            )
        if requested not in (None, Compression.NONE):
            raise UsageError("docker-archive layers are stored uncompressed; drop the compression")
        return Compression.NONE

    def has_blob(self, digest: Digest) -> bool:
        return digest in self.blobs

    def new_blob(self) -> BlobWriter:
        return _StagedBlob(self)

    def put_manifest(self, manifest: Manifest, config: ImageConfig, tags: Sequence[str]) -> None:
        names = self._tags or list(tags)
        self._images.append((manifest, config, [familiar_docker_name(t) for t in names]))

    def commit(self) -> None:
        try:
            if self.ref.is_stdio:
                out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=CHUNK)
                with out:
                    self._write_tar(out)
            else:
                with atomic_output(self.ref.path) as out:
                    self._write_tar(out)
        finally:
            self.staging_dir.remove()

    def abort(self) -> None:
        self.staging_dir.remove()

    def _write_tar(self, out: BinaryIO) -> None:
        manifest_json: list[dict[str, Any]] = []
        repositories: dict[str, dict[str, str]] = {}
        written: dict[str, str] = {}  # v1id -> layer.tar path, for shared layers
        by_diff_id: dict[Digest, str] = {}
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
            tar.copybufsize = CHUNK  # type: ignore[attr-defined]
            for manifest, config, tags in self._images:
                config_name = f"{config.digest.hex}.json"
                if config_name not in written:
                    _add_bytes(tar, config_name, config.raw)
                    written[config_name] = config_name
                layer_paths = []
                parent = ""
                for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
                    v1id = Digest.of(f"{parent} {diff_id}".encode()).hex
                    path = f"{v1id}/layer.tar"
                    if path not in written:
                        _add_dir(tar, v1id)
                        _add_bytes(tar, f"{v1id}/VERSION", b"1.0")
                        v1 = {"id": v1id, **({"parent": parent} if parent else {})}
                        _add_bytes(tar, f"{v1id}/json", json.dumps(v1).encode())
                        first = by_diff_id.get(diff_id)
                        if first is not None:
                            _add_symlink(tar, path, f"../{first}")
                        else:
                            _add_file(tar, path, self.blobs[layer.digest])
                            by_diff_id[diff_id] = path
                        written[path] = path
                    layer_paths.append(path)
                    parent = v1id
                manifest_json.append(
                    {"Config": config_name, "RepoTags": tags or None, "Layers": layer_paths}
                )
                for tag in tags:
                    repo, _, t = tag.rpartition(":")
                    repositories.setdefault(repo, {})[t] = parent
            _add_bytes(tar, "manifest.json", json.dumps(manifest_json).encode())
            if repositories:
                _add_bytes(tar, "repositories", json.dumps(repositories).encode())


def _check_tag(tag: str) -> str:
    from .reference import _DOCKER_NAME_RE

    full = tag if ":" in tag.rsplit("/", 1)[-1] else tag + ":latest"
    if not _DOCKER_NAME_RE.match(full):
        raise UsageError(f"invalid tag {quote(tag)}: expected NAME:TAG")
    return full


def _info(name: str, type_: bytes = tarfile.REGTYPE, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.size = size
    info.mode = 0o755 if type_ == tarfile.DIRTYPE else 0o644
    info.mtime = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, size=len(data)), io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    tar.addfile(_info(name, tarfile.DIRTYPE))


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = _info(name, tarfile.SYMTYPE)
    info.linkname = target
    info.mode = 0o777
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, path: str) -> None:
    with open(path, "rb") as f:
        tar.addfile(_info(name, size=os.fstat(f.fileno()).st_size), f)


_BLOB_PATH_RE = re.compile(r"^(?:\./)?blobs/(sha256|sha512)/([0-9a-f]{64,128})$")


def _blob_digest(member: str) -> Digest | None:
    """The digest a content-addressed member (``blobs/ALGO/HEX``) claims, else None."""
    m = _BLOB_PATH_RE.match(member)
    return Digest(f"{m.group(1)}:{m.group(2)}") if m else None
