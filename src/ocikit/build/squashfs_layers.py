"""Squashfs layers (``--layer-type squashfs``): made from placed imports, from a run step's
upper directory, or from a base's tar layers, by ``layer.squashfs`` (mksquashfs, bounded),
each written to a cache entry as a blob hashed on the way."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..layer import squashfs
from ..layer.streams import HashingReader, copy_stream
from ..model import Compression, Descriptor, Manifest, mutate
from ..model import mediatypes as mt
from ..ops.unpack import extract_layer
from ..tempfiles import HIDDEN_TMP_PREFIX, PrivateDir
from ..transports import Image
from .placement import Placed, materialize
from .store import BuildCache, EntryWriter, NewLayer


def work_dir(store: BuildCache) -> PrivateDir:
    """A private directory in the cache (``.ocikit-tmp-squashfs-*``), locked: if this
    process dies, the next writer of the cache or ocikit gc removes it."""
    return store.private_dir(f"{HIDDEN_TMP_PREFIX}squashfs-", str(store.path))


def from_entries(
    store: BuildCache, entry: EntryWriter, entries: Sequence[Placed], epoch: int
) -> NewLayer:
    """The placed imports as a squashfs layer (made in a private directory first)."""
    with work_dir(store) as private:
        work = Path(private.path)
        root = work / "root"
        root.mkdir()
        materialize(entries, root, epoch)
        squashfs.make(root, work / "layer.sqfs", mkfs_time=epoch)
        return store_file(entry, work / "layer.sqfs")


def store_file(entry: EntryWriter, path: Path) -> NewLayer:
    """The squashfs image at ``path`` as a layer blob (a squashfs layer is its own diff_id)."""
    with entry.new_blob() as writer:
        with open(path, "rb") as f:
            reader = HashingReader(f, what=str(path), sink=writer.file)
            reader.drain()
        writer.commit(reader.digest)
    return Descriptor(mt.SQUASHFS_LAYER_GZIP, reader.digest, reader.size), reader.digest


def _keep(entry: EntryWriter, image: Image, index: int) -> NewLayer:
    """A base layer that is squashfs already, in the entry (the cache: there already,
    unless it is damaged; then copied again, verified)."""
    layer = image.layers[index]
    desc = layer.descriptor
    if not entry.has(desc.digest, desc.size):
        with entry.new_blob() as writer:
            with image.open_blob(desc) as src:
                copy_stream(src, writer.file)
            writer.commit(desc.digest)
    return desc, layer.diff_id


def base_as_squashfs(store: BuildCache, base_tag: str, epoch: int) -> str:
    """The base (in the store) with each tar layer made a squashfs layer, its whiteouts
    as overlayfs marks them, and squashfs layers kept: stored once as ``BASE-squashfs``."""
    tag = f"{base_tag}-squashfs"
    if store.lookup(tag) is not None:
        return tag
    with store.entry(tag, damaged=bool(store.why)) as entry:
        with store.open(base_tag) as image:
            layers = []
            for i, layer in enumerate(image.layers):
                if layer.compression is Compression.SQUASHFS:  # one already: as it is
                    layers.append(_keep(entry, image, i))
                    continue
                with work_dir(store) as private:
                    work = Path(private.path)
                    (work / "root").mkdir()
                    extract_layer(image, i, work / "root", epoch)
                    squashfs.make(work / "root", work / "layer.sqfs", mkfs_time=epoch)
                    layers.append(store_file(entry, work / "layer.sqfs"))
            config = mutate.with_diff_ids(image.config.data, [str(d) for _desc, d in layers])
            raw = mutate.encode(config)
            config_digest = entry.put_bytes(raw)
            manifest = Manifest.build(
                Descriptor(mt.OCI_CONFIG, config_digest, len(raw)),
                [desc for desc, _ in layers],
                image.manifest.annotations or None,
            )
        entry.put_image(manifest, mutate.to_config(raw))
        entry.commit(manifest)
    return tag
