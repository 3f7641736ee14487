"""OCI image layouts written by hand, from raw layer tars: the corpus of hostile and broken
images for ``check``, ``copy --repair`` and ``unpack``.

Nothing here uses ocikit: layers are built with ``tarfile`` (names written exactly as given,
``../x``, ``/abs``, ``./a``, ``a/`` included), compressed with gzip/zlib or zstandard, and the
layout's JSON is written with ``json`` + ``hashlib``.

    tar = tar_bytes([directory("d"), file("d/a", b"A"), symlink("l", "d/a"), whiteout("x")])
    digest = write_layout(tmp / "layout", [tar], ref="t")
    append_layers(tmp / "layout", tmp / "bigger", [tar_bytes([file("y")])], src_ref="t")
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import platform
import posixpath
import shutil
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import zstandard

from .verify import (
    LAYER_GZIP,
    LAYER_TAR,
    LAYER_ZSTD,
    MEDIA_TYPE,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    read_layout,
    sha256,
)

MTIME = 946684800  # 2000-01-01: every header the same on every run
CREATED = "2000-01-01T00:00:00Z"
Compression = Literal["gzip", "none", "zstd"]


# ---------------------------------------------------------------------------- layer entries


@dataclass(frozen=True)
class Entry:
    """One tar entry, written as given: ``name`` is not cleaned in any way."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    devmajor: int = 0
    devminor: int = 0
    mtime: int = MTIME


def file(name: str, data: bytes | str = b"", mode: int = 0o644, uid: int = 0, gid: int = 0):
    if isinstance(data, str):
        data = data.encode()
    return Entry(name, tarfile.REGTYPE, data, mode=mode, uid=uid, gid=gid)


def directory(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    """A directory entry. ``tarfile`` appends ``/`` to a directory's name that lacks one."""
    return Entry(name, tarfile.DIRTYPE, mode=mode, uid=uid, gid=gid)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def chardev(name: str, major: int, minor: int, mode: int = 0o666) -> Entry:
    return Entry(name, tarfile.CHRTYPE, mode=mode, devmajor=major, devminor=minor)


def blockdev(name: str, major: int, minor: int, mode: int = 0o660) -> Entry:
    return Entry(name, tarfile.BLKTYPE, mode=mode, devmajor=major, devminor=minor)


def fifo(name: str, mode: int = 0o644) -> Entry:
    return Entry(name, tarfile.FIFOTYPE, mode=mode)


def whiteout(path: str) -> Entry:
    """The whiteout of ``path`` (``d/x`` -> ``d/.wh.x``): an empty regular file."""
    parent, base = posixpath.split(path.rstrip("/"))
    return file(posixpath.join(parent, ".wh." + base) if parent else ".wh." + base)


def opaque(dirpath: str) -> Entry:
    """The opaque marker of a directory (``d`` -> ``d/.wh..wh..opq``)."""
    return file(posixpath.join(dirpath.rstrip("/"), ".wh..wh..opq"))


def raw(name: str, type: bytes, **kw: Any) -> Entry:
    """Any entry type (``b"Z"``: one no tool knows)."""
    return Entry(name, type, **kw)


def tar_info(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.name)  # TarFile.addfile writes the name as is
    info.type = entry.type
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    info.mtime = entry.mtime
    info.linkname = entry.linkname
    info.devmajor, info.devminor = entry.devmajor, entry.devminor
    info.size = len(entry.data) if entry.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    return info


def tar_bytes(entries: Iterable[Entry], *, format: Literal["pax", "gnu"] = "pax") -> bytes:
    """An uncompressed layer tar of ``entries``, in order, deterministic."""
    buf = io.BytesIO()
    fmt = tarfile.PAX_FORMAT if format == "pax" else tarfile.GNU_FORMAT
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8") as tar:
        for entry in entries:
            info = tar_info(entry)
            tar.addfile(info, io.BytesIO(entry.data) if info.size else None)
    return buf.getvalue()


def read_entries(layer: bytes) -> list[tarfile.TarInfo]:
    """The entries of an uncompressed layer tar, names as written."""
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return tar.getmembers()


def read_entry_data(layer: bytes) -> dict[str, bytes]:
    """Name -> content of each regular file of a layer (the last one of a repeated name)."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        for info in tar:
            if info.isreg():
                f = tar.extractfile(info)
                assert f is not None
                out[info.name] = f.read()
    return out


def clean(name: str) -> str:
    """A name cleaned as docker's loader does (``./a``, ``/a``, ``a/`` -> ``a``)."""
    cleaned = posixpath.normpath("/" + name).lstrip("/")
    return cleaned or "."


# ---------------------------------------------------------------------------- blobs


def compress(data: bytes, compression: Compression) -> bytes:
    if compression == "none":
        return data
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    raise ValueError(compression)


@dataclass(frozen=True)
class Blob:
    """A layer blob already on disk (too big to hold in memory, or written specially)."""

    path: Path
    media_type: str
    diff_id: str
    digest: str
    size: int


def gzip_bomb(path: Path, *, size: int = 1 << 30, name: str = "zeros") -> Blob:
    """A gzip layer of one file of ``size`` zero bytes (default 1 GiB), ~1000x smaller than what
    it expands to, written in well under a second: each 1 MiB of zeros is deflated once, fully
    flushed (byte-aligned, no history), and the same compressed block repeated; CRC-32 and
    diff_id are computed over the real uncompressed stream."""
    chunk_size = 1 << 20
    assert size % chunk_size == 0
    header = tar_info(Entry(name, tarfile.REGTYPE))
    header.size = size
    head = header.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
    tail = bytes(1024)  # end of archive; size is a multiple of 512: no padding
    zeros = bytes(chunk_size)

    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH)
    blocks = [comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH) for _ in range(3)]
    assert blocks[1] == blocks[2], "zlib did not repeat itself: cannot build the bomb fast"
    last = comp.compress(tail) + comp.flush(zlib.Z_FINISH)

    crc = zlib.crc32(head)
    diff = hashlib.sha256(head)
    digest = hashlib.sha256()
    written = 0
    with path.open("wb") as f:

        def out(data: bytes) -> None:
            nonlocal written
            f.write(data)
            digest.update(data)
            written += len(data)

        out(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # gzip, no name, mtime 0
        out(first)
        out(blocks[0])
        for _ in range(size // chunk_size - 1):
            out(blocks[1])
        out(last)
        for _ in range(size // chunk_size):
            crc = zlib.crc32(zeros, crc)
            diff.update(zeros)
        crc = zlib.crc32(tail, crc)
        diff.update(tail)
        total = len(head) + size + len(tail)
        out(struct.pack("<II", crc, total & 0xFFFFFFFF))
    return Blob(
        path, LAYER_GZIP, "sha256:" + diff.hexdigest(), "sha256:" + digest.hexdigest(), written
    )


# ---------------------------------------------------------------------------- layouts


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def blob_path(layout: Path, digest: str) -> Path:
    algo, _, hex_ = digest.partition(":")
    return layout / "blobs" / algo / hex_


def put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    """Store bytes as a blob; returns ``{"digest", "size"}``."""
    digest = sha256(data)
    path = blob_path(layout, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def put_blob_file(layout: Path, blob: Blob) -> dict[str, Any]:
    path = blob_path(layout, blob.digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        shutil.copyfile(blob.path, path)
    return {"digest": blob.digest, "size": blob.size}


def _init_layout(layout: Path) -> None:
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    if not (layout / "index.json").exists():
        (layout / "index.json").write_text(
            json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
        )


def tag_manifest(layout: Path, manifest: dict[str, Any], ref: str) -> str:
    """Store the manifest and name it ``ref`` in index.json (replacing an entry of that name).
    Returns the manifest's digest."""
    desc = put_blob(layout, json.dumps(manifest, separators=(",", ":")).encode())
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"] = [
        d for d in index["manifests"] if d.get("annotations", {}).get(REF_NAME) != ref
    ] + [{"mediaType": OCI_MANIFEST, **desc, "annotations": {REF_NAME: ref}}]
    (layout / "index.json").write_text(json.dumps(index))
    return desc["digest"]


def default_history(n: int) -> list[dict[str, Any]]:
    return [{"created": CREATED, "created_by": f"layer {i}"} for i in range(n)]


def write_layout(
    path: Path,
    layers: Sequence[bytes | Blob],
    *,
    ref: str = "t",
    compression: Compression = "gzip",
    history: list[dict[str, Any]] | None = None,
    config_extra: dict[str, Any] | None = None,
    media_types: Sequence[str | None] | None = None,
    edit_config: Callable[[dict[str, Any]], None] | None = None,
    edit_manifest: Callable[[dict[str, Any]], None] | None = None,
) -> str:
    """Write (or add to) an OCI layout holding one image named ``ref``; returns the manifest's
    digest.

    ``layers`` are raw uncompressed tars (compressed as ``compression`` says) or ``Blob``s.
    ``history`` defaults to one entry per layer; ``config_extra`` is merged into the config.
    ``media_types`` overrides a layer's media type (None: the right one); ``edit_config`` and
    ``edit_manifest`` change the JSON just before it is written (diff_ids, sizes, ...).
    """
    _init_layout(path)
    descriptors, diff_ids = [], []
    for i, layer in enumerate(layers):
        if isinstance(layer, Blob):
            desc = {"mediaType": layer.media_type, **put_blob_file(path, layer)}
            diff_ids.append(layer.diff_id)
        else:
            desc = {
                "mediaType": MEDIA_TYPE[compression],
                **put_blob(path, compress(layer, compression)),
            }
            diff_ids.append(sha256(layer))
        if media_types is not None and media_types[i] is not None:
            desc["mediaType"] = media_types[i]
        descriptors.append(desc)
    config: dict[str, Any] = {
        "created": CREATED,
        "architecture": host_arch(),
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": default_history(len(layers)) if history is None else history,
    }
    config.update(copy.deepcopy(config_extra or {}))
    if edit_config is not None:
        edit_config(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **put_blob(path, json.dumps(config).encode())},
        "layers": descriptors,
    }
    if edit_manifest is not None:
        edit_manifest(manifest)
    return tag_manifest(path, manifest, ref)


def append_layers(
    src: Path,
    dst: Path,
    layers: Sequence[bytes],
    *,
    src_ref: str = "t",
    ref: str = "t",
    compression: Compression = "gzip",
    created_by: str = "appended",
) -> str:
    """A new image in layout ``dst``: the image ``src_ref`` of layout ``src`` (any writer: ocikit,
    skopeo, umoci) with ``layers`` (raw tars) added on top. Lower layer blobs are copied byte for
    byte; the config gets the new diff_ids and history entries. ``dst`` may be ``src``."""
    image = read_layout(src, src_ref)
    _init_layout(dst)
    for desc in image.manifest["layers"]:
        target = blob_path(dst, desc["digest"])
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image.blob_path(desc["digest"]), target)
    config = copy.deepcopy(image.config)
    manifest = copy.deepcopy(image.manifest)
    for layer in layers:
        blob = compress(layer, compression)
        manifest["layers"].append({"mediaType": MEDIA_TYPE[compression], **put_blob(dst, blob)})
        config["rootfs"]["diff_ids"].append(sha256(layer))
        config.setdefault("history", []).append({"created": CREATED, "created_by": created_by})
    manifest["config"] = {
        "mediaType": image.manifest["config"]["mediaType"],
        **put_blob(dst, json.dumps(config).encode()),
    }
    manifest.pop("annotations", None)
    return tag_manifest(dst, manifest, ref)


# ---------------------------------------------------------------------------- reading back


def image_layers(layout: Path, ref: str = "t") -> list[dict[str, Any]]:
    """The layer descriptors of the image ``ref``."""
    return read_layout(layout, ref).manifest["layers"]


def layer_tar(layout: Path, desc: dict[str, Any]) -> bytes:
    """A layer's uncompressed tar, decompressed by hand from its media type."""
    data = blob_path(layout, desc["digest"]).read_bytes()
    media_type = desc["mediaType"]
    if media_type.endswith("gzip"):
        return gzip.decompress(data)
    if media_type.endswith("zstd"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    assert media_type in (LAYER_TAR, "application/vnd.docker.image.rootfs.diff.tar"), media_type
    return data


def layer_tars(layout: Path, ref: str = "t") -> list[bytes]:
    return [layer_tar(layout, d) for d in image_layers(layout, ref)]


__all__ = [
    "LAYER_GZIP",
    "LAYER_TAR",
    "LAYER_ZSTD",
    "Blob",
    "Entry",
    "append_layers",
    "blob_path",
    "blockdev",
    "chardev",
    "clean",
    "compress",
    "directory",
    "fifo",
    "file",
    "gzip_bomb",
    "hardlink",
    "image_layers",
    "layer_tar",
    "layer_tars",
    "opaque",
    "raw",
    "read_entries",
    "read_entry_data",
    "symlink",
    "tag_manifest",
    "tar_bytes",
    "whiteout",
    "write_layout",
]
